"""OpenCV, imported with its own and FFmpeg's console logging off.

FFmpeg prints straight to stderr (``moov atom not found``, ``Connection refused``, decoder
complaints on every corrupt frame) and OpenCV adds ``[ WARN:0@...]`` lines; edgevid reports
each of these problems once, as its own error or summary line. OpenCV reads
``OPENCV_LOG_LEVEL`` when cv2 is imported and ``OPENCV_FFMPEG_LOGLEVEL`` when its FFmpeg
backend starts, so both are set before the import. A user who sets them keeps their values
(``OPENCV_FFMPEG_LOGLEVEL=24 OPENCV_LOG_LEVEL=INFO`` to debug a source).

``OPENCV_IO_MAX_IMAGE_PIXELS`` (read once, when cv2 loads) makes ``imread`` refuse an image
whose header claims more pixels than the runtime accepts for a frame, before it allocates
the decoded image: a 1 MB PNG that claims 20000x20000 pixels would otherwise take 2.4 GB
before the frame-size check could see it.

Every edgevid module that uses OpenCV imports it from here: ``from edgevid.runtime._opencv import cv2``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
MAX_IMAGE_PIXELS = 100_000_000  # also edgevid.runtime.preprocess.MAX_FRAME_PIXELS
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402  (after the environment above, on purpose)

__all__ = ["MAX_IMAGE_PIXELS", "cv2"]
