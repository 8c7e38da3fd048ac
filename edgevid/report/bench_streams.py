"""N streams of one artifact: batched against N independent sessions, in one run (``edgevid bench --streams N``).

A tick is one new frame for each of N streams. The ways to step it:

- ``independent``: N backend streams, one call each, one after another (N ``StreamSession`` s);
- ``batched``: one call with batch N, the states rows of batched buffers
  (``edgevid.runtime.backends.batch``); OpenVINO's ``batch`` way;
- ``requests`` (OpenVINO): N stateful infer requests started together on a THROUGHPUT-compiled
  model, then waited for.

The ways are timed in interleaved blocks (a few ticks of each in turn, the order rotating), so a
machine that gets busier halfway slows them alike. Frames/s is N over the mean tick time.
Torch-free: numpy, the runtime and its backend only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.report.bench import check_loop, resolve_artifact, runner_options, summarize, what_ran
from edgevid.report.call import example_frame

MAX_STREAMS = 256
BLOCK = 10  # ticks of one way before the next way's turn (shorter blocks: their medians jitter on a busy VM)


def ways_for(backend: str) -> list[str]:
    """The ways a backend can step N streams; the first is the naive baseline."""
    return ["independent", "batched", "requests"] if backend == "openvino" else ["independent", "batched"]


def _open(runner: Any, way: str) -> Any:
    from edgevid.runtime.backends.batch import StreamsOneByOne

    if way == "independent":
        return StreamsOneByOne(runner)
    if runner.name == "openvino":
        return runner.open_batch("batch" if way == "batched" else "requests")
    return runner.open_batch()


def bench_streams(artifact: str | os.PathLike, backend: str | None = None, *, streams: int, threads: int | None = None,
                  warmup: int = 10, iterations: int | None = None, seconds: float | None = None,
                  precision_hint: str | None = None, progress: bool = False,
                  dla_core: int | None = None) -> dict[str, Any]:
    """Ticks of ``streams`` streams, each way of ``ways_for`` the backend; JSON-ready.

    ``iterations``: timed ticks per way (default 100); ``seconds``: time the ways for that long
    in all instead.
    """
    from edgevid import runtime
    from edgevid.report.machine import describe_machine

    check_loop(warmup, iterations, seconds)
    if not 1 <= streams <= MAX_STREAMS:
        raise EdgevidError(f"--streams must be between 1 and {MAX_STREAMS}, got {streams}")
    if iterations is None and seconds is None:
        iterations = 100
    artifact = resolve_artifact(artifact)
    manifest = runtime.open_artifact(artifact).manifest
    if manifest.mode != "stream":
        raise EdgevidError(f"{manifest.model} was exported in clip mode: --streams times stream steps "
                           "(export with --mode stream)")
    name = runtime.canonical_name(backend or manifest.target)
    options = runner_options(name, threads, precision_hint, dla_core)
    if name == "tensorrt":  # an optimization profile up to batch N
        options["max_batch"] = streams
    with runtime.load(artifact, name, **options) as runner:
        measured = measure_ways(runner, streams, warmup=warmup, iterations=iterations, seconds=seconds,
                                progress=progress)
        ran = what_ran(runner)
        shape = [streams, *[int(d) for d in runner.frame_input.shape[1:]]]
    return {"schema": "edgevid.bench_streams", "schema_version": 1, "artifact": str(Path(artifact)),
            "model": manifest.model, "precision": manifest.precision, "backend": name, "streams": streams,
            "input_shape": shape, "warmup": warmup, **measured, "what_ran": ran, "machine": describe_machine()}


def measure_ways(runner: Any, streams: int, *, warmup: int = 10, iterations: int | None = 100,
                 seconds: float | None = None, progress: bool = False) -> dict[str, Any]:
    """Time every way of ``ways_for`` on a loaded stream runner, interleaved (see the module docstring).

    Returns ``ticks_per_way``, ``block``, ``ways`` (per way: ``tick_ms`` summary, ``frames_per_s``,
    ``vs_independent``), ``fastest`` and ``noise``.
    """
    from tqdm import tqdm

    from edgevid.report.noise import NoiseMonitor

    ways = ways_for(runner.name)
    # Every stream gets its own frame (different seeds): equal rows could hide a row mix-up.
    frames = np.stack([example_frame(runner.manifest, seed=k) for k in range(streams)])
    opened = {way: _open(runner, way) for way in ways}
    times: dict[str, list[float]] = {way: [] for way in ways}
    try:
        handles = {way: [batch.open() for _ in range(streams)] for way, batch in opened.items()}
        for way, batch in opened.items():
            for _ in range(warmup):
                batch.step(handles[way], frames)
        monitor = NoiseMonitor().start()
        deadline = time.perf_counter() + seconds if seconds else None
        with tqdm(total=iterations * len(ways) if iterations else None, desc=f"{streams} streams", unit="tick",
                  disable=not progress, leave=False) as bar:
            turn = 0
            while True:
                k = turn % len(ways)
                for way in ways[k:] + ways[:k]:  # the order rotates: no way always runs first
                    for _ in range(BLOCK):
                        t0 = time.perf_counter()
                        opened[way].step(handles[way], frames)
                        times[way].append((time.perf_counter() - t0) * 1e3)
                    bar.update(BLOCK)
                turn += 1
                if iterations is not None and len(times[ways[0]]) >= iterations:
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
        noise = monitor.summary(times, BLOCK)
    finally:
        for batch in opened.values():
            batch.close()
    rows = {}
    for way in ways:
        summary = summarize(np.asarray(times[way]))
        rows[way] = {"tick_ms": summary, "frames_per_s": round(streams * 1000.0 / summary["mean"], 2)}
    for way in ways:
        rows[way]["vs_independent"] = round(rows[way]["frames_per_s"] / rows["independent"]["frames_per_s"], 3)
    return {"ticks_per_way": len(times[ways[0]]), "block": BLOCK, "ways": rows,
            "fastest": max(ways, key=lambda w: rows[w]["frames_per_s"]), "noise": noise}


_WORDS = {"independent": "independent sessions (one call each)", "batched": "batched (one call, batch N)",
          "requests": "N stateful requests in flight"}


def format_streams(result: dict[str, Any]) -> str:
    """The human-readable comparison."""
    n = result["streams"]
    lines = [f"{result['model']} stream {result['precision']} on {result['backend']}: {n} streams, "
             f"{result['ticks_per_way']} ticks per way, interleaved in blocks of {result['block']}",
             f"{'way':<40}{'frames/s':>10}{'tick p50':>10}{'tick p99':>10}{'vs indep.':>11}"]
    for way, row in result["ways"].items():
        lat = row["tick_ms"]
        lines.append(f"{_WORDS[way]:<40}{row['frames_per_s']:10.1f}{lat['p50']:10.2f}{lat['p99']:10.2f}"
                     f"{row['vs_independent']:10.2f}x")
    lines.append(f"fastest: {_WORDS[result['fastest']]}; tick times in ms")
    noise = result.get("noise") or {}
    if noise.get("noisy"):
        lines.append(f"note: these figures are not reliable: {noise['summary']}; {noise['advice']}")
    return "\n".join(lines)
