"""`edgevid bench`: latency of one exported artifact on one backend (torch-free)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


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
    p.add_argument("--dla-core", type=int, metavar="N", help="tensorrt: build the engine for DLA core N")
    p.add_argument("--threads", type=_positive, metavar="N", help="backend threads (default: the backend's)")
    p.add_argument("--warmup", type=_non_negative, default=10, metavar="K", help="untimed calls first (default 10)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--iterations", type=_positive, metavar="N", help="timed calls (default 200)")
    amount.add_argument("--seconds", type=_seconds, metavar="S", help="time calls for S seconds instead")
    p.add_argument("--precision-hint", choices=("f32", "bf16", "default"),
                   help="openvino: INFERENCE_PRECISION_HINT to compile with (default: what the export validated, "
                   "f32 for fp32 artifacts; 'default' lets the CPU plugin choose, bf16 where the CPU has it)")
    p.add_argument("--layers", action="store_true",
                   help="then profile the call per layer type with the backend's own profiler (ONNX Runtime's "
                        "profiling JSON, OpenVINO's PERF_COUNT): which layers run in int8, bf16 or f32, and what "
                        "the glue costs")
    p.add_argument("--json", action="store_true", help="print the result as JSON (bench.schema.json)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Benchmark and print; returns the exit code."""
    from edgevid.report.bench import bench_artifact, format_bench

    result = bench_artifact(args.artifact, args.backend, threads=args.threads, warmup=args.warmup,
                            iterations=args.iterations, seconds=args.seconds, precision_hint=args.precision_hint,
                            progress=not args.quiet and not args.json, dla_core=args.dla_core,
                            layers=args.layers)
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0
