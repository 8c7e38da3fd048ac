"""Weight sparsity: unstructured magnitude pruning (NNCF) and the 2:4 pattern (TensorRT).

Plainly: zeroed weights in a dense tensor do NOT make dense CPU or GPU kernels faster. A
convolution multiplies the zeros like any other number, so ONNX Runtime, OpenVINO on CPU
and TensorRT's dense kernels run an unstructured-sparse model at the same speed as the
dense one. What unstructured sparsity buys is a smaller compressed file (zeros compress
well) and, on hardware with sparse support, a path to speed. The only pattern a backend
here accelerates is 2:4 (two non-zeros in every group of four weights along the input
channels), which TensorRT runs on the sparse tensor cores of Ampere and Orin GPUs when the
engine is built with the sparse-weights flag; use ``--prune-channels`` for a speed-up on
CPUs.

- ``prune_unstructured`` uses ``nncf.prune`` (magnitude, global over all conv/linear
  weights). NNCF keeps masks as hooks during fine-tuning; ``nncf.strip`` would fold them
  into the weights but imports ``torchao`` in NNCF 3.4, which edgevid does not depend on,
  so ``bake_nncf_masks`` multiplies each weight by its mask and rebuilds a plain model.
- NNCF has no N:M mode, so ``prune_2_4`` builds 2:4 masks itself (the NVIDIA ASP rule: keep
  the two largest |w| of every four input channels at each output channel and kernel
  position) and holds them with ``torch.nn.utils.prune`` while fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgevid.errors import EdgevidError, require

PATTERN_2_4 = "2:4"


def parse_sparsity(value: str) -> float | str:
    """``--sparsity``: a ratio in (0, 1) or ``2:4``."""
    if value.strip() == PATTERN_2_4:
        return PATTERN_2_4
    try:
        ratio = float(value)
    except ValueError:
        raise EdgevidError(f"--sparsity must be a ratio in (0, 1) or 2:4, got {value!r}") from None
    if not 0.0 < ratio < 1.0:
        raise EdgevidError(f"--sparsity must be a ratio in (0, 1) or 2:4, got {value!r}")
    return ratio


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The conv and linear weights (what sparsity applies to), by parameter name."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def sparsity_of(model: nn.Module) -> dict[str, float]:
    """Fraction of zeros in the conv/linear weights, and over all parameters."""
    weights = weight_tensors(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    all_total = sum(p.numel() for p in model.parameters())
    return {"weights": zeros / max(total, 1), "all_parameters": all_zeros / max(all_total, 1)}


def prune_unstructured(model: nn.Module, ratio: float, example: torch.Tensor) -> nn.Module:
    """Global magnitude masks with ``nncf.prune`` (the model is wrapped in place and returned)."""
    nncf = require("nncf", "export")
    return nncf.prune(model, nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio=ratio, examples_inputs=example)


@torch.no_grad()
def bake_nncf_masks(wrapped: nn.Module, rebuild: Callable[[], nn.Module]) -> nn.Module:
    """A plain model (from ``rebuild()``) holding ``wrapped``'s weights times their NNCF masks."""
    from nncf.torch.function_hook.pruning.magnitude.algo import get_pruned_modules

    masks = {name: hook.binary_mask for name, hook in get_pruned_modules(wrapped).items()}
    plain = rebuild()
    ours = plain.state_dict()
    state = {k: v for k, v in wrapped.state_dict().items() if k in ours}
    for name, mask in masks.items():
        state[name] = state[name] * mask.to(state[name].dtype)
    plain.load_state_dict(state)
    return plain.eval()


def mask_2_4(weight: torch.Tensor) -> torch.Tensor | None:
    """The 2:4 mask of a conv (K, C, R, S) or linear (K, C) weight along C; None if C % 4 != 0."""
    if weight.dim() not in (2, 4) or weight.shape[1] % 4:
        return None
    w = weight.detach().abs()
    w = w.permute(0, 2, 3, 1) if w.dim() == 4 else w  # (K, R, S, C): groups of 4 input channels
    groups = w.reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(2, dim=1).indices, True)
    keep = keep.reshape(w.shape)
    return (keep.permute(0, 3, 1, 2) if weight.dim() == 4 else keep).to(weight.dtype)


def prune_2_4(model: nn.Module) -> dict[str, Any]:
    """Attach 2:4 masks (``torch.nn.utils.prune``) to every eligible conv/linear weight.

    Depthwise convs (one input channel per group) and layers whose input channels are not
    a multiple of 4 (the RGB stem) have no 2:4 form and stay dense, as in TensorRT.
    """
    from torch.nn.utils import prune

    done, skipped = [], []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        mask = mask_2_4(module.weight)
        if mask is None:
            skipped.append(name)
            continue
        prune.custom_from_mask(module, "weight", mask)
        done.append(name)
    if not done:
        raise EdgevidError("no layer of this model has a 2:4 form (input channels multiple of 4)")
    return {"layers_2_4": len(done), "dense_layers": skipped}


def remove_2_4_masks(model: nn.Module) -> None:
    """Fold the ``torch.nn.utils.prune`` masks into the weights (plain parameters again)."""
    from torch.nn.utils import prune

    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


def is_2_4(weight: torch.Tensor) -> bool:
    """True if every group of 4 input channels holds at most 2 non-zeros."""
    w = weight.detach()
    w = w.permute(0, 2, 3, 1) if w.dim() == 4 else w
    return bool(((w.reshape(-1, 4) != 0).sum(dim=1) <= 2).all())
