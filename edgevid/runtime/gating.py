"""Compute only where the video changes: frame-delta gating of a stream, and salient-window sampling.

Delta gating (the Recurrent Residual Module's observation: consecutive frames differ little,
and an edge camera mostly watches a static scene). Before a stream step, the incoming frame is
compared with the last frame the network processed, at low resolution: both as 32 x 32 grey
images (area-averaged, so sensor noise averages out), their mean absolute difference in grey
levels (0-255) is the change score. Below the threshold the step is skipped: no
preprocessing, no network, and the prediction stays the last one.

What a skipped step means for the state, two policies (measured on the built-in set with
static stretches, ``tests/test_gating.py``, and in ``edgevid report``):

- ``defer`` (the default): the skipped frames never reach the network, so every state (TSM's
  shift buffers, a causal 3D CNN's frame caches, LRCN's h and c) stays as after the last
  processed frame, and the stream continues as if the unchanged frames had not been there.
- ``repeat``: the first skipped frame of a still stretch is stepped once more, as a repeat of
  the last frame, so the shift buffers and caches hold the still scene; later ones are
  deferred. One extra step per still stretch.

Long skips: after ``max_gap`` skipped steps in a row (default 10 clip lengths), the next
change resets the stream first: the states then summarise a scene long gone.

Salient windows (SCSampler's idea): for a recorded video, score every window of the model's
clip span by its motion energy (the summed change scores of its consecutive sampled frames),
and run the model only on the top K windows that do not overlap, averaging their class
probabilities into the video's label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.runtime._opencv import cv2

POLICIES = ("defer", "repeat")
DEFAULT_THRESHOLD = 1.0  # grey levels: above camera noise after 32 x 32 averaging, below any motion
_THUMB = 32


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A 32 x 32 float32 grey image of a BGR (or grey / BGRA) frame, area-averaged."""
    from edgevid.runtime.preprocess import to_bgr

    grey = cv2.cvtColor(to_bgr(frame), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def change_score(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, in grey levels."""
    return float(np.mean(np.abs(a - b)))


def parse_gate(text: str) -> tuple[float, str]:
    """``delta``, ``delta:1.5``, ``delta:1.5:repeat`` -> (threshold, policy); one-line errors otherwise."""
    parts = text.split(":")
    if parts[0] != "delta" or len(parts) > 3:
        raise EdgevidError(f"--gate takes delta[:THRESHOLD[:defer|repeat]], got {text!r}")
    threshold = DEFAULT_THRESHOLD
    if len(parts) > 1 and parts[1]:
        try:
            threshold = float(parts[1])
        except ValueError:
            raise EdgevidError(f"--gate threshold must be a number of grey levels, got {parts[1]!r}") from None
    policy = parts[2] if len(parts) > 2 else "defer"
    check_gate(threshold, policy)
    return threshold, policy


def check_gate(threshold: float, policy: str) -> None:
    """Refuse a threshold outside (0, 255] or an unknown policy."""
    if not 0 < threshold <= 255:
        raise EdgevidError(f"the gate threshold is in grey levels, (0, 255], got {threshold:g}")
    if policy not in POLICIES:
        raise EdgevidError(f"unknown gate policy {policy!r}; choose {' or '.join(POLICIES)}")


@dataclass
class DeltaGate:
    """The per-stream gate: ``decide(frame)`` says whether to step the network on this frame."""

    threshold: float = DEFAULT_THRESHOLD
    policy: str = "defer"
    max_gap: int = 80
    _last: np.ndarray | None = None
    _skipped_in_row: int = 0
    steps_due: int = 0
    steps_run: int = 0
    resets: int = 0

    def __post_init__(self) -> None:
        check_gate(self.threshold, self.policy)
        if self.max_gap < 1:
            raise EdgevidError(f"max_gap must be >= 1, got {self.max_gap}")

    def decide(self, frame: np.ndarray) -> str:
        """``"run"``, ``"reset"`` (run after resetting the stream) or ``"skip"`` for a due step."""
        self.steps_due += 1
        thumb = thumbnail(frame)
        if self._last is not None and change_score(thumb, self._last) < self.threshold:
            self._skipped_in_row += 1
            if self.policy == "repeat" and self._skipped_in_row == 1:
                self.steps_run += 1
                return "run"  # one repeat of the still frame settles the states on the still scene
            return "skip"
        action = "reset" if self._skipped_in_row > self.max_gap else "run"
        self.resets += action == "reset"
        self._skipped_in_row = 0
        self._last = thumb
        self.steps_run += 1
        return action

    def clear(self) -> None:
        """Forget the last processed frame (a new video)."""
        self._last = None
        self._skipped_in_row = 0

    @property
    def fraction_run(self) -> float:
        """Share of the due steps the network ran."""
        return self.steps_run / self.steps_due if self.steps_due else 1.0


def motion_energy(thumbs: list[np.ndarray]) -> np.ndarray:
    """Change score between each sampled frame and the one before (first: 0)."""
    out = np.zeros(len(thumbs), np.float64)
    for i in range(1, len(thumbs)):
        out[i] = change_score(thumbs[i], thumbs[i - 1])
    return out


def salient_windows(energy: np.ndarray, span: int, k: int) -> list[int]:
    """Start indices (into the sampled frames) of the ``k`` non-overlapping windows of ``span`` with most motion.

    Windows start every ``span // 2`` frames (and at the end); the best is taken first, then
    the best that does not overlap any taken one, and so on.
    """
    n = len(energy)
    if n < span:
        raise EdgevidError(f"the video has {n} sampled frames, fewer than one window of {span}")
    hop = max(1, span // 2)
    starts = sorted(set(range(0, n - span + 1, hop)) | {n - span})
    if k > len(starts):
        raise EdgevidError(f"--salient {k} is more than the {len(starts)} windows of this video "
                           f"({n} sampled frames, windows of {span} every {hop})")
    scored = sorted(starts, key=lambda s: (-float(energy[s + 1:s + span].sum()), s))
    chosen: list[int] = []
    for s in scored:
        if all(abs(s - c) >= span for c in chosen):
            chosen.append(s)
        if len(chosen) == k:
            break
    if len(chosen) < k:  # not enough disjoint windows: fill with the best overlapping ones
        chosen += [s for s in scored if s not in chosen][: k - len(chosen)]
    return sorted(chosen)


def all_windows(n: int, span: int) -> list[int]:
    """Every window start (``span // 2`` apart, and the last), as ``salient_windows`` considers them."""
    if n < span:
        raise EdgevidError(f"the video has {n} sampled frames, fewer than one window of {span}")
    hop = max(1, span // 2)
    return sorted(set(range(0, n - span + 1, hop)) | {n - span})
