"""Checkpoint loading and key mapping.

Understood layouts:
- plain state dicts of our models (``backbone.<torchvision names>``, ``fc.*``);
- our own training checkpoints: ``{"format": "edgevid", "model": ..., "config": {...},
  "labels": [...], "state_dict": ...}`` (written by ``save_checkpoint``);
- the official TSM repository: ``{"state_dict": ...}`` with ``module.base_model.*``, a
  ``.net`` inside every shifted conv and ``module.new_fc.*`` as the classifier; its
  MobileNetV2 keeps the InvertedResidual convs in one flat Sequential (``conv.0..7``);
- MMAction2 1.x's TSN / TSM (``backbone.*`` ConvModules, ``cls_head.fc_cls.*``), its TSN-flow
  included (conv1 of 2L input channels): ``mmaction_2d``;
- the official online demo's MobileNetV2: plain ``features.*`` / ``classifier.*`` keys;
- the 3D families' public layouts (torchvision video models, PyTorchVideo's X3D / SlowFast
  ``model_state``, classic C3D, 2D ImageNet ResNet-50 inflated for I3D): their wrapper maps
  them (``Clip3DClassifier.map_state_dict``).

Keys are matched after dropping the ``.net`` wrapper segment, so a shifted model loads a
checkpoint of the unshifted network (and the other way round) with the same code.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from edgevid.errors import EdgevidError
from edgevid.models.mmaction_2d import from_mmaction2

CHECKPOINT_FORMAT = "edgevid"

# Official TSM MobileNetV2: flat conv index -> torchvision's nested names.
_MBV2_EXPAND = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
_MBV2_NO_EXPAND = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
_MBV2_FLAT = re.compile(r"^(backbone\.features\.(\d+)\.conv)\.(\d+)\.(.*)$")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a checkpoint file."""
    from edgevid.manifest import sha256_file

    return sha256_file(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` (a checkpoint is untrusted input)."""
    if not os.path.isfile(path):
        raise EdgevidError(f"checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevidError(f"cannot read checkpoint {path}: {first}") from exc
    if not isinstance(obj, dict):
        raise EdgevidError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    return obj


def split_checkpoint(obj: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) from any supported checkpoint object."""
    meta: dict[str, Any] = {}
    if obj.get("format") == CHECKPOINT_FORMAT:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        state = obj["state_dict"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state = obj["state_dict"]
    elif "model" in obj and isinstance(obj["model"], dict):
        state = obj["model"]
    elif "model_state" in obj and isinstance(obj["model_state"], dict):  # PyTorchVideo / SlowFast
        state = obj["model_state"]
    else:
        state = obj
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise EdgevidError("checkpoint holds no tensors")
    return tensors, meta


def to_our_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official TSM / online-demo / torchvision / MMAction2 2D keys to ours (``.net`` kept as given)."""
    state = from_mmaction2(state)  # MMAction2's TSN / TSM (backbone.* ConvModules, cls_head.fc_cls)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k.startswith("base_model."):
            k = "backbone." + k[len("base_model."):]
        elif k.startswith("new_fc."):
            k = "fc." + k[len("new_fc."):]
        elif k.startswith("classifier."):  # online demo / torchvision MobileNetV2 head
            k = "fc." + k.split(".")[-1]
        elif not k.startswith(("backbone.", "fc.")):
            k = "backbone." + k
        if k.startswith("backbone.fc."):  # torchvision ResNet head
            k = "fc." + k[len("backbone.fc."):]
        out[k] = value
    return _unflatten_mobilenet(out)


def _unflatten_mobilenet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MobileNetV2 keeps each block's convs in one flat Sequential; torchvision nests."""
    flat_blocks = {m.group(2) for k in state if (m := _MBV2_FLAT.match(canonical_key(k)))
                   and m.group(3) == "1" and m.group(4) == "running_mean"}
    if not flat_blocks:
        return state
    max_index: dict[str, int] = {}
    for k in state:
        m = _MBV2_FLAT.match(canonical_key(k))
        if m and m.group(2) in flat_blocks:
            max_index[m.group(2)] = max(max_index.get(m.group(2), 0), int(m.group(3)))
    out = {}
    for key, value in state.items():
        m = _MBV2_FLAT.match(canonical_key(key))
        if m and m.group(2) in flat_blocks:
            table = _MBV2_EXPAND if max_index[m.group(2)] >= 7 else _MBV2_NO_EXPAND
            idx = table.get(m.group(3))
            if idx is None:
                raise EdgevidError(f"unexpected key {key} in a MobileNetV2 checkpoint")
            net = ".net" if ".net." in key else ""
            key = f"{m.group(1)}.{idx}{net}.{m.group(4)}"
        out[key] = value
    return out


def canonical_key(key: str) -> str:
    """Key with the shift wrapper's ``.net`` segment dropped."""
    return key.replace(".net.", ".")


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` (any supported layout) into ``model`` strictly, with clear errors.

    The classifier follows the checkpoint: a head of another size is replaced first. A model
    with its own public layout (the 3D families: ``map_state_dict``) maps the keys itself. An RGB
    checkpoint's first conv loads into a motion stream (flow / RGB-difference TSN) by TSN's
    cross-modality init (``two_stream.adapt_rgb_stems``, one warning line).
    """
    state = model.map_state_dict(state) if hasattr(model, "map_state_dict") else to_our_layout(state)
    head = f"net.{model.head_path}.weight" if hasattr(model, "head_path") else "fc.weight"
    ours = model.state_dict()
    by_canonical = {canonical_key(k): k for k in ours}
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        target = by_canonical.get(canonical_key(key))
        if target is None:
            unexpected.append(key)
        else:
            mapped[target] = value
    if getattr(model, "in_channels", 3) != 3 or hasattr(model, "streams"):  # a motion stream (TSN flow / rgbdiff)
        from edgevid.models.two_stream import adapt_rgb_stems

        adapt_rgb_stems(model, mapped, source)  # an RGB checkpoint's first conv: TSN's cross-modality init
    fc_w = mapped.get(head)
    if fc_w is not None and hasattr(model, "reset_classifier") and fc_w.shape != ours[head].shape \
            and fc_w.shape[1:] == ours[head].shape[1:]:
        model.reset_classifier(fc_w.shape[0])
        ours = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
                  for k, v in mapped.items() if v.shape != ours[k].shape]
    missing = [k for k in ours if k not in mapped and not k.endswith("num_batches_tracked")]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if problems:
        name = getattr(model, "name", "") or type(model).__name__
        raise EdgevidError(f"{source} does not fit {name}: " + "; ".join(problems)
                           + " — is it a checkpoint for another architecture or width?")
    require_finite(mapped, source)
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in mapped.items()}, strict=False)


def nonfinite_tensors(state: dict[str, Any]) -> tuple[list[str], int]:
    """(names of the floating-point tensors holding NaN or inf, number of tensors) of a state dict."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return bad, len(tensors)


def require_finite(state: dict[str, Any], source: str) -> None:
    """Refuse weights with NaN or inf: a diverged run, whose every output is NaN (or a constant).

    Such a model cannot be checked either: a NaN compares as no difference in a max over
    differences, and BatchNorm with an infinite variance makes every output the same.
    """
    bad, total = nonfinite_tensors(state)
    if bad:
        raise EdgevidError(f"{source} holds NaN or inf in {len(bad)} of {total} tensors (e.g. {bad[0]}): the weights "
                           "of a diverged training run; retrain with a lower --lr")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_name: str, labels: list[str],
                    config: dict[str, Any], **extra: Any) -> None:
    """Write our checkpoint format atomically (``manifest.atomic_writer``: mkstemp + rename); never
    non-finite weights."""
    from edgevid.manifest import atomic_writer

    state = model.state_dict()
    require_finite(state, f"the model to save at {path}")
    payload = {"format": CHECKPOINT_FORMAT, "model": model_name, "config": config, "labels": list(labels),
               "state_dict": state, **extra}
    with atomic_writer(path) as fh:
        torch.save(payload, fh)


def is_edgevid_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint written by edgevid (train, compress): ours to replace."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def check_checkpoint_output(path: str | os.PathLike, force: bool, flag: str = "-o") -> None:
    """Refuse to write a checkpoint over an existing file unless ``force`` and it is an edgevid checkpoint.

    Also checks that the folder accepts a new file, before any long run.
    """
    from edgevid.manifest import check_writable

    if os.path.isdir(path):
        raise EdgevidError(f"{flag} {path} is a directory: give the checkpoint file to write, "
                           f"e.g. {os.path.join(path, 'model.pt')}")
    if os.path.lexists(path):
        if not force:
            raise EdgevidError(f"{path} already exists; pass --force to replace it")
        if os.path.islink(path) or not is_edgevid_checkpoint(path):
            raise EdgevidError(f"{path} is not an edgevid checkpoint; refusing to replace it")
    check_writable(path)
