"""Frame backbones from torchvision builders (no pretrained download), headless."""

from __future__ import annotations

from torch import nn

BACKBONES = ("resnet50", "mobilenetv2")


def build_backbone(name: str, width_mult: float = 1.0, in_channels: int = 3) -> tuple[nn.Module, int]:
    """A torchvision 2D CNN mapping (B, in_channels, H, W) -> (B, D) features, and D.

    The classifier is replaced by ``Identity`` (no parameters), so the remaining keys are
    torchvision's own names. ``in_channels`` other than 3 (a flow or RGB-difference stack)
    replaces the first conv by one of the same geometry, initialized as torchvision does.
    """
    import torchvision

    if name == "resnet50":
        if width_mult != 1.0:
            raise ValueError("resnet50 has no width multiplier; use mobilenetv2 for narrow models")
        net = torchvision.models.resnet50(weights=None)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        if in_channels != 3:
            net.conv1 = _stem_like(net.conv1, in_channels)
        return net, dim
    if name == "mobilenetv2":
        net = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult)
        dim = net.classifier[-1].in_features
        net.classifier = nn.Identity()
        if in_channels != 3:
            net.features[0][0] = _stem_like(net.features[0][0], in_channels)
        return net, dim
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")


def _stem_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``conv`` taking ``in_channels`` inputs; both torchvision networks init convs kaiming-normal, fan-out.

    Only built for in_channels != 3, so an RGB network draws exactly the random numbers it always did.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, not {in_channels}")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new
