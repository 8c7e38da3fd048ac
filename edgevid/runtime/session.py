"""Sessions: frames in, predictions out, over a loaded runner.

- ``StreamSession`` (stream-mode artifacts): one model step per frame; the temporal states
  stay inside the backend stream. ``every=N`` feeds only every N-th frame (the official TSM
  online demo runs every other frame), ``smooth=K`` averages the class scores of the last K
  predictions.
- ``ClipSession`` (clip-mode artifacts): keeps the last T sampled frames (every
  ``sampling.stride``-th frame) in a ring buffer and re-runs the clip model on them, one
  prediction per sampled frame once T are in (``every=N``: every N-th sampled frame).

Any number of sessions can share one runner; each has its own states.

When to ``reset()`` a stream: the states summarise the frames seen so far, so reset at the
start of a new video, after a scene cut if predictions should not carry over, and after a
camera reconnect or any gap in the frames (the model assumes consecutive frames). Both
sessions start reset.

A stream's first ``sampling.frames`` steps are its warm-up: its states do not yet span the
clip length the model was trained on, and those predictions say so (``Prediction.warmup``).
A time-strided network (``sampling.output_every`` P > 1: R(2+1)D, I3D, ...) makes its first
output at step ``sampling.first_output`` and a new one every P steps, holding the last in
between; before the first there is no prediction (None), not its zero logits.
Non-finite logits (a NaN frame fed through ``push_input``, an overflow in the model) would
poison the states for good, so the session resets itself and raises; the next push starts
a fresh stream.

A motion artifact (``manifest.motion`` set: TSN's temporal stream) takes motion stacks, not
frames: each sampled frame (a stream's stepped frame, a clip's frame going into the ring) is
pushed into the session's ``MotionState`` (``edgevid.runtime.motion``), whose first L frames
are its warm-up (no step, no prediction; they still count as pushed). A clip session's ring
then holds T motion stacks. Every frame must have the size of the first since the reset.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.runtime.backends.base import BackendError, Runner, batch1_shape
from edgevid.runtime.motion import MotionState
from edgevid.runtime.preprocess import check_frame, preprocess_frame


@dataclass(frozen=True)
class Prediction:
    """One prediction: raw logits, (smoothed) class probabilities, top-k, latency."""

    frame: int  # index of the pushed frame (since the last reset) that produced it
    logits: np.ndarray  # (K,) raw logits of this step or clip
    scores: np.ndarray  # (K,) softmax probabilities, averaged over the last `smooth` predictions
    topk: list[tuple[str, float]]  # (label, score), best first
    # "preprocess", "infer", and "motion" for a motion artifact (flow or difference; "preprocess" is then
    # the rest of the host work, the resize and crop): the stages add up.
    latency_ms: dict[str, float] = field(default_factory=dict)
    warmup: bool = False  # made before the stream had seen ``sampling.frames`` steps

    @property
    def label(self) -> str:
        """Top-1 label."""
        return self.topk[0][0]

    @property
    def score(self) -> float:
        """Top-1 (smoothed) probability."""
        return self.topk[0][1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        return {
            "frame": self.frame,
            "label": self.label,
            "score": round(self.score, 6),
            "topk": [{"label": lab, "score": round(s, 6)} for lab, s in self.topk],
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "warmup": self.warmup,
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float32)."""
    z = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class _Session:
    def __init__(self, runner: Runner, mode: str, topk: int, smooth: int, every: int) -> None:
        if not runner.is_loaded:
            raise EdgevidError("the runner is not loaded: create it with edgevid.runtime.load()")
        if runner.manifest.mode != mode:
            other = "ClipSession" if mode == "stream" else "StreamSession"
            raise EdgevidError(
                f"{runner.manifest.model} was exported in {runner.manifest.mode} mode; use {other} "
                "(or edgevid.runtime.open_session, which picks the right one)"
            )
        for name, value in (("topk", topk), ("smooth", smooth), ("every", every)):
            if int(value) < 1:
                raise EdgevidError(f"{name} must be >= 1, got {value}")
            if name != "topk" and int(value) > 10_000:  # `smooth` rows of class scores are allocated
                raise EdgevidError(f"{name} must be <= 10000, got {value}")
        self.runner = runner
        self.labels = list(runner.manifest.labels)
        self.preprocess = runner.manifest.preprocess
        self.topk = min(int(topk), len(self.labels))
        self.smooth = int(smooth)
        self.every = int(every)
        # Class probabilities of the last `smooth` predictions, a ring of rows.
        self._probs = np.zeros((self.smooth, len(self.labels)), np.float32)
        self._predicted = 0
        self._pushed = 0
        self._closed = False
        self.last: Prediction | None = None
        # What push_input takes: the graph's frame input for one time step, without batch (and T).
        self._x_shape: tuple[int, ...] = ()
        self._x_dtype = np.dtype(runner.frame_input.dtype)
        motion = runner.manifest.motion
        self.motion = None if motion is None else MotionState(motion, self.preprocess)

    def _predict(self, logits: np.ndarray, frame: int, latency: dict[str, float], warmup: bool = False) -> Prediction:
        # Few numpy calls on purpose: right after a model step the caches are cold and each
        # call costs ~10x its warm time; this runs once per prediction.
        row = self._probs[self._predicted % self.smooth]
        np.exp(logits - logits.max(), out=row)
        total = float(row.sum())  # NaN if any logit is NaN or +inf, or all are -inf
        if not math.isfinite(total) or total <= 0.0:
            self.reset()
            raise EdgevidError(
                f"the model gave non-finite scores (NaN/inf) at frame {frame}; its temporal state would stay "
                "corrupt, so the session was reset: the next frame starts a new stream"
            )
        row /= total
        self._predicted += 1
        n = min(self._predicted, self.smooth)
        scores = row.copy() if n == 1 else self._probs[:n].mean(axis=0)
        best = np.argsort(-scores, kind="stable")[: self.topk]
        topk = list(zip([self.labels[i] for i in best], scores[best].tolist()))
        pred = Prediction(frame, logits, scores, topk, latency, warmup)
        self.last = pred
        return pred

    def _reset_common(self) -> None:
        self._predicted = 0
        self._pushed = 0
        self.last = None
        if self.motion is not None:
            self.motion.reset()

    def _check_open(self) -> None:
        if self._closed:
            raise EdgevidError("this session is closed: open a new one (edgevid.runtime.open_session)")

    def reset(self) -> None:
        """Start over, as for a new video."""
        raise NotImplementedError

    def push(self, frame: np.ndarray) -> Prediction | None:
        """Feed one BGR frame (any size, grayscale or BGRA too); a Prediction, or None if none is due.

        A frame that is not a uint8 image array (a list, float pixels, 0x0) is refused with an
        ``EdgevidError`` before it counts.
        """
        ready = self._input_of(frame)
        return None if ready is None else self._consume(*ready)

    def _input_of(self, frame: np.ndarray) -> tuple[np.ndarray, int, float, float | None] | None:
        """The network input of the next frame, its index, the host's preprocess and motion ms; None
        when the frame is not stepped (not due, gated, the motion warm-up). The frame counts either way."""
        self._check_open()
        check_frame(frame)
        if self.motion is not None:  # a new video's frame is refused before it counts
            self.motion.check_size(frame, self._pushed)
        index = self._pushed
        self._pushed += 1
        if not self._wants(index) or self._gated(frame):
            return None
        t0 = time.perf_counter()
        if self.motion is None:
            return preprocess_frame(frame, self.preprocess), index, (time.perf_counter() - t0) * 1e3, None
        stack = self.motion.push(frame, index)
        if stack is None:  # the motion warm-up: L + 1 frames make the first stack
            return None
        motion_ms = self.motion.last_ms
        return stack, index, (time.perf_counter() - t0) * 1e3 - motion_ms, motion_ms

    def push_input(self, x: np.ndarray) -> Prediction | None:
        """Like ``push`` for a frame already preprocessed (CHW float32, or HWC uint8).

        The shape must be the graph's frame input for one step; float pixels must be finite
        (a NaN would poison the temporal states), and are refused otherwise.
        """
        self._check_input(x)
        index = self._pushed
        self._pushed += 1
        if not self._wants(index):
            return None
        return self._consume(x, index, 0.0)

    def _check_input(self, x: np.ndarray) -> None:
        """Refuse what ``push_input`` must not feed: not an array, another shape or dtype, NaN/inf pixels."""
        self._check_open()
        if not isinstance(x, np.ndarray):
            raise EdgevidError(f"push_input takes a numpy array, got {type(x).__name__}")
        if x.shape != self._x_shape:
            raise EdgevidError(f"push_input expects a preprocessed frame of shape {self._x_shape}, got {x.shape}")
        if self._x_dtype.kind == "f":
            if x.dtype.kind != "f":
                raise EdgevidError(f"push_input expects float pixels (normalised), got dtype {x.dtype}")
            # One dot product instead of an isfinite array: NaN/inf (or absurdly large values) show in it.
            if not np.isfinite(np.vdot(x, x)):
                raise EdgevidError("push_input got a frame with non-finite values (NaN/inf); it was not fed")
        elif x.dtype != self._x_dtype:
            raise EdgevidError(f"push_input expects {self._x_dtype} pixels, got dtype {x.dtype}")

    def _call(self, fn: Any, index: int, *args: Any) -> Any:
        """A backend call; a backend's own exception (an allocation that failed, a device lost)
        becomes one line naming the backend and the frame, not a traceback from its bindings."""
        try:
            return fn(*args)
        except (EdgevidError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - backend libraries raise their own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{self.runner.name} failed at frame {index}: {first}") from exc

    def _wants(self, index: int) -> bool:
        raise NotImplementedError

    def _gated(self, frame: np.ndarray) -> bool:
        return False

    def _consume(self, x: np.ndarray, index: int, preprocess_ms: float,
                 motion_ms: float | None = None) -> Prediction | None:
        raise NotImplementedError

    @staticmethod
    def _latency(preprocess_ms: float, infer_ms: float, motion_ms: float | None) -> dict[str, float]:
        latency = {"preprocess": preprocess_ms, "infer": infer_ms}
        if motion_ms is not None:
            latency["motion"] = motion_ms
        return latency

    def close(self) -> None:
        """Release per-session backend resources; the session cannot be used afterwards."""
        self._closed = True

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamSession(_Session):
    """Per-frame predictions from a streaming model; states live in the backend stream."""

    def __init__(self, runner: Runner, *, topk: int = 5, smooth: int | None = None, every: int | None = None,
                 gate: Any = None, stream: Any = None) -> None:
        # Defaults reproduce what the model was trained on: steps ``sampling.stride`` frames
        # apart (the temporal gap its shift learned), scores averaged over the last
        # ``sampling.frames`` steps (the clip's average consensus), or ``sampling.smooth``
        # where the model pools over its own window.
        sampling = runner.manifest.sampling
        super().__init__(runner, "stream", topk, smooth or sampling.smooth or sampling.frames, every or sampling.stride)
        self.frames = sampling.frames
        self.first_output = sampling.first_output
        self._x_shape = tuple(batch1_shape(runner.frame_input))[1:]
        self._steps = 0  # model steps since the last reset
        # A ``edgevid.runtime.gating.DeltaGate``: skips the steps whose frame has not changed.
        self.gate = gate
        # Where the states live: a backend stream of its own, or (``stream``) one row of a batch of
        # streams that ``MultiStreamSession`` steps for many sessions at once.
        self._stream = stream if stream is not None else runner.open_stream()

    def _wants(self, index: int) -> bool:
        return index % self.every == 0

    def _gated(self, frame: np.ndarray) -> bool:
        """True when the gate skips this due step (the stream's states and last scores stay)."""
        if self.gate is None:
            return False
        decision = self.gate.decide(frame)
        if decision == "reset":  # a long still stretch: the states describe a scene long gone
            self._stream.reset()
            self._steps = self._predicted = 0
            if self.motion is not None:  # so do the flow fields in its ring
                self.motion.reset()
        return decision == "skip"

    def _consume(self, x: np.ndarray, index: int, preprocess_ms: float,
                 motion_ms: float | None = None) -> Prediction:
        t0 = time.perf_counter()
        logits = self._call(self._stream.step, index, x[None])
        infer_ms = (time.perf_counter() - t0) * 1e3
        return self._finish(logits[0], index, self._latency(preprocess_ms, infer_ms, motion_ms))

    def _finish(self, logits: np.ndarray, index: int, latency: dict[str, float]) -> Prediction | None:
        """The prediction of a step that ran (its logits (K,)); None before a strided network's first output."""
        self._steps += 1
        if self._steps < self.first_output:  # a time-strided network has no output yet (its held zeros)
            return None
        return self._predict(logits, index, latency, self._steps < self.frames)

    def reset(self) -> None:
        """Back to the initial states: new video, scene cut, camera reconnect, gap in frames."""
        self._check_open()
        self._stream.reset()
        self._steps = 0
        self._reset_common()
        if self.gate is not None:
            self.gate.clear()

    def close(self) -> None:
        """Release the backend stream; the session cannot be used afterwards."""
        if not self._closed:
            self._stream.close()
        super().close()


class ClipSession(_Session):
    """Clip-model predictions over a ring buffer of the last T sampled frames."""

    def __init__(self, runner: Runner, *, topk: int = 5, smooth: int | None = None, every: int | None = None) -> None:
        super().__init__(runner, "clip", topk, smooth or 1, every or 1)
        spec = runner.frame_input
        self.frames = runner.manifest.sampling.frames
        self.stride = runner.manifest.sampling.stride
        shape = batch1_shape(spec)  # (1, T, ...) frames input
        if len(shape) < 3 or shape[1] != self.frames:
            raise EdgevidError(f"clip input {spec.name} {spec.shape} does not hold {self.frames} frames")
        # Every frame is written twice, at i and i + T, so the last T frames in time order
        # are always the contiguous slice [w, w + T) (w = next write slot): no copy to assemble.
        self._x_shape = tuple(shape[2:])
        self._ring = np.zeros((2 * self.frames, *shape[2:]), np.dtype(spec.dtype))
        self._input, self._output = spec.name, runner.logits_output.name
        self._reset_ring()

    def _reset_ring(self) -> None:
        self._write = 0
        self._filled = 0

    def _wants(self, index: int) -> bool:
        return index % self.stride == 0

    def _consume(self, x: np.ndarray, index: int, preprocess_ms: float,
                 motion_ms: float | None = None) -> Prediction | None:
        t = self.frames
        self._ring[self._write] = x
        self._ring[self._write + t] = x
        self._write = (self._write + 1) % t
        self._filled += 1
        if self._filled < t or (self._filled - t) % self.every:
            return None
        clip = self._ring[self._write : self._write + t]
        t0 = time.perf_counter()
        logits = self._call(self.runner.infer, index, {self._input: clip[None]})[self._output]
        infer_ms = (time.perf_counter() - t0) * 1e3
        return self._predict(logits[0], index, self._latency(preprocess_ms, infer_ms, motion_ms))

    def reset(self) -> None:
        """Empty the ring buffer (the next prediction needs T new sampled frames)."""
        self._check_open()
        self._reset_ring()
        self._reset_common()


def open_session(runner: Runner, **options: Any) -> StreamSession | ClipSession:
    """The session that fits the artifact's mode (``topk``, ``smooth``, ``every``, ``gate`` as keywords)."""
    if runner.manifest.mode != "stream" and options.get("gate") is not None:
        raise EdgevidError(f"{runner.manifest.model} is a clip-mode artifact: frame-delta gating skips stream steps, "
                           "export with --mode stream to gate (or use --salient K on a recorded video)")
    options = {k: v for k, v in options.items() if not (k == "gate" and v is None)}
    cls = StreamSession if runner.manifest.mode == "stream" else ClipSession
    return cls(runner, **options)
