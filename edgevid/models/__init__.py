"""Model zoo: ``build_model(name, checkpoint=...)`` and the registry (``list_models``, ...)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from edgevid.models.registry import ModelConfig, get_config, list_models, resolve_builder

__all__ = ["ModelConfig", "build_model", "get_config", "list_models", "DEFAULT_CHECKPOINT"]

# Config fields a checkpoint of ours overrides: its architecture and what it was trained on.
_FROM_CHECKPOINT = ("width_mult", "num_classes", "frames", "frame_stride", "input_size", "resize")
# Pass as ``checkpoint`` to use the checkpoint that ships with the zoo entry.
DEFAULT_CHECKPOINT = "default"


def build_model(name: str | ModelConfig, checkpoint: str | os.PathLike | None = None,
                num_classes: int | None = None, **overrides: Any):
    """Build a zoo model, optionally loading weights.

    ``checkpoint``: ``None`` (random init), ``"default"`` (the shipped checkpoint of the
    entry), or a path (ours, official TSM, or a plain state dict). The architecture fields
    stored in our own checkpoints (width, classes, frames, size) and the checkpoint's
    classifier size take precedence over the zoo defaults. The returned model carries
    ``.config`` (the effective ``ModelConfig``) and ``.labels``.
    """
    from edgevid.errors import EdgevidError
    from edgevid.models import weights

    config = name if isinstance(name, ModelConfig) else get_config(name)
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    labels: list[str] = []
    state = None
    meta: dict = {}
    source = "checkpoint"
    if checkpoint == DEFAULT_CHECKPOINT:
        spec = config.default_weights
        if spec is None:
            raise EdgevidError(f"{config.name} ships no checkpoint; pass --checkpoint PATH")
        checkpoint = spec.path
        if weights.sha256_of(checkpoint) != spec.sha256:
            raise EdgevidError(f"shipped checkpoint {checkpoint} is corrupt (sha256 mismatch); reinstall edgevid")
    if checkpoint is not None:
        source = str(checkpoint)
        state, meta = weights.split_checkpoint(weights.read_checkpoint(checkpoint))
        if meta:
            # Same family and backbone required; the shift mode may differ (fine-tuning an
            # online model from an offline checkpoint is how the TSM authors made theirs).
            other = get_config(meta["model"]) if meta.get("model") else config
            if (other.family, other.backbone) != (config.family, config.backbone):
                raise EdgevidError(f"{checkpoint} is a {other.name} checkpoint, not {config.name}")
            arch = {k: v for k, v in meta.get("config", {}).items() if k in _FROM_CHECKPOINT}
            config = replace(config, **arch)
            labels = list(meta.get("labels", []))
    if num_classes is not None:
        config = replace(config, num_classes=num_classes)
    model = resolve_builder(config)(config)
    if state is not None and meta.get("pruned_channels"):  # `edgevid compress --prune-channels` widths
        from edgevid.compress.prune import shrink_to_state_dict

        shrink_to_state_dict(model, state)
    if state is not None:
        weights.load_state(model, state, source=source)
        config = replace(config, num_classes=model.num_classes)
    if len(labels) != config.num_classes:
        labels = [f"class_{i}" for i in range(config.num_classes)]
    model.config = config
    model.labels = labels
    return model
