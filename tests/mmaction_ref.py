"""MMAction2 1.x as the test reference: its real recognizers, built from its own configs.

Shared by the tests of every MMAction2 layout (2D and 3D). MMAction2 is a test-only
dependency (installed with ``pip install --no-deps mmaction2==1.2.0 mmengine mmcv-lite ...``);
a test module calls ``skip_without_mmaction()`` first.

- ``config_model(path)``: the ``model`` dict of a config that ships in the MMAction2 wheel
  (``mmaction/.mim/configs/<path>``), read with mmengine's own ``Config`` (bases merged), so
  the tests use the model zoo's configs, not a retyped copy.
- ``build_recognizer(cfg)``: ``MODELS.build`` of that dict with random weights (no
  ``pretrained`` download) and randomized BatchNorm (affine and running statistics), eval mode.
- ``save_mmaction_checkpoint(model, path)``: ``{"meta": ..., "state_dict": ...}`` as
  MMEngine's runner writes it (``weights_to_cpu(get_state_dict(model))``).
"""

from __future__ import annotations

import copy
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

_REGISTERED = False


def skip_without_mmaction() -> None:
    """Skip the calling test module when MMAction2 (or MMEngine / MMCV) is not installed."""
    for name in ("mmengine", "mmcv", "mmaction"):
        pytest.importorskip(name)


def _stub_drn() -> None:
    """The mmaction2 1.2.0 wheel lacks ``models/localizers/drn/``, which its package __init__ imports.

    A stand-in package with a ``DRN`` class lets ``mmaction.models`` import; DRN itself (a
    temporal grounding model) is never used here.
    """
    pkg_name = "mmaction.models.localizers.drn"
    if pkg_name in sys.modules:
        return
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = []  # a package: ``from .drn.drn import DRN`` looks for its submodule
    mod = types.ModuleType(pkg_name + ".drn")

    class DRN(nn.Module):
        """Stand-in for the missing localizer (never built)."""

    mod.DRN = DRN
    pkg.drn = mod
    sys.modules[pkg_name] = pkg
    sys.modules[pkg_name + ".drn"] = mod


def register() -> None:
    """Import MMAction2 and register its modules (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _stub_drn()
    from mmaction.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    _REGISTERED = True


def config_path(rel: str) -> str:
    """Absolute path of a config shipped in the MMAction2 wheel, e.g. ``recognition/i3d/....py``."""
    import mmaction

    path = os.path.join(os.path.dirname(mmaction.__file__), ".mim", "configs", rel)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MMAction2 config {rel} is not in the installed wheel ({path})")
    return path


def config_model(rel: str) -> dict[str, Any]:
    """The ``model`` dict of an MMAction2 config (its ``_base_`` files merged by mmengine)."""
    from mmengine.config import Config

    return Config.fromfile(config_path(rel)).model.to_dict()


def _no_download(cfg: Any) -> Any:
    """A copy of ``cfg`` with every ``pretrained`` URL / path set to None (nothing is fetched)."""
    if isinstance(cfg, dict):
        return {k: (None if k == "pretrained" and isinstance(v, str) else _no_download(v)) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_no_download(v) for v in cfg)
    return cfg


def randomize_batchnorm(model: nn.Module, seed: int = 0,
                        calibrate: Callable[[nn.Module], Any] | None = None) -> nn.Module:
    """Random BatchNorm affine parameters and running statistics; returns ``model`` in eval mode.

    ``calibrate(model)``, if given, runs a train-mode forward first: the statistics become that
    pass's (momentum None), so activations keep a sane scale through deep networks; they are
    then perturbed (mean shifted, variance scaled), so eps and the statistics' use are tested
    rather than an identity normalisation.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            if m.affine:
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(torch.empty_like(m.bias).normal_(0.0, 0.1, generator=gen))
            m.reset_running_stats()
        if calibrate is not None:
            saved = [m.momentum for m in bns]
            for m in bns:
                m.momentum = None  # cumulative average: exactly this pass's statistics
            model.train()
            calibrate(model)
            for m, momentum in zip(bns, saved):
                m.momentum = momentum
        for m in bns:
            n = m.running_mean.shape
            std = m.running_var.sqrt()
            m.running_mean.add_(0.2 * std * torch.randn(n, generator=gen))
            m.running_var.mul_(torch.empty(n).uniform_(0.5, 2.0, generator=gen))
    return model.eval()


def build_recognizer(cfg: dict[str, Any], seed: int = 0,
                     calibrate: Callable[[nn.Module], Any] | None = None) -> nn.Module:
    """An MMAction2 recognizer from a config's ``model`` dict: random weights, randomized BN, eval mode."""
    register()
    from mmaction.registry import MODELS

    torch.manual_seed(seed)
    model = MODELS.build(_no_download(copy.deepcopy(cfg)))
    return randomize_batchnorm(model, seed=seed + 1, calibrate=calibrate)


def save_mmaction_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
    """Save as MMEngine's runner does: ``{"meta": ..., "state_dict": weights_to_cpu(get_state_dict(model))}``."""
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu

    meta = {"mmengine_version": __import__("mmengine").__version__, "epoch": 1, "iter": 1,
            "experiment_name": "edgevid-test", **(meta or {})}
    save_checkpoint({"meta": meta, "state_dict": weights_to_cpu(get_state_dict(model))}, str(path))
