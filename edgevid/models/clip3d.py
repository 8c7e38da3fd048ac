"""The wrapper every 3D-CNN family shares: clip (N, T, 3, H, W) in, logits out, public key layout.

The rest of edgevid (training, export, calibration, the runtime's clip sessions) passes clips
as (N, T, 3, H, W), frames first, as the 2D families take them. A 3D network wants
(N, 3, T, H, W); this wrapper permutes once in front of ``net``, which is the family's network
with its public module names (torchvision's, PyTorchVideo's, the classic C3D's), so a public
state dict is ``net.`` + its own keys: ``map_state_dict`` adds the prefix (and unwraps the
checkpoint formats those projects write: PyTorchVideo / SlowFast's ``model_state``). MMAction2's
recognizers (``layout="mmaction2"``) are rebuilt with its names too, so its ``backbone.*`` /
``cls_head.*`` keys load the same way; a checkpoint of the other layout family is refused with
the entries that read it, instead of a list of missing keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgevid.errors import EdgevidError


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, last = path.rpartition(".")
    holder = _get(module, parent) if parent else module
    if last.isdigit():
        holder[int(last)] = value
    else:
        setattr(holder, last, value)


class Clip3DClassifier(nn.Module):
    """A 3D CNN ``net`` over (N, 3, T, H, W) behind the (N, T, 3, H, W) clip interface.

    - ``head``: the path of the final classifier layer inside ``net`` (``"fc"``,
      ``"blocks.5.proj"``, ...): a ``nn.Linear`` or a 1x1x1 ``nn.Conv3d``.
    - ``inflate``: optional ``state -> state`` mapping applied to public state dicts before
      loading (I3D: 2D ImageNet weights inflated to 3D; SlowFast: the variant check).
    - ``layout``: ``"mmaction2"`` for MMAction2's recognizers (keys ``backbone.*`` and
      ``cls_head.*``), else ``""`` (torchvision's, PyTorchVideo's, classic C3D's names).
    """

    def __init__(self, net: nn.Module, head: str, name: str = "",
                 inflate: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None = None,
                 layout: str = "") -> None:
        super().__init__()
        self.name = name
        self.net = net
        self.head_path = head
        self._inflate = inflate
        self.layout = layout

    @property
    def head(self) -> nn.Module:
        """The classifier layer."""
        return _get(self.net, self.head_path)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        head = self.head
        return head.out_features if isinstance(head, nn.Linear) else head.out_channels

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes (same kind and input)."""
        head = self.head
        if isinstance(head, nn.Linear):
            new: nn.Module = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
        else:
            new = nn.Conv3d(head.in_channels, num_classes, head.kernel_size, head.stride, head.padding,
                            bias=head.bias is not None)
        _set(self.net, self.head_path, new)

    def map_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A public (or our own) state dict in this wrapper's key layout."""
        out = {}
        for key, value in state.items():
            k = key[len("module."):] if key.startswith("module.") else key
            if self.layout == "mmaction2" and k.startswith("data_preprocessor."):
                # The 0-255 mean / std some MMEngine versions saved (MMAction2's publish_model drops
                # them too): preprocessing constants, which the entry's config carries.
                continue
            out[k if k.startswith("net.") else "net." + k] = value
        _check_layout(out, self.name, self.layout)
        if self._inflate is not None:
            out = self._inflate(out, self)
        return out

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.net(clip.transpose(1, 2))  # (N, T, 3, H, W) -> (N, 3, T, H, W)

    def forward_step(self, frame: torch.Tensor) -> torch.Tensor:
        """One frame (N, 3, H, W) of the streaming form (``edgevid.models.continual``); used by
        ``StreamingModel``, which feeds the states."""
        if not getattr(self, "continual", False):
            raise EdgevidError(f"{self.name} is a clip model: use its '-online' entry to stream it")
        from edgevid.models.continual import _Scheduled

        phase = self.step_counter(frame) if self.step_counter is not None else None
        scheduled = [m for m in self.modules() if isinstance(m, _Scheduled)]  # the hold too
        for m in scheduled:
            m.phase = phase
        try:
            logits = self.net(frame.unsqueeze(2))
            return self.hold(logits) if self.hold is not None else logits
        finally:
            for m in scheduled:
                m.phase = None


def _check_layout(state: dict[str, torch.Tensor], name: str, layout: str) -> None:
    """Refuse an MMAction2 checkpoint for another layout's entry, and the other way round, naming what reads it."""
    from edgevid.models.registry import get_config, list_models

    mmaction = any(k.startswith("net.cls_head.") for k in state)
    if mmaction == (layout == "mmaction2") or not name:
        return
    family = get_config(name).family
    same = [c.name for c in list_models() if c.family == family and c.name != name and not c.can_stream
            and (c.builder.startswith("edgevid.models.mmaction_zoo:") == mmaction)]
    hint = f"use --model {' or '.join(same)}" if same else "see `edgevid zoo list`"
    if mmaction:
        raise EdgevidError(f"an MMAction2 checkpoint (backbone.* / cls_head.* keys) does not fit {name}: {hint}")
    raise EdgevidError(f"{name} reads MMAction2 checkpoints (backbone.* / cls_head.* keys), this one has none: {hint}")


def unwrap_checkpoint(obj: dict) -> dict:
    """PyTorchVideo / SlowFast checkpoints keep the weights under ``model_state``."""
    state = obj.get("model_state") if isinstance(obj, dict) else None
    return state if isinstance(state, dict) else obj
