"""Short fine-tuning and evaluation of a (compressed) torch model on a dataset folder.

Compression changes the weights under a trained model; a few epochs at a small learning rate
on the train split recover most of the accuracy. Same data path as ``edgevid train``
(``make_torch_dataset``, the runtime preprocessing, the same augmentation), but the model
comes in as an object (masked, pruned or quantized), which the trainer does not take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgevid.manifest import Preprocess


@dataclass(frozen=True)
class DataSpec:
    """Where the clips come from and how they are made."""

    root: str
    preprocess: Preprocess
    frames: int
    batch_size: int = 8
    workers: int = 0


def _loader(spec: DataSpec, split: str, train: bool, seed: int = 0):
    from torch.utils.data import DataLoader

    from edgevid.data.sampling import ClipSampler
    from edgevid.data.torch_dataset import make_torch_dataset
    from edgevid.train.trainer import loader_workers

    dataset = make_torch_dataset(spec.root, split, spec.preprocess, ClipSampler(spec.frames), train=train,
                                 on_error="skip", augment=train)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=spec.batch_size, shuffle=train, generator=generator,
                      drop_last=train and len(dataset) > spec.batch_size, **loader_workers(spec.workers))


def finetune(model: nn.Module, spec: DataSpec, epochs: int, lr: float = 5e-4, seed: int = 0,
             progress: bool = False) -> list[float]:
    """Train ``model`` in place for ``epochs`` on the train split (AdamW, cosine); mean loss per epoch."""

    if epochs < 1:
        return []
    torch.manual_seed(seed)
    loader = _loader(spec, "train", train=True, seed=seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    from edgevid.train.trainer import run_epoch

    history = []
    for epoch in range(epochs):
        losses = run_epoch(model, loader, optimizer, scheduler, f"fine-tune {epoch + 1}/{epochs}", progress)
        history.append(float(np.mean(losses)) if losses else float("nan"))
    model.eval()
    return history


def evaluate(model: nn.Module, spec: DataSpec, split: str = "val") -> float:
    """Clip top-1 of ``model`` on ``split``."""
    from edgevid.metrics import top1_accuracy
    from edgevid.train.trainer import predict

    logits, labels = predict(model, _loader(spec, split, train=False))
    return top1_accuracy(logits, labels)


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, spec: DataSpec, batches: int = 16) -> None:
    """Re-estimate BatchNorm statistics on train clips (test-mode sampling, no augmentation)."""
    from edgevid.models.batchnorm import recalibrate_batchnorm

    loader = _loader(spec, "train", train=False)
    clips = [clip for i, (clip, _) in enumerate(loader) if i < batches]
    recalibrate_batchnorm(model, clips)
