"""Salient-window sampling of a recorded video (SCSampler's idea): the model runs on the top K windows only.

Two passes over the file, so memory holds thumbnails and the chosen windows' frames, not the
video: the first scores every sampled frame's change (``edgevid.runtime.gating``), the second
preprocesses and runs only the windows chosen. A window is one clip of the model's length
(``sampling.frames`` frames, ``sampling.stride`` apart): a clip model runs it as one clip, a
stream runs it from fresh states and takes its last (smoothed) scores. The video's label is
the argmax of the windows' mean class probabilities; ``k=None`` runs every window (the
baseline the saving is measured against).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.runtime.gating import all_windows, motion_energy, salient_windows, thumbnail


@dataclass
class SalientResult:
    """The video-level prediction and what it cost."""

    label: str
    scores: np.ndarray  # (K,) mean class probabilities over the windows run
    windows: list[int]  # start of each window run, in sampled frames
    windows_total: int  # windows the video has
    sampled_frames: int
    seconds: float  # wall time of both passes
    network_calls: int  # clip inferences or stream steps run
    energy: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"label": self.label, "score": round(float(self.scores.max()), 6), "windows": self.windows,
                "windows_total": self.windows_total, "sampled_frames": self.sampled_frames,
                "seconds": round(self.seconds, 3), "network_calls": self.network_calls}


def _sampled(path: str | os.PathLike, stride: int, max_frames: int | None = None):
    from edgevid.runtime import open_source

    source = open_source(str(path))
    if source.live:
        source.close()
        raise EdgevidError(f"--salient reads a recorded video twice; {path} is a live source")
    try:
        for i, frame in enumerate(source):
            if max_frames is not None and i >= max_frames:
                break
            if i % stride == 0:
                yield i // stride, frame
    finally:
        source.close()


def run_salient(runner, path: str | os.PathLike, k: int | None, max_frames: int | None = None) -> SalientResult:
    """Score every window of ``path`` by motion, run the model on the top ``k`` (all when None).

    ``max_frames``: read only the video's first frames, as ``edgevid run --max-frames`` does.
    """
    from edgevid.runtime.preprocess import preprocess_frame
    from edgevid.runtime.session import StreamSession, softmax

    if k is not None and k < 1:
        raise EdgevidError(f"--salient must be >= 1, got {k}")
    m = runner.manifest
    if m.motion is not None:  # windows are run out of order; a motion stack needs the frames before it
        raise EdgevidError(f"--salient runs windows of camera frames; {m.model} takes a {m.motion.kind} input "
                           "computed from consecutive frames: run it without --salient")
    span, stride = m.sampling.frames, m.sampling.stride
    t0 = time.perf_counter()
    thumbs = [thumbnail(frame) for _, frame in _sampled(path, stride, max_frames)]
    energy = motion_energy(thumbs)
    starts = all_windows(len(thumbs), span) if k is None else salient_windows(energy, span, k)
    wanted = {i for s in starts for i in range(s, s + span)}
    inputs = {i: preprocess_frame(frame, m.preprocess) for i, frame in _sampled(path, stride, max_frames) if i in wanted}
    probs, calls = [], 0
    if m.mode == "clip":
        name, out = runner.frame_input.name, runner.logits_output.name
        for s in starts:
            clip = np.stack([inputs[i] for i in range(s, s + span)])[None]
            probs.append(softmax(runner.infer({name: clip})[out][0]))
            calls += 1
    else:
        session = StreamSession(runner, every=1)  # the frames are sampled already
        try:
            for s in starts:
                session.reset()
                for i in range(s, s + span):
                    session.push_input(inputs[i])
                    calls += 1
                probs.append(np.asarray(session.last.scores, np.float32))
        finally:
            session.close()
    scores = np.mean(probs, axis=0)
    label = m.labels[int(np.argmax(scores))]
    return SalientResult(label, scores, starts, len(all_windows(len(thumbs), span)), len(thumbs),
                         time.perf_counter() - t0, calls, [round(float(e), 3) for e in energy])
