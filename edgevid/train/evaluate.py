"""Torch-side evaluation of a zoo model on a dataset split."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgevid.train.trainer import restores_sigchld


@dataclass
class EvalResult:
    """Accuracy of one model on one split."""

    model: str
    split: str
    clips: int
    top1: float
    order_pair: float  # accuracy at telling time-reversed class pairs apart (chance 0.5); NaN if none
    per_class: dict[str, float] = field(default_factory=dict)
    skipped: int = 0


def _class_difference(data: list[str], model: list[str]) -> str:
    """What differs between a dataset's class list and a model's labels, in a few words."""
    def few(names: list[str]) -> str:
        return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")

    missing, extra = [c for c in model if c not in data], [c for c in data if c not in model]
    if len(data) == len(model) and not missing and not extra:
        return f"same {len(data)} names in another order (dataset: {few(data)}; checkpoint: {few(model)})"
    parts = [f"dataset has {len(data)} ({few(data)}), checkpoint {len(model)} ({few(model)})"]
    if extra:
        parts.append(f"not in the checkpoint: {few(extra)}")
    if missing:
        parts.append(f"not in the dataset: {few(missing)}")
    return "; ".join(parts)


@restores_sigchld
def evaluate_checkpoint(model_name: str, data: str, checkpoint: str | None = "default", split: str = "val",
                        batch_size: int = 8, workers: int = 1, on_error: str = "raise",
                        progress: bool = True) -> EvalResult:
    """Evaluate ``model_name`` with ``checkpoint`` on ``split`` of ``data`` with the
    preprocessing and frame count the checkpoint was trained with."""
    from torch.utils.data import DataLoader

    from edgevid.data.sampling import ClipSampler
    from edgevid.data.torch_dataset import make_torch_dataset
    from edgevid.errors import EdgevidError
    from edgevid.manifest import Preprocess
    from edgevid.metrics import (
        known_order_pairs,
        order_pair_accuracy,
        per_class_accuracy,
        top1_accuracy,
    )
    from edgevid.models import build_model
    from edgevid.train.trainer import loader_workers, predict

    model = build_model(model_name, checkpoint=checkpoint)
    cfg = model.config
    spec = Preprocess(resize=cfg.resize, crop=cfg.input_size, mean=list(cfg.mean), std=list(cfg.std))
    dataset = make_torch_dataset(data, split, spec, ClipSampler(cfg.frames), train=False, on_error=on_error,
                                 augment=False)
    if dataset.classes != model.labels:
        raise EdgevidError(f"the classes of {data} do not match the checkpoint's: "
                           f"{_class_difference(dataset.classes, model.labels)}")
    loader = DataLoader(dataset, batch_size=batch_size, **loader_workers(workers))
    logits, labels = predict(model, loader, progress, desc=f"eval {cfg.name}")
    classes = dataset.classes
    return EvalResult(cfg.name, split, len(labels), top1_accuracy(logits, labels),
                      order_pair_accuracy(logits, labels, classes, known_order_pairs(classes)),
                      per_class_accuracy(logits, labels, classes), len(dataset.clips.skipped))
