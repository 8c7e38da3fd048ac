"""The torch ``Dataset`` for training and torch evaluation (the only data module importing torch).

Clips go through ``edgevid.runtime.preprocess.preprocess_clip``, the exact function the
deployed runtime calls, so training and deployment see the same pixels. Training
augmentation is applied after it, on the normalised tensor.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from edgevid.data.datasets import VideoClipDataset, open_dataset
from edgevid.data.sampling import ClipSampler
from edgevid.manifest import Preprocess
from edgevid.runtime.preprocess import preprocess_clip


def augment_clip(
    clip: torch.Tensor, spec: Preprocess, rng: np.random.Generator, shift: float = 0.1
) -> torch.Tensor:
    """Train-time augmentation of a normalised (T, 3, H, W) clip, the same for every frame.

    A random translation (up to ``shift`` of the size, edges replicated) and a random
    brightness/contrast change. Deliberately NO horizontal or vertical flip, and no time
    reversal: mirroring a clip turns moving_left into moving_right (and up into down, cw
    into ccw), reversing it swaps every order pair, so these would train on wrong labels.
    """
    t, c, h, w = clip.shape
    pad_y, pad_x = round(shift * h), round(shift * w)
    if pad_y or pad_x:
        padded = F.pad(clip, (pad_x, pad_x, pad_y, pad_y), mode="replicate")
        top, left = int(rng.integers(0, 2 * pad_y + 1)), int(rng.integers(0, 2 * pad_x + 1))
        clip = padded[:, :, top : top + h, left : left + w]
    # Photometric jitter in 0-1 pixel space, where "brightness" means what it says.
    mean = torch.tensor(spec.mean, dtype=clip.dtype).view(1, c, 1, 1)
    std = torch.tensor(spec.std, dtype=clip.dtype).view(1, c, 1, 1)
    pixels = clip * std + mean
    contrast, brightness = float(rng.uniform(0.8, 1.2)), float(rng.uniform(-0.1, 0.1))
    centre = pixels.mean()
    pixels = ((pixels - centre) * contrast + centre + brightness).clamp(0.0, 1.0)
    return ((pixels - mean) / std).contiguous()


class TorchVideoDataset(Dataset):
    """``(clip, label)`` with clip a float32 tensor (T, 3, crop, crop) from ``preprocess_clip``.

    Wraps a ``VideoClipDataset``; in train mode (``clips.train``) frames are sampled at
    random offsets and, if ``augment``, augmented by ``augment_clip``.
    """

    def __init__(self, clips: VideoClipDataset, preprocess: Preprocess, augment: bool = True) -> None:
        if preprocess.uint8_input:
            raise ValueError("TorchVideoDataset needs float clips: pass a Preprocess with uint8_input=False")
        self.clips = clips
        self.preprocess = preprocess
        self.augment = augment and clips.train
        self.classes = clips.classes

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = None
        if self.clips.train:
            # Seeded from torch's RNG: DataLoader reseeds it per worker and per epoch, so
            # offsets differ across workers and epochs yet repeat under torch.manual_seed.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        frames, label = self.clips.load(index, rng)
        clip = torch.from_numpy(preprocess_clip(frames, self.preprocess))
        if self.augment and rng is not None:
            clip = augment_clip(clip, self.preprocess, rng)
        return clip, label


def make_torch_dataset(
    root: str | os.PathLike,
    split: str,
    preprocess: Preprocess,
    sampler: ClipSampler,
    train: bool = False,
    on_error: str = "raise",
    augment: bool = True,
) -> TorchVideoDataset:
    """Torch dataset of ``split`` in a dataset folder: the one call training and evaluation need."""
    clips = open_dataset(root, split, sampler, train=train, on_error=on_error)
    return TorchVideoDataset(clips, preprocess, augment=augment)
