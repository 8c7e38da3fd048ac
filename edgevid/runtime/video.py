"""Video in and out with OpenCV: frame sources (file, camera, RTSP/HTTP URL, GStreamer
pipeline, folder of images) and a writer that overlays the running prediction.

Sources yield frames as OpenCV decodes them (uint8 BGR, any size); the session's
preprocessing converts grayscale/BGRA and resizes. Live sources (cameras, streams,
pipelines) never "end": when one stops delivering frames it is reported as lost, with an
error, after a few retries. A video file simply ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edgevid.errors import EdgevidError
from edgevid.runtime.preprocess import to_bgr

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# GStreamer pipelines are strings of elements joined by "!".
_GST_PIPELINE = re.compile(r"\S\s*!\s*\S")


class VideoSourceError(EdgevidError):
    """A video source cannot be opened, or stopped delivering frames."""


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    # OpenCV and FFmpeg print their own warnings when an open fails; our error says it once.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


class FrameSource:
    """An iterable of uint8 BGR frames; use it as a context manager or call ``close()``."""

    name: str = "source"
    live: bool = False
    fps: float | None = None  # frames per second when the source knows it

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureSource(FrameSource):
    """A ``cv2.VideoCapture``: video file, camera index, network URL or GStreamer pipeline.

    ``live`` sources that fail to deliver a frame are retried ``retries`` times,
    ``retry_wait`` seconds apart, then reported lost.
    """

    def __init__(self, target: str | int, name: str, *, live: bool, api: int = cv2.CAP_ANY,
                 retries: int = 5, retry_wait: float = 0.2) -> None:
        self.name, self.live = name, live
        self.retries, self.retry_wait = retries, retry_wait
        with _quiet_opencv():
            self._cap = cv2.VideoCapture(target, api)
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoSourceError(self._open_error())
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        self.frames_read = 0

    def _open_error(self) -> str:
        if self.name.startswith("camera"):
            return f"cannot open {self.name}: no such camera, or it is busy or not permitted"
        if not self.live:
            return f"cannot open video {self.name}: corrupt file or unsupported codec"
        return f"cannot open {self.name}: unreachable, or not a video stream OpenCV can read"

    def __iter__(self) -> Iterator[np.ndarray]:
        failures = 0
        while True:
            with _quiet_opencv():
                ok, frame = self._cap.read()
            if ok and frame is not None:
                failures = 0
                self.frames_read += 1
                yield frame
                continue
            if not self.live:
                if self.frames_read == 0:
                    raise VideoSourceError(f"video {self.name} has no decodable frames (corrupt or empty file)")
                return
            failures += 1
            if failures > self.retries:
                raise VideoSourceError(
                    f"{self.name} stopped delivering frames after {self.frames_read} frames "
                    "(disconnected or stream lost)"
                )
            time.sleep(self.retry_wait)

    def close(self) -> None:
        """Release the capture."""
        self._cap.release()


class ImageFolderSource(FrameSource):
    """The images of a folder, in natural order (``frame_2`` before ``frame_10``)."""

    def __init__(self, folder: Path, fps: float | None = None) -> None:
        self.name, self.fps = str(folder), fps
        files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise VideoSourceError(f"folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.files = sorted(files, key=_natural_key)

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.files:
            frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if frame is None:
                raise VideoSourceError(f"cannot read image {path} (corrupt or not an image)")
            if frame.dtype != np.uint8:  # 16-bit PNG/TIFF: scale to 8 bits
                frame = cv2.convertScaleAbs(frame, alpha=255.0 / np.iinfo(frame.dtype).max)
            yield frame


def _natural_key(path: Path) -> list[int | str]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return bool(re.search(r"GStreamer:\s+YES", info))


def open_source(source: str | int | os.PathLike, *, live: bool | None = None) -> FrameSource:
    """Open a frame source.

    ``source`` is a camera index (``0`` or ``"0"``), a URL (``rtsp://``, ``http://``...), a
    GStreamer pipeline (elements joined by ``!``, e.g. ``nvarguscamerasrc ! ... ! appsink``),
    a folder of images, or a video file. ``live`` overrides whether a source that stops
    delivering frames is an error (default: True for cameras, URLs and pipelines).
    """
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        index = int(source)
        return CaptureSource(index, f"camera {index}", live=True if live is None else live)
    text = os.fspath(source)
    if "://" in text and not text.startswith("file://"):
        return CaptureSource(text, text, live=True if live is None else live, api=cv2.CAP_FFMPEG)
    if _GST_PIPELINE.search(text) and not Path(text).exists():
        if not _has_gstreamer():
            raise VideoSourceError(
                "this OpenCV build has no GStreamer support, so it cannot open a pipeline (the PyPI "
                "opencv wheels have none; on a Jetson use the OpenCV that comes with JetPack)"
            )
        return CaptureSource(text, "GStreamer pipeline", live=True if live is None else live, api=cv2.CAP_GSTREAMER)
    path = Path(text.removeprefix("file://"))
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.is_file():
        raise VideoSourceError(f"video {path} does not exist")
    return CaptureSource(str(path), str(path), live=bool(live), api=cv2.CAP_FFMPEG)


class AnnotatedWriter:
    """Writes frames with a text overlay to a video file (size fixed by the first frame)."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None) -> None:
        self.path = Path(path)
        self.fps = fps or 25.0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        if not self.path.parent.is_dir():
            raise VideoSourceError(f"cannot write {self.path}: folder {self.path.parent} does not exist")

    def write(self, frame: np.ndarray, text: str = "") -> None:
        """Draw ``text`` on a copy of ``frame`` and append it."""
        frame = to_bgr(frame)
        if self._writer is None:
            h, w = frame.shape[:2]
            fourcc = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
            if not self._writer.isOpened():
                raise VideoSourceError(f"OpenCV cannot write {fourcc} video to {self.path}")
            self._size = (w, h)
        if (frame.shape[1], frame.shape[0]) != self._size:  # a source changed size mid-stream
            frame = cv2.resize(frame, self._size)
        else:
            frame = frame.copy()
        if text:
            _draw_label(frame, text)
        self._writer.write(frame)

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> AnnotatedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _draw_label(frame: np.ndarray, text: str) -> None:
    h, w = frame.shape[:2]
    scale = max(0.35, w / 900)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, th // 3)
    cv2.rectangle(frame, (0, 0), (min(w, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), cv2.FILLED)
    cv2.putText(frame, text, (pad, th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
