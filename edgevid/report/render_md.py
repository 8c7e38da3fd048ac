"""report.md: the comparison table, the findings, per-class accuracy, the machine and the data."""

from __future__ import annotations

from typing import Any


def _f(x: Any, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{suffix}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the main table (shared with the HTML page)."""
    header = ["variant", "top-1 %", "top-5 %", "order-pair %", "agree w/ torch %", "max |Δlogit|", "p50 ms",
              "p90 ms", "p99 ms", "calls/s", "x torch", "x fp32", "load ms", "file MiB", "RSS + MiB"]
    cells = []
    for r in report["rows"]:
        a, g, lat = r["accuracy"], r.get("agreement") or {}, r.get("latency_ms") or {}
        ratios = r.get("ratios") or {}
        cells.append([
            r["label"], _pct(a["top1"]), _pct(a["top5"]), _pct(a["order_pair"]),
            "ref" if r.get("reference") else _pct(g.get("prediction_top1")),
            "ref" if r.get("reference") else _f(g.get("max_abs_logit_diff"), ".3g"),
            _f(lat.get("p50")), _f(lat.get("p90")), _f(lat.get("p99")), _f(r.get("throughput_per_s"), ".0f"),
            _f(ratios.get("speedup_vs_torch"), ".2f", "x"), _f(ratios.get("speedup_vs_fp32"), ".2f", "x"),
            _f(r.get("load_ms"), ".0f"), _f((r.get("artifact") or {}).get("file_mb")),
            _f((r.get("memory_mb") or {}).get("rss_increase"), ".0f"),
        ])
    return header, cells


def _md_table(header: list[str], cells: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(c) + " |" for c in cells]
    return out


def machine_line(m: dict[str, Any]) -> str:
    """One line about the machine."""
    flags = ", ".join(m["cpu_flags"]) or "none of avx512/vnni/amx"
    gpu = m["gpu"]
    gpu_text = f"GPU {gpu.get('name', '?')}, TensorRT {gpu.get('tensorrt', '?')}" if gpu.get("available") else \
        f"no TensorRT GPU ({gpu.get('reason')})"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (f"{m['cpu']} ({m['arch']}), {m['cores_physical']} physical / {m['cores_logical']} logical cores "
            f"({m['cores_usable']} usable), flags: {flags}; {m['memory_gib']} GiB; {gpu_text}; {m['os']}, "
            f"Python {m['python']}; {versions}")


def efficiency_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the gating / salient-window table (shared with the HTML page)."""
    header = ["method", "top-1 %", "network calls", "calls vs full", "wall s", "time vs full"]
    cells = [[e["method"], _pct(e["top1"]), str(e["network_calls"]), _f(e["calls_fraction"], ".0%"),
              _f(e["seconds"]), _f(e["seconds_ratio"], ".2f", "x")] for e in report.get("efficiency") or []]
    return header, cells


def efficiency_lines(report: dict[str, Any]) -> list[str]:
    """The report.md section on gating and salient windows ([] without those rows)."""
    rows = report.get("efficiency") or []
    if not rows:
        return []
    header, cells = efficiency_table(report)
    return ["## Compute where the video changes", "",
            f"{rows[0]['variant']} on {rows[0]['data']} (actions inside still stretches, camera noise), as `edgevid run` "
            "runs them: every step, `--gate delta` (skip a step while the 32x32 grey thumbnail changes less than 1 "
            "grey level; defer: the skipped frames never reach the network; repeat: the first still frame is stepped "
            "once more), and `--salient 2` against every window. \"vs full\": against every step / every window.", "",
            *_md_table(header, cells), ""]


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report.md."""
    o = report["options"]
    lines = [f"# edgevid report: {report['model']}", ""]
    if not report["complete"]:
        lines += [f"**Incomplete**: interrupted while {report['interrupted_during']}.", ""]
    lines += [f"{report['created']}, {report['seconds']:.0f} s{' (--quick)' if o['quick'] else ''}; checkpoint "
              f"`{report['checkpoint']}`; held-out data: {report['data'].get('source', '-')}.", ""]
    lines += ["## Findings", ""] + [f"- {s}" for s in report["findings"]] + [""]
    lines += ["## Variants", ""]
    header, cells = table_rows(report)
    lines += _md_table(header, cells) + [""]
    lines += [
        "Accuracy: each video through `edgevid.runtime` as `edgevid run` steps it (stream: a step every "
        "`sampling.stride` frames, scores averaged over the last `sampling.frames` steps; clip: the clip model re-run "
        "per sampled frame); the video's label is the last prediction. Agreement: same top-1 as the torch FP32 model "
        "on the same frames, per prediction. Latency: one model call (stream step or clip inference), "
        f"{o['latency_rounds']} rounds of {o['latency_block']} calls per variant, interleaved ABBA in one process; "
        "x torch / x fp32: median latency ratios. RSS +: resident memory added by loading the variant.", ""]
    lines += efficiency_lines(report)
    what = [r for r in report["rows"] if r.get("what_ran")]
    if what:
        lines += ["## What ran", ""]
        for r in what:
            w = r["what_ran"]
            detail = (f"providers {', '.join(w['providers'])}, threads {w['threads']}" if "providers" in w else
                      f"{w.get('device')} inference precision {w.get('inference_precision')}, threads {w.get('threads')}"
                      if r["backend"] == "openvino" else str(w.get("device")))
            lines.append(f"- {r['label']}: {detail}; artifact `{r['artifact']['path']}` "
                         f"({'reused' if r['artifact']['reused'] else 'built'})")
        lines.append("")
    if report["skipped"]:
        lines += ["## Skipped", ""] + [f"- {s['label']}: {s['reason']}" for s in report["skipped"]] + [""]
    classes = report["data"].get("classes") or []
    if classes and report["rows"]:
        lines += ["## Per-class top-1 %", ""]
        header = ["class"] + [r["label"] for r in report["rows"]]
        cells = [[c] + [_pct(r["accuracy"]["per_class"].get(c)) for r in report["rows"]] for c in classes]
        lines += _md_table(header, cells) + [""]
    lines += ["## Machine", "", machine_line(report["machine"]), ""]
    return "\n".join(lines)
