"""Where one model call spends its time, per layer type, from each backend's own profiler.

``edgevid bench --layers`` (and ``benchmarks/bench_int8.py``) use this to show which layers run
as integer kernels and which stay in float, and what the glue around them costs: ONNX Runtime's
profiling JSON summed per operator type (convolutions split into 1x1 / depthwise / kxk by their
weight shape), OpenVINO's ``PERF_COUNT`` summed per (layer type, kernel), the kernel naming the
precision it ran in (``..._I8``, ``..._bf16``, ``..._f32``). The profilers add a cost of their
own per node, so the totals are above the timed latency; compare layers, not totals.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from edgevid.report.call import make_call

DEFAULT_CALLS = 50
PROFILED_BACKENDS = ("onnxruntime", "openvino")


def check_backend(backend: str) -> None:
    """``--layers`` needs a backend whose profiler this module reads."""
    from edgevid.errors import EdgevidError

    if backend not in PROFILED_BACKENDS:
        raise EdgevidError(f"--layers reads ONNX Runtime's or OpenVINO's profiler, not {backend}'s")


def conv_kind(weight_shape: list[int]) -> str:
    """``1x1``, ``depthwise`` or ``KxK`` for a Conv weight of shape (out, in/groups, kh, kw, ...)."""
    if len(weight_shape) < 4:
        return "?"
    kernel = weight_shape[2:]
    if all(k == 1 for k in kernel):
        return "1x1"
    return "depthwise" if weight_shape[1] == 1 else "x".join(str(k) for k in kernel)


def conv_kinds(onnx_path: str | os.PathLike) -> dict[str, str]:
    """Conv node name -> kind, from its weight (behind a DequantizeLinear in a QDQ graph)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    return {node.name: conv_kind(shapes[node.input[1]]) for node in graph.node
            if node.op_type == "Conv" and node.input[1] in shapes}


def ort_trace_per_layer(trace: list[dict[str, Any]], kinds: dict[str, str], calls: int) -> dict[str, float]:
    """Microseconds per call per operator type from an ONNX Runtime profiling trace."""
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event["args"]["op_name"]
            # ORT keeps the graph's node name, adding "_token_N" where it rewrote the node (QDQ fusion, NHWC)
            node = event["name"][: -len("_kernel_time")].split("_token_")[0]
            kind = kinds.get(node) or _kind_from_shapes(event["args"])
            per_op[f"{op} ({kind})" if "Conv" in op else op] += event["dur"] / calls
    return per_op


def _kind_from_shapes(args: dict[str, Any]) -> str:
    """For convs ORT renamed (FP32 NCHWc layout): the weight shape its profiler records as input 1."""
    shapes = [next(iter(d.values())) for d in args.get("input_type_shape", [])]
    return conv_kind(shapes[1]) if len(shapes) > 1 else "?"


def ov_per_layer(infos: Any, per: dict[str, float], calls: int) -> None:
    """Add one call's OpenVINO profiling info (executed layers) to ``per``, in microseconds per call."""
    for info in infos:
        if info.status == info.Status.EXECUTED:
            per[f"{info.node_type} [{info.exec_type}]"] += info.real_time.total_seconds() * 1e6 / calls


def layer_profile(artifact: str | os.PathLike, backend: str, options: dict[str, Any],
                  calls: int = DEFAULT_CALLS) -> dict[str, Any]:
    """Profile ``calls`` model calls (as ``edgevid bench`` times them) of ``artifact`` on ``backend``.

    Returns ``{"calls": N, "layers": [{"layer", "us_per_call", "share"}, ...]}``, slowest first.
    """
    from edgevid import runtime

    check_backend(backend)
    per: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory(prefix="edgevid-profile-") as tmp:
        extra = {"profile_prefix": str(Path(tmp) / "ort")} if backend == "onnxruntime" else {"perf_count": True}
        runner = runtime.load(artifact, backend, **options, **extra)
        try:
            call, cleanup = make_call(runner)
            for _ in range(5):  # warm-up calls are profiled too: ORT's trace starts at load
                call()
            for _ in range(calls):
                call()
                if backend == "openvino":
                    ov_per_layer(runner.last_profiling_info(), per, calls)
            cleanup()
            if backend == "onnxruntime":
                trace = json.loads(Path(runner.session.end_profiling()).read_text())
                per = ort_trace_per_layer(trace, conv_kinds(runner.artifact.verified_file("onnx")), calls + 5)
        finally:
            runner.close()
    total = sum(per.values()) or 1.0
    layers = [{"layer": name, "us_per_call": round(us, 1), "share": round(us / total, 4)}
              for name, us in sorted(per.items(), key=lambda kv: -kv[1])]
    return {"calls": calls, "layers": layers}


def format_layers(profile: dict[str, Any], top: int = 12) -> list[str]:
    """The per-layer table, slowest first."""
    lines = [f"per layer type ({profile['calls']} profiled calls; the profiler's own cost included):",
             f"  {'layer [kernel]':<56} {'us/call':>9} {'share':>7}"]
    for row in profile["layers"][:top]:
        lines.append(f"  {row['layer'][:56]:<56} {row['us_per_call']:9.0f} {row['share']:7.1%}")
    rest = profile["layers"][top:]
    if rest:
        lines.append(f"  {f'({len(rest)} more layer types)':<56} {sum(r['us_per_call'] for r in rest):9.0f}")
    return lines
