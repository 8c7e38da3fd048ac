"""Latency of several variants in one process, interleaved so that their ratios are fair.

On a shared machine the load drifts over a run; timing variant A for a minute and then B
would put the drift into the A/B ratio. Here every variant gets a block of calls in turn, in
ABBA order (round r: A B C, round r+1: C B A), so drift hits all variants alike. The unit
is a block, not a single call, because the libraries keep thread pools that spin after a
call (ONNX Runtime, OpenMP in torch): a call right after another library's would pay for
the other's spinning threads or its own cold pool. The first call of each block is untimed
for that reason.

Besides the artifacts, the same rotation times torch eager (FP32, the model the artifacts
were exported from), so the report states speedups over it measured side by side.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def torch_call(model: Any, streaming: Any, manifest: Any, threads: int | None = None) -> Callable[[], object]:
    """One torch eager FP32 call of the mode's unit: a streaming step (states carried) or a clip."""
    import torch

    from edgevid.report.bench import example_frame
    from edgevid.runtime.crosscheck import float_states, state_encodings

    if threads:
        torch.set_num_threads(int(threads))
    x = torch.from_numpy(example_frame(manifest)[None])
    if manifest.mode == "stream":
        states = [torch.full((1, *s.shape[1:]), s.init) for s in float_states(manifest.states, state_encodings(manifest))]

        def step() -> object:
            nonlocal states
            with torch.no_grad():
                logits, *states = streaming(x, *states)
            return logits

        return step
    clip = x[:, None].repeat(1, manifest.sampling.frames, 1, 1, 1).contiguous()

    def infer() -> object:
        with torch.no_grad():
            return model(clip)

    return infer


def interleaved(calls: dict[str, Callable[[], object]], *, rounds: int, block: int, warmup: int = 3,
                samples: dict[str, list[float]] | None = None, progress: bool = False,
                deadline: float | None = None,
                between_rounds: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Per-call milliseconds of every call, timed in blocks rotated ABBA for ``rounds`` rounds.

    ``samples`` (if given) is filled in place, so a caller that catches KeyboardInterrupt
    keeps every block finished so far. ``deadline`` (perf_counter time) ends early after a
    complete round. ``between_rounds`` runs after every round, untimed (the noise probe).
    """
    from tqdm import tqdm

    samples = samples if samples is not None else {}
    keys = list(calls)
    for key in keys:
        samples.setdefault(key, [])
        for _ in range(warmup):
            calls[key]()
    with tqdm(total=rounds * len(keys), desc="measuring latency", unit="block", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for r in range(rounds):
            for key in (keys if r % 2 == 0 else keys[::-1]):
                fn, times = calls[key], []
                fn()  # re-warm this library's thread pool after the previous block
                for _ in range(block):
                    t0 = time.perf_counter()
                    fn()
                    times.append((time.perf_counter() - t0) * 1e3)
                # Whole blocks only: a Ctrl-C mid-block keeps every variant at rounds x block
                # calls, so no variant gets a partial, drift-biased extra block.
                samples[key].extend(times)
                bar.update(1)
            if between_rounds is not None:
                between_rounds()
            if deadline is not None and time.perf_counter() > deadline and r % 2 == 1:
                break
    return samples


def distribution(ms: list[float], bins: int = 40) -> dict[str, Any]:
    """A compact histogram of call times for the report (log-spaced bins between min and max)."""
    a = np.asarray(ms, np.float64)
    lo, hi = float(a.min()), float(a.max())
    edges = np.geomspace(lo, hi if hi > lo else lo * 1.01, bins + 1)
    counts, _ = np.histogram(a, edges)
    return {"edges_ms": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}
