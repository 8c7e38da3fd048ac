"""The report's answer to "which variant should I deploy, and why", and the notes a reader needs.

The rule: among the variants whose top-1 is within ``within_points`` of the best, the one with
the lowest median latency per call. A stream step and a clip inference both produce one
prediction per ``sampling.stride`` frames as ``edgevid run`` runs them, so their per-call
latencies compare as cost per prediction. Nothing is recommended on speed when the machine
was too busy to time (``report["noise"]``), nor on accuracy for random weights.
"""

from __future__ import annotations

from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def deploy_command(report: dict[str, Any], row: dict[str, Any]) -> str:
    """The export (and, where it needs a flag, run) command that reproduces ``row``."""
    weights = "" if report.get("checkpoint") in (None, "default") or report.get("random_weights") else \
        f" --checkpoint {report['checkpoint']}"
    target = row["backend"]  # every backend is also the export target that makes its artifact
    out = f"exports/{report['model']}-{row['mode']}-{row['precision']}-{target}"
    cmd = (f"edgevid export --model {report['model']}{weights} --mode {row['mode']} --precision {row['precision']} "
           f"--target {target} -o {out}")
    if row["backend"] == "openvino" and row["precision"] == "fp32" and not row.get("strict"):
        cmd += f" && edgevid run {out} --precision-hint default --video VIDEO"
    return cmd


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """``{"variant", "label", "text", "command"}``: the recommendation, or why there is none."""
    within = float((report.get("options") or {}).get("within_points", 1.0))
    points = f"{within:g} point{'' if within == 1 else 's'}"
    rows = [r for r in report["rows"] if not r.get("reference")]
    none = {"variant": None, "label": None, "command": None}
    if not rows:
        return none | {"text": "No recommendation: no variant was measured."}
    busy = bool((report.get("noise") or {}).get("noisy"))
    timed = [r for r in rows if r.get("latency_ms")]
    if report.get("random_weights"):
        if busy or not timed:
            return none | {"text": "No recommendation: random weights say nothing about accuracy, and the latency "
                           "was not measured reliably."}
        fastest = min(timed, key=lambda r: r["latency_ms"]["p50"])
        return {"variant": fastest["variant"], "label": fastest["label"], "command": deploy_command(report, fastest),
                "text": f"On latency alone (random weights: accuracy unknown): {fastest['label']}, median "
                        f"{fastest['latency_ms']['p50']:.2f} ms per {fastest['unit']}. Measure accuracy with "
                        "your checkpoint before choosing."}
    best = max(r["accuracy"]["top1"] for r in rows)
    close = [r for r in rows if r["accuracy"]["top1"] >= best - within / 100 - 1e-9]
    if busy or not timed:
        why = "the machine was too busy to trust the latency" if busy else "no latency was measured"
        top = max(close, key=lambda r: (r["accuracy"]["top1"], (r.get("agreement") or {}).get("prediction_top1") or 0))
        return {"variant": None, "label": None, "command": None,
                "text": f"No recommendation on speed: {why}. Within {points} of the best top-1 "
                        f"({_pct(best)}): {', '.join(r['label'] for r in close)}; run the report again on a quiet "
                        f"machine to pick the fastest of them (most accurate: {top['label']})."}
    candidates = [r for r in close if r.get("latency_ms")]
    if not candidates:
        return none | {"text": f"No recommendation: none of the variants within {points} of the best "
                               "top-1 has a latency measured (interrupted)."}
    pick = min(candidates, key=lambda r: r["latency_ms"]["p50"])
    others = sorted((r for r in candidates if r is not pick), key=lambda r: r["latency_ms"]["p50"])
    agree = (pick.get("agreement") or {}).get("prediction_top1")
    parts = [f"Deploy {pick['label']}: of the {len(candidates)} variants within {points} of the best top-1 "
             f"({_pct(best)}), it has the lowest median latency, {pick['latency_ms']['p50']:.2f} ms per "
             f"{pick['unit']}, at top-1 {_pct(pick['accuracy']['top1'])}"
             + (f" (same top-1 as torch on {_pct(agree)} of predictions)" if agree is not None else "") + "."]
    if others:
        nxt = others[0]
        parts.append(f"Next: {nxt['label']}, {nxt['latency_ms']['p50'] / pick['latency_ms']['p50']:.2f}x its "
                     f"latency at top-1 {_pct(nxt['accuracy']['top1'])}.")
    dropped = [r for r in rows if r not in close]
    if dropped:
        parts.append(f"Left out for accuracy: {', '.join(r['label'] for r in dropped)}.")
    if pick.get("latency_noisy"):
        parts.append("Its own timing blocks disagreed: confirm on a quiet machine.")
    return {"variant": pick["variant"], "label": pick["label"], "command": deploy_command(report, pick),
            "text": " ".join(parts)}


def notes(report: dict[str, Any]) -> list[str]:
    """Explanations the numbers need, computed from them: stream vs clip accuracy, agreement."""
    out: list[str] = []
    rows = [r for r in report["rows"] if not r.get("reference")]
    stream = [r for r in rows if r["mode"] == "stream"]
    clip = [r for r in rows if r["mode"] == "clip"]
    frames = [v["frames"] for v in (report.get("data") or {}).get("videos") or []]
    if stream and clip:
        s_top = max(r["accuracy"]["top1"] for r in stream)
        c_top = max(r["accuracy"]["top1"] for r in clip)
        if frames:
            lo, hi = min(frames), max(frames)
            length = f"{lo}" if lo == hi else f"{lo} to {hi}"
            out.append(
                f"Stream vs clip accuracy (best stream {_pct(s_top)}, best clip {_pct(c_top)}): both score each video "
                f"by its last prediction. The held-out videos are {length} frames long. A stream step sees "
                "every frame since the video began, and its score is the softmax averaged over the last "
                "`sampling.frames` steps, the first steps of the video (warm-up: the temporal states still hold "
                "zeros) included; the clip model re-runs on the last `sampling.frames` sampled frames and sees them "
                "all at once. On videos this short the warm-up steps weigh in the stream's score; on a camera they "
                "are a second or two at the start.")
    if rows and any(r.get("agreement") for r in rows):
        out.append("Agreement with torch is counted two ways: per prediction (the table: the share of all "
                   "predictions, every step or clip, whose top-1 equals the torch FP32 model's on the same frames) "
                   "and per video (the console: the share of videos whose final label equals torch's).")
    return out
