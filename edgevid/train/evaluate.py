"""Torch-side evaluation of a zoo model on a dataset split (a two-stream model: both streams
on the same clips, and their fused scores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgevid.train.trainer import restores_sigchld

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from edgevid.manifest import Preprocess
    from edgevid.models import ModelConfig


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
    # A two-stream model: each stream alone on the same clips, {"rgb": {"top1": .., "order_pair": ..}, "flow": ..}.
    streams: dict[str, dict[str, float]] = field(default_factory=dict)
    # A model trained to stream (ModelConfig.stream_training): every video stepped from its first frame
    # to its last, scored by the final output (edgevid.train.stream_eval). None for the others.
    stream_top1: float | None = None
    stream_order_pair: float | None = None


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


def _spec(cfg: ModelConfig) -> Preprocess:
    """The preprocessing ``cfg``'s checkpoint was trained with."""
    from edgevid.manifest import Preprocess

    return Preprocess(resize=cfg.resize, crop=cfg.input_size, mean=list(cfg.mean), std=list(cfg.std))


def _check_classes(data: str, classes: list[str], labels: list[str]) -> None:
    from edgevid.errors import EdgevidError

    if classes != labels:
        raise EdgevidError(f"the classes of {data} do not match the checkpoint's: {_class_difference(classes, labels)}")


def _scores(name: str, split: str, scores: np.ndarray, labels: np.ndarray, classes: list[str],
            skipped: int, **extra: Any) -> EvalResult:
    """An ``EvalResult`` from the scores of every clip."""
    from edgevid.metrics import known_order_pairs, order_pair_accuracy, per_class_accuracy, top1_accuracy

    return EvalResult(name, split, len(labels), top1_accuracy(scores, labels),
                      order_pair_accuracy(scores, labels, classes, known_order_pairs(classes)),
                      per_class_accuracy(scores, labels, classes), skipped, **extra)


@restores_sigchld
def evaluate_checkpoint(model_name: str, data: str, checkpoint: str | None = "default", split: str = "val",
                        batch_size: int = 8, workers: int = 1, on_error: str = "raise",
                        progress: bool = True, rgb_checkpoint: str | None = None,
                        flow_checkpoint: str | None = None) -> EvalResult:
    """Evaluate ``model_name`` with ``checkpoint`` on ``split`` of ``data`` with the
    preprocessing and frame count the checkpoint was trained with (a motion model: its T
    motion stacks of T + L consecutive frames).

    A two-stream model is ``checkpoint`` (a two-stream checkpoint), or its two streams'
    checkpoints ``rgb_checkpoint`` and ``flow_checkpoint`` fused with the default weights
    (``two_stream.combine``; either one left out: that entry's shipped weights).
    """
    from torch.utils.data import DataLoader

    from edgevid.data.torch_dataset import clip_sampler, make_torch_dataset
    from edgevid.errors import EdgevidError
    from edgevid.models import build_model, get_config
    from edgevid.train.trainer import loader_workers, predict

    if get_config(model_name).family == "two-stream":
        return _evaluate_two_stream(model_name, data, checkpoint, rgb_checkpoint, flow_checkpoint, split,
                                    batch_size, workers, on_error, progress)
    if rgb_checkpoint is not None or flow_checkpoint is not None:
        raise EdgevidError(f"--rgb-checkpoint and --flow-checkpoint apply to two-stream-* models, not {model_name}")
    model = build_model(model_name, checkpoint=checkpoint)
    cfg = model.config
    sampler = clip_sampler(cfg.frames, cfg.sampling, cfg.motion, cfg.frame_stride)
    dataset = make_torch_dataset(data, split, _spec(cfg), sampler, train=False, on_error=on_error,
                                 augment=False, motion=cfg.motion)
    _check_classes(data, dataset.classes, model.labels)
    loader = DataLoader(dataset, batch_size=batch_size, **loader_workers(workers))
    logits, labels = predict(model, loader, progress, desc=f"eval {cfg.name}")
    streamed: dict[str, Any] = {}
    if cfg.stream_training and cfg.motion is None:
        from edgevid.metrics import known_order_pairs, order_pair_accuracy, top1_accuracy
        from edgevid.train.stream_eval import streamed_logits

        final, y, _ = streamed_logits(model, data, split, _spec(cfg), cfg.frame_stride, on_error, progress, batch_size)
        streamed = {"stream_top1": top1_accuracy(final, y),
                    "stream_order_pair": order_pair_accuracy(final, y, dataset.classes,
                                                             known_order_pairs(dataset.classes))}
    return _scores(cfg.name, split, logits, labels, dataset.classes, len(dataset.clips.skipped), **streamed)


def _two_stream_model(model_name: str, checkpoint: str | None, rgb_checkpoint: str | None,
                      flow_checkpoint: str | None) -> nn.Module:
    """The ``TwoStream`` to evaluate: a two-stream checkpoint (a file, or the entry's shipped one), else
    the checkpoints of its two streams combined, each defaulting to its entry's shipped weights."""
    from edgevid.errors import EdgevidError
    from edgevid.models import DEFAULT_CHECKPOINT, get_config
    from edgevid.models.two_stream import combine, load

    config = get_config(model_name)
    whole = checkpoint not in (None, DEFAULT_CHECKPOINT)
    if whole and (rgb_checkpoint is not None or flow_checkpoint is not None):
        raise EdgevidError("give --checkpoint (a two-stream checkpoint) or --rgb-checkpoint / --flow-checkpoint "
                           "(its streams), not both")
    if whole:
        return load(checkpoint)
    if rgb_checkpoint is None and flow_checkpoint is None and config.default_weights is not None:
        return load(config.default_weights.path)

    def shipped(entry: str, option: str) -> str:
        weights = get_config(entry).default_weights
        if weights is None:
            raise EdgevidError(f"{entry} ships no checkpoint: pass {option} FILE")
        return str(weights.path)

    return combine(rgb_checkpoint or shipped(f"tsn-{config.backbone}", "--rgb-checkpoint"),
                   flow_checkpoint or shipped(f"tsn-flow-{config.backbone}", "--flow-checkpoint"),
                   backbone=config.backbone)


def _evaluate_two_stream(model_name: str, data: str, checkpoint: str | None, rgb_checkpoint: str | None,
                         flow_checkpoint: str | None, split: str, batch_size: int, workers: int, on_error: str,
                         progress: bool) -> EvalResult:
    """Both streams on the same clips of T + L consecutive frames (flow: the T stacks; RGB: the T
    frames they end at), the fused scores, and each stream alone (``EvalResult.streams``)."""
    import sys

    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from edgevid.data.datasets import open_dataset
    from edgevid.data.torch_dataset import TwoStreamDataset, clip_sampler
    from edgevid.errors import EdgevidError
    from edgevid.train.trainer import loader_workers

    model = _two_stream_model(model_name, checkpoint, rgb_checkpoint, flow_checkpoint)
    model_name = model.config.name
    rgb_cfg, flow_cfg = model.rgb.config, model.flow.config
    motion = flow_cfg.motion
    if motion is None:
        raise EdgevidError(f"the flow stream of {model_name} is {flow_cfg.name}, which takes no motion input")
    if rgb_cfg.input_size != flow_cfg.input_size:
        # Fusion compares the same clip: both streams look at the same crop of the same frames.
        raise EdgevidError(f"the streams of {model_name} take other crops (rgb {rgb_cfg.input_size} px, "
                           f"flow {flow_cfg.input_size} px): train them at the same --size")
    clips = open_dataset(data, split, clip_sampler(flow_cfg.frames, motion=motion, stride=flow_cfg.frame_stride),
                         on_error=on_error)
    dataset = TwoStreamDataset(clips, _spec(rgb_cfg), _spec(flow_cfg), motion)
    _check_classes(data, dataset.classes, model.rgb.labels)
    loader = DataLoader(dataset, batch_size=batch_size, **loader_workers(workers))
    model.eval()
    rows: dict[str, list[np.ndarray]] = {"fused": [], "rgb": [], "flow": []}
    labels = []
    with torch.no_grad():
        for (rgb, flow), label in tqdm(loader, desc=f"eval {model_name}", leave=False, disable=not progress,
                                       file=sys.stderr):
            rows["fused"].append(model(rgb, flow).numpy())
            rows["rgb"].append(model.rgb(rgb).numpy())
            rows["flow"].append(model.flow(flow).numpy())
            labels.append(label.numpy())
    scores = {k: np.concatenate(v) for k, v in rows.items()}
    y, classes, skipped = np.concatenate(labels), dataset.classes, len(clips.skipped)
    streams = {}
    for name in ("rgb", "flow"):
        alone = _scores(name, split, scores[name], y, classes, skipped)
        streams[name] = {"top1": alone.top1, "order_pair": alone.order_pair}
    return _scores(model_name, split, scores["fused"], y, classes, skipped, streams=streams)
