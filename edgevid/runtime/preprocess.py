"""Frame preprocessing in numpy: the one function training, evaluation, export validation
and the runtime all call, so train and deploy preprocessing cannot drift.

A frame arrives as OpenCV gives it: uint8, HxWx3, BGR (grayscale HxW or HxWx1 and BGRA
are converted). It is resized so its shorter side is ``resize``, centre-cropped to
``crop`` x ``crop``, converted to RGB, and then either normalised to float32 CHW
(``(x / 255 - mean) / std``) or, for graphs that normalise inside (``uint8_input``), kept
as uint8 HWC.

Memory stays bounded by the crop, whatever the frame: a frame that would have to be
upscaled to a large image before cropping (a 1x20000 strip) is instead sampled straight
into the crop, with the same bilinear coordinates ``cv2.resize`` would use. Ordinary
frames take the plain resize-then-crop path, so training and deployment agree exactly.
"""

from __future__ import annotations

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import Preprocess
from edgevid.runtime._opencv import MAX_IMAGE_PIXELS, cv2

MAX_FRAME_PIXELS = MAX_IMAGE_PIXELS  # larger frames are refused: no camera or video delivers them
# An upscaled frame up to this many times the resize area (every aspect ratio up to 4:1) is
# resized whole and cropped; beyond it, only the crop is computed (see resize_crop).
_WHOLE_RESIZE_AREA = 4


def check_frame(frame: object) -> np.ndarray:
    """Return ``frame`` if it is a non-empty uint8 image array of a sane size, else raise."""
    if not isinstance(frame, np.ndarray):
        raise EdgevidError(f"a frame must be a numpy array (uint8 HxWx3 BGR), got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise EdgevidError(f"frames must be uint8 images, got dtype {frame.dtype}")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
        raise EdgevidError(f"frames must be HxW, HxWx1, HxWx3 or HxWx4 images, got shape {frame.shape}")
    h, w = frame.shape[:2]
    if h == 0 or w == 0:
        raise EdgevidError(f"empty frame ({w}x{h} pixels)")
    if h * w > MAX_FRAME_PIXELS:
        raise EdgevidError(f"frame of {w}x{h} pixels is too large (more than {MAX_FRAME_PIXELS // 10**6} megapixels)")
    return frame


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Return a uint8 HxWx3 BGR frame from grayscale, BGR or BGRA input."""
    frame = check_frame(frame)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def resize_crop(frame: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """Resize the shorter side to ``resize`` (keeping aspect) and centre-crop ``crop``."""
    frame = to_bgr(frame)
    h, w = frame.shape[:2]
    scale = resize / min(h, w)
    new_w, new_h = (w, h) if scale == 1 else (max(crop, round(w * scale)), max(crop, round(h * scale)))
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    if (new_w, new_h) == (w, h):
        return frame[top : top + crop, left : left + crop]
    if scale < 1 or new_w * new_h <= _WHOLE_RESIZE_AREA * resize * resize:
        # Downscaling never needs more memory than the frame itself.
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interp)
        return frame[top : top + crop, left : left + crop]
    # A large upscale: sample only the crop. Destination pixel (x, y) of the resized frame
    # reads source ((x + 0.5) * w / new_w - 0.5, ...) in cv2.resize's bilinear mapping (edges
    # replicated); the crop is that mapping shifted by (left, top).
    sx, sy = w / new_w, h / new_h
    m = np.array([[sx, 0.0, (left + 0.5) * sx - 0.5], [0.0, sy, (top + 0.5) * sy - 0.5]])
    return cv2.warpAffine(frame, m, (crop, crop), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


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
