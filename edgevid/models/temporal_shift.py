"""Temporal shift (TSM, Lin et al. ICCV 2019), written so ONNX export is exact.

The official code shifts with in-place slice assignment into a ``zeros_like`` buffer;
tracing can freeze that into constants, the most reported export bug against it. Here
every shift is built from slices and ``torch.cat`` only, so the exported graph computes
the shift from its input.

Three forms, all on the residual branch (the module wraps the branch's first conv):

- bidirectional (offline): channels [0, fold) take frame t+1, [fold, 2 fold) take frame
  t-1, the rest stay; zeros at the clip borders. For clips only.
- causal (uni-directional): channels [0, fold) take frame t-1 (zeros at t=0), the rest
  stay. Usable on a clip, and the same function as the online form below.
- online: the causal shift for one frame with explicit state: the state is the first
  ``fold`` channels of the previous frame; the new state is the current frame's.
"""

from __future__ import annotations

import torch
from torch import nn

from edgevid.models.streaming import StatefulModule

SHIFT_MODES = ("bidirectional", "causal")


def shift_bidirectional(x: torch.Tensor, n_segment: int, fold: int) -> torch.Tensor:
    """Offline TSM shift of ``x`` shaped (N*T, C, H, W)."""
    _, c, h, w = x.shape
    x = x.view(-1, n_segment, c, h, w)
    pad = torch.zeros_like(x[:, :1, :fold])
    from_next = torch.cat([x[:, 1:, :fold], pad], dim=1)  # channel block 0 <- frame t+1
    from_prev = torch.cat([pad, x[:, :-1, fold : 2 * fold]], dim=1)  # block 1 <- frame t-1
    out = torch.cat([from_next, from_prev, x[:, :, 2 * fold :]], dim=2)
    return out.flatten(0, 1)


def shift_causal(x: torch.Tensor, n_segment: int, fold: int) -> torch.Tensor:
    """Uni-directional (past to future) shift of ``x`` shaped (N*T, C, H, W)."""
    _, c, h, w = x.shape
    x = x.view(-1, n_segment, c, h, w)
    pad = torch.zeros_like(x[:, :1, :fold])
    from_prev = torch.cat([pad, x[:, :-1, :fold]], dim=1)
    out = torch.cat([from_prev, x[:, :, fold:]], dim=2)
    return out.flatten(0, 1)


def shift_online(x: torch.Tensor, state: torch.Tensor, fold: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame (N, C, H, W) of the causal shift: returns (shifted frame, new state)."""
    return torch.cat([state, x[:, fold:]], dim=1), x[:, :fold]


class TemporalShift(StatefulModule):
    """Residual-branch shift in front of ``net`` (the branch's first conv).

    The attribute is called ``net`` as in the official code, so a shifted conv's weights
    are ``<path>.net.weight`` in both. ``n_segment`` is set by the video model from the
    clip it is given.
    """

    def __init__(self, net: nn.Module, channels: int, shift_div: int = 8, mode: str = "bidirectional") -> None:
        super().__init__()
        if mode not in SHIFT_MODES:
            raise ValueError(f"shift mode must be one of {SHIFT_MODES}, got {mode!r}")
        if channels // shift_div < 1:
            raise ValueError(f"{channels} channels are too few to shift 1/{shift_div} of them")
        self.net = net
        self.channels = channels
        self.fold = channels // shift_div
        self.mode = mode
        self.n_segment = 1

    @property
    def can_stream(self) -> bool:
        """Only the causal shift has an online form."""
        return self.mode == "causal"

    def state_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """State shape for the frame ``x`` (N, C, H, W)."""
        return (x.shape[0], self.fold, x.shape[2], x.shape[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.streaming:
            x, self.state_out = shift_online(x, self.take_state(x), self.fold)
        elif self.mode == "bidirectional":
            x = shift_bidirectional(x, self.n_segment, self.fold)
        else:
            x = shift_causal(x, self.n_segment, self.fold)
        return self.net(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, channels={self.channels}, fold={self.fold}"
