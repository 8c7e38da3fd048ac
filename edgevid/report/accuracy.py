"""Accuracy of an artifact through ``edgevid.runtime``, exactly as ``edgevid run`` steps it.

For each held-out video: a fresh session with the manifest's defaults (stream: a step every
``sampling.stride`` frames, scores averaged over the last ``sampling.frames`` steps; clip: the
T-frame clip of sampled frames re-run per sampled frame), every decoded frame pushed with
``session.push``; the video's prediction is the session's last prediction (its smoothed
scores). The same frames go through the torch FP32 model, stepped the same way, for the
reference agreement.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgevid import metrics
from edgevid.errors import EdgevidError


@dataclass
class HeldOut:
    """Decoded held-out videos: BGR frames, labels as indices into the model's labels."""

    frames: list[list[np.ndarray]]
    labels: np.ndarray
    classes: list[str]  # the model's labels
    source: str
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Outputs:
    """Per-video results of one variant (or of the torch reference)."""

    scores: np.ndarray  # (V, K) smoothed class probabilities of each video's last prediction
    steps: list[np.ndarray]  # per video (P_i, K) raw logits of every prediction
    missing: int  # videos too short for any prediction


def default_data(progress: bool = False) -> Path:
    """The built-in held-out set: the synthetic set of seed 1 (the shipped models trained on seed 0).

    It is the default INT8 calibration set too; calibration reads its ``train`` split and the
    report its ``val`` split, so no reported video was calibrated on.
    """
    from edgevid.data.builtin import held_out_set

    return held_out_set(progress)


def load_held_out(data: str | os.PathLike, labels: Sequence[str], *, split: str = "val",
                  limit: int | None = None) -> HeldOut:
    """Decode ``limit`` videos (all if None) of ``split``, taken round-robin over the classes."""
    from edgevid.data.sources import resolve_split
    from edgevid.runtime import open_source

    samples = resolve_split(data, split)
    index = {name: i for i, name in enumerate(labels)}
    unknown = [c for c in samples.classes if c not in index]
    if unknown:
        raise EdgevidError(f"the data's classes {', '.join(unknown[:3])} are not among the model's labels "
                           f"({', '.join(list(labels)[:4])}, ...): evaluate on data with the model's classes")
    by_class: dict[int, list[Any]] = {}
    for s in samples.samples:
        by_class.setdefault(s.label, []).append(s)
    order = []
    for k in range(max((len(v) for v in by_class.values()), default=0)):
        order.extend(by_class[c][k] for c in sorted(by_class) if k < len(by_class[c]))
    order = order[:limit] if limit else order
    if not order:
        raise EdgevidError(f"no videos in {data} [{split}]")
    frames, ys, names = [], [], []
    for s in order:
        source = open_source(str(s.path))
        try:
            video = list(source)
        finally:
            source.close()
        if not video:
            raise EdgevidError(f"{s.path} has no readable frames")
        frames.append(video)
        ys.append(index[samples.classes[s.label]])
        names.append(str(Path(s.path).name))
    return HeldOut(frames, np.asarray(ys, np.int64), list(labels), f"{len(order)} videos of {data} [{split}]", names)


def run_variant(runner: Any, held_out: HeldOut) -> Outputs:
    """Every video through a runtime session (manifest defaults), as ``edgevid run`` does."""
    from edgevid import runtime

    k = len(runner.manifest.labels)
    session = runtime.open_session(runner, topk=min(5, k))
    scores, steps, missing = [], [], 0
    try:
        for video in held_out.frames:
            session.reset()
            logits = []
            for frame in video:
                pred = session.push(frame)
                if pred is not None:
                    logits.append(np.asarray(pred.logits, np.float32))
            if session.last is None:
                missing += 1
                scores.append(np.full(k, 1.0 / k, np.float32))
            else:
                scores.append(np.asarray(session.last.scores, np.float32))
            steps.append(np.stack(logits) if logits else np.zeros((0, k), np.float32))
    finally:
        session.close()
    return Outputs(np.stack(scores), steps, missing)


def clip_of(stream: Any) -> Any:
    """The clip-mode view of a stream manifest (same frames, stride, labels; no states): what ``torch_reference``
    needs to score the stream's own weights as a clip model, on each video's last T sampled frames."""
    return replace(stream, mode="clip", states=[])


def _smoothed(logits: np.ndarray, smooth: int) -> np.ndarray:
    """The session's score of the last prediction: softmax averaged over the last ``smooth``."""
    z = logits[-smooth:].astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).mean(axis=0).astype(np.float32)


def torch_reference(model: Any, streaming: Any, manifest: Any, held_out: HeldOut, *, progress: bool = False,
                    desc: str = "torch reference") -> Outputs:
    """The torch FP32 model on the same frames, sampled and smoothed as the session does (a
    minute or more on a small CPU: a progress bar per video)."""
    import sys

    from tqdm import tqdm

    from edgevid.export.validate import reference_clip, reference_stream
    from edgevid.runtime.crosscheck import float_states, state_encodings
    from edgevid.runtime.preprocess import preprocess_frame

    spec = replace(manifest.preprocess, uint8_input=False)
    stride, t = manifest.sampling.stride, manifest.sampling.frames
    k = len(manifest.labels)
    scores, steps, missing = [], [], 0
    for video in tqdm(held_out.frames, desc=desc, unit="video", file=sys.stderr, disable=not progress, leave=False):
        if manifest.motion is not None:  # flow / RGB differences of consecutive sampled frames, as the session makes
            from edgevid.runtime.motion import motion_inputs

            frames = video[::stride]  # shorter than L + 1: no stack, no prediction, as the session
            sampled = motion_inputs(frames, manifest.motion, manifest.preprocess) if \
                len(frames) > manifest.motion.length else np.zeros((0,), np.float32)
        else:
            sampled = np.stack([preprocess_frame(f, spec) for f in video[::stride]])
        if not len(sampled):
            logits, smooth = np.zeros((0, k), np.float32), 1
        elif manifest.mode == "stream":
            out = reference_stream(streaming, float_states(manifest.states, state_encodings(manifest)), sampled[None])
            # Before a time-strided network's first output the session predicts nothing: neither does this.
            logits = np.concatenate([o["logits"] for o in out])[manifest.sampling.first_output - 1:]
            smooth = t
        else:
            windows = [sampled[i - t + 1:i + 1] for i in range(t - 1, len(sampled))]
            logits = reference_clip(model, np.stack(windows))["logits"] if windows else np.zeros((0, k), np.float32)
            smooth = 1
        if len(logits):
            scores.append(_smoothed(logits, smooth))
        else:
            missing += 1
            scores.append(np.full(k, 1.0 / k, np.float32))
        steps.append(np.asarray(logits, np.float32))
    return Outputs(np.stack(scores), steps, missing)


def accuracy(outputs: Outputs, held_out: HeldOut) -> dict[str, Any]:
    """top-1, top-5, order-pair and per-class accuracy of the videos' final predictions."""
    classes, labels = held_out.classes, held_out.labels
    top5 = np.argsort(-outputs.scores, axis=1, kind="stable")[:, :5]
    pairs = metrics.known_order_pairs(classes)
    pair_acc = metrics.order_pair_accuracy(outputs.scores, labels, classes, pairs) if pairs else float("nan")
    return {
        "videos": int(len(labels)),
        "no_prediction": int(outputs.missing),
        "top1": metrics.top1_accuracy(outputs.scores, labels),
        "top5": float(np.mean([y in row for y, row in zip(labels, top5)])),
        "order_pair": None if np.isnan(pair_acc) else pair_acc,
        "per_class": metrics.per_class_accuracy(outputs.scores, labels, classes),
    }


def agreement(outputs: Outputs, reference: Outputs) -> dict[str, Any]:
    """Agreement with the torch reference: per video, per prediction, and logit differences."""
    video = float(np.mean(outputs.scores.argmax(1) == reference.scores.argmax(1)))
    got = [a for a, b in zip(outputs.steps, reference.steps) if len(a) and len(a) == len(b)]
    want = [b for a, b in zip(outputs.steps, reference.steps) if len(a) and len(a) == len(b)]
    if not got:
        return {"video_top1": video, "prediction_top1": None, "max_abs_logit_diff": None,
                "mean_abs_logit_diff": None, "predictions": 0}
    a, b = np.concatenate(got), np.concatenate(want)
    diff = np.abs(a.astype(np.float64) - b)
    return {
        "video_top1": video,
        "prediction_top1": float(np.mean(a.argmax(1) == b.argmax(1))),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "predictions": int(len(a)),
    }
