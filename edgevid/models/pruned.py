"""Rebuilding a zoo model at the layer widths of a channel-pruned checkpoint.

``edgevid compress --prune-channels`` removes whole channels and saves the smaller state
dict with ``pruned_channels``; loading it is the model zoo's job (``build_model`` calls
``shrink_to_state_dict`` before loading the weights), so the models package needs nothing
from ``edgevid.compress``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, new)


def _resized(module: nn.Module, **shapes: torch.Tensor) -> nn.Module:
    """A copy of ``module`` whose parameters / buffers named in ``shapes`` have those tensors' shapes."""
    new = copy.deepcopy(module)
    for name, like in shapes.items():
        old = getattr(new, name)
        fresh = torch.empty(like.shape, dtype=old.dtype)
        setattr(new, name, nn.Parameter(fresh, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter)
                else fresh)
    return new


def shrink_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize the conv/BN/linear layers of a zoo model (2D or 3D) to the shapes in a pruned state dict.

    Layers are copied and their tensors reshaped, so subclasses (the I3D's edge-padded convs)
    keep their own behaviour; only the channel counts change.
    """
    for path, module in list(model.named_modules()):
        weight = state.get(f"{path}.weight")
        if isinstance(module, nn.modules.conv._ConvNd) and weight is not None and weight.shape != module.weight.shape:
            out_ch, per_group = weight.shape[:2]
            depthwise = module.groups > 1 and module.groups == module.in_channels
            groups = out_ch if depthwise else module.groups
            tensors = {"weight": weight} | ({"bias": state[f"{path}.bias"]} if module.bias is not None else {})
            new = _resized(module, **tensors)
            new.in_channels, new.out_channels, new.groups = per_group * groups, out_ch, groups
            _replace(model, path, new)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and f"{path}.running_mean" in state:
            n = state[f"{path}.running_mean"].shape[0]
            if n != module.num_features:
                _replace(model, path, type(module)(n, module.eps, module.momentum, module.affine,
                                                   module.track_running_stats))
        elif isinstance(module, nn.Linear) and weight is not None and weight.shape != module.weight.shape:
            _replace(model, path, nn.Linear(weight.shape[1], weight.shape[0], module.bias is not None))
    return model
