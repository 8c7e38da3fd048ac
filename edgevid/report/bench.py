"""Latency of one artifact on one backend, the way the runtime calls it (benchmark_app / trtexec style).

The timed call (``edgevid.report.call``) is one model call as a session makes it:

- stream mode: one ``BackendStream.step`` (one sampled frame in, logits out; the states stay
  in the backend). Timing the backend stream directly, not ``StreamSession.push_input``,
  matters for strided models: a session returns None without running the model on the
  frames between two steps, which would time nothing.
- clip mode: one ``Runner.infer`` on a T-frame clip (what a ClipSession runs per prediction).

Torch-free: numpy, the runtime and its backend only.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.commands import argtypes
from edgevid.errors import EdgevidError
from edgevid.report import layers as layer_profiles  # `layers` is bench_artifact's flag
from edgevid.report.call import call_unit, make_call
from edgevid.report.call import example_frame as example_frame  # re-exported for report.latency

BENCH_SCHEMA_VERSION = 1
PRECISION_HINTS = ("f32", "bf16", "default")
PERCENTILES = (50, 90, 99)
# The timed loop's bounds: a typo must not run for ever or grow the list of timings without end.
MAX_CALLS = 10_000_000  # warm-up or timed calls (80 MB of timings)
MAX_SECONDS = argtypes.MAX_SECONDS  # a week, as `--seconds` parses it


def time_calls(fn: Callable[[], object], *, warmup: int, iterations: int | None = None,
               seconds: float | None = None, progress: bool = False, desc: str = "measuring") -> np.ndarray:
    """Milliseconds of each call of ``fn`` after ``warmup`` untimed calls.

    Runs ``iterations`` calls, or as many as fit in ``seconds`` (at least one).
    """
    from tqdm import tqdm

    for _ in range(warmup):
        fn()
    times: list[float] = []
    bar = tqdm(total=iterations if iterations else None, desc=desc, unit="call", file=sys.stderr,
               disable=not progress, leave=False)
    deadline = time.perf_counter() + seconds if seconds else None
    try:
        while True:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            bar.update(1)
            if (iterations is not None and len(times) >= iterations) or len(times) >= MAX_CALLS:
                break
            if deadline is not None and time.perf_counter() >= deadline:
                break
    finally:
        bar.close()
    return np.asarray(times)


def summarize(ms: np.ndarray) -> dict[str, float | int]:
    """min/mean/std/p50/p90/p99/max in ms and the call count."""
    ms = np.asarray(ms, np.float64)
    if ms.size == 0:
        raise ValueError("no timed calls to summarize")
    out: dict[str, float | int] = {"count": int(ms.size), "min": float(ms.min()), "mean": float(ms.mean()),
                                   "std": float(ms.std())}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(ms, p))
    out["max"] = float(ms.max())
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def throughput(summary: dict[str, Any], manifest: Any) -> dict[str, float]:
    """Calls per second (from the mean) and the video frame rate that keeps up with.

    A stream step, or a clip re-run per new sampled frame, consumes one sampled frame,
    i.e. ``sampling.stride`` video frames.
    """
    calls = 1000.0 / summary["mean"] if summary["mean"] > 0 else float("inf")
    return {"calls_per_s": round(calls, 2), "video_fps": round(calls * manifest.sampling.stride, 2)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024 if sys.platform != "darwin" else peak / 2**20, 1)


def current_rss_mb() -> float:
    """Resident memory of this process now (MiB)."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def model_file(runner: Any) -> str | None:
    """The model file this loaded runner read, relative to its artifact (absolute when outside it).

    From what the runner recorded, not from the artifact's target: an FP32 export for OpenVINO
    also holds the ``model.onnx`` that ONNX Runtime loads, and a TensorRT engine may come from
    the engine cache instead of the artifact. None for a backend that reads no local file.
    """
    if runner.name == "onnxruntime":  # the file its verified_file("onnx") loaded
        path = runner.artifact.path_of("onnx")
    elif runner.name == "openvino":  # the IR, or the ONNX when the artifact has no IR or source="onnx"
        path = Path(runner.model_path)
    elif runner.name == "tensorrt":  # shipped or cached engine; None: built from the ONNX, cache not writable
        path = Path(runner.engine_path) if runner.engine_path else runner.artifact.path_of("onnx")
    else:
        return None
    root = Path(runner.artifact.directory)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def what_ran(runner: Any) -> dict[str, Any]:
    """What the backend really runs: the model file it loaded, providers and threads, OpenVINO's
    compiled precision, TensorRT's engine."""
    info: dict[str, Any] = {"backend": runner.name, "requested_threads": runner.options.get("threads"),
                            "model_file": model_file(runner)}
    if runner.name == "onnxruntime":
        info["providers"] = list(runner.session.get_providers())
        threads = runner.session.get_session_options().intra_op_num_threads
        info["threads"] = threads if threads > 0 else "default (one per physical core)"
    elif runner.name == "openvino":
        props = runner.compiled_properties() if hasattr(runner, "compiled_properties") else {}
        info["device"] = getattr(runner, "device", "CPU")
        info["requested"] = runner.compile_config()
        info["inference_precision"] = props.get("INFERENCE_PRECISION_HINT", "unknown")
        info["threads"] = props.get("INFERENCE_NUM_THREADS", "unknown")
        info["compiled"] = props
    elif runner.name == "tensorrt":
        facts, opts = runner.facts, runner.build_options
        info.update({"device": f"{facts.gpu} (sm {facts.compute_capability}, {facts.sm_count} SMs)",
                     "tensorrt": facts.tensorrt, "engine": runner.engine_source,
                     "fp16_kernels": opts.fp16_kernels, "dla_core": opts.dla_core})
    else:
        info["device"] = getattr(runner, "device", "unknown")
    return info


def artifact_files_mb(runner: Any) -> float:
    """Size of the model files this backend reads (MiB)."""
    files = runner.manifest.files
    roles = {"openvino": ("openvino_xml", "openvino_bin"), "tensorrt": ("engine",)}.get(runner.name, ("onnx",))
    if runner.name == "openvino" and "openvino_xml" not in files:
        roles = ("onnx",)
    if runner.name == "tensorrt" and "engine" not in files:
        roles = ("onnx",)
    total = 0
    for role in roles:
        path = Path(runner.artifact.directory) / files.get(role, "")
        if role in files and path.is_file():
            total += path.stat().st_size
    return round(total / 2**20, 3)


def resolve_artifact(path: str | os.PathLike) -> Path:
    """``path`` itself, or the artifact inside it when it is a bundle from ``edgevid deploy``."""
    from edgevid.deploy import bundle_artifact

    return bundle_artifact(path) or Path(path)


def runner_options(backend: str, threads: int | None, precision_hint: str | None,
                   dla_core: int | None = None) -> dict[str, Any]:
    """Backend options for ``runtime.load``; ``precision_hint`` is OpenVINO's (f32, bf16, default),
    ``dla_core`` TensorRT's."""
    opts: dict[str, Any] = {}
    if dla_core is not None:
        if backend != "tensorrt":
            raise EdgevidError(f"--dla-core applies to the tensorrt backend only, not {backend}")
        if dla_core < 0:
            raise EdgevidError(f"--dla-core must be >= 0, got {dla_core}")
        opts["dla_core"] = int(dla_core)
    if threads:
        opts["threads"] = int(threads)
    if precision_hint:
        if precision_hint not in PRECISION_HINTS:
            raise EdgevidError(f"unknown precision hint {precision_hint!r}; choose one of {', '.join(PRECISION_HINTS)}")
        if backend != "openvino":
            raise EdgevidError(f"--precision-hint applies to openvino only, not {backend}")
        opts["inference_precision"] = precision_hint
    return opts


def check_loop(warmup: int, iterations: int | None, seconds: float | None) -> None:
    """Refuse a timed loop that would not end (``inf`` seconds) or outgrow memory, before loading anything."""
    if iterations is not None and not 1 <= iterations <= MAX_CALLS:
        raise EdgevidError(f"--iterations must be between 1 and {MAX_CALLS}, got {iterations}")
    if seconds is not None and not 0 < seconds <= MAX_SECONDS:  # also refuses nan
        raise EdgevidError(f"--seconds must be > 0 and at most {MAX_SECONDS:g} (a week), got {seconds}")
    if not 0 <= warmup <= MAX_CALLS:
        raise EdgevidError(f"--warmup must be between 0 and {MAX_CALLS}, got {warmup}")


def bench_artifact(artifact: str | os.PathLike, backend: str | None = None, *, threads: int | None = None,
                   warmup: int = 10, iterations: int | None = None, seconds: float | None = None,
                   precision_hint: str | None = None, progress: bool = False,
                   dla_core: int | None = None, layers: bool = False) -> dict[str, Any]:
    """Load ``artifact`` on ``backend`` and time its model call; the bench JSON (bench.schema.json).

    Default: 200 iterations. ``load_ms`` covers loading and compiling (OpenVINO compiles the
    streaming model when the first stream opens); ``first_call_ms`` is the cold first call.
    ``layers``: afterwards, profile the same call per layer type in a second load
    (``edgevid.report.layers``), so the profiler does not slow the timed calls.
    """
    from edgevid import runtime
    from edgevid.report.machine import describe_machine

    check_loop(warmup, iterations, seconds)
    if iterations is None and seconds is None:
        iterations = 200
    artifact = resolve_artifact(artifact)
    manifest = runtime.open_artifact(artifact).manifest
    name = runtime.canonical_name(backend or manifest.target)
    opts = runner_options(name, threads, precision_hint, dla_core)
    if layers:  # refused before the timed run, not after it
        layer_profiles.check_backend(name)
    rss_before = current_rss_mb()
    t0 = time.perf_counter()
    runner = runtime.load(artifact, name, **opts)
    try:
        call, cleanup = make_call(runner)
        load_ms = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        call()
        first_ms = (time.perf_counter() - t1) * 1e3
        from edgevid.report.noise import NoiseMonitor

        monitor = NoiseMonitor().start()  # was the machine quiet enough for these figures?
        times = time_calls(call, warmup=warmup, iterations=iterations, seconds=seconds, progress=progress)
        noise = monitor.summary({"call": [float(t) for t in times]}, max(1, int(times.size) // 8))
        summary = summarize(times)
        result = {
            "schema": "edgevid.bench",
            "schema_version": BENCH_SCHEMA_VERSION,
            "artifact": str(Path(artifact)),
            "model": manifest.model,
            "mode": manifest.mode,
            "precision": manifest.precision,
            "backend": name,
            "unit": call_unit(manifest),
            "input_shape": [int(d) if not isinstance(d, str) else 1 for d in runner.frame_input.shape],
            "sampling": {"frames": manifest.sampling.frames, "stride": manifest.sampling.stride},
            "warmup": warmup,
            "iterations": int(times.size),
            "seconds_requested": seconds,
            "load_ms": round(load_ms, 3),
            "first_call_ms": round(first_ms, 3),
            "latency_ms": summary,
            "throughput": throughput(summary, manifest),
            "file_mb": artifact_files_mb(runner),
            "memory_mb": {"rss_increase": round(current_rss_mb() - rss_before, 1), "peak_rss": peak_rss_mb()},
            "what_ran": what_ran(runner),
            "machine": describe_machine(),
            "noise": noise,
        }
        if manifest.motion is not None:
            result["motion"] = motion_per_frame(manifest)
        cleanup()
    finally:
        runner.close()
    if layers:
        result["layers"] = layer_profiles.layer_profile(artifact, name, opts)
    return result


def motion_per_frame(manifest: Any, frames: int = 60) -> dict[str, Any]:
    """The host's motion input (flow, RGB differences) per frame, timed on deterministic 320x240 frames
    that drift one pixel a frame (``edgevid.runtime.motion.MotionState``, what the sessions call)."""
    from edgevid.report.motion_cost import label
    from edgevid.runtime.motion import MotionState

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (240, 320 + frames, 3), dtype=np.uint8)
    state, times = MotionState(manifest.motion, manifest.preprocess), []
    for i in range(frames):
        state.push(np.ascontiguousarray(base[:, i:i + 320]))
        if i:
            times.append(state.last_ms)
    return {"method": label(manifest.motion), "frames": len(times),
            "ms_per_frame_p50": round(float(np.median(times)), 4), "ms_per_frame_mean": round(float(np.mean(times)), 4)}


def format_bench(result: dict[str, Any]) -> str:
    """The human-readable bench summary."""
    lat, ran = result["latency_ms"], result["what_ran"]
    detail = (f"providers {','.join(ran['providers'])}, threads {ran['threads']}" if "providers" in ran else
              f"{ran.get('device', '')} inference precision {ran.get('inference_precision')}, threads "
              f"{ran.get('threads')}" if result["backend"] == "openvino" else str(ran.get("device", "")))
    lines = [
        f"{result['model']} {result['mode']} {result['precision']} on {result['backend']} ({detail})",
        f"timed call: {result['unit']}, input {result['input_shape']}, sampling {result['sampling']['frames']} "
        f"frames stride {result['sampling']['stride']}",
        f"load+compile {result['load_ms']:.1f} ms, first call {result['first_call_ms']:.1f} ms, "
        f"{result['warmup']} warm-up + {result['iterations']} timed calls",
        f"latency ms   min {lat['min']:.3f}  mean {lat['mean']:.3f}  p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  "
        f"p99 {lat['p99']:.3f}  max {lat['max']:.3f}",
        f"throughput   {result['throughput']['calls_per_s']:.1f} calls/s (keeps up with "
        f"{result['throughput']['video_fps']:.1f} fps video at stride {result['sampling']['stride']})",
        f"model files {result['file_mb']:.2f} MiB, peak RSS {result['memory_mb']['peak_rss']:.0f} MiB",
    ]
    if result.get("motion"):
        m = result["motion"]
        lines.append(f"motion input {m['method']}: {m['ms_per_frame_p50']:.3f} ms per frame on the host (median of "
                     f"{m['frames']}), not part of the timed call above")
    noise = result.get("noise") or {}
    if noise.get("noisy") or (noise.get("block_spread") or {}).get("call", 1.0) > 1.5:
        why = noise["summary"] if noise.get("noisy") else \
            f"the median of the same calls varied {noise['block_spread']['call']:.1f}x over the run"
        lines.append(f"note: these latencies are not reliable: {why}; {noise['advice']}")
    if result.get("layers"):
        lines += layer_profiles.format_layers(result["layers"])
    return "\n".join(lines)
