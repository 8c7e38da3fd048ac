"""Frame preprocessing in numpy: the one function training, evaluation, export validation
and the runtime all call, so train and deploy preprocessing cannot drift.

A frame arrives as OpenCV gives it: uint8, HxWx3, BGR (grayscale HxW or HxWx1 and BGRA
are converted). It is resized so its shorter side is ``resize``, centre-cropped to
``crop`` x ``crop``, converted to RGB, and then either normalised to float32 CHW
(``(x / 255 - mean) / std``) or, for graphs that normalise inside (``uint8_input``), kept
as uint8 HWC.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import Preprocess


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Return a uint8 HxWx3 BGR frame from grayscale, BGR or BGRA input."""
    if frame.dtype != np.uint8:
        raise EdgevidError(f"frames must be uint8 images, got dtype {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise EdgevidError(f"frames must be HxW, HxWx1, HxWx3 or HxWx4 images, got shape {frame.shape}")


def resize_crop(frame: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """Resize the shorter side to ``resize`` (keeping aspect) and centre-crop ``crop``."""
    frame = to_bgr(frame)
    h, w = frame.shape[:2]
    if min(h, w) != resize:
        scale = resize / min(h, w)
        new_w, new_h = max(crop, round(w * scale)), max(crop, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interp)
        h, w = new_h, new_w
    top, left = (h - crop) // 2, (w - crop) // 2
    return frame[top : top + crop, left : left + crop]


def normalize(rgb: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 HWC RGB (or NHWC) -> float32 CHW (or NCHW), ``(x / 255 - mean) / std``."""
    scale = np.float32(1.0 / 255.0)
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    x = (rgb.astype(np.float32) * scale - m) / s
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess_frame(frame: np.ndarray, spec: Preprocess) -> np.ndarray:
    """One BGR frame -> model input for one time step (CHW float32, or HWC uint8 RGB)."""
    crop = resize_crop(frame, spec.resize, spec.crop)
    rgb = crop[..., ::-1] if spec.channel_order == "RGB" else crop
    if spec.uint8_input:
        return np.ascontiguousarray(rgb)
    return normalize(rgb, spec.mean, spec.std)


def preprocess_clip(frames: list[np.ndarray] | np.ndarray, spec: Preprocess) -> np.ndarray:
    """T BGR frames -> (T, 3, crop, crop) float32 (or (T, crop, crop, 3) uint8)."""
    return np.stack([preprocess_frame(f, spec) for f in frames])
