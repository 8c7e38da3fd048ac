"""report.md: the comparison table, the findings, per-class accuracy, the machine and the data."""

from __future__ import annotations

import os
from typing import Any


def _f(x: Any, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{suffix}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


AGREE_HEADER = "agree w/ torch, % of preds"
# Columns of the main table computed from the timed calls: a row measured on a noisy machine
# marks them (NOISY_MARK here, a class and a tooltip in the HTML page).
LATENCY_COLUMNS = (6, 7, 8, 9, 10, 11)
NOISY_MARK = "~"
NOISY_LEGEND = (f"{NOISY_MARK}: latency of this row measured while the machine was busy with other work; "
                "approximate, compare it with care.")
RANDOM_WEIGHTS = "random weights: accuracy is meaningless, the latency is real"
NOISE_TITLE = "Latency not reliable"


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the main table (shared with the HTML page)."""
    header = ["variant", "top-1 %", "top-5 %", "order-pair %", AGREE_HEADER, "max |Δlogit|", "p50 ms",
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
        if r.get("latency_noisy"):
            for i in LATENCY_COLUMNS:
                if cells[-1][i] != "-":
                    cells[-1][i] += NOISY_MARK
    return header, cells


def agreement_definition(report: dict[str, Any]) -> str:
    """What the agreement column counts (under the main table, in both renderers)."""
    counts = sorted({(r.get("agreement") or {}).get("predictions") for r in report["rows"]} - {None})
    n = f"{counts[0]} per variant here, " if len(counts) == 1 else ""
    return (f"{AGREE_HEADER}: the share of predictions ({n}one per stream step or clip re-run) whose top-1 class "
            "is the torch FP32 model's on the same frames; not the share of videos.")


def noise_text(noise: dict[str, Any]) -> str:
    """The noise warning's text: what was seen, then what to do, as sentences."""
    parts = [str(x).strip().rstrip(".") for x in (noise.get("summary"), noise.get("advice")) if x]
    return " ".join(f"{x[0].upper()}{x[1:]}." for x in parts if x)


def any_noisy(report: dict[str, Any]) -> bool:
    """Whether a row's latency was measured on a noisy machine."""
    return any(r.get("latency_noisy") for r in report["rows"])


def md_cell(text: Any) -> str:
    """One Markdown table cell: a literal `|` would split the cell (and a `\\` before it would escape it)."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|")


def _md_table(header: list[str], cells: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(map(md_cell, header)) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(map(md_cell, c)) + " |" for c in cells]
    return out


def artifact_text(row: dict[str, Any]) -> str:
    """The file the backend loaded (the artifact folder when the row does not name it).

    `model_file` is relative to the artifact, or absolute (a TensorRT engine from the engine cache).
    """
    path, model_file = row["artifact"]["path"], (row.get("what_ran") or {}).get("model_file")
    if not model_file:
        return path
    return model_file if os.path.isabs(model_file) else os.path.join(path, model_file)


def what_ran_detail(row: dict[str, Any]) -> str:
    """Providers / device, precision and threads a row ran with."""
    w = row["what_ran"]
    if "providers" in w:
        return f"providers {', '.join(w['providers'])}, threads {w.get('threads')}"
    if row["backend"] == "openvino":
        return f"{w.get('device')} inference precision {w.get('inference_precision')}, threads {w.get('threads')}"
    return str(w.get("device"))


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


MOTION_TITLE = "Motion input per frame"


def motion_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the motion-cost table (shared with the HTML page; [] without motion rows)."""
    header = ["motion input", "ms per frame (p50)", "mean ms", "frames timed", "this model's"]
    cells = [[m["method"], _f(m["ms_per_frame_p50"], ".3f"), _f(m["ms_per_frame_mean"], ".3f"), str(m["frames"]),
              "yes" if m["artifact"] else ""] for m in report.get("motion") or []]
    return header, cells


MOTION_TEXT = ("Host time of the model's motion input per frame (`edgevid.runtime.motion.MotionState`, what "
               "`edgevid run` calls: geometry, grey, flow or differences, quantisation), for every algorithm on the "
               "same held-out frames; the network's time per step is the Variants table's p50.")


def motion_lines(report: dict[str, Any]) -> list[str]:
    """The report.md section on the motion input's cost ([] without it)."""
    header, cells = motion_table(report)
    return [f"## {MOTION_TITLE}", "", MOTION_TEXT, "", *_md_table(header, cells), ""] if cells else []


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


MANY_TITLE = "Many cameras"
_WAYS = {"independent": "N sessions, one call each", "batched": "batched, one call per tick",
         "requests": "N stateful requests in flight"}


def many_cameras_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the many-cameras table (shared with the HTML page; [] without it)."""
    header = ["variant", "streams", "way", "frames/s", "tick p50 ms", "tick p99 ms", "vs N sessions"]
    cells = []
    for row in report.get("many_cameras") or []:
        if "skipped" in row:
            cells.append([row["label"], str(row["streams"]), f"skipped: {row['skipped']}", "", "", "", ""])
            continue
        noisy = " (noisy)" if (row.get("noise") or {}).get("noisy") else ""
        for way, w in row["ways"].items():
            best = " (fastest)" if way == row["fastest"] and way != "independent" else ""
            cells.append([row["label"] + noisy, str(row["streams"]), _WAYS.get(way, way) + best,
                          _f(w["frames_per_s"], ".1f"), _f(w["tick_ms"]["p50"], ".2f"), _f(w["tick_ms"]["p99"], ".2f"),
                          _f(w["vs_independent"], ".2f", "x")])
    return header, cells


MANY_TEXT = ("N cameras on one box: a tick is one new frame for each of N streams (`edgevid run --video A --video B "
             "...`, `edgevid bench --streams N`). N sessions step them one call each; batched steps them in one "
             "call with batch N, each stream's states a row of batched buffers; OpenVINO can also keep N stateful "
             "requests in flight. The ways are timed in interleaved blocks; frames/s is N over the mean tick.")


def many_cameras_lines(report: dict[str, Any]) -> list[str]:
    """The report.md section on many cameras ([] without it)."""
    header, cells = many_cameras_table(report)
    return [f"## {MANY_TITLE}", "", MANY_TEXT, "", *_md_table(header, cells), ""] if cells else []


def method_text(report: dict[str, Any]) -> str:
    """How accuracy and latency were measured (under the main table; `code` in backticks)."""
    o = report["options"]
    return ("Accuracy: each video through `edgevid.runtime` as `edgevid run` steps it (stream: a step every "
            "`sampling.stride` frames, scores averaged over the last `sampling.frames` steps; clip: the clip model "
            "re-run per sampled frame); the video's label is the last prediction. Latency: one model call (stream "
            f"step or clip inference), {o['latency_rounds']} rounds of {o['latency_block']} calls per variant, "
            "interleaved ABBA in one process; x torch / x fp32: median latency ratios. RSS +: resident memory added "
            "by loading the variant.")


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report.md."""
    o = report["options"]
    lines = [f"# edgevid report: {report['model']}", ""]
    if report.get("random_weights"):
        lines += [f"**Warning**: {RANDOM_WEIGHTS}.", ""]
    if not report["complete"]:
        lines += [f"**Incomplete**: interrupted while {report['interrupted_during']}.", ""]
    lines += [f"{report['created']}, {report['seconds']:.0f} s{' (--quick)' if o['quick'] else ''}; checkpoint "
              f"`{report['checkpoint']}`; held-out data: {report['data'].get('source', '-')}.", ""]
    if (report.get("verdict") or {}).get("text"):
        lines += ["## Verdict", "", report["verdict"]["text"], ""]
        if report["verdict"].get("command"):
            lines += ["```bash", report["verdict"]["command"], "```", ""]
    noise = report.get("noise") or {}
    if noise.get("noisy"):
        lines += [f"**{NOISE_TITLE}**: {noise_text(noise)}", ""]
    lines += ["## Findings", ""] + [f"- {s}" for s in report["findings"]] + [""]
    for note in report.get("notes") or []:
        lines += [note, ""]
    lines += ["## Variants", ""]
    header, cells = table_rows(report)
    lines += _md_table(header, cells) + [""]
    if any_noisy(report):
        lines += [NOISY_LEGEND, ""]
    lines += [agreement_definition(report), "", method_text(report), ""]
    lines += efficiency_lines(report)
    lines += motion_lines(report)
    lines += many_cameras_lines(report)
    what = [r for r in report["rows"] if r.get("what_ran")]
    if what:
        lines += ["## What ran", ""]
        for r in what:
            lines.append(f"- {r['label']}: {what_ran_detail(r)}; artifact `{artifact_text(r)}` "
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
