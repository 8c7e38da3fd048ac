"""Compute actually spent against accuracy: frame-delta gating and salient windows, on videos with still stretches.

The built-in set: synthetic actions embedded in 48 still frames before and 4 after, with
camera noise of 2 grey levels (``edgevid data synth --seed 2 --still 48:4 --noise 2``), generated
into the cache on first use. One stream variant's runner runs every video four ways, as
``edgevid run`` would: every step, gated (``--gate delta``, both policies), and on salient
windows (K = 2) against every window; each row records the network calls made, the wall time
and the final-label top-1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

SALIENT_K = 2


def videos_of(root: Path, labels: list[str], limit: int | None) -> list[tuple[Path, str]]:
    """(path, label) of every video whose class the model knows, round-robin over the classes."""
    by_class = {c: sorted((root / c).glob("*.mp4")) for c in labels if (root / c).is_dir()}
    out: list[tuple[Path, str]] = []
    for k in range(max((len(v) for v in by_class.values()), default=0)):
        out += [(v[k], c) for c, v in by_class.items() if k < len(v)]
    return out[:limit] if limit else out


def _stream_pass(runner: Any, videos: list[tuple[Path, str]], gate_policy: str | None, bar: Any) -> dict[str, Any]:
    from edgevid import runtime
    from edgevid.runtime.gating import DeltaGate

    hits = run = due = 0
    t0 = time.perf_counter()
    for path, label in videos:
        gate = DeltaGate(policy=gate_policy) if gate_policy else None
        session = runtime.open_session(runner, gate=gate)
        steps = 0
        for frame in runtime.open_source(str(path)):
            steps += session.push(frame) is not None
        hits += session.last is not None and session.last.label == label
        session.close()
        run += gate.steps_run if gate else steps
        due += gate.steps_due if gate else steps
        bar.update(1)
    return {"top1": hits / len(videos), "network_calls": run, "calls_due": due, "seconds": time.perf_counter() - t0}


def _salient_pass(runner: Any, videos: list[tuple[Path, str]], k: int | None, bar: Any) -> dict[str, Any]:
    from edgevid.runtime.salient import run_salient

    hits = calls = 0
    t0 = time.perf_counter()
    for path, label in videos:
        result = run_salient(runner, path, k)
        hits += result.label == label
        calls += result.network_calls
        bar.update(1)
    return {"top1": hits / len(videos), "network_calls": calls, "seconds": time.perf_counter() - t0}


def measure(runner: Any, variant: str, limit: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """The efficiency rows of one stream variant (see the module docstring)."""
    from edgevid.data.builtin import still_set

    root = still_set(progress)
    videos = videos_of(root, list(runner.manifest.labels), limit)
    # Five passes over every video: 20-30 s on a small CPU, so a bar over all of them.
    with tqdm(total=5 * len(videos), desc="gating and salient windows", unit="video", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        every = _stream_pass(runner, videos, None, bar)
        rows = [{"method": "every step", **every}]
        for policy in ("defer", "repeat"):
            rows.append({"method": f"delta gate ({policy})", **_stream_pass(runner, videos, policy, bar)})
        windows = _salient_pass(runner, videos, None, bar)
        rows.append({"method": "every window", **windows})
        rows.append({"method": f"salient windows (K={SALIENT_K})", **_salient_pass(runner, videos, SALIENT_K, bar)})
    base = {"every step": every, "every window": windows}
    for row in rows:
        ref = base["every window"] if "window" in row["method"] else base["every step"]
        row.update(variant=variant, videos=len(videos), data=f"{len(videos)} videos of {root.name}",
                   calls_fraction=round(row["network_calls"] / max(ref["network_calls"], 1), 4),
                   seconds_ratio=round(row["seconds"] / ref["seconds"], 4) if ref["seconds"] > 0 else None,
                   top1=round(row["top1"], 4), seconds=round(row["seconds"], 3))
        row.pop("calls_due", None)
    return rows
