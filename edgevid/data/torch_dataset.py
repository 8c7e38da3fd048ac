"""The torch ``Dataset`` for training and torch evaluation (the only data module importing torch).

Clips go through ``edgevid.runtime.preprocess.preprocess_clip``, the exact function the
deployed runtime calls, so training and deployment see the same pixels. Training
augmentation is applied after it, on the normalised tensor. Motion clips (optical flow,
RGB differences) go through ``edgevid.runtime.motion.motion_inputs``, the one function the
runtime, export validation and calibration use too.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from edgevid.data.datasets import VideoClipDataset, open_dataset
from edgevid.data.sampling import ClipSampler
from edgevid.manifest import Preprocess
from edgevid.runtime.preprocess import preprocess_clip

if TYPE_CHECKING:
    from edgevid.manifest import Motion


def clip_sampler(frames: int, mode: str = "segment", motion: Motion | None = None, stride: int = 1) -> ClipSampler:
    """The sampler of a model's clips. RGB: ``frames`` frames by ``mode``. A motion input:
    ``frames + motion.length`` consecutive frames ``stride`` apart, whatever ``mode``
    (``motion_inputs`` makes a stack at every frame after the first L: ``frames`` stacks)."""
    if motion is None:
        return ClipSampler(frames, mode=mode)
    # Dense, never segments: a stack is L consecutive fields, as the streaming runtime computes them.
    return ClipSampler(frames + motion.length, mode="dense", stride=stride)


def _translate(clip: torch.Tensor, rng: np.random.Generator, shift: float) -> torch.Tensor:
    """``clip`` (T, C, H, W) moved by one random offset up to ``shift`` of its size, edges replicated."""
    _, _, h, w = clip.shape
    pad_y, pad_x = round(shift * h), round(shift * w)
    if not (pad_y or pad_x):
        return clip
    padded = F.pad(clip, (pad_x, pad_x, pad_y, pad_y), mode="replicate")
    top, left = int(rng.integers(0, 2 * pad_y + 1)), int(rng.integers(0, 2 * pad_x + 1))
    return padded[:, :, top : top + h, left : left + w]


def augment_clip(
    clip: torch.Tensor, spec: Preprocess, rng: np.random.Generator, shift: float = 0.1
) -> torch.Tensor:
    """Train-time augmentation of a normalised (T, 3, H, W) clip, the same for every frame.

    A random translation (up to ``shift`` of the size, edges replicated) and a random
    brightness/contrast change. Deliberately NO horizontal or vertical flip, and no time
    reversal: mirroring a clip turns moving_left into moving_right (and up into down, cw
    into ccw), reversing it swaps every order pair, so these would train on wrong labels.
    """
    c = clip.shape[1]
    clip = _translate(clip, rng, shift)
    # Photometric jitter in 0-1 pixel space, where "brightness" means what it says.
    mean = torch.tensor(spec.mean, dtype=clip.dtype).view(1, c, 1, 1)
    std = torch.tensor(spec.std, dtype=clip.dtype).view(1, c, 1, 1)
    pixels = clip * std + mean
    contrast, brightness = float(rng.uniform(0.8, 1.2)), float(rng.uniform(-0.1, 0.1))
    centre = pixels.mean()
    pixels = ((pixels - centre) * contrast + centre + brightness).clamp(0.0, 1.0)
    return ((pixels - mean) / std).contiguous()


def augment_motion(clip: torch.Tensor, rng: np.random.Generator, shift: float = 0.1) -> torch.Tensor:
    """Train-time augmentation of a (T, C, H, W) motion clip: one random translation for every
    channel and step, nothing else.

    No photometric jitter: flow is displacement in pixels, not brightness (and jittering the
    frames before differencing only scales RGB differences). No flip: mirroring turns
    moving_left into moving_right, and a mirrored flow field would need its u negated too.
    A translation leaves every displacement as it was, so the labels stay true.
    """
    return _translate(clip, rng, shift).contiguous()


class TorchVideoDataset(Dataset):
    """``(clip, label)`` with clip a float32 tensor (T, 3, crop, crop) from ``preprocess_clip``,
    or, with ``motion``, (T, C, crop, crop) from ``motion_inputs`` (the sampler must then give
    T + L frames: ``clip_sampler``).

    Wraps a ``VideoClipDataset``; in train mode (``clips.train``) frames are sampled at
    random offsets and, if ``augment``, augmented by ``augment_clip`` (``augment_motion``).
    """

    def __init__(self, clips: VideoClipDataset, preprocess: Preprocess, augment: bool = True,
                 motion: Motion | None = None) -> None:
        if preprocess.uint8_input:
            raise ValueError("TorchVideoDataset needs float clips: pass a Preprocess with uint8_input=False")
        if motion is not None and clips.sampler.frames <= motion.length:
            raise ValueError(f"a {motion.kind} clip needs more than L={motion.length} frames, "
                             f"the sampler gives {clips.sampler.frames}")
        self.clips = clips
        self.preprocess = preprocess
        self.motion = motion
        self.augment = augment and clips.train
        self.classes = clips.classes

    def inputs(self, frames: np.ndarray) -> torch.Tensor:
        """The model input made from sampled BGR frames: the RGB clip, or the motion stacks."""
        if self.motion is None:
            return torch.from_numpy(preprocess_clip(frames, self.preprocess))
        from edgevid.runtime.motion import motion_inputs

        return torch.from_numpy(np.ascontiguousarray(motion_inputs(list(frames), self.motion, self.preprocess)))

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = None
        if self.clips.train:
            # Seeded from torch's RNG: DataLoader reseeds it per worker and per epoch, so
            # offsets differ across workers and epochs yet repeat under torch.manual_seed.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        frames, label = self.clips.load(index, rng)
        clip = self.inputs(frames)
        if self.augment and rng is not None:
            clip = augment_clip(clip, self.preprocess, rng) if self.motion is None else augment_motion(clip, rng)
        return clip, label


class TwoStreamDataset(Dataset):
    """``((rgb, motion), label)`` of one clip for a two-stream model: T + L consecutive frames,
    the motion stream's T stacks and, for the RGB stream, the T frames those stacks end at
    (stack k is complete when frame k + L arrives: what a streaming runtime has at that step).

    Evaluation only (no augmentation); ``clips`` must sample with ``clip_sampler`` of the motion.
    """

    def __init__(self, clips: VideoClipDataset, rgb: Preprocess, motion_preprocess: Preprocess,
                 motion: Motion) -> None:
        self.rgb = TorchVideoDataset(clips, rgb, augment=False)
        self.flow = TorchVideoDataset(clips, motion_preprocess, augment=False, motion=motion)
        self.clips = clips
        self.motion = motion
        self.classes = clips.classes

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        frames, label = self.clips.load(index)
        return (self.rgb.inputs(frames[self.motion.length :]), self.flow.inputs(frames)), label


def make_torch_dataset(
    root: str | os.PathLike,
    split: str,
    preprocess: Preprocess,
    sampler: ClipSampler,
    train: bool = False,
    on_error: str = "raise",
    augment: bool = True,
    motion: Motion | None = None,
) -> TorchVideoDataset:
    """Torch dataset of ``split`` in a dataset folder: the one call training and evaluation need
    (``motion``: motion clips; ``sampler`` from ``clip_sampler`` with the same motion)."""
    clips = open_dataset(root, split, sampler, train=train, on_error=on_error)
    return TorchVideoDataset(clips, preprocess, augment=augment, motion=motion)
