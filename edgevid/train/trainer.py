"""Fine-tuning a zoo model on a video dataset (CPU-friendly), with evaluation each epoch,
the best checkpoint kept, and resumption from the last epoch."""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgevid.errors import EdgevidError
from edgevid.manifest import Preprocess


@dataclass
class TrainConfig:
    """Everything one training run depends on (recorded in the checkpoint)."""

    model: str
    data: str
    out: str
    checkpoint: str | None = None  # initial weights (ours, official TSM, plain state dict)
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    size: int = 112
    resize: int | None = None  # shorter side before the crop; default size * 256 / 224
    frames: int = 8
    width_mult: float | None = None
    sampling: str = "segment"
    workers: int = 1
    seed: int = 0
    resume: bool = False
    on_error: str = "raise"
    progress: bool = True

    @property
    def preprocess(self) -> Preprocess:
        """The preprocessing the model is trained with (and deployed with)."""
        from edgevid.models import get_config

        cfg = get_config(self.model)
        resize = self.resize or round(self.size * 256 / 224)
        return Preprocess(resize=resize, crop=self.size, mean=list(cfg.mean), std=list(cfg.std))


@dataclass
class EpochResult:
    """Metrics of one epoch."""

    epoch: int
    train_loss: float
    val_top1: float
    val_pair: float
    seconds: float


def last_path(out: str | os.PathLike) -> Path:
    """Where the resumable state of the latest epoch lives, next to the best checkpoint."""
    return Path(f"{out}.last")


@torch.no_grad()
def predict(model: nn.Module, loader, progress: bool = False, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of every clip in ``loader``."""
    from tqdm import tqdm

    model.eval()
    logits, labels = [], []
    for clip, label in tqdm(loader, desc=desc, leave=False, disable=not progress, file=sys.stderr):
        logits.append(model(clip).numpy())
        labels.append(label.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def _loaders(cfg: TrainConfig):
    from torch.utils.data import DataLoader

    from edgevid.data.sampling import ClipSampler
    from edgevid.data.torch_dataset import make_torch_dataset

    sampler = ClipSampler(cfg.frames, mode=cfg.sampling)
    train = make_torch_dataset(cfg.data, "train", cfg.preprocess, sampler, train=True, on_error=cfg.on_error)
    val = make_torch_dataset(cfg.data, "val", cfg.preprocess, sampler, train=False, on_error=cfg.on_error)
    if train.classes != val.classes:
        raise EdgevidError(f"train and val splits of {cfg.data} have different classes")
    if len(train.classes) < 2:
        raise EdgevidError(f"{cfg.data} has only one class ({train.classes[0]}): a classifier needs at least two")
    generator = torch.Generator().manual_seed(cfg.seed)
    common = {"num_workers": cfg.workers, "persistent_workers": cfg.workers > 0}
    train_loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train) > cfg.batch_size,
                              generator=generator, **common)
    val_loader = DataLoader(val, batch_size=cfg.batch_size, shuffle=False, **common)
    return train_loader, val_loader, train.classes


def train(cfg: TrainConfig) -> list[EpochResult]:
    """Train, keeping the best checkpoint (by val top-1) at ``cfg.out``; returns the history."""
    from tqdm import tqdm

    from edgevid.models import build_model
    from edgevid.models.weights import save_checkpoint
    from edgevid.report.metrics import known_order_pairs, order_pair_accuracy, top1_accuracy

    if cfg.epochs < 1:
        raise EdgevidError("--epochs must be at least 1")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    train_loader, val_loader, classes = _loaders(cfg)
    pairs = known_order_pairs(classes)
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, width_mult=cfg.width_mult)
    if model.num_classes != len(classes):
        model.reset_classifier(len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history: list[EpochResult] = []
    best, start = -1.0, 0
    if cfg.resume:
        path = last_path(cfg.out)
        if not path.is_file():
            raise EdgevidError(f"nothing to resume: {path} not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, best = state["epoch"], state["best"]
        history = [EpochResult(**h) for h in state["history"]]
    arch = {"width_mult": model.config.width_mult, "num_classes": len(classes), "frames": cfg.frames,
            "input_size": cfg.size, "resize": cfg.preprocess.resize}
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        losses = []
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not cfg.progress,
                   file=sys.stderr)
        for clip, label in bar:
            loss = loss_fn(model(clip), label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        logits, labels = predict(model, val_loader, cfg.progress)
        result = EpochResult(epoch + 1, float(np.mean(losses)), top1_accuracy(logits, labels),
                             order_pair_accuracy(logits, labels, classes, pairs), time.perf_counter() - t0)
        history.append(result)
        improved = result.val_top1 > best
        if improved:
            best = result.val_top1
            save_checkpoint(cfg.out, model, cfg.model, classes, arch, epoch=result.epoch,
                            metrics={"val_top1": result.val_top1, "val_order_pair": result.val_pair},
                            train_config={k: v for k, v in asdict(cfg).items() if v is not None})
        # One line per epoch even with --quiet: the log of what happened.
        print(f"epoch {result.epoch:3d}/{cfg.epochs}  loss {result.train_loss:.3f}  val top-1 {result.val_top1:.3f}"
              f"  order-pair {result.val_pair:.3f}  {result.seconds:.0f}s{'  *best' if improved else ''}",
              file=sys.stderr)
        tmp = f"{last_path(cfg.out)}.tmp"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1,
                    "best": best, "history": [asdict(h) for h in history]}, tmp)
        os.replace(tmp, last_path(cfg.out))
    return history
