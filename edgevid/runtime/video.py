"""Video in and out with OpenCV: frame sources (file, camera, RTSP/HTTP URL, GStreamer
pipeline, folder of images) and a writer that overlays the running prediction.

Sources yield frames as OpenCV decodes them (uint8 BGR, any size); the session's
preprocessing converts grayscale/BGRA and resizes. Live sources (cameras, streams,
pipelines) never "end": when one stops delivering frames it is reported as lost, with an
error, after a few retries.

A video file ends, but a failed read is not always its end: FFmpeg fails on a corrupt frame
and then decodes the next ones. ``FileDecoder`` keeps reading past up to ``MAX_BAD_RUN``
undecodable frames in a row, counts what it skipped, and tells the end of the file from a
corrupt stretch by the frame count in the container header (a lost tail) and the share of
bad frames (``MAX_BAD_FRACTION``): past either bound the file is reported as corrupt.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import file_mode
from edgevid.runtime._opencv import MAX_IMAGE_PIXELS, cv2
from edgevid.runtime.preprocess import to_bgr

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# GStreamer pipelines are strings of elements joined by "!".
_GST_PIPELINE = re.compile(r"\S\s*!\s*\S")


MAX_BAD_RUN = 10  # undecodable frames in a row a file may have; one more is its end, or an error
MAX_BAD_FRACTION = 0.1  # of a file's frames that may be undecodable
# A file whose header promises more frames than this many (or 2%) beyond those read lost its tail.
_HEADER_SLACK = 2
WRITABLE_VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")
# V4L2 devices are /dev/video0..; OpenCV reads larger indices as backend offsets (200 = V4L2) and
# overflows its int past 2**31 - 1.
MAX_CAMERA_INDEX = 9999


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


class FileDecoder:
    """Frames of an open video file, skipping a few undecodable ones (see the module docstring).

    ``decoded`` and ``skipped`` count the frames so far; indices of the frames yielded count
    decodable frames only. Errors are raised as ``error`` (the caller's exception class).
    """

    def __init__(self, cap: cv2.VideoCapture, name: str, error: type[EdgevidError] = VideoSourceError) -> None:
        self.cap, self.name, self.error = cap, name, error
        header = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.header_frames = int(header) if header and header > 0 else None
        self.decoded = 0
        self.skipped = 0

    def frames(self, grab_only: bool = False) -> Iterator[np.ndarray | None]:
        """Yield each decodable frame (``None`` with ``grab_only``: call ``cap.retrieve()``)."""
        bad = 0
        while True:
            with _quiet_opencv():
                if grab_only:
                    ok, frame = self.cap.grab(), None
                else:
                    ok, frame = self.cap.read()
                    ok = ok and frame is not None
            if not ok:
                bad += 1
                if bad > MAX_BAD_RUN:
                    break
                continue
            if bad:
                self.skipped += bad
                bad = 0
                self._check_fraction(final=False)
            self.decoded += 1
            yield frame
        self._check_end()

    def _check_fraction(self, final: bool) -> None:
        seen = self.decoded + self.skipped
        # Mid-file, judge the share only over a window long enough to mean something.
        if self.skipped > MAX_BAD_FRACTION * seen and (final or seen >= 10 * MAX_BAD_RUN):
            raise self.error(
                f"video {self.name} is corrupt: {self.skipped} of its {'' if final else 'first '}{seen} frames "
                f"cannot be decoded (more than {MAX_BAD_FRACTION:.0%})"
            )

    def _check_end(self) -> None:
        seen = self.decoded + self.skipped
        if self.decoded == 0:
            raise self.error(f"video {self.name} has no decodable frames (corrupt or empty file)")
        header = self.header_frames
        if header is not None and header - seen > max(_HEADER_SLACK, 0.02 * header):
            raise self.error(
                f"video {self.name} cannot be decoded from frame {seen} of {header} on (more than {MAX_BAD_RUN} "
                "frames in a row fail): corrupt or truncated file"
            )
        self._check_fraction(final=True)


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
    ``retry_wait`` seconds apart, then reported lost. ``api``: an OpenCV backend
    (``cv2.CAP_*``), default any (looked up here, not at import: the runtime imports without cv2).
    """

    def __init__(self, target: str | int, name: str, *, live: bool, api: int | None = None,
                 retries: int = 5, retry_wait: float = 0.2) -> None:
        self.name, self.live = name, live
        self.retries, self.retry_wait = retries, retry_wait
        with _quiet_opencv():
            self._cap = cv2.VideoCapture(target, cv2.CAP_ANY if api is None else api)
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoSourceError(self._open_error())
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        self.frames_read = 0
        self._decoder = None if live else FileDecoder(self._cap, name)

    @property
    def skipped(self) -> int:
        """Undecodable frames of a video file skipped so far."""
        return self._decoder.skipped if self._decoder is not None else 0

    def _open_error(self) -> str:
        if self.name.startswith("camera"):
            return f"cannot open {self.name}: no such camera, or it is busy or not permitted"
        if not self.live:
            return f"cannot open video {self.name}: corrupt file or unsupported codec"
        return f"cannot open {self.name}: unreachable, or not a video stream OpenCV can read"

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._decoder is not None:
            for frame in self._decoder.frames():
                self.frames_read += 1
                yield frame  # type: ignore[misc]
            return
        failures = 0
        while True:
            with _quiet_opencv():
                ok, frame = self._cap.read()
            if ok and frame is not None:
                failures = 0
                self.frames_read += 1
                yield frame
                continue
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
        # Only regular files: a FIFO named frame.png would block the read forever, a device
        # file would read without end.
        odd = next((p for p in files if not p.is_file()), None)
        if odd is not None:
            raise VideoSourceError(f"{odd} is not a regular file (a FIFO, device or broken link); "
                                   "a frame folder holds image files only")
        self.files = sorted(files, key=_natural_key)

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.files:
            yield read_image(path)


def read_image(path: Path) -> np.ndarray:
    """One image file as uint8; its size is checked from the header before it is decoded."""
    try:
        frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        # OPENCV_IO_MAX_IMAGE_PIXELS (see _opencv) refuses oversized headers before allocating.
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc) or "validateInputImageSize" in str(exc):
            raise VideoSourceError(f"image {path} is too large: its header claims more than "
                                   f"{MAX_IMAGE_PIXELS // 10**6} megapixels") from None
        raise VideoSourceError(f"cannot read image {path}: OpenCV refused it (corrupt or unsupported)") from None
    if frame is None:
        raise VideoSourceError(f"cannot read image {path} (corrupt or not an image)")
    return to_uint8(frame, path)


def to_uint8(image: np.ndarray, name: object = "image") -> np.ndarray:
    """8-bit version of an image as ``cv2.imread(..., IMREAD_UNCHANGED)`` returns it.

    16/32-bit integer images are scaled by their type's range; float images (32-bit TIFF,
    EXR) are taken as 0-1 if every value is, else as 0-255, and clipped; NaN becomes 0.
    """
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        scaled = image.astype(np.float32) * (255.0 / info.max)
    elif np.issubdtype(image.dtype, np.floating):
        scaled = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if scaled.size and scaled.max() <= 1.0:
            scaled *= 255.0
    else:
        raise VideoSourceError(f"cannot use {name}: unsupported pixel type {image.dtype}")
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _natural_key(path: Path) -> list[int | str]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _camera_text(source: object) -> bool:
    """``"3"`` names camera 3, unless a file or folder of that name exists (then it is that file).

    ASCII digits only: ``"¹".isdigit()`` is True, and ``int("¹")`` fails.
    """
    if not isinstance(source, str):
        return False
    text = source.strip()
    return re.fullmatch(r"-?[0-9]{1,12}", text) is not None and not os.path.lexists(source)


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
    if isinstance(source, int) or _camera_text(source):
        index = int(source)
        if not 0 <= index <= MAX_CAMERA_INDEX:  # OpenCV crashes on a negative index rather than failing
            raise VideoSourceError(f"camera index must be between 0 and {MAX_CAMERA_INDEX}, got {index}")
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
    """Writes frames with a text overlay to a video file (size fixed by the first frame).

    Frames go to a temporary file next to ``path``; ``close()`` checks that it reopens with
    every frame written (a full disk leaves an unreadable file, and OpenCV does not say so)
    and only then renames it to ``path``. ``discard()`` (or leaving the ``with`` block on
    an error) removes it: a half-written video never takes ``path``'s place.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None, force: bool = False) -> None:
        self.path = Path(path)
        self.fps = fps or 25.0
        self.force = force
        self.frames_written = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._tmp: Path | None = None
        if self.path.suffix.lower() not in WRITABLE_VIDEO_EXTENSIONS:
            raise VideoSourceError(
                f"cannot write {self.path}: the video needs one of the extensions {', '.join(WRITABLE_VIDEO_EXTENSIONS)}"
            )
        if self.path.is_dir():
            raise VideoSourceError(f"cannot write {self.path}: it is a folder")
        if not self.path.parent.is_dir():
            raise VideoSourceError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        check_replaceable(self.path, force)
        _remove_stale_partials(self.path)

    def _open(self, w: int, h: int) -> None:
        try:
            fd, tmp = tempfile.mkstemp(prefix=_partial_prefix(self.path, os.getpid()),
                                       suffix=f".partial{self.path.suffix}", dir=self.path.parent)
        except OSError as exc:
            raise VideoSourceError(f"cannot write {self.path}: {exc.strerror}") from None
        os.close(fd)
        self._tmp = Path(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes it private; the video is an ordinary file
        fourcc = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
        with _quiet_opencv():
            self._writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
        if not self._writer.isOpened():
            self.discard()
            raise VideoSourceError(f"OpenCV cannot write {fourcc} video to {self.path}")
        self._size = (w, h)

    def write(self, frame: np.ndarray, text: str = "") -> None:
        """Draw ``text`` on a copy of ``frame`` and append it."""
        frame = to_bgr(frame)
        if self._writer is None:
            self._open(frame.shape[1], frame.shape[0])
        if (frame.shape[1], frame.shape[0]) != self._size:  # a source changed size mid-stream
            frame = cv2.resize(frame, self._size)
        else:
            frame = frame.copy()
        if text:
            _draw_label(frame, text)
        with _quiet_opencv():
            self._writer.write(frame)  # type: ignore[union-attr]
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file, check it reopens with every frame, and move it to ``path``."""
        if self._writer is None or self._tmp is None:
            return
        with _quiet_opencv():
            self._writer.release()
        self._writer = None
        try:
            try:
                _mark(self._tmp)
                problem = self._check(self._tmp)
            except OSError as exc:  # a full disk fails the mark's few bytes too
                problem = exc.strerror or str(exc)
            if problem:
                raise VideoSourceError(
                    f"writing the annotated video {self.path} failed: {problem} (disk full, or the folder is not "
                    "writable?); nothing was written there"
                )
            check_replaceable(self.path, self.force)  # again: the file may have appeared meanwhile
            os.replace(self._tmp, self.path)
            self._tmp = None
        finally:
            self.discard()

    def _check(self, path: Path) -> str:
        with _quiet_opencv():
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
            try:
                if not cap.isOpened():
                    return "the file OpenCV wrote does not open"
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
                ok, _ = cap.read()
            finally:
                cap.release()
        if count != self.frames_written or not ok:
            return f"{self.frames_written} frames were written, the file holds {max(count, 0) if ok else 0} readable"
        return ""

    def discard(self) -> None:
        """Stop writing and remove the temporary file (``path`` is left as it was)."""
        if self._writer is not None:
            with _quiet_opencv():
                self._writer.release()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> AnnotatedWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # Ctrl-C is how a camera run ends: keep the video up to there. Any other error discards it.
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.discard()


# The annotated video's mark: a padding element at the end of the container, which every
# demuxer skips (ISO BMFF `free` box, RIFF `JUNK` chunk, Matroska Void element), so that
# `--force` can tell a video edgevid wrote from the user's own file of the same name.
_MARK = b"edgevid annotated video\n"


def _mark(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".mov"):
        element = (8 + len(_MARK)).to_bytes(4, "big") + b"free" + _MARK
    elif suffix == ".avi":
        element = b"JUNK" + len(_MARK).to_bytes(4, "little") + _MARK + b"\0" * (len(_MARK) % 2)
    else:  # .mkv: EBML Void (ID 0xEC), one-byte size
        element = b"\xec" + bytes([0x80 | len(_MARK)]) + _MARK
    with open(path, "ab") as fh:
        fh.write(element)


def written_by_edgevid(path: Path) -> bool:
    """True if ``path`` is an annotated video that ``edgevid run --output`` wrote."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 64))
            return _MARK in fh.read()
    except OSError:
        return False


def check_replaceable(path: Path, force: bool) -> None:
    """Refuse to write over an existing file unless ``force``, and then only over edgevid's own video."""
    if not os.path.lexists(path):
        return
    if not force:
        raise VideoSourceError(f"{path} already exists; pass --force to replace it")
    if path.is_symlink() or not path.is_file() or not written_by_edgevid(path):
        raise VideoSourceError(f"{path} is not a video edgevid wrote; refusing to replace it (choose another "
                               "file, or remove it yourself)")


def _partial_prefix(path: Path, pid: int) -> str:
    # The writer's pid is in the temp file's name, so a later run can tell a leftover of a killed one.
    return f".{path.name}.{pid}."


def _remove_stale_partials(path: Path) -> None:
    """Remove temp videos of earlier runs to ``path`` whose process is gone (killed with SIGKILL)."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)\..*\.partial" + re.escape(path.suffix) + "$")
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = pattern.match(entry.name)
            if match and entry.is_file() and not entry.is_symlink() and not _pid_alive(int(match.group(1))):
                entry.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _draw_label(frame: np.ndarray, text: str) -> None:
    h, w = frame.shape[:2]
    scale = max(0.35, w / 900)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, th // 3)
    cv2.rectangle(frame, (0, 0), (min(w, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), cv2.FILLED)
    cv2.putText(frame, text, (pad, th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
