"""Many cameras on one CPU: N streams batched in one call per tick against N independent sessions, in one run.

The shipped TSM (MobileNetV2 width 0.5, online shift) exported in stream mode at each size, then
on ONNX Runtime and OpenVINO (``--threads`` each, default 2): ticks of N streams, one new frame
each, stepped

- as N independent sessions (one call each, one after another: the naive way);
- batched (one call, batch N, the states rows of batched buffers: ``edgevid.runtime.backends.batch``);
- OpenVINO also as N stateful infer requests in flight (THROUGHPUT streams);

interleaved in blocks of 10 ticks, the order rotating (``edgevid.report.bench_streams``). A plain
batch-N call of the same graph with numpy states is timed alongside, against N batch-1 calls: the
ceiling of what batching can save here, so the state handling's own cost shows.

    python benchmarks/bench_many_streams.py [--streams 8] [--sizes 112 224] [--ticks 200] [--threads 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _cpu() -> str:
    from edgevid.report.machine import _cpuinfo

    return _cpuinfo()[0] or platform.processor() or platform.machine()


def _plain_calls(runner, streams: int, ticks: int) -> float:
    """frames/s of a batch-N ``infer`` over N batch-1 ``infer`` calls (states fed from numpy, never kept)."""
    from edgevid.report.call import example_frame
    from edgevid.runtime.backends.base import initial_state

    m = runner.manifest
    x = np.stack([example_frame(m, seed=k) for k in range(streams)])
    one = [{m.inputs[0].name: x[k : k + 1], **{p.input: initial_state(p) for p in m.states}} for k in range(streams)]
    many = {m.inputs[0].name: x, **{p.input: np.repeat(initial_state(p), streams, axis=0) for p in m.states}}
    times = {"one": [], "many": []}
    for _ in range(3):
        runner.infer(many)
        for feeds in one:
            runner.infer(feeds)
    for i in range(ticks // 5):
        for way in (("one", "many") if i % 2 == 0 else ("many", "one")):
            t0 = time.perf_counter()
            for _ in range(5):
                if way == "many":
                    runner.infer(many)
                else:
                    for feeds in one:
                        runner.infer(feeds)
            times[way].append(time.perf_counter() - t0)
    return float(np.mean(times["one"]) / np.mean(times["many"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    p.add_argument("--ticks", type=int, default=200, help="timed ticks per way")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, help="keep the exports here (default: a temp folder)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()

    from edgevid import runtime
    from edgevid.pipeline import export
    from edgevid.report.bench_streams import measure_ways

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-many-streams-"))
    rows = []
    for size in args.sizes:
        art = work / f"tsm-stream-{size}"
        if not (art / "manifest.json").is_file():
            export("tsm", art, mode="stream", target="openvino", size=size, progress=False, force=True)
        for backend in ("onnxruntime", "openvino"):
            with runtime.load(art, backend, threads=args.threads) as runner:
                measured = measure_ways(runner, args.streams, warmup=10, iterations=args.ticks)
                ceiling = _plain_calls(runner, args.streams, args.ticks // 2)
            ways = measured["ways"]
            for way, w in ways.items():
                rows.append({"size": size, "backend": backend, "way": way, "frames_per_s": w["frames_per_s"],
                             "tick_p50": w["tick_ms"]["p50"], "tick_p99": w["tick_ms"]["p99"],
                             "vs_independent": w["vs_independent"], "plain_batch_ratio": round(ceiling, 3),
                             "noisy": bool(measured["noise"].get("noisy"))})
            print(f"{size} px {backend}: " + ", ".join(f"{w} {ways[w]['vs_independent']:.2f}x" for w in ways)
                  + f" (plain batch-{args.streams} call {ceiling:.2f}x)", file=sys.stderr, flush=True)
    print(f"CPU: {_cpu()}; {args.streams} streams, {args.threads} threads, {args.ticks} ticks per way; shipped TSM "
          "(MobileNetV2 w0.5, online shift), FP32 stream export")
    print("| px | backend | way | frames/s | tick p50 ms | tick p99 ms | vs N sessions | plain batch-N call vs N calls |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['backend']} | {r['way']}{' (noisy)' if r['noisy'] else ''} | "
              f"{r['frames_per_s']:.0f} | {r['tick_p50']:.2f} | {r['tick_p99']:.2f} | {r['vs_independent']:.2f}x | "
              f"{r['plain_batch_ratio']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": _cpu(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
