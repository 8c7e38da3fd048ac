"""Run an ONNX model (FP32 or INT8) on labelled clips with ONNX Runtime: clip or stream mode.

Stream mode steps every clip from the initial states and averages the per-frame logits,
which is the clip score of the causal clip model (the streaming contract), so one top-1
figure compares clip and stream artifacts alike; the per-frame logits give the per-frame
top-1 agreement between two models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from edgevid.manifest import StatePair


@dataclass
class Predictions:
    """Logits of one model on a set of clips."""

    clip_logits: np.ndarray  # (C, K)
    frame_logits: np.ndarray | None  # (C, T, K) in stream mode

    def top1(self, labels: np.ndarray) -> float:
        """Clip top-1 accuracy."""
        return float((self.clip_logits.argmax(-1) == labels).mean())


def session(model: onnx.ModelProto | str, threads: int | None = None):
    """A CPU ONNX Runtime session (full graph optimisation) for a model or a path."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def _batch_of(sess) -> int | None:
    dim = sess.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def predict(model: onnx.ModelProto | str | None, graph_clips: np.ndarray, mode: str,
            states: Sequence[StatePair] = (), sess=None) -> Predictions:
    """Logits of ``model`` (or of an open ``sess``) on ``graph_clips`` (C, T, ...).

    A fixed-batch graph runs clip by clip, a dynamic one all clips at once.
    """
    sess = sess or session(model)
    batch = _batch_of(sess) or len(graph_clips)
    clip_parts, frame_parts = [], []
    for start in range(0, len(graph_clips), batch):
        clips = graph_clips[start:start + batch]
        if mode == "clip":
            clip_parts.append(sess.run(["logits"], {"frames": np.ascontiguousarray(clips)})[0])
            continue
        state = {s.input: np.full((len(clips), *s.shape[1:]), s.init, np.dtype(s.dtype)) for s in states}
        outputs = ["logits"] + [s.output for s in states]
        steps = []
        for t in range(clips.shape[1]):
            logits, *new = sess.run(outputs, {"frame": np.ascontiguousarray(clips[:, t]), **state})
            state = {s.input: v for s, v in zip(states, new)}
            steps.append(logits)
        frames = np.stack(steps, axis=1)
        frame_parts.append(frames)
        clip_parts.append(frames.mean(axis=1))
    return Predictions(np.concatenate(clip_parts), np.concatenate(frame_parts) if frame_parts else None)


def agreement(a: Predictions, b: Predictions) -> dict[str, float]:
    """Top-1 agreement of two models: per clip, and per frame in stream mode."""
    out = {"clip_top1_agreement": float((a.clip_logits.argmax(-1) == b.clip_logits.argmax(-1)).mean())}
    if a.frame_logits is not None and b.frame_logits is not None:
        out["frame_top1_agreement"] = float((a.frame_logits.argmax(-1) == b.frame_logits.argmax(-1)).mean())
    return out
