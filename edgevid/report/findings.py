"""Findings: a few sentences computed from a report's numbers (nothing here is written by hand)."""

from __future__ import annotations

from typing import Any

from edgevid.report.variants import BACKEND_LABELS


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _points(delta: float) -> str:
    """Top-1 difference in points, worded."""
    pts = 100 * delta
    if abs(pts) < 0.05:
        return "the same top-1"
    return f"{abs(pts):.1f} points {'higher' if pts > 0 else 'lower'} top-1"


def _speed(ratio: float, than: str) -> str:
    """``ratio`` = other's time / this one's, worded against ``than``; within 5% is "as fast as"."""
    if 0.95 <= ratio <= 1.05:
        return f"about as fast as {than} ({ratio:.2f}x)"
    return f"{ratio:.1f}x faster than {than}" if ratio > 1 else f"{1 / ratio:.1f}x slower than {than}"


def noisy(report: dict[str, Any]) -> bool:
    """The machine was too busy for the latency figures to be stated (``edgevid.report.noise``)."""
    return bool((report.get("noise") or {}).get("noisy"))


def findings(report: dict[str, Any]) -> list[str]:
    """Sentences about speed, accuracy, agreement and streaming, from ``report``'s rows."""
    rows = [r for r in report["rows"] if not r.get("reference")]
    busy = noisy(report)
    timed = [r for r in rows if r.get("latency_ms")] if not busy else []
    by_key = {(r["backend"], r["mode"], r["precision"]): r for r in rows if not r.get("strict")}
    out: list[str] = []
    if report.get("random_weights"):
        out.append(f"{report['model']} ships no checkpoint, so this report ran seeded random weights: its "
                   "accuracy figures are chance, its latency is real (pass --checkpoint or --weights for accuracy).")
    if not report.get("complete", True):
        out.append(f"This report is incomplete: it was interrupted while {report.get('interrupted_during')}; "
                   "the rows below are those measured before.")
    if busy:
        noise = report["noise"]
        out.append(f"Latency is not stated as findings: the machine was busy while it was measured "
                   f"({noise['summary']}); the table's latency cells are marked. {noise['advice'].capitalize()}; `--rounds 16` gives "
                   "more samples per variant.")
    # Lower precisions against FP32 on the same backend and mode.
    for r in rows:
        if r["precision"] == "fp32":
            continue
        base = by_key.get((r["backend"], r["mode"], "fp32"))
        ratio = r["ratios"].get("speedup_vs_fp32") if r.get("latency_ms") and not busy else None
        if not base:
            continue
        ran = (base.get("what_ran") or {}).get("inference_precision")
        than = "FP32" + (f" (run at {ran}, the plugin's default)" if base["backend"] == "openvino"
                         and ran not in (None, "f32", "unknown") else "")
        accuracy = (f"{_points(r['accuracy']['top1'] - base['accuracy']['top1'])} "
                    f"({_pct(r['accuracy']['top1'])} vs {_pct(base['accuracy']['top1'])})")
        if ratio:
            out.append(f"{r['precision'].upper()} on {BACKEND_LABELS[r['backend']]} ({r['mode']}) is "
                       f"{_speed(ratio, than)} with {accuracy}.")
        elif busy:
            out.append(f"{r['precision'].upper()} on {BACKEND_LABELS[r['backend']]} ({r['mode']}) against FP32: "
                       f"{accuracy}.")
    if timed:
        fastest = min(timed, key=lambda r: r["latency_ms"]["p50"])
        vs_torch = fastest["ratios"].get("speedup_vs_torch")
        torch_part = f", {_speed(vs_torch, 'torch eager FP32')}" if vs_torch else ""
        out.append(f"Fastest: {fastest['label']}, median {fastest['latency_ms']['p50']:.2f} ms per "
                   f"{fastest['unit']}{torch_part}; top-1 {_pct(fastest['accuracy']['top1'])}.")
    for r in timed:
        ratio = r["ratios"].get("clip_rerun_over_stream_step")
        clip = by_key.get((r["backend"], "clip", r["precision"]))
        if r.get("strict"):
            continue
        if ratio and clip and clip.get("latency_ms"):
            out.append(f"Streaming saving on {BACKEND_LABELS[r['backend']]} {r['precision'].upper()}: a stream step "
                       f"costs {r['latency_ms']['p50']:.2f} ms per new frame, re-running the clip model "
                       f"{clip['latency_ms']['p50']:.2f} ms ({ratio:.1f}x more).")
    streamed = _streamed_vs_clip(report)
    if streamed:
        out.append(streamed)
    short = [r for r in rows if r["accuracy"].get("no_prediction")]
    if short:  # counted as uniform scores, so their accuracy is chance: say so, never hide it in a top-1
        most = max(short, key=lambda r: r["accuracy"]["no_prediction"])
        out.append(f"{most['accuracy']['no_prediction']} of {most['accuracy']['videos']} videos are too short for "
                   f"any prediction of {most['label']}" + (f" and {len(short) - 1} more variants" if len(short) > 1 else "")
                   + ": they count as uniform scores (chance) in its accuracy.")
    if rows:
        best, worst = max(rows, key=lambda r: r["accuracy"]["top1"]), min(rows, key=lambda r: r["accuracy"]["top1"])
        n = rows[0]["accuracy"]["videos"]
        if best is worst or best["accuracy"]["top1"] == worst["accuracy"]["top1"]:
            out.append(f"Every variant has top-1 {_pct(best['accuracy']['top1'])} on the {n} held-out videos.")
        else:
            out.append(f"Top-1 on the {n} held-out videos ranges from {_pct(worst['accuracy']['top1'])} "
                       f"({worst['label']}) to {_pct(best['accuracy']['top1'])} ({best['label']}).")
        least = min(rows, key=lambda r: (r["agreement"]["prediction_top1"] or 0.0))
        agree = least["agreement"]
        if agree["prediction_top1"] is not None:
            out.append(f"Lowest agreement with the torch FP32 reference: {least['label']}, same top-1 on "
                       f"{_pct(agree['prediction_top1'])} of {agree['predictions']} predictions "
                       f"(max |logit difference| {agree['max_abs_logit_diff']:.3g}).")
    eff = {e["method"]: e for e in report.get("efficiency") or []}
    gated, every = eff.get("delta gate (defer)"), eff.get("every step")
    if gated and every:
        wall = "" if busy or not gated["seconds_ratio"] else f", in {gated['seconds_ratio']:.2f}x the wall time"
        out.append(f"Frame-delta gating ({gated['variant']}, videos with still stretches) ran {_pct(gated['calls_fraction'])} "
                   f"of the stream steps at top-1 {_pct(gated['top1'])} (every step: {_pct(every['top1'])}){wall}.")
    salient, windows = eff.get(next((m for m in eff if m.startswith("salient")), ""), None), eff.get("every window")
    if salient and windows:
        wall = "" if busy or not salient["seconds_ratio"] else \
            f", {_speed(1 / salient['seconds_ratio'], 'running every window')} in wall time"
        out.append(f"{salient['method'].capitalize()} reached top-1 {_pct(salient['top1'])} against "
                   f"{_pct(windows['top1'])} when every window runs, with {_pct(salient['calls_fraction'])} of "
                   f"its network calls{wall}.")
    motion = report.get("motion") or []
    own = next((m for m in motion if m["artifact"]), None)
    steps = [r["latency_ms"]["p50"] for r in rows if r.get("latency_ms") and r["mode"] == "stream"]
    if own and own["ms_per_frame_p50"] is not None and steps and not busy:
        net = min(steps)
        others = ", ".join(f"{m['method']} {m['ms_per_frame_p50']:.2f} ms" for m in motion
                           if not m["artifact"] and m["ms_per_frame_p50"] is not None)
        out.append(f"Motion input: {own['method']} (this model's) costs {own['ms_per_frame_p50']:.2f} ms per frame on "
                   f"the host, the fastest network step {net:.2f} ms: the {own['kind']} is "
                   f"{own['ms_per_frame_p50'] / net:.1f}x the network" + (f" (other algorithms: {others})." if others
                                                                           else "."))
    hints = sorted({r["what_ran"].get("inference_precision") for r in rows if r["backend"] == "openvino"} - {None})
    if hints:
        default = (report.get("machine") or {}).get("openvino_default_precision")
        out.append(f"OpenVINO compiled with inference precision {', '.join(hints)}, read back from the compiled "
                   f"models" + (f"; {default} is its CPU plugin's default here, what an OpenVINO user gets unless "
                                "they ask for f32 (the 'strict f32' rows)" if default not in (None, "f32") else "")
                   + ".")
    for s in report.get("skipped", [])[:1]:
        more = len(report["skipped"]) - 1
        out.append(f"Skipped {s['label']}{f' and {more} more' if more else ''}: {s['reason']}.")
    return out


def _streamed_vs_clip(report: dict[str, Any]) -> str | None:
    """The torch stream's final-label top-1 against the torch clip model's on the same videos, where both ran."""
    refs = {r["mode"]: r for r in report["rows"] if r.get("reference")}
    stream, clip = refs.get("stream"), refs.get("clip")
    if not stream or not clip:
        return None
    a, b = stream["accuracy"]["top1"], clip["accuracy"]["top1"]
    return (f"Streamed against clip (torch FP32, same weights): each video streamed from its first frame gives a final "
            f"top-1 of {_pct(a)}, the clip model on its last frames {_pct(b)} ({_points(a - b)}).")
