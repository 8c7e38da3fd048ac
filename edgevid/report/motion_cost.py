"""What the motion input of a flow / RGB-difference model costs per frame, against the network.

Two-stream papers say computing optical flow takes longer than the network itself. The
report measures it: every held-out video's sampled frames go through
``edgevid.runtime.motion.MotionState`` (what ``edgevid run`` calls) once per flow algorithm
(DIS ultrafast / fast / medium, Farneback, TV-L1 where opencv-contrib has it), in the same
process and on the same frames, and each push's own motion time (``last_ms``) is kept. The
artifact's own algorithm is marked; its figure sits next to the network's median step.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

FLOW_CHOICES = (("dis", "ultrafast"), ("dis", "fast"), ("dis", "medium"), ("farneback", ""), ("tvl1", ""))


def _choices(motion: Any) -> list[Any]:
    """The motion variants to time: every flow algorithm for a flow model (TV-L1 only where it runs)."""
    if motion.kind != "flow":
        return [motion]
    out = []
    for algorithm, preset in FLOW_CHOICES:
        if algorithm == "tvl1":
            import cv2

            if not hasattr(cv2, "optflow"):
                continue
        out.append(replace(motion, algorithm=algorithm, preset=preset))
    return out


def label(motion: Any) -> str:
    """``DIS fast``, ``Farneback``, ``TV-L1``, ``RGB difference``."""
    if motion.kind != "flow":
        return "RGB difference"
    name = {"dis": "DIS", "farneback": "Farneback", "tvl1": "TV-L1"}.get(motion.algorithm, motion.algorithm)
    return f"{name} {motion.preset}".strip()


def measure(manifest: Any, videos: list[list[np.ndarray]], rounds: int = 2) -> list[dict[str, Any]]:
    """Per motion variant: median and mean ms per frame over every push that computed motion."""
    from edgevid.runtime.motion import MotionState

    stride = manifest.sampling.stride
    choices = _choices(manifest.motion)
    times: dict[int, list[float]] = {i: [] for i in range(len(choices))}
    for r in range(rounds):  # rounds in alternating order: drift hits every algorithm alike
        order = list(range(len(choices)))
        for i in (order if r % 2 == 0 else order[::-1]):
            state = MotionState(choices[i], manifest.preprocess)
            for video in videos:
                state.reset()
                for k, frame in enumerate(video[::stride]):
                    state.push(frame)
                    if k:  # the first frame of a video has nothing to compare with
                        times[i].append(state.last_ms)
    rows = []
    for i, m in enumerate(choices):
        ms = np.asarray(times[i], np.float64)
        rows.append({"method": label(m), "algorithm": m.algorithm, "preset": m.preset, "kind": m.kind,
                     "artifact": m == manifest.motion, "frames": int(ms.size),
                     "ms_per_frame_p50": round(float(np.median(ms)), 4) if ms.size else None,
                     "ms_per_frame_mean": round(float(ms.mean()), 4) if ms.size else None})
    return rows
