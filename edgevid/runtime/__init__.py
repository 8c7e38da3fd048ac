"""Torch-free runtime: load an exported artifact and run it on frames or video.

    from edgevid import runtime

    with runtime.load("exports/tsm-online") as runner:          # backend from the manifest
        session = runtime.StreamSession(runner, smooth=8)
        for frame in runtime.open_source("clip.mp4"):
            pred = session.push(frame)                           # None on skipped frames
            if pred:
                print(pred.label, pred.score)

Everything here needs numpy, OpenCV and one backend, nothing else: never torch, torchvision,
onnx or nncf (a test asserts it).
"""

from __future__ import annotations

import os

from edgevid.runtime.artifact import Artifact, ArtifactError, open_artifact
from edgevid.runtime.backends import backend_names, canonical_name, get_runner_class
from edgevid.runtime.backends.base import BackendError, BackendStream, Runner
from edgevid.runtime.multistream import MultiStreamSession
from edgevid.runtime.session import ClipSession, Prediction, StreamSession, open_session
from edgevid.runtime.video import FrameSource, VideoSourceError, open_source

__all__ = [
    "Artifact",
    "ArtifactError",
    "BackendError",
    "BackendStream",
    "ClipSession",
    "FrameSource",
    "MultiStreamSession",
    "Prediction",
    "Runner",
    "StreamSession",
    "VideoSourceError",
    "backend_names",
    "load",
    "open_artifact",
    "open_session",
    "open_source",
]


def load(artifact_dir: str | os.PathLike, backend: str | None = None, **options: object) -> Runner:
    """Open an artifact, check it against its manifest and load it on a backend.

    ``backend`` defaults to the manifest's target (``onnxruntime``, ``openvino``,
    ``tensorrt``; aliases ``ort``, ``ov``, ``trt``). ``options`` go to the backend (see
    its runner class, e.g. ``stateful=False`` for OpenVINO). The returned runner is loaded;
    close it with ``close()`` or use it as a context manager.
    """
    artifact = open_artifact(artifact_dir)
    runner_cls = get_runner_class(canonical_name(backend or artifact.manifest.target))
    return runner_cls(artifact, **options).load()
