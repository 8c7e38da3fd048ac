"""Model zoo: ``build_model(name, checkpoint=...)`` and the registry (``list_models``, ...)."""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import replace
from typing import Any

from edgevid.errors import EdgevidWarning
from edgevid.models.registry import ModelConfig, get_config, list_models, resolve_builder

__all__ = ["ModelConfig", "build_model", "get_config", "list_models", "DEFAULT_CHECKPOINT", "LabelsWarning"]

# Config fields a checkpoint of ours overrides (its architecture and what it was trained on),
# with the range each must lie in: a checkpoint is untrusted input.
_FROM_CHECKPOINT: dict[str, tuple[type, float, float]] = {
    "width_mult": (float, 0.05, 8.0), "num_classes": (int, 1, 100_000), "frames": (int, 1, 1024),
    "frame_stride": (int, 1, 64), "input_size": (int, 16, 4096), "resize": (int, 16, 8192),
}


_WIDTH_FAMILIES = ("tsm", "tsn", "lrcn", "two-stream")


class LabelsWarning(EdgevidWarning):
    """A checkpoint's label list does not fit its classifier: generic names are used."""


def _checkpoint_arch(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The architecture fields of our checkpoint metadata, each checked for type and range."""
    from edgevid.errors import EdgevidError

    config = meta.get("config", {})
    if not isinstance(config, dict):
        raise EdgevidError(f"checkpoint {source}: its config is a {type(config).__name__}, expected a mapping")
    arch: dict[str, Any] = {}
    for key, (kind, low, high) in _FROM_CHECKPOINT.items():
        value = config.get(key)
        if value is None:
            continue
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (kind is int and value != int(value)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise EdgevidError(f"checkpoint {source}: config {key}={value!r} is not a valid value "
                               f"({kind.__name__} in [{low:g}, {high:g}]); the file is damaged or not from edgevid")
        arch[key] = kind(value)
    if "resize" in arch and arch["resize"] < arch.get("input_size", 0):
        raise EdgevidError(f"checkpoint {source}: config resize={arch['resize']} is smaller than its "
                           f"input_size={arch['input_size']}")
    sampling = config.get("sampling")
    if sampling is not None:
        if sampling not in ("segment", "dense"):
            raise EdgevidError(f"checkpoint {source}: config sampling={sampling!r} is not segment or dense; the file "
                               "is damaged or not from edgevid")
        arch["sampling"] = sampling
    labels = meta.get("labels", [])
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise EdgevidError(f"checkpoint {source}: labels must be a list of strings")
    return arch
# Pass as ``checkpoint`` to use the checkpoint that ships with the zoo entry.
DEFAULT_CHECKPOINT = "default"


def init_seed(name: str) -> int:
    """The seed of an entry's random initialization: from its name, so the same command builds
    the same network (two exports without a checkpoint, a clip and a stream export, the variants
    of one report)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def build_model(name: str | ModelConfig, checkpoint: str | os.PathLike | None = None,
                num_classes: int | None = None, *, global_rng: bool = False, **overrides: Any):
    """Build a zoo model, optionally loading weights.

    ``checkpoint``: ``None`` (random init), ``"default"`` (the shipped checkpoint of the
    entry), a path (ours, official TSM, MMAction2, PyTorchVideo, torchvision, a plain state
    dict), or the name of one of the entry's weights (``"kinetics400"``: a public checkpoint,
    downloaded once into the cache and verified by ``edgevid.models.hub``; an existing file of
    that name wins). A file that is an entry's public checkpoint (the source's file name) is
    checked against the source's hash and gets its labels (Kinetics-400, ...). The architecture
    fields stored in our own checkpoints (width, classes, frames, size) and the checkpoint's
    classifier size take precedence over the zoo defaults. The returned model carries
    ``.config`` (the effective ``ModelConfig``), ``.labels`` and ``.weights_info`` (the
    provenance of public weights for the manifest, else None). Random initialization is seeded by
    ``init_seed`` of the entry's name, leaving torch's global generator as it was; ``global_rng``
    draws from the global generator instead (train: its ``--seed`` seeded it, and its runs stay
    as they were).
    """
    from edgevid.errors import EdgevidError
    from edgevid.models import hub, weights

    config = name if isinstance(name, ModelConfig) else get_config(name)
    width = overrides.get("width_mult")
    if width is not None and width != 1.0 and config.family not in _WIDTH_FAMILIES:
        # The 3D networks have no width multiplier: ignoring it would train a full-width model silently.
        raise EdgevidError(f"--width-mult applies to the 2D-backbone families (TSM, TSN, LRCN), not {config.name}")
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    labels: list[str] = []
    state = None
    meta: dict = {}
    source = "checkpoint"
    shipped = None
    if checkpoint == DEFAULT_CHECKPOINT:
        shipped = config.default_weights
        if shipped is None:
            raise EdgevidError(f"{config.name} ships no checkpoint; pass --checkpoint PATH")
    elif isinstance(checkpoint, str) and not os.path.isfile(checkpoint) \
            and any(w.name == checkpoint for w in config.weights):
        spec = hub.find_weights(config, checkpoint)
        checkpoint, shipped = (hub.fetch(spec), None) if spec.url else (None, spec)
    if shipped is not None:
        checkpoint = shipped.path
        if weights.sha256_of(checkpoint) != shipped.sha256:
            raise EdgevidError(f"shipped checkpoint {checkpoint} is corrupt (sha256 mismatch); reinstall edgevid")
    public = hub.identify(config, checkpoint) if checkpoint is not None else None
    verified = hub.verify(public, checkpoint) if public is not None else None  # before unpickling it
    if checkpoint is not None:
        source = str(checkpoint)
        state, meta = weights.split_checkpoint(weights.read_checkpoint(checkpoint))
        if meta:
            # Same family and backbone required; the shift mode may differ (fine-tuning an
            # online model from an offline checkpoint is how the TSM authors made theirs).
            other = get_config(meta["model"]) if meta.get("model") else config
            if (other.family, other.backbone) != (config.family, config.backbone):
                raise EdgevidError(f"{checkpoint} is a {other.name} checkpoint, not {config.name}")
            config = replace(config, **_checkpoint_arch(meta, source))
            labels = list(meta.get("labels", []))
    if public is not None:
        labels = hub.labels_of(public)  # the source's class order, shipped as data
        config = replace(config, num_classes=public.num_classes)  # e.g. 174 for an entry's sthv2 weights
    if num_classes is not None:
        config = replace(config, num_classes=num_classes)
    if global_rng:
        model = resolve_builder(config)(config)
    else:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed(config.name))
            model = resolve_builder(config)(config)
    if state is not None and meta.get("pruned_channels"):  # `edgevid compress --prune-channels` widths
        from edgevid.models.pruned import shrink_to_state_dict

        shrink_to_state_dict(model, state)
    if state is not None:
        weights.load_state(model, state, source=source)
        config = replace(config, num_classes=model.num_classes)
        fusion = meta.get("config", {}).get("fusion")  # _checkpoint_arch refused a config that is no mapping
        if fusion is not None and hasattr(model, "fusion"):  # a two-stream checkpoint's own weights
            from edgevid.models.two_stream import check_fusion

            model.fusion = check_fusion(fusion)
    if len(labels) != config.num_classes:
        if labels:
            warnings.warn(LabelsWarning(
                f"checkpoint {source} lists {len(labels)} labels for a classifier of {config.num_classes} classes: "
                f"using generic names class_0..class_{config.num_classes - 1}"), stacklevel=2)
        labels = [f"class_{i}" for i in range(config.num_classes)]
    model.config = config
    model.labels = labels
    model.weights_info = hub.provenance(public, verified) if public is not None and verified is not None else None
    return model
