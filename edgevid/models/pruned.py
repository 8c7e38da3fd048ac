"""Rebuilding a zoo model at the layer widths of a channel-pruned checkpoint.

``edgevid compress --prune-channels`` removes whole channels and saves the smaller state
dict with ``pruned_channels``; loading it is the model zoo's job (``build_model`` calls
``shrink_to_state_dict`` before loading the weights), so the models package needs nothing
from ``edgevid.compress``.
"""

from __future__ import annotations

import torch
from torch import nn


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, new)


def shrink_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize the conv/BN/linear layers of a zoo model to the shapes in a pruned state dict."""
    for path, module in list(model.named_modules()):
        weight = state.get(f"{path}.weight")
        if isinstance(module, nn.Conv2d) and weight is not None and weight.shape != module.weight.shape:
            out_ch, per_group = weight.shape[:2]
            depthwise = module.groups > 1 and module.groups == module.in_channels
            groups = out_ch if depthwise else module.groups
            new = nn.Conv2d(per_group * groups, out_ch, module.kernel_size, module.stride, module.padding,
                            module.dilation, groups, module.bias is not None, module.padding_mode)
            _replace(model, path, new)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and f"{path}.running_mean" in state:
            n = state[f"{path}.running_mean"].shape[0]
            if n != module.num_features:
                _replace(model, path, type(module)(n, module.eps, module.momentum, module.affine,
                                                   module.track_running_stats))
        elif isinstance(module, nn.Linear) and weight is not None and weight.shape != module.weight.shape:
            _replace(model, path, nn.Linear(weight.shape[1], weight.shape[0], module.bias is not None))
    return model
