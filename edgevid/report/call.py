"""The model call that ``bench`` times and ``layers`` profiles: its own module so both import it and neither the other.

One call as a session makes it: a ``BackendStream.step`` in stream mode (one sampled frame in,
logits out, the states kept in the backend), one ``Runner.infer`` on a T-frame clip in clip mode.
Torch-free: numpy and the runtime only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def example_frame(manifest: Any, seed: int = 0) -> np.ndarray:
    """One graph input for one step (layout and dtype) from deterministic 320x240 BGR images: a
    preprocessed frame, or for a motion model the stack ``edgevid.runtime.motion`` makes of L + 1 of them."""
    rng = np.random.default_rng(seed)
    if manifest.motion is not None:
        from edgevid.runtime.motion import motion_inputs

        frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(manifest.motion.length + 1)]
        return motion_inputs(frames, manifest.motion, manifest.preprocess)[0]
    from edgevid.runtime.preprocess import preprocess_frame

    bgr = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return preprocess_frame(bgr, manifest.preprocess)


def make_call(runner: Any) -> tuple[Callable[[], object], Callable[[], None]]:
    """(the timed call, its cleanup) for a loaded runner: a stream step or a clip inference."""
    manifest = runner.manifest
    x = example_frame(manifest)
    if manifest.mode == "stream":
        stream = runner.open_stream()  # OpenVINO compiles the batch-1 stateful model here
        frame = np.ascontiguousarray(x[None])
        return (lambda: stream.step(frame)), stream.close
    clip = np.ascontiguousarray(np.repeat(x[None, None], manifest.sampling.frames, axis=1))
    feeds = {runner.frame_input.name: clip}
    return (lambda: runner.infer(feeds)), (lambda: None)


def call_unit(manifest: Any) -> str:
    """What one timed call is, in words."""
    if manifest.mode == "stream":
        return "stream step (1 frame)"
    return f"clip inference ({manifest.sampling.frames} frames)"
