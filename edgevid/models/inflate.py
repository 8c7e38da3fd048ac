"""Inflating 2D networks to 3D (Carreira & Zisserman 2017): a 2D kernel copied K_t times along time, / K_t.

A "boring" video of one repeated frame then gives the 2D network's activations: every
inflated conv sums K_t equal frames weighted 1/K_t each. That holds at the clip's borders
too only if the temporal padding repeats the border frame instead of adding zeros, so the
inflated convs here pad time by edge replication (``EdgePadConv3d``); space keeps the 2D
network's zero padding. Temporal max pools and strides keep equal frames equal.
"""

from __future__ import annotations

import torch
from torch import nn


class EdgePadConv3d(nn.Conv3d):
    """A Conv3d whose temporal padding repeats the first / last frame (spatial padding: zeros).

    Same parameters (and state-dict keys) as ``nn.Conv3d``; ``time_pad`` frames are added on
    each side before the convolution, which itself pads only space.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int],
                 stride: tuple[int, int, int] = (1, 1, 1), padding: tuple[int, int, int] = (0, 0, 0),
                 bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=(0, padding[1], padding[2]),
                         bias=bias)
        self.time_pad = int(padding[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            # Slices and a concat rather than F.pad(mode="replicate"): ONNX's Pad has no
            # down-conversion below opset 18, and TensorRT 8.5 parses only constant padding.
            p = self.time_pad
            x = torch.cat([x[:, :, :1]] * p + [x] + [x[:, :, -1:]] * p, dim=2)
        return super().forward(x)


def inflate_conv(conv: nn.Conv2d, time_kernel: int, time_stride: int = 1) -> EdgePadConv3d:
    """The 3D version of ``conv`` (same channels, spatial kernel, stride, padding), weights inflated."""
    out = EdgePadConv3d(conv.in_channels, conv.out_channels, (time_kernel, *conv.kernel_size),
                        stride=(time_stride, *conv.stride), padding=(time_kernel // 2, *conv.padding),
                        bias=conv.bias is not None)
    with torch.no_grad():
        out.weight.copy_(inflate_weight(conv.weight, time_kernel))
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


def inflate_weight(weight: torch.Tensor, time_kernel: int) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, time_kernel, kh, kw), repeated along time and divided by ``time_kernel``."""
    return weight.unsqueeze(2).repeat(1, 1, time_kernel, 1, 1) / time_kernel


def inflate_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict with every 4D conv weight that ``model`` holds as 5D inflated to the model's temporal size.

    Everything else (BatchNorm, fc, already-3D weights) passes unchanged, so a 2D ImageNet
    checkpoint with the same module names loads into the inflated network.
    """
    ours = model.state_dict()
    out = {}
    for key, value in state.items():
        target = ours.get(key)
        if target is not None and value.dim() == 4 and target.dim() == 5 and value.shape == target.shape[:2] + \
                target.shape[3:]:
            value = inflate_weight(value, target.shape[2])
        out[key] = value
    return out
