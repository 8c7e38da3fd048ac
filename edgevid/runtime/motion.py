"""Host-side motion: the optical flow or RGB differences a motion model (TSN's temporal stream) takes.

One code path makes every motion input: training data, export validation, INT8 calibration, the
report and ``edgevid run`` all push sampled frames through a ``MotionState`` (``motion_inputs``
for a whole sequence), so a deployed artifact computes exactly what its model was trained on.

Geometry first: each BGR frame is resized and centre-cropped as RGB frames are
(``preprocess.resize_crop``). Then

- flow: grey = ``cv2.cvtColor(BGR2GRAY)``; the flow from the previous grey crop to this one
  (DIS, Farneback or TV-L1, OpenCV's own), clipped to ``bound`` px and quantised to uint8 as TSN
  stores its flow images, then normalised as MMAction2 does (mean 128, std 128);
- rgbdiff: the normalised RGB that ``preprocess_frame`` makes, minus the previous one.

A stack holds the last L fields (differences), oldest first. Flow fields interleave u and v
(u1, v1, u2, v2, ...): MMAction2's ``RawFrameDecode`` reads the x and y flow images of each frame
in turn and ``FormatShape('NCHW_Flow')`` reshapes (L, 2, H, W) to (2L, H, W), so its TSN flow
checkpoints expect exactly this order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import DIS_PRESETS, FLOW_ALGORITHMS, Motion, Preprocess
from edgevid.runtime._opencv import cv2
from edgevid.runtime.preprocess import check_frame, normalize, resize_crop

__all__ = ["DIS_PRESETS", "FLOW_ALGORITHMS", "MotionState", "flow_field", "flow_function", "flow_to_input",
           "motion_inputs", "quantize_flow"]

FlowFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
# Farneback's parameters: pyramid scale 0.5, 3 levels, window 15, 3 iterations, poly_n 5, sigma 1.2
# (OpenCV's tutorial values, which the pinned design records).
_FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)
TVL1_FIX = "pip install opencv-contrib-python-headless in place of opencv-python-headless"


def flow_function(motion: Motion) -> FlowFunction:
    """A ``(prev_grey, grey) -> (H, W, 2) float32`` flow function for ``motion`` (one DIS or TV-L1
    instance, reused by every call: ``MotionState`` makes one per stream)."""
    if motion.kind != "flow":
        raise EdgevidError(f"optical flow needs a flow motion, got {motion.kind}")
    if motion.algorithm == "dis":
        if motion.preset not in DIS_PRESETS:
            raise EdgevidError(f"unknown DIS preset {motion.preset!r}; choose {', '.join(DIS_PRESETS)}")
        dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{motion.preset.upper()}"))
        return lambda prev, grey: dis.calc(prev, grey, None)
    if motion.algorithm == "farneback":
        return lambda prev, grey: cv2.calcOpticalFlowFarneback(prev, grey, None, *_FARNEBACK)
    if motion.algorithm == "tvl1":
        if not hasattr(cv2, "optflow"):
            raise EdgevidError(f"TV-L1 optical flow needs OpenCV's contrib modules (cv2.optflow is missing): "
                               f"{TVL1_FIX}, or choose dis or farneback")
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda prev, grey: tvl1.calc(prev, grey, None)
    raise EdgevidError(f"unknown optical flow algorithm {motion.algorithm!r}; choose {', '.join(FLOW_ALGORITHMS)}")


def flow_field(prev_gray: np.ndarray, gray: np.ndarray, motion: Motion) -> np.ndarray:
    """The flow from ``prev_gray`` to ``gray`` (uint8 HxW, same size): (H, W, 2) float32 pixels, u then v
    (``gray[y + v, x + u] ~ prev_gray[y, x]``)."""
    if prev_gray.shape != gray.shape or gray.ndim != 2:
        raise EdgevidError(f"optical flow needs two grey frames of the same size, got {prev_gray.shape} and "
                           f"{gray.shape}")
    return flow_function(motion)(prev_gray, gray)


def quantize_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """uint8 flow image as TSN stores it: ``round((clip(f, -b, b) + b) * 255 / (2b))`` (0 px -> 128:
    127.5 rounds half to even)."""
    # clip(f) * 255 / (2b) + 127.5: the same line, written so that 0 px is exactly 127.5 for any bound
    # (adding b first rounds for bounds such as 0.1); the last clip catches a float overshoot of 255.
    q = np.clip(flow, -bound, bound).astype(np.float32) * np.float32(255.0 / (2.0 * bound)) + np.float32(127.5)
    return np.clip(np.rint(q), 0, 255).astype(np.uint8)


def flow_to_input(q: np.ndarray) -> np.ndarray:
    """uint8 flow image -> float32 ``(q - 128) / 128`` (MMAction2's flow normalisation: mean 128, std 128)."""
    return (q.astype(np.float32) - np.float32(128.0)) * np.float32(1.0 / 128.0)


class MotionState:
    """Host state of one stream: the last grey (flow) or normalised RGB (rgbdiff) frame and a ring of the
    last L fields/differences.

    ``push`` returns a (C, crop, crop) float32 stack, a new array the caller owns, once L + 1 frames were
    pushed since ``reset`` (None before: the warm-up). Every frame since the reset must have the size of
    the first; a new video needs a reset.
    """

    def __init__(self, motion: Motion, preprocess: Preprocess) -> None:
        if preprocess.uint8_input:
            raise EdgevidError("a motion model takes float motion stacks: its preprocess cannot be uint8_input")
        self.motion = motion
        self.preprocess = preprocess
        self._flow = flow_function(motion) if motion.kind == "flow" else None
        per_field = 2 if motion.kind == "flow" else 3
        crop = preprocess.crop
        # Every field is written twice, at i and i + L, so the last L in time order are always the
        # contiguous slice [w, w + L) (w = next write slot), as ClipSession's ring.
        self._ring = np.zeros((2 * motion.length, per_field, crop, crop), np.float32)
        self.last_ms = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget the frames seen: the next push starts a new warm-up (and may have another size)."""
        self._prev: np.ndarray | None = None
        self._size: tuple[int, int] | None = None
        self._pushed = 0
        self._write = 0
        self._fields = 0

    @property
    def pushed(self) -> int:
        """Frames pushed since the last reset."""
        return self._pushed

    def check_size(self, frame: np.ndarray, index: int | None = None) -> None:
        """Refuse a frame whose size differs from the first frame's since the reset (``index`` names it
        in the message; default: this state's own count). The first frame's size is kept."""
        size = tuple(check_frame(frame).shape[:2])
        if self._size is None:
            self._size = size  # type: ignore[assignment]
        elif size != self._size:
            (h, w), (h0, w0) = size, self._size
            n = self._pushed if index is None else index
            raise EdgevidError(f"frame {n} is {w}x{h}, the stream started at {w0}x{h0}: reset the session "
                               "for a new video")

    def push(self, frame_bgr: np.ndarray, index: int | None = None) -> np.ndarray | None:
        """Add one sampled BGR frame; its (C, crop, crop) float32 stack, or None during the warm-up."""
        self.check_size(frame_bgr, index)
        crop = resize_crop(frame_bgr, self.preprocess.resize, self.preprocess.crop)
        t0 = time.perf_counter()
        current = self._current(crop)
        field = None if self._prev is None else self._field(self._prev, current)
        self._prev = current
        self._pushed += 1
        stack = None
        if field is not None:
            length = self.motion.length
            self._ring[self._write] = field
            self._ring[self._write + length] = field
            self._write = (self._write + 1) % length
            self._fields += 1
            if self._fields >= length:
                stack = self._ring[self._write : self._write + length].reshape(-1, *self._ring.shape[2:]).copy()
        self.last_ms = (time.perf_counter() - t0) * 1e3
        if stack is not None and self.motion.rgb:  # a two-stream input: this frame's RGB, then the stack
            stack = np.concatenate([self._rgb(crop), stack])
        return stack

    def _rgb(self, crop: np.ndarray) -> np.ndarray:
        """The crop's normalised RGB (3, crop, crop), as ``preprocess_frame`` makes it."""
        spec = self.preprocess
        return normalize(crop[..., ::-1] if spec.channel_order == "RGB" else crop, spec.mean, spec.std)

    def _current(self, crop: np.ndarray) -> np.ndarray:
        """What the next field is computed from: the grey crop (flow) or its normalised RGB (rgbdiff)."""
        if self._flow is not None:
            return cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2GRAY)
        return self._rgb(crop)

    def _field(self, prev: np.ndarray, current: np.ndarray) -> np.ndarray:
        """One (2, crop, crop) quantised flow field or (3, crop, crop) RGB difference."""
        if self._flow is None:
            return current - prev
        q = quantize_flow(self._flow(prev, current), self.motion.bound)
        return np.moveaxis(flow_to_input(q), -1, 0)


def motion_inputs(frames: Sequence[np.ndarray], motion: Motion, preprocess: Preprocess) -> np.ndarray:
    """Every motion stack of a sequence of sampled BGR uint8 frames: (N - L, C, crop, crop) float32.

    Made by pushing the frames through one ``MotionState``: the one code path for training data,
    export validation, calibration, the report and ``edgevid run``.
    """
    if len(frames) < motion.length + 1:
        raise EdgevidError(f"got {len(frames)} frames, fewer than the {motion.length + 1} that one {motion.kind} "
                           f"stack of {motion.length} fields needs (L + 1)")
    state = MotionState(motion, preprocess)
    stacks = [state.push(frame) for frame in frames]
    return np.stack([s for s in stacks if s is not None])
