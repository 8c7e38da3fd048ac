"""Video file I/O with OpenCV: write short clips, count and decode frames (torch-free).

Container headers lie (``CAP_PROP_FRAME_COUNT`` is an estimate from the duration and
frame rate, and is wrong for some files), so frames are counted by decoding and read
sequentially without seeking: seeking in MPEG-4 part 2 streams lands on key frames, not
on the frame asked for.

A corrupt frame in the middle of a file is skipped, not taken for the end of the file: the
decoding goes through ``edgevid.runtime.video.FileDecoder``, which skips up to
``MAX_BAD_RUN`` undecodable frames in a row and fails past its bounds. Frame indices
count the decodable frames.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.runtime._opencv import cv2
from edgevid.runtime.video import FileDecoder

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm")


class VideoDecodeError(EdgevidError):
    """A video file cannot be opened or decoded (corrupt, truncated, unsupported codec)."""


def is_video_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has one of the video extensions edgevid reads (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise VideoDecodeError(f"video {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoDecodeError(f"cannot open video {path} (corrupt file or unsupported codec)")
    return cap


def count_frames(path: str | os.PathLike) -> int:
    """Number of decodable frames, counted by decoding (``grab``), never from the header.

    Raises ``VideoDecodeError`` if the file is corrupt past ``FileDecoder``'s bounds.
    """
    cap = _open(path)
    try:
        decoder = FileDecoder(cap, str(path), VideoDecodeError)
        for _ in decoder.frames(grab_only=True):
            pass
    finally:
        cap.release()
    return decoder.decoded


def read_frames(path: str | os.PathLike, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode frames of a video as a (T, H, W, 3) uint8 BGR array.

    ``indices`` (any order, repeats allowed) selects frames; ``None`` decodes all of them.
    Frames are decoded sequentially up to the largest index, converting only those asked
    for, so this costs one decode pass and no seeking.
    """
    wanted: dict[int, np.ndarray | None] | None = None
    last = -1
    if indices is not None:
        if len(indices) == 0:
            raise ValueError("indices must not be empty")
        if min(indices) < 0:
            raise ValueError(f"frame indices must be >= 0, got {min(indices)}")
        wanted = dict.fromkeys(int(i) for i in indices)
        last = max(wanted)
    cap = _open(path)
    frames: list[np.ndarray] = []
    index = -1
    try:
        decoder = FileDecoder(cap, str(path), VideoDecodeError)
        for _ in decoder.frames(grab_only=True):
            index += 1
            if wanted is None or index in wanted:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise VideoDecodeError(f"cannot decode frame {index} of {path} (corrupt file?)")
                if wanted is None:
                    frames.append(frame)
                else:
                    wanted[index] = frame
            if wanted is not None and index >= last:
                break
    finally:
        cap.release()
    if wanted is None:
        return np.stack(frames)
    if index < last:
        raise VideoDecodeError(
            f"video {path} has only {index + 1} decodable frames, frame {last} was asked for"
        )
    return np.stack([wanted[int(i)] for i in indices])  # type: ignore[misc]


def write_video(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, fourcc: str = "mp4v"
) -> None:
    """Encode uint8 BGR frames (all the same size) into a video file with OpenCV/FFmpeg."""
    writer: cv2.VideoWriter | None = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
                if not writer.isOpened():
                    raise EdgevidError(
                        f"OpenCV cannot write {fourcc!r} video to {path}: this OpenCV build lacks an "
                        "FFmpeg encoder for it (install opencv-python-headless from PyPI)"
                    )
            writer.write(np.ascontiguousarray(frame))
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError("write_video needs at least one frame")
