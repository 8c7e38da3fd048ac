"""Runtime benchmark: where the streaming states live, and what the session layer costs.

Measured in one run, on the default 224 px streaming TSM-MobileNetV2 (random weights: speed
does not depend on them), exported with ``edgevid.export.api.export_model``:

1. ONNX Runtime: IOBinding with ping-pong OrtValues (the runtime) vs feeding the states as
   numpy arrays each step (``session.run``).
2. OpenVINO: stateful model (make-stateful, variables inside the plugin) vs the same model
   with explicit state inputs/outputs (the runtime's ``stateful=False``).
3. Session overhead: ``StreamSession.push_input`` vs the raw backend ``stream.step`` (goal:
   under 3%); also the bookkeeping time measured inside each call (push time minus its own
   step), which stays precise on a busy machine where the A/B ratio drifts by a few %.
4. Streaming (one step per new frame) vs re-running the T-frame clip model per new frame.

Each comparison is a pair timed call by call in ABBA order, so load changes on the machine
hit both sides alike; the table reports medians.

    python benchmarks/bench_runtime.py [--iters 400] [--work DIR] [--threads N] [--json out.json]
    python benchmarks/bench_runtime.py --tiny     # 64 px, width 0.5, few calls: a smoke run (seconds)

Artifacts go to a fresh temporary folder, removed at the end, unless ``--work DIR`` names a
folder to keep them in (and reuse them from) across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

MODEL = "tsm-mobilenetv2-online"


def export_artifacts(work: Path, size: int, frames: int, width_mult: float | None = None) -> tuple[Path, Path]:
    """Stream (OpenVINO target: ONNX + IR) and clip (ONNX) artifacts, reused when present."""
    from edgevid.export.api import RandomWeightsWarning, export_model

    tag = f"{size}" + (f"-w{width_mult}" if width_mult else "")
    stream, clip = work / f"stream-{tag}", work / f"clip-{tag}-t{frames}"
    common = {"size": size, "frames": frames, "width_mult": width_mult, "validate": False,
              "force": True, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        if not (stream / "manifest.json").is_file():
            export_model(MODEL, stream, mode="stream", target="openvino", **common)
        if not (clip / "manifest.json").is_file():
            export_model(MODEL, clip, mode="clip", target="onnxruntime", **common)
    return stream, clip


def paired(a: Callable[[], object], b: Callable[[], object], iters: int, warmup: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per-call seconds of ``a`` and ``b``, called in ABBA order ``iters`` times each.

    A pair is timed on its own (not mixed with the other library's calls, whose thread pools
    would be cold or hot depending on order), and ABBA cancels the order bias within it.
    """
    for _ in range(warmup):
        a()
        b()
    times = (np.empty(iters), np.empty(iters))
    for i in range(iters):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            fn = (a, b)[k]
            t0 = time.perf_counter()
            fn()
            times[k][i] = time.perf_counter() - t0
    return times


def ort_numpy_stepper(runner, frame: np.ndarray) -> Callable[[], object]:
    """A step that feeds every state as numpy and takes the new states back as numpy."""
    m = runner.manifest
    states = {s.input: np.full(s.shape, s.init, np.float32) for s in m.states}
    names = ["logits", *m.state_output_names]

    def step() -> object:
        outs = runner.session.run(names, {"frame": frame, **states})
        for pair, value in zip(m.states, outs[1:]):
            states[pair.input] = value
        return outs[0]

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=400, help="timed calls per streaming variant")
    parser.add_argument("--clip-iters", type=int, default=60, help="timed calls of the clip model")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8, help="T of the clip model")
    parser.add_argument("--threads", type=int, default=None, help="backend threads (default: theirs)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the exported artifacts in this folder and reuse them across runs "
                        "(default: a fresh temporary folder, removed at the end)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke-test settings: 64 px, width 0.5, T=4, 20 calls per variant")
    args = parser.parse_args()
    width_mult = None
    if args.tiny:
        args.size, args.frames, args.iters, args.clip_iters, width_mult = 64, 4, 20, 6, 0.5
    if min(args.iters, args.clip_iters) < 1:
        parser.error("--iters and --clip-iters must be >= 1")
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        return bench(args, args.work, width_mult)
    work = Path(tempfile.mkdtemp(prefix="edgevid-bench-runtime-"))
    try:
        return bench(args, work, width_mult)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path, width_mult: float | None) -> int:
    """Export (or reuse) the artifacts in ``work``, time every pair, print the table."""
    from edgevid import runtime
    from edgevid.runtime.preprocess import preprocess_frame

    stream_dir, clip_dir = export_artifacts(work, args.size, args.frames, width_mult)
    opts = {"threads": args.threads} if args.threads else {}
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)

    ort = runtime.load(stream_dir, "onnxruntime", **opts)
    ov = runtime.load(stream_dir, "openvino", **opts)
    ov_explicit = runtime.load(stream_dir, "openvino", stateful=False, **opts)
    clip_runner = runtime.load(clip_dir, "onnxruntime", **opts)
    x = preprocess_frame(bgr, ort.manifest.preprocess)  # (3, H, W) float32
    frame = x[None]
    clip = np.repeat(x[None, None], args.frames, axis=1)

    ort_stream, raw_stream = ort.open_stream(), ort.open_stream()
    # every=1: one model step per call, like the raw step it is compared with (the default
    # steps every sampling.stride-th frame and returns None in between).
    session = runtime.StreamSession(ort, topk=5, smooth=4, every=1)
    ov_stream, ov_explicit_stream = ov.open_stream(), ov_explicit.open_stream()
    in_call: list[float] = []

    def push() -> None:
        t0 = time.perf_counter()
        pred = session.push_input(x)
        assert pred is not None
        in_call.append(time.perf_counter() - t0 - pred.latency_ms["infer"] / 1e3)

    print(f"timing {args.iters} calls per variant, in pairs...", file=sys.stderr)
    t: dict[str, np.ndarray] = {}
    t["ort_iobinding"], t["ort_numpy"] = paired(lambda: ort_stream.step(frame), ort_numpy_stepper(ort, frame), args.iters)
    t["ov_stateful"], t["ov_explicit"] = paired(lambda: ov_stream.step(frame), lambda: ov_explicit_stream.step(frame),
                                                args.iters)
    t["session_push_input"], t["raw_step"] = paired(push, lambda: raw_stream.step(frame), args.iters)
    in_call = in_call[10:] or in_call  # drop the warm-up calls
    t["clip_per_frame"], t["stream_per_frame"] = paired(lambda: clip_runner.infer({"frames": clip}),
                                                        lambda: ort_stream.step(frame), args.clip_iters, warmup=3)
    med = {k: float(np.median(v)) * 1e3 for k, v in t.items()}
    p10 = {k: float(np.percentile(v, 10)) * 1e3 for k, v in t.items()}
    p90 = {k: float(np.percentile(v, 90)) * 1e3 for k, v in t.items()}
    ratios = {
        "ort_numpy_over_iobinding": med["ort_numpy"] / med["ort_iobinding"],
        "ov_explicit_over_stateful": med["ov_explicit"] / med["ov_stateful"],
        "session_over_raw_step": med["session_push_input"] / med["raw_step"],
        "session_bookkeeping_fraction": float(np.median(in_call)) * 1e3 / med["raw_step"],
        "clip_over_stream_per_frame": med["clip_per_frame"] / med["stream_per_frame"],
    }

    import onnxruntime
    import openvino

    width = f", width {width_mult}" if width_mult else ""
    print(f"\nedgevid runtime benchmark: {MODEL}, {args.size} px{width}, random weights, clip T={args.frames}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, threads={args.threads or 'default'}, "
          f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}")
    rows = [
        ("ORT stream step, IOBinding ping-pong (runtime)", "ort_iobinding"),
        ("ORT stream step, states fed as numpy", "ort_numpy"),
        ("OpenVINO stream step, stateful (runtime)", "ov_stateful"),
        ("OpenVINO stream step, explicit state I/O", "ov_explicit"),
        ("StreamSession.push_input (ORT)", "session_push_input"),
        ("raw BackendStream.step (ORT)", "raw_step"),
        (f"ORT clip model, {args.frames} frames, per new frame", "clip_per_frame"),
        ("ORT stream step, per new frame (same run)", "stream_per_frame"),
    ]
    print(f"\n{'variant':<50}{'median ms':>11}{'p10 ms':>9}{'p90 ms':>9}")
    for label, key in rows:
        print(f"{label:<50}{med[key]:>11.2f}{p10[key]:>9.2f}{p90[key]:>9.2f}")
    print("\nratios (median times)")
    print(f"  ORT numpy states / IOBinding           {ratios['ort_numpy_over_iobinding']:6.3f}x")
    print(f"  OpenVINO explicit I/O / stateful       {ratios['ov_explicit_over_stateful']:6.3f}x")
    print(f"  session push / raw step                {ratios['session_over_raw_step']:6.3f}x  "
          f"(bookkeeping inside push: {100 * ratios['session_bookkeeping_fraction']:.2f}% of a step; goal < 3%)")
    print(f"  clip re-run / stream step, per frame   {ratios['clip_over_stream_per_frame']:6.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"median_ms": med, "p10_ms": p10, "p90_ms": p90, "ratios": ratios,
                                         "iters": args.iters, "threads": args.threads}, indent=2) + "\n")
    for closable in (session, ort_stream, raw_stream, ov_stream, ov_explicit_stream):
        closable.close()
    for runner in (ort, ov, ov_explicit, clip_runner):
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
