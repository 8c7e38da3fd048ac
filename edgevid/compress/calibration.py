"""Calibration and validation inputs for post-training quantization, from real video.

Every frame goes through ``edgevid.runtime.preprocess`` (the function the deployed runtime
calls), so the ranges NNCF measures are the ranges the artifact will see.

Stream-mode graphs take ``frame`` plus one ``state_in.*`` per temporal shift. Their
calibration samples are recorded by stepping the FP32 torch streaming model through each
clip and keeping (frame, states) at EVERY step: the states are the cached first channels
of the previous frame's residual stream, so their range is that of real activations. Zero
states (what a naive calibration feeds) only occur at t = 0: with them every layer after a
shift is calibrated on "nothing moved" features, and the quantizer after each shift's
Concat sees a fold of zeros; random states are worse (unit-Gaussian noise has nothing to do
with post-ReLU6 activations). The INT8 recipe also makes each state share its residual
stream's quantizer (``edgevid.compress.qdq``), which bounds the damage: on the shipped TSM
recorded states gave a mean |logit error| vs FP32 of 0.151 against 0.154 with zero states,
and 98.0% against 97.6% per-frame top-1 agreement (132 held-out clips).

Without ``--calib`` the built-in synthetic set is generated once into a cache folder
(``$EDGEVID_CACHE`` or ``~/.cache/edgevid``) and used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import Preprocess, StatePair

DEFAULT_CALIB_CLIPS = 24  # 8 frames each: 192 stream samples, NNCF's default subset is 300
DEFAULT_VAL_CLIPS = 66
STATE_MODES = ("recorded", "zeros")


class CalibrationError(EdgevidError):
    """Calibration or validation data is missing, unreadable or too small."""


@dataclass
class LabelledClips:
    """Preprocessed clips of a dataset split, as torch wants them and as the graph wants them."""

    torch_clips: np.ndarray  # (C, T, 3, H, W) float32
    graph_clips: np.ndarray  # same, or (C, T, H, W, 3) uint8 for a uint8-input graph
    labels: np.ndarray  # (C,) int64
    classes: list[str]
    source: str  # for reports: "24 clips of DIR [train]"

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, count: int) -> LabelledClips:
        """The first ``count`` clips (they are ordered round-robin over the classes)."""
        if count >= len(self):
            return self
        return LabelledClips(self.torch_clips[:count], self.graph_clips[:count], self.labels[:count], self.classes,
                             self.source.replace(f"{len(self)} clips", f"{count} clips", 1))


@dataclass
class CalibrationSet:
    """Graph feeds (batch 1) for NNCF, and where they came from."""

    samples: list[dict[str, np.ndarray]]
    clips: int
    source: str
    states: str  # "recorded" | "zeros" | "none" (clip mode)

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the manifest."""
        return {"source": self.source, "clips": self.clips, "samples": len(self.samples), "states": self.states}


def default_calibration_data(progress: bool = False) -> Path:
    """The built-in synthetic set in the cache (``edgevid.data.builtin``), generated on first use."""
    from edgevid.data.builtin import held_out_set

    try:
        return held_out_set(progress)
    except EdgevidError as exc:
        raise CalibrationError(f"{exc} or pass --calib DIR") from exc


def load_clips(data: str | os.PathLike | None, split: str, preprocess: Preprocess, frames: int,
               count: int | None, *, sampling: str = "segment", stride: int = 1,
               strict: bool = True, motion: Any = None) -> LabelledClips:
    """``count`` clips (all if None) of ``split``, spread over the classes, preprocessed.

    ``motion`` (flow / RGB-difference models): each clip is ``frames`` motion stacks made by
    ``edgevid.runtime.motion.motion_inputs`` from ``frames + L`` consecutive frames at ``stride``.

    Clips are taken round-robin over the classes in file order (deterministic), so a small
    ``count`` still covers every class. Unreadable videos are skipped; none readable, an
    empty folder, or (with ``strict``) ``count`` above the readable clips is a
    ``CalibrationError``; without ``strict`` ``count`` is an upper bound.
    """
    from edgevid.data.datasets import open_dataset
    from edgevid.data.sampling import ClipSampler
    from edgevid.runtime.preprocess import preprocess_clip

    if count is not None and count < 1:
        raise CalibrationError(f"--calib-size must be at least 1, got {count}")
    root = Path(data) if data is not None else default_calibration_data()
    try:
        sampler = ClipSampler(frames + motion.length, mode="dense", stride=stride) if motion is not None else \
            ClipSampler(frames, mode=sampling, stride=stride)
        dataset = open_dataset(root, split, sampler, on_error="skip")
    except EdgevidError as exc:
        raise CalibrationError(f"calibration data {root}: {exc}") from exc
    available = len(dataset)
    if strict and count is not None and count > available:
        skipped = f" ({len(dataset.skipped)} unreadable skipped)" if dataset.skipped else ""
        raise CalibrationError(
            f"--calib-size {count} is larger than the data: {root} [{split}] has {available} readable clips"
            f"{skipped}; pass --calib-size {available} or fewer, or more videos")
    order = _round_robin(dataset.labels)[: count or available]
    float_spec = replace(preprocess, uint8_input=False)
    torch_clips, graph_clips, labels = [], [], []
    for i in order:
        video, label = dataset.load(i)
        if motion is not None:
            from edgevid.runtime.motion import motion_inputs

            torch_clips.append(motion_inputs(list(video), motion, preprocess))
            graph_clips.append(torch_clips[-1])
            labels.append(label)
            continue
        torch_clips.append(preprocess_clip(video, float_spec))
        graph_clips.append(preprocess_clip(video, preprocess) if preprocess.uint8_input else torch_clips[-1])
        labels.append(label)
    return LabelledClips(np.stack(torch_clips), np.stack(graph_clips), np.asarray(labels, np.int64),
                         list(dataset.classes), f"{len(order)} clips of {root} [{split}]")


def _round_robin(labels: list[int]) -> list[int]:
    """Indices ordered class by class in turns: 1st of each class, then 2nd of each, ..."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    out: list[int] = []
    for k in range(max(len(q) for q in queues)):
        out.extend(q[k] for q in queues if k < len(q))
    return out


def clip_samples(clips: LabelledClips) -> CalibrationSet:
    """Clip-mode feeds: one ``frames`` input (1, T, ...) per clip."""
    samples = [{"frames": np.ascontiguousarray(c[None])} for c in clips.graph_clips]
    return CalibrationSet(samples, len(clips), clips.source, "none")


def stream_samples(streaming: Any, states: list[StatePair], clips: LabelledClips,
                   mode: str = "recorded") -> CalibrationSet:
    """Stream-mode feeds: (frame, states) at every step of every clip.

    ``mode="recorded"`` steps the FP32 torch ``streaming`` model and feeds the states it
    really produces; ``"zeros"`` feeds the initial states at every step (the naive choice,
    kept to measure what recording buys).
    """
    import torch

    if mode not in STATE_MODES:
        raise ValueError(f"state mode must be one of {STATE_MODES}, got {mode!r}")
    samples: list[dict[str, np.ndarray]] = []
    was_training = streaming.training
    streaming.eval()
    try:
        with torch.no_grad():
            for torch_clip, graph_clip in zip(clips.torch_clips, clips.graph_clips):
                current = [torch.full((1, *s.shape[1:]), s.init) for s in states]
                initial = [c.numpy().copy() for c in current]
                for t in range(torch_clip.shape[0]):
                    values = [c.numpy().copy() for c in current] if mode == "recorded" else initial
                    samples.append({"frame": np.ascontiguousarray(graph_clip[t][None]),
                                    **{s.input: v for s, v in zip(states, values)}})
                    if mode == "recorded":
                        _, *current = streaming(torch.from_numpy(torch_clip[t][None]), *current)
    finally:
        streaming.train(was_training)
    return CalibrationSet(samples, len(clips), clips.source, mode)
