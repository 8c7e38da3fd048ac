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

from typing import Any  # noqa: E402

from edgevid.errors import MissingExtraError  # noqa: E402

# The newest opencv-python-headless whose wheels accept numpy<2 is 4.11.0.86 (its PyPI metadata: numpy>=1.23.5
# on Python 3.11; 4.12.0.88 requires numpy>=2,<2.3 and 4.13 numpy>=2). A Jetson bundle pins numpy<2 for
# JetPack's OpenCV; a plain `pip install opencv-python-headless` there would silently move numpy to 2.x.
OPENCV_FOR_NUMPY1 = "opencv-python-headless>=4.8,<4.12"


class MissingOpenCVError(MissingExtraError):
    """OpenCV (cv2) cannot be imported, and a frame source or preprocessing step needs it."""


class _MissingOpenCV:
    """Stands in for cv2 when it cannot be imported: any use raises ``MissingOpenCVError``.

    The runtime imports cv2 when it loads, but only frames need it: so a missing OpenCV is one
    line from the command that reads or resizes a frame, not an ImportError at start-up.
    """

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def __getattr__(self, name: str) -> Any:
        raise MissingOpenCVError(
            f"OpenCV (cv2) cannot be imported ({self._reason}), and edgevid reads and resizes frames with it: on a "
            "Jetson, use JetPack's (a venv made with --system-site-packages sees it); elsewhere: pip install "
            f"'{OPENCV_FOR_NUMPY1}' (the newest OpenCV wheels that accept numpy<2, which a bundle pins)")


try:
    import cv2  # noqa: E402  (after the environment above, on purpose)
except ImportError as exc:  # not installed, or a broken install (libGL missing, built for another numpy)
    cv2: Any = _MissingOpenCV(str(exc))

__all__ = ["MAX_IMAGE_PIXELS", "OPENCV_FOR_NUMPY1", "MissingOpenCVError", "cv2"]
