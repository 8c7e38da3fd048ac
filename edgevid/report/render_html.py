"""report.html: one self-contained page (inline CSS, charts as inline SVG drawn by matplotlib).

No script, no font, no stylesheet and no image is fetched: the page opens offline and from
a mail attachment alike. Charts: accuracy vs latency (one point per variant) and the latency
distribution of every variant.
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

from edgevid.report.render_md import efficiency_table, machine_line, table_rows

_COLORS = {"onnxruntime": "#1f77b4", "openvino": "#6a3d9a", "tensorrt": "#2ca02c", "torch": "#d62728"}
_MARKERS = {"fp32": "o", "fp16": "D", "int8": "^"}  # precision; stream points filled, clip points hollow


def _svg(fig: Any) -> str:
    """The figure as an inline <svg> element (XML prolog and doctype dropped)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})  # no timestamp: stable output
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small, selectable
    matplotlib.rcParams["svg.hashsalt"] = "edgevid"  # stable ids: same report, same page
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    return Figure(figsize=(width, height), dpi=100)


def scatter_svg(report: dict[str, Any]) -> str | None:
    """Top-1 vs median latency, one point per timed variant; None if nothing is timed."""
    rows = [r for r in report["rows"] if r.get("latency_ms")]
    if not rows:
        return None
    fig = _figure(9.0, 4.2)
    ax = fig.add_subplot()
    for r in rows:
        x, y = r["latency_ms"]["p50"], 100 * r["accuracy"]["top1"]
        color = _COLORS.get(r["backend"], "#444")
        filled = r["mode"] == "stream"
        # A legend, not labels at the points: variants with the same accuracy sit on one line
        # and their labels would overlap. Colour: backend; shape: precision; fill: mode.
        ax.scatter([x], [y], s=70, marker=_MARKERS.get(r["precision"], "o"), facecolors=color if filled else "white",
                   edgecolors=color if not filled else "black", linewidths=1.4 if not filled else 0.5, zorder=3,
                   label=r["label"])
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False, borderaxespad=0)
    ax.set_xscale("log")
    ax.set_xlabel("median latency per call, ms (log scale; stream: one step, clip: one clip)")
    ax.set_ylabel("top-1 %")
    ax.set_title("Accuracy vs latency (up and left is better)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return _svg(fig)


def distributions_svg(report: dict[str, Any]) -> str | None:
    """Histogram of call times per timed variant, on a shared log axis; None if nothing is timed."""
    rows = [r for r in report["rows"] if r.get("latency_distribution")]
    if not rows:
        return None
    fig = _figure(7.5, 0.62 * len(rows) + 0.9)
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    for ax, r in zip(axes, rows):
        d, lat = r["latency_distribution"], r["latency_ms"]
        color = _COLORS.get(r["backend"], "#444")
        ax.stairs(d["counts"], d["edges_ms"], fill=True, color=color, alpha=0.55)
        ax.axvline(lat["p50"], color="black", lw=0.8)
        ax.axvline(lat["p99"], color="black", lw=0.8, ls=":")
        ax.set_yticks([])
        ax.set_ylabel(r["label"], rotation=0, ha="right", va="center", fontsize=7)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    axes[0].set_xscale("log")
    axes[0].set_title("Latency distribution per variant (solid: median, dotted: p99)", fontsize=10)
    axes[-1].set_xlabel("ms per call (log scale)")
    return _svg(fig)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}th,td{border:1px solid #ddd;padding:.25rem .45rem}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.ref td{color:#666;font-style:italic}
.warn{background:#fff3cd;padding:.5rem 1rem;border:1px solid #e0c060}.chart svg{max-width:100%;height:auto}
.small{font-size:.8rem;color:#555}
"""


def render_html(report: dict[str, Any]) -> str:
    """The whole report.html (self-contained)."""
    e = html.escape
    o = report["options"]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>edgevid report: "
             f"{e(report['model'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>edgevid report: {e(report['model'])}</h1>"]
    if not report["complete"]:
        parts.append(f"<p class=\"warn\">Incomplete: interrupted while {e(str(report['interrupted_during']))}.</p>")
    parts.append(f"<p class=\"small\">{e(report['created'])}, {report['seconds']:.0f} s"
                 f"{' (--quick)' if o['quick'] else ''}; checkpoint <code>{e(report['checkpoint'])}</code>; "
                 f"held-out data: {e(report['data'].get('source', '-'))}</p>")
    parts.append("<h2>Findings</h2><ul>" + "".join(f"<li>{e(s)}</li>" for s in report["findings"]) + "</ul>")
    header, cells = table_rows(report)
    parts.append("<h2>Variants</h2><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header)
                 + "</tr></thead><tbody>")
    for row, c in zip(report["rows"], cells):
        cls = " class=\"ref\"" if row.get("reference") else ""
        parts.append(f"<tr{cls}><td>{e(c[0])}</td>" + "".join(f"<td class=\"n\">{e(x)}</td>" for x in c[1:]) + "</tr>")
    parts.append("</tbody></table>")
    header, cells = efficiency_table(report)
    if cells:
        parts.append("<h2>Compute where the video changes</h2><table><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"
                     + "".join("<tr><td>" + e(c[0]) + "</td>" + "".join(f"<td class=\"n\">{e(x)}</td>" for x in c[1:])
                               + "</tr>" for c in cells) + "</tbody></table>")
    for title, svg in (("Accuracy vs latency", scatter_svg(report)), ("Latency distributions", distributions_svg(report))):
        if svg:
            parts.append(f"<h2>{e(title)}</h2><div class=\"chart\">{svg}</div>")
    if report["skipped"]:
        parts.append("<h2>Skipped</h2><ul>" + "".join(f"<li>{e(s['label'])}: {e(s['reason'])}</li>"
                                                      for s in report["skipped"]) + "</ul>")
    parts.append(f"<h2>Machine</h2><p class=\"small\">{e(machine_line(report['machine']))}</p></body></html>")
    page = "\n".join(parts)
    # Belt and braces: the page must not reference anything outside itself.
    if re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page, re.I):
        raise AssertionError("report.html would load an external resource")
    return page
