"""Which frames of a video make a clip: pure index functions (numpy only, no I/O).

Two schemes, as in MMAction2:

- segment (TSN/TSM): split the video into ``frames`` equal segments and take one frame
  from each, at a random offset in training and at the segment centre in testing. A
  clip covers the whole video whatever its length.
- dense (I3D, streaming models): ``frames`` frames ``stride`` apart, from a random start in
  training and a centred start in testing. A clip covers a fixed span of time, which is
  what a streaming model sees frame after frame.

Both return indices in increasing order: time order is the label for the order-sensitive
classes, so a sampler must never shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLING_MODES: tuple[str, ...] = ("segment", "dense")


def _check(num_frames: int, frames: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")


def segment_indices(
    num_frames: int, segments: int, train: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """TSN segment sampling: one frame per segment, ``segments`` indices in ``[0, num_frames)``.

    Test mode takes each segment's centre frame (deterministic); train mode a uniformly
    random frame inside each segment. A video shorter than ``segments`` repeats frames.
    """
    _check(num_frames, segments)
    length = num_frames / segments
    starts = np.arange(segments) * length
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        offsets = rng.uniform(0.0, length, size=segments)
    else:
        offsets = np.full(segments, length / 2)
    # Floating point can land exactly on num_frames for the last segment: clip it back.
    return np.minimum(np.floor(starts + offsets).astype(np.int64), num_frames - 1)


def dense_indices(
    num_frames: int,
    frames: int,
    stride: int = 1,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Dense sampling: ``frames`` indices ``stride`` apart, from a random (train) or centred (test) start.

    If the span ``(frames - 1) * stride + 1`` is longer than the video, the clip starts at
    frame 0 and the indices past the end repeat the last frame: padding keeps time order,
    where looping back to frame 0 would show the action jumping backwards.
    """
    _check(num_frames, frames)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    span = (frames - 1) * stride + 1
    slack = num_frames - span
    if slack <= 0:
        start = 0
    elif train:
        rng = rng if rng is not None else np.random.default_rng()
        start = int(rng.integers(0, slack + 1))
    else:
        start = slack // 2
    return np.minimum(start + np.arange(frames, dtype=np.int64) * stride, num_frames - 1)


@dataclass(frozen=True)
class ClipSampler:
    """A sampling scheme: ``frames`` per clip, ``mode`` segment|dense, ``stride`` (dense only)."""

    frames: int
    mode: str = "segment"
    stride: int = 1

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {self.mode!r}")
        if self.frames < 1 or self.stride < 1:
            raise ValueError(f"frames and stride must be >= 1, got {self.frames}, {self.stride}")

    def __call__(
        self, num_frames: int, train: bool = False, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Frame indices of one clip from a video of ``num_frames`` frames."""
        if self.mode == "segment":
            return segment_indices(num_frames, self.frames, train, rng)
        return dense_indices(num_frames, self.frames, self.stride, train, rng)
