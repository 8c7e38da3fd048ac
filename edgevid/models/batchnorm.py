"""BatchNorm statistics re-estimation ("BN adaptation").

A freshly initialised network has running stats of mean 0 / var 1, which in eval mode
lets activations grow until ReLU6 saturates, so every input gives the same logits. Tests
use this to get a random model whose outputs depend on its input; compression uses it to
repair statistics after pruning.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, clips: Iterable[torch.Tensor]) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/var as the plain average over ``clips``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    try:
        for clip in clips:
            model(clip)
    finally:
        for m, (momentum, training) in zip(norms, saved):
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
    return model
