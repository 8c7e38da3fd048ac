"""Structured channel pruning with Torch-Pruning that keeps the temporal shift valid.

NNCF 3.x has no filter pruning any more; Torch-Pruning builds the dependency graph of the
model and removes whole channels from every layer that shares them, so the result is a
smaller dense network: fewer MACs and lower latency on any backend.

The temporal shift and its meaning. In TSM the shift moves the first ``fold = C // 8``
channels of each residual block's INPUT (the residual stream, C channels) one frame along
time, in front of the block's first conv. Pruning residual-stream channels would change
which channels are shifted and how many (fold is recomputed from C), so the cached state
would no longer hold the features the network learned to shift. Choice: the residual
stream is left whole and only channels INSIDE the blocks are pruned: the expansion width
of every inverted residual (1x1 expand out, depthwise, 1x1 project in), the stem, and the
last 1x1 conv before the classifier. The shifted fold, the states' shapes and their
meaning are then unchanged (checked after pruning), while the pruned channels carry most
of MobileNetV2's compute (expansion factor 6): ratio 0.5 halves the MACs.

While Torch-Pruning traces the model, each ``TemporalShift`` is swapped for the conv it
wraps (the shift's slicing on the residual stream is irrelevant to the pruned channels,
and the tracer does not need to understand it), and put back afterwards.

A pruned checkpoint stores the pruned shapes in its state dict; rebuilding the zoo model with
those shapes is the models package's job (``edgevid.models.pruned.shrink_to_state_dict``,
called by ``build_model`` for checkpoints that carry ``pruned_channels``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgevid.errors import EdgevidError, require


def _swap_shifts_out(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    from edgevid.models.temporal_shift import TemporalShift

    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, TemporalShift):
                setattr(parent, name, child.net)
                swapped.append((parent, name, child))
    return swapped


def _swap_shifts_in(swapped: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for parent, name, shift in swapped:
        shift.net = getattr(parent, name)
        setattr(parent, name, shift)
        if shift.net.in_channels != shift.channels:  # the residual stream must be untouched
            raise EdgevidError(f"pruning changed the input of a shifted conv ({shift.channels} -> "
                               f"{shift.net.in_channels} channels): the shift would lose its meaning")


def residual_stream_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels are residual-stream channels (never pruned), and the classifier."""
    from torchvision.models.mobilenetv2 import InvertedResidual
    from torchvision.models.resnet import Bottleneck

    keep: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if hasattr(model, "head"):  # a 3D family's classifier (S3D's is a 1x1x1 conv): its outputs are the classes
        keep.append(model.head)
    for block in model.modules():
        if isinstance(block, InvertedResidual):
            keep.append([c for c in block.conv if isinstance(c, nn.Conv2d)][-1])  # 1x1 projection
        elif isinstance(block, Bottleneck):
            keep.append(block.conv3)
            if block.downsample is not None:
                keep.append(block.downsample[0])
    return keep


def count_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass on ``example``."""
    tp = require("torch_pruning", "export")
    was_training = model.training
    model.eval()
    try:
        macs, params = tp.utils.count_ops_and_params(model, example)
    finally:
        model.train(was_training)
    return int(macs), int(params)


def prune_channels(model: nn.Module, ratio: float, example: torch.Tensor, round_to: int = 8) -> dict[str, Any]:
    """Remove ``ratio`` of the prunable channels (L2 magnitude), in place; returns the counts.

    ``round_to`` keeps every pruned width a multiple of 8, which vector kernels (AVX-512,
    tensor cores) prefer.
    """
    tp = require("torch_pruning", "export")
    if not 0.0 < ratio < 1.0:
        raise EdgevidError(f"--prune-channels must be a ratio in (0, 1), got {ratio}")
    before = count_macs(model, example)
    swapped = _swap_shifts_out(model)
    try:
        pruner = tp.pruner.MagnitudePruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
            ignored_layers=residual_stream_layers(model), round_to=round_to)
        pruner.step()
    finally:
        _swap_shifts_in(swapped)
    after = count_macs(model, example)
    return {"ratio": ratio, "macs_before": before[0], "macs_after": after[0], "params_before": before[1],
            "params_after": after[1], "kept": "residual stream (shifted channels) intact"}
