"""``edgevid compress``: torch-side compression of a zoo model, fine-tuned, measured, saved.

Methods (one per run):
- ``sparsity=R``: unstructured magnitude sparsity (``nncf.prune``), fine-tune, BN adaptation;
- ``sparsity="2:4"``: the 2:4 pattern TensorRT accelerates on Ampere/Orin;
- ``prune_channels=R``: structured channel pruning (Torch-Pruning), BN adaptation, fine-tune.

The result is an edgevid checkpoint that ``edgevid export --checkpoint`` takes like any other
(a channel-pruned one records ``pruned_channels`` so the model is rebuilt at its new widths).
Quantization-aware training (``--qat-epochs``) is not part of this build.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevid.errors import EdgevidError, EdgevidWarning


@dataclass
class CompressionReport:
    """Before/after figures of one compression run (JSON-ready via ``to_dict``)."""

    model: str
    method: str
    out: str
    top1_before: float
    top1_after: float
    epochs: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    file_bytes_before: int
    file_bytes_after: int
    zlib_bytes_before: int  # what the checkpoint takes compressed (zeros compress well)
    zlib_bytes_after: int
    sparsity: dict[str, float] = field(default_factory=dict)
    latency_ms_before: float | None = None  # torch CPU, one streaming step, 1 thread
    latency_ms_after: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _checkpoint_sizes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes, zlib-compressed bytes) of the model's state dict as ``torch.save`` writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        torch.save(model.state_dict(), path)
        data = path.read_bytes()
    return len(data), len(zlib.compress(data, 6))


@torch.no_grad()
def step_latencies_ms(models: list[torch.nn.Module], size: int, rounds: int = 40, steps: int = 3) -> list[float]:
    """Median latency of one streaming step (1, 3, size, size) for each model, torch, one thread.

    The models are measured in interleaved rounds after a warm-up, so a busy machine slows
    them alike instead of whichever happened to run during a spike.
    """
    from edgevid.models.streaming import to_streaming

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frame = torch.randn(1, 3, size, size)
        runs = []
        for model in models:
            model.eval()
            step = to_streaming(model).eval()
            runs.append((step, step.initial_states(size)))
        for step, states in runs:
            for _ in range(5):
                step(frame, *states)
        times: list[list[float]] = [[] for _ in runs]
        for _ in range(rounds):
            for i, (step, states) in enumerate(runs):
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(frame, *states)
                times[i].append((time.perf_counter() - t0) * 1e3 / steps)
    finally:
        torch.set_num_threads(threads)
    return [float(np.median(t)) for t in times]


def compress_model(model_name: str, data: str | os.PathLike, out: str | os.PathLike, *,
                   checkpoint: str | os.PathLike | None = None, sparsity: float | str | None = None,
                   prune_channels: float | None = None, epochs: int = 2, lr: float = 5e-4, batch_size: int = 8,
                   size: int | None = None, qat_epochs: int | None = None, measure_latency: bool = True,
                   progress: bool = False, force: bool = False) -> CompressionReport:
    """Compress ``model_name`` (weights from ``checkpoint``, default the shipped ones) with
    exactly one method, fine-tune ``epochs`` on ``data``'s train split, report on its val split,
    and write the checkpoint to ``out``.

    An existing ``out`` is replaced only with ``force``, and only if edgevid wrote it. The
    compressed checkpoint keeps what the source was trained with (frames, frame stride, input
    size, resize, width, and its ``train_config``), so its export samples frames alike.
    """
    from edgevid.compress import finetune as ft
    from edgevid.compress import prune
    from edgevid.compress import sparsity as sp
    from edgevid.manifest import Preprocess
    from edgevid.models import build_model, get_config
    from edgevid.models.weights import check_checkpoint_output, save_checkpoint

    if (sparsity is None) == (prune_channels is None):
        raise EdgevidError("choose exactly one method: --sparsity R, --sparsity 2:4 or --prune-channels R")
    if qat_epochs:
        raise EdgevidError("--qat-epochs is not available in this build; use `edgevid export --precision int8` "
                           "(post-training) with --max-accuracy-drop")
    if epochs < 0:
        raise EdgevidError(f"--epochs must be >= 0, got {epochs}")
    if isinstance(sparsity, str) and sparsity != sp.PATTERN_2_4:
        sparsity = sp.parse_sparsity(sparsity)
    if isinstance(sparsity, float) and not 0.0 < sparsity < 1.0:
        raise EdgevidError(f"--sparsity must be a ratio in (0, 1) or 2:4, got {sparsity}")
    if prune_channels is not None and not 0.0 < prune_channels < 1.0:
        raise EdgevidError(f"--prune-channels must be a ratio in (0, 1), got {prune_channels}")
    out = Path(out)
    check_checkpoint_output(out, force)  # before the long run: exists / not ours / unwritable

    if checkpoint is None and get_config(model_name).default_weights is not None:
        checkpoint = "default"
    if checkpoint is None:
        warnings.warn(f"{model_name} ships no checkpoint and none was given: compressing RANDOM weights",
                      EdgevidWarning, stacklevel=2)
    model = build_model(model_name, checkpoint=checkpoint).eval()
    cfg = model.config
    source_train_config = _train_config_of(model_name, checkpoint)
    size = size or cfg.input_size
    resize = cfg.resize if size == cfg.input_size else round(size * cfg.resize / cfg.input_size)
    spec = ft.DataSpec(str(data), Preprocess(resize=resize, crop=size, mean=list(cfg.mean), std=list(cfg.std)),
                       cfg.frames, batch_size)
    classes = _dataset_classes(spec)
    notes: list[str] = []
    if model.num_classes != len(classes):
        model.reset_classifier(len(classes))
        notes.append(f"classifier reset to the {len(classes)} classes of {data}")
    example = torch.zeros(1, cfg.frames, 3, size, size)

    top1_before = ft.evaluate(model, spec)
    macs_before, params_before = prune.count_macs(model, example)
    bytes_before, zbytes_before = _checkpoint_sizes(model)
    original = copy.deepcopy(model) if measure_latency and prune_channels is not None else None
    details: dict[str, Any] = {}

    if prune_channels is not None:
        method = f"channel pruning {prune_channels:g} (Torch-Pruning, residual stream kept)"
        details = prune.prune_channels(model, prune_channels, example)
        ft.adapt_batchnorm(model, spec)  # repair the statistics before fine-tuning from them
        details["loss"] = ft.finetune(model, spec, epochs, lr, progress=progress)
        ft.adapt_batchnorm(model, spec)
        notes.append("structured pruning removes whole channels: fewer MACs and lower latency on every backend")
    elif sparsity == sp.PATTERN_2_4:
        method = "2:4 sparsity (TensorRT sparse tensor cores, Ampere/Orin)"
        details = sp.prune_2_4(model)
        details["loss"] = ft.finetune(model, spec, epochs, lr, progress=progress)
        sp.remove_2_4_masks(model)
        ft.adapt_batchnorm(model, spec)
        notes.append("2:4 is accelerated by TensorRT on Ampere/Orin GPUs (build the engine with sparse weights); "
                     "CPU backends run it as a dense model")
    else:
        method = f"unstructured magnitude sparsity {sparsity:g} (nncf.prune, global)"
        wrapped = sp.prune_unstructured(model, float(sparsity), example)
        details["loss"] = ft.finetune(wrapped, spec, epochs, lr, progress=progress)

        def rebuild() -> torch.nn.Module:
            fresh = build_model(model_name, width_mult=cfg.width_mult, num_classes=len(classes))
            return fresh

        model = sp.bake_nncf_masks(wrapped, rebuild)
        model.config, model.labels = cfg, list(classes)
        ft.adapt_batchnorm(model, spec)
        notes.append("unstructured sparsity does NOT speed up dense CPU/GPU kernels: it only shrinks the "
                     "compressed file; use --prune-channels for speed, or --sparsity 2:4 for TensorRT on Ampere/Orin")

    top1_after = ft.evaluate(model, spec)
    macs_after, params_after = prune.count_macs(model, example)
    latency_before = latency_after = None
    if original is not None:
        latency_before, latency_after = step_latencies_ms([original, model], size)
    labels = list(classes)
    # Everything the source was trained and sampled with: the runtime steps a streaming model
    # ``frame_stride`` frames apart, so dropping it would silently change what the model sees.
    arch = {"width_mult": cfg.width_mult, "num_classes": len(classes), "frames": cfg.frames,
            "frame_stride": cfg.frame_stride, "input_size": size, "resize": resize}
    extra = {"train_config": source_train_config} if source_train_config else {}
    report = CompressionReport(
        model=cfg.name, method=method, out=str(out), top1_before=top1_before, top1_after=top1_after, epochs=epochs,
        params_before=params_before, params_after=params_after, macs_before=macs_before, macs_after=macs_after,
        file_bytes_before=bytes_before, file_bytes_after=0, zlib_bytes_before=zbytes_before, zlib_bytes_after=0,
        sparsity=sp.sparsity_of(model), latency_ms_before=latency_before, latency_ms_after=latency_after,
        details=details, notes=notes)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, cfg.name, labels, arch, compression=_jsonable(report.to_dict()),
                    pruned_channels=prune_channels is not None, **extra)
    report.file_bytes_after, report.zlib_bytes_after = _checkpoint_sizes(model)
    return report


def _train_config_of(model_name: str, checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
    """The ``train_config`` recorded in an edgevid checkpoint (how it was trained), if any."""
    from edgevid.models import DEFAULT_CHECKPOINT, get_config
    from edgevid.models.weights import read_checkpoint

    if checkpoint is None:
        return None
    if checkpoint == DEFAULT_CHECKPOINT:
        checkpoint = get_config(model_name).default_weights.path  # build_model has checked it exists
    value = read_checkpoint(checkpoint).get("train_config")
    return _jsonable(value) if isinstance(value, dict) else None


def _dataset_classes(spec: Any) -> list[str]:
    from edgevid.data.sources import resolve_split

    return list(resolve_split(spec.root, "train").classes)


def _jsonable(data: Any) -> Any:
    """Plain Python types only (the checkpoint is read back with ``weights_only=True``)."""
    import json

    return json.loads(json.dumps(data, default=str))
