"""Frame backbones from torchvision builders (no pretrained download), headless."""

from __future__ import annotations

from torch import nn

BACKBONES = ("resnet50", "mobilenetv2")


def build_backbone(name: str, width_mult: float = 1.0) -> tuple[nn.Module, int]:
    """A torchvision 2D CNN mapping (B, 3, H, W) -> (B, D) features, and D.

    The classifier is replaced by ``Identity`` (no parameters), so the remaining keys are
    torchvision's own names.
    """
    import torchvision

    if name == "resnet50":
        if width_mult != 1.0:
            raise ValueError("resnet50 has no width multiplier; use mobilenetv2 for narrow models")
        net = torchvision.models.resnet50(weights=None)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim
    if name == "mobilenetv2":
        net = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult)
        dim = net.classifier[-1].in_features
        net.classifier = nn.Identity()
        return net, dim
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
