"""`edgevid bench`: latency of one exported artifact on one backend (torch-free)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edgevid.commands import argtypes

# Calls the timed loop may make (edgevid.report.bench.MAX_CALLS; not imported from there: it needs numpy,
# and `edgevid --help` must not).
MAX_CALLS = 10_000_000


def add_parser(subparsers: Any) -> None:
    """Register `edgevid bench` (cheap: no heavy imports)."""
    p = subparsers.add_parser(
        "bench", help="latency of an exported artifact on one backend (like benchmark_app/trtexec)",
        description="Time the model call of an artifact as the runtime makes it (a stream step, or a clip "
        "inference): min/mean/p50/p90/p99/max, throughput, load time, peak memory, and what ran "
        "(execution providers, threads, OpenVINO's real inference precision).",
    )
    p.add_argument("artifact", metavar="ARTIFACT",
                   help="artifact directory (manifest.json + model files), or a bundle from `edgevid deploy`")
    p.add_argument("--backend", metavar="B",
                   help="onnxruntime | openvino | tensorrt (aliases ort, ov, trt); default: the manifest's target")
    p.add_argument("--dla-core", type=argtypes.int_range(0, 15), metavar="N",
                   help="tensorrt: build the engine for DLA core N (a Jetson has 0 or 1)")
    p.add_argument("--threads", type=argtypes.threads, metavar="N", help="backend threads (default: the backend's)")
    p.add_argument("--warmup", type=argtypes.int_range(0, MAX_CALLS), default=10, metavar="K",
                   help="untimed calls first (default 10)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--iterations", type=argtypes.positive, metavar="N",
                        help=f"timed calls (default 200, at most {MAX_CALLS})")
    amount.add_argument("--seconds", type=argtypes.seconds, metavar="S",
                        help="time calls for S seconds instead (at most a week)")
    p.add_argument("--precision-hint", choices=("f32", "bf16", "default"),
                   help="openvino: INFERENCE_PRECISION_HINT to compile with (default: what the export validated, "
                   "f32 for fp32 artifacts; 'default' lets the CPU plugin choose, bf16 where the CPU has it)")
    p.add_argument("--layers", action="store_true",
                   help="then profile the call per layer type with the backend's own profiler (ONNX Runtime's "
                        "profiling JSON, OpenVINO's PERF_COUNT): which layers run in int8, bf16 or f32, and what "
                        "the glue costs")
    p.add_argument("--streams", type=argtypes.int_range(1, 256), metavar="N",
                   help="stream mode: time ticks of N streams (one new frame each) stepped as N independent "
                   "sessions against one batched call (and, on OpenVINO, N stateful requests in flight), "
                   "interleaved in one run: frames/s and tick p50/p99 of each (--iterations: ticks per way, "
                   "default 100)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (bench.schema.json; with "
                   "--streams, schema edgevid.bench_streams)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Benchmark and print; returns the exit code."""
    from edgevid.report.bench import bench_artifact, format_bench

    if args.streams:
        from edgevid.errors import EdgevidError
        from edgevid.report.bench_streams import bench_streams, format_streams

        if args.layers:
            raise EdgevidError("--layers profiles one call: not with --streams")
        result = bench_streams(args.artifact, args.backend, streams=args.streams, threads=args.threads,
                               warmup=args.warmup, iterations=args.iterations, seconds=args.seconds,
                               precision_hint=args.precision_hint, progress=not args.quiet and not args.json,
                               dla_core=args.dla_core)
        print(json.dumps(result, indent=2) if args.json else format_streams(result))
        return 0
    result = bench_artifact(args.artifact, args.backend, threads=args.threads, warmup=args.warmup,
                            iterations=args.iterations, seconds=args.seconds, precision_hint=args.precision_hint,
                            progress=not args.quiet and not args.json, dla_core=args.dla_core,
                            layers=args.layers)
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0
