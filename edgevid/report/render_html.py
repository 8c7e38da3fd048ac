"""report.html: one self-contained page (inline CSS, charts as inline SVG drawn by matplotlib).

No script, no font, no stylesheet and no image is fetched: the page opens offline and from
a mail attachment alike. Charts: accuracy vs latency (one point per variant) and the latency
distribution of every variant.

A phone must read it too. An inline SVG scaled to the column scales its text with it, so each
chart is drawn twice, at the two widths it is shown at (a desktop column, a phone column), and
CSS shows the one that fits: its text then renders near its drawn size (>= 10 px at 420 px).
Wide tables scroll inside their own box; the page itself never scrolls sideways.
"""

from __future__ import annotations

import html
import io
import math
import re
from typing import Any

from edgevid.report import render_md as md

_COLORS = {"onnxruntime": "#1f77b4", "openvino": "#6a3d9a", "tensorrt": "#2ca02c", "torch": "#d62728"}
_MARKERS = {"fp32": "o", "fp16": "D", "int8": "^"}  # precision; stream points filled, clip points hollow
# A second variant of one backend, precision and mode (OpenVINO's strict f32 beside its default)
# takes the next spare shape, or the two would look the same.
_SPARE_MARKERS = ("s", "v", "p", "h")
_GLYPHS = {"o": ("●", "○"), "D": ("◆", "◇"), "^": ("▲", "△"), "s": ("■", "□"), "v": ("▼", "▽"), "p": ("⬟", "⬠"),
           "h": ("⬢", "⬡")}  # the same markers in the HTML legend, filled and hollow
_MARKER_PT2 = 80  # scatter marker area, points^2

# (figure width in inches, font size in points) per layout. The SVG's user unit is the point,
# so text renders at font * shown width / (72 * figure width) px: the desktop drawing is shown
# at 840-1168 px (10 pt -> 11.7-16 px), the phone one at up to 560 px, 388 px on a 420 px
# phone (9 pt -> 12 px).
_LAYOUTS = {"wide": (11.0, 10.0), "narrow": (4.0, 9.0)}
_BREAK_PX = 840  # below this viewport width the phone drawing is shown


def _svg(fig: Any, prefix: str) -> str:
    """The figure as an inline <svg> element (XML prolog and doctype dropped), ids prefixed.

    Both drawings of a chart sit in one document; without the prefix, equal ids (markers, clip
    paths) of the hidden drawing would shadow the visible one's.
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})  # no timestamp: stable output
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m[1]}"', text)
    return re.sub(r"#([A-Za-z_][\w.-]*)", lambda m: f"#{prefix}{m[1]}" if m[1] in ids else m[0], text)


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small, selectable
    matplotlib.rcParams["svg.hashsalt"] = "edgevid"  # stable ids: same report, same page
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    return Figure(figsize=(width, height), dpi=100)


def _log_x(ax: Any) -> None:
    """Plain tick labels on a log x axis (0.5, 1, 2, 5, 10; no 10^x mathtext, whose exponents are tiny).

    Between the powers of ten, as many labels as the drawn width per decade holds: every one on a
    wide axis over a short range, 2 and 5 on a phone, none when decades are crowded.
    """
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")

    def minor(v: float, _pos: Any) -> str:
        lo, hi = ax.get_xlim()  # called at draw time: the final limits and size
        inches_per_decade = ax.bbox.width / ax.figure.dpi / max(math.log10(hi / lo), 1e-6)
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        shown = range(2, 10) if inches_per_decade >= 6 else (2, 5) if inches_per_decade >= 1.5 else ()
        return f"{v:g}" if lead in shown else ""

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(minor))


def _nudge_overlaps(fig: Any, ax: Any, points: list[Any], xy: list[tuple[float, float]]) -> None:
    """Spread markers that would cover each other vertically, by a marker's height, around their spot.

    Variants often share an accuracy and nearly a latency (INT8 on two backends): drawn in place,
    the last one hides the others. A nudge of a few points moves no marker off its value by more
    than its own size, and the table has the exact figures.
    """
    from matplotlib.transforms import offset_copy

    fig.draw_without_rendering()  # final axis limits, so data -> pixels is the drawn one
    pix = ax.transData.transform(xy)
    size_px = math.sqrt(_MARKER_PT2) * fig.dpi / 72
    groups: list[list[int]] = []
    for i, p in enumerate(pix):
        near = next((g for g in groups if math.dist(pix[g[0]], p) < size_px), None)
        if near is None:
            groups.append([i])
        else:
            near.append(i)
    step = math.sqrt(_MARKER_PT2) * 1.1
    for group in groups:
        for k, i in enumerate(group if len(group) > 1 else []):
            dy = (k - (len(group) - 1) / 2) * step
            points[i].set_offset_transform(offset_copy(ax.transData, fig=fig, y=dy, units="points"))


def _scatter_rows(report: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(row, marker) of every timed row."""
    rows, seen, spare = [], set(), iter(_SPARE_MARKERS * 8)
    for r in report["rows"]:
        if (r.get("latency_ms") or {}).get("p50"):
            key = (r["backend"], r["precision"], r["mode"])
            rows.append((r, _MARKERS.get(r["precision"], "o") if key not in seen else next(spare)))
            seen.add(key)
    return rows


def scatter_svg(report: dict[str, Any], layout: str = "wide") -> str | None:
    """Top-1 vs median latency, one point per timed variant; None if nothing is timed."""
    from matplotlib.ticker import FuncFormatter

    rows = _scatter_rows(report)
    if not rows:
        return None
    width, font = _LAYOUTS[layout]
    fig = _figure(width, 3.8 if layout == "wide" else 3.2)
    ax = fig.add_subplot()
    xy = [(r["latency_ms"]["p50"], 100 * r["accuracy"]["top1"]) for r, _ in rows]
    points = []
    for (r, marker), (x, y) in zip(rows, xy):
        color = _COLORS.get(r["backend"], "#444")
        # The legend is HTML under the chart (legible at any width). Colour: backend; shape:
        # precision; fill: mode. Faces are translucent so a marker under another shows through.
        filled = r["mode"] == "stream"
        points.append(ax.scatter([x], [y], s=_MARKER_PT2, marker=marker,
                                 facecolors=color if filled else "none", edgecolors=color, alpha=0.75,
                                 linewidths=1.6 if not filled else 0.8, zorder=3, clip_on=False))
    ys = [p[1] for p in xy]
    _log_x(ax)
    # Headroom above 100 % is small (no top-1 lives there); markers are drawn unclipped, so one at
    # the frame stays whole.
    pad = max(2.0, 0.1 * (max(ys) - min(ys)))
    ax.set_ylim(max(0.0, min(ys) - pad), min(max(ys) + pad, 100 + pad / 4))
    ax.margins(x=0.08)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if v <= 100 + 1e-9 else ""))
    ax.tick_params(which="both", labelsize=font, length=3)  # one length: minor labels level with major ones
    ax.set_xlabel("median ms per call (log scale)", fontsize=font)
    ax.set_ylabel("top-1 %", fontsize=font)
    ax.grid(True, which="both", alpha=0.3)
    _nudge_overlaps(fig, ax, points, xy)
    return _svg(fig, f"s{layout[0]}")


def scatter_legend(report: dict[str, Any]) -> str:
    """The scatter's legend as an HTML list (marker glyph in the point's colour, then the label)."""
    items = []
    for r, marker in _scatter_rows(report):
        filled, hollow = _GLYPHS[marker]
        glyph = filled if r["mode"] == "stream" else hollow
        items.append(f"<li><span class=\"mk\" style=\"color:{_COLORS.get(r['backend'], '#444')}\">{glyph}</span> "
                     f"{html.escape(r['label'])}</li>")
    return "<ul class=\"legend\">" + "".join(items) + "</ul>"


def distributions_svg(report: dict[str, Any], layout: str = "wide") -> str | None:
    """Histogram of call times per timed variant, on a shared log axis; None if nothing is timed."""
    rows = [r for r in report["rows"] if r.get("latency_distribution") and r.get("latency_ms")]
    if not rows:
        return None
    width, font = _LAYOUTS[layout]
    # The variant's name sits above its panel, left-aligned: beside it, long names took a third
    # of a phone's width from the plot.
    fig = _figure(width, (0.75 if layout == "wide" else 0.8) * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    for ax, r in zip(axes, rows):
        d, lat = r["latency_distribution"], r["latency_ms"]
        color = _COLORS.get(r["backend"], "#444")
        ax.stairs(d["counts"], d["edges_ms"], fill=True, color=color, alpha=0.55)
        ax.axvline(lat["p50"], color="black", lw=0.8)
        if lat.get("p99"):
            ax.axvline(lat["p99"], color="black", lw=0.8, ls=":")
        ax.set_yticks([])
        ax.set_title(r["label"], loc="left", fontsize=font, pad=2)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    _log_x(axes[0])
    for ax in axes:
        ax.tick_params(which="both", labelsize=font, length=3)
    axes[-1].set_xlabel("ms per call (log scale)", fontsize=font)
    fig.subplots_adjust(hspace=0.9 if layout == "wide" else 1.1)
    return _svg(fig, f"d{layout[0]}")


_CSS = f"""
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem;overflow-wrap:break-word}}
h1{{font-size:1.5rem}}h2{{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}}
.scroll{{overflow-x:auto;max-width:100%}}
.scroll td:first-child,.scroll th:first-child{{position:sticky;left:0;min-width:8rem;background:#fff}}
.scroll th:first-child{{background:#f3f3f3}}
table{{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}}th,td{{border:1px solid #ddd;padding:.25rem .45rem}}
th{{background:#f3f3f3}}td.n{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}
tr.ref td{{color:#666;font-style:italic}}td.noisy{{background:#fff3cd;cursor:help}}
.warn{{background:#fff3cd;padding:.5rem 1rem;border:1px solid #e0c060}}
.chart svg{{display:block;width:100%;height:auto}}.chart.narrow svg{{max-width:560px}}
@media (max-width:{_BREAK_PX}px){{.chart.wide{{display:none}}}}
@media (min-width:{_BREAK_PX + 1}px){{.chart.narrow{{display:none}}}}
.legend{{list-style:none;padding:0;margin:.5rem 0;display:flex;flex-wrap:wrap;gap:.2rem 1.5rem;font-size:.85rem}}
.mk{{font-size:1.1rem}}
.small{{font-size:.8rem;color:#555}}
pre.cmd{{background:#f6f6f6;padding:.5rem;font-size:.8rem;white-space:pre-wrap;overflow-wrap:anywhere}}
"""


def _label_and_numbers(header: list[str], cells: list[list[str]]) -> str:
    """A table whose first column is a label and the others numbers (right-aligned)."""
    e = html.escape
    return _table(header, ["<tr><td>" + e(c[0]) + "</td>" + "".join(f"<td class=\"n\">{e(x)}</td>" for x in c[1:])
                           + "</tr>" for c in cells])


def _table(header: list[str], body: list[str]) -> str:
    """A table inside a box that scrolls sideways on its own: a phone's page stays its width."""
    return ("<div class=\"scroll\"><table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>")


def _code(text: str) -> str:
    """Escaped text with its `backticked` parts as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _variants_table(report: dict[str, Any]) -> str:
    header, cells = md.table_rows(report)
    noisy_title = html.escape(md.NOISY_LEGEND, quote=True)
    body = []
    for row, c in zip(report["rows"], cells):
        cls = " class=\"ref\"" if row.get("reference") else ""
        tds = [f"<td>{html.escape(c[0])}</td>"]
        for i, x in enumerate(c[1:], start=1):
            noisy = row.get("latency_noisy") and i in md.LATENCY_COLUMNS and x != "-"
            attrs = f" class=\"n noisy\" title=\"{noisy_title}\"" if noisy else " class=\"n\""
            tds.append(f"<td{attrs}>{html.escape(x)}</td>")
        body.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
    return _table(header, body)


def _charts(report: dict[str, Any]) -> list[str]:
    parts = []
    scatter = {layout: scatter_svg(report, layout) for layout in _LAYOUTS}
    if scatter["wide"]:
        parts.append("<h2>Accuracy vs latency</h2><p class=\"small\">Up and left is better. Colour: backend; "
                     "shape: precision (● FP32, ◆ FP16, ▲ INT8; ■ ▼: another variant of the same backend, precision "
                     "and mode); filled: stream, hollow: clip. Markers that would cover each other are spread "
                     "vertically by a marker's height.</p>"
                     + "".join(f"<div class=\"chart {k}\">{v}</div>" for k, v in scatter.items())
                     + scatter_legend(report))
    dist = {layout: distributions_svg(report, layout) for layout in _LAYOUTS}
    if dist["wide"]:
        parts.append("<h2>Latency distributions</h2><p class=\"small\">Calls per time bin, one panel per variant "
                     "on a shared axis; solid line: median, dotted: p99.</p>"
                     + "".join(f"<div class=\"chart {k}\">{v}</div>" for k, v in dist.items()))
    return parts


def render_html(report: dict[str, Any]) -> str:
    """The whole report.html (self-contained)."""
    e = html.escape
    o = report["options"]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>edgevid report: "
             f"{e(report['model'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>edgevid report: {e(report['model'])}</h1>"]
    if report.get("random_weights"):
        parts.append(f"<p class=\"warn\"><strong>Warning</strong>: {e(md.RANDOM_WEIGHTS)}.</p>")
    if not report["complete"]:
        parts.append(f"<p class=\"warn\">Incomplete: interrupted while {e(str(report['interrupted_during']))}.</p>")
    parts.append(f"<p class=\"small\">{e(report['created'])}, {report['seconds']:.0f} s"
                 f"{' (--quick)' if o['quick'] else ''}; checkpoint <code>{e(report['checkpoint'])}</code>; "
                 f"held-out data: {e(report['data'].get('source', '-'))}</p>")
    if (report.get("verdict") or {}).get("text"):
        parts.append(f"<h2>Verdict</h2><p>{e(report['verdict']['text'])}</p>")
        if report["verdict"].get("command"):
            parts.append(f"<pre class=\"cmd\"><code>{e(report['verdict']['command'])}</code></pre>")
    noise = report.get("noise") or {}
    if noise.get("noisy"):
        parts.append(f"<div class=\"warn\"><strong>{e(md.NOISE_TITLE)}</strong>: {_code(md.noise_text(noise))}</div>")
    parts.append("<h2>Findings</h2><ul>" + "".join(f"<li>{e(s)}</li>" for s in report["findings"]) + "</ul>")
    parts += [f"<p>{e(note)}</p>" for note in report.get("notes") or []]
    parts.append("<h2>Variants</h2>" + _variants_table(report))
    if md.any_noisy(report):
        parts.append(f"<p class=\"small\">{e(md.NOISY_LEGEND)}</p>")
    parts.append(f"<p class=\"small\">{e(md.agreement_definition(report))}</p>"
                 f"<p class=\"small\">{_code(md.method_text(report))}</p>")
    header, cells = md.efficiency_table(report)
    if cells:
        parts.append("<h2>Compute where the video changes</h2>" + _label_and_numbers(header, cells))
    header, cells = md.motion_table(report)
    if cells:
        parts.append(f"<h2>{e(md.MOTION_TITLE)}</h2><p class=\"small\">{_code(md.MOTION_TEXT)}</p>"
                     + _label_and_numbers(header, cells))
    header, cells = md.many_cameras_table(report)
    if cells:
        parts.append(f"<h2>{e(md.MANY_TITLE)}</h2><p class=\"small\">{_code(md.MANY_TEXT)}</p>"
                     + _label_and_numbers(header, cells))
    parts += _charts(report)
    what = [r for r in report["rows"] if r.get("what_ran")]
    if what:
        parts.append("<h2>What ran</h2><ul class=\"small\">" + "".join(
            f"<li>{e(r['label'])}: {e(md.what_ran_detail(r))}; artifact <code>{e(md.artifact_text(r))}</code> "
            f"({'reused' if r['artifact']['reused'] else 'built'})</li>" for r in what) + "</ul>")
    if report["skipped"]:
        parts.append("<h2>Skipped</h2><ul>" + "".join(f"<li>{e(s['label'])}: {e(s['reason'])}</li>"
                                                      for s in report["skipped"]) + "</ul>")
    parts.append(f"<h2>Machine</h2><p class=\"small\">{e(md.machine_line(report['machine']))}</p></body></html>")
    page = "\n".join(parts)
    # Belt and braces: the page must not reference anything outside itself.
    if re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page, re.I):
        raise AssertionError("report.html would load an external resource")
    return page
