"""Non-local blocks (Wang et al., CVPR 2018): every space-time position attends to all others.

``NonLocal3d`` is mmcv's ``NonLocal3d`` (the block MMAction2's ``i3d_nl_*_r50`` configs insert
into ResNet3d) module for module, so an MMAction2 checkpoint's ``non_local_block.*`` keys load
unchanged: ``g``, ``theta``, ``phi`` are 1x1x1 convs with bias (mmcv's ``ConvModule`` without a
norm), ``conv_out`` a 1x1x1 conv without bias plus ``bn``; with ``sub_sample`` a 1x2x2 max pool
follows ``g`` and ``phi`` (``g.0.conv``, ``g.1``). The three modes of the paper and MMAction2:

- ``embedded_gaussian``: softmax(theta(x) . phi(x)) (``use_scale``: divided by sqrt(C') first);
- ``dot_product``: theta(x) . phi(x) / N, N the number of positions attended;
- ``gaussian``: softmax(x . x'), x' = x max-pooled when ``sub_sample`` (no theta, no phi).

y = that weight times g(x), and the block returns x + bn(conv_out(y)). The last BatchNorm
starts at zero (``zero_init``; the conv when there is no norm), so a block added to a trained
network leaves its output unchanged until fine-tuning moves it (tested).

The causal form, ``CoNonLocal3d`` (``edgevid.models.continual`` swaps it in for a streaming
entry): a position of frame t attends only to the positions of frames t - W + 1 .. t, W being the
frames the block sees in a clip of the model's length (the clip's own extent: the last frame of
a clip attends to the whole clip, as the offline block does). Streaming, it keeps the keys
(phi), values (g) and a "filled" flag of the last W - 1 frames as ONE explicit state,
``(N, C_phi + C_g + 1, W - 1, h, w)``: the flag masks the slots a young stream has not filled
yet (zeros, the initial state), so its first steps are not diluted by empty keys. Stepping it
equals the causal-masked clip block (tested to 1e-4 through whole networks).
"""

from __future__ import annotations

import torch
from torch import nn

from edgevid.models.continual import _Scheduled
from edgevid.models.mmaction3d import ConvModule

MODES = ("embedded_gaussian", "dot_product", "gaussian")


class NonLocal3d(nn.Module):
    """mmcv's ``NonLocal3d`` (reduction 2, its ``ConvModule`` names): (N, C, T, H, W) -> same shape."""

    def __init__(self, in_channels: int, mode: str = "embedded_gaussian", sub_sample: bool = True,
                 use_scale: bool = False, reduction: int = 2, norm: bool = True, zero_init: bool = True) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"non-local mode {mode!r}: one of {', '.join(MODES)}")
        self.in_channels, self.mode, self.use_scale = in_channels, mode, use_scale
        self.inter_channels = max(in_channels // reduction, 1)
        inter = self.inter_channels

        def proj(c_in: int, c_out: int) -> ConvModule:
            return ConvModule(nn.Conv3d(c_in, c_out, 1))  # mmcv's bias='auto': a bias without a norm

        pool = nn.MaxPool3d((1, 2, 2))  # sub-sampling is spatial only
        self.g: nn.Module = nn.Sequential(proj(in_channels, inter), pool) if sub_sample else proj(in_channels, inter)
        if mode != "gaussian":
            self.theta: nn.Module = proj(in_channels, inter)
            self.phi: nn.Module = nn.Sequential(proj(in_channels, inter), pool) if sub_sample \
                else proj(in_channels, inter)
        else:  # the input itself is the query; its pooled copy the key
            self.phi = pool if sub_sample else nn.Identity()
        self.conv_out = ConvModule(nn.Conv3d(inter, in_channels, 1, bias=not norm),
                                   nn.BatchNorm3d(in_channels) if norm else None)
        # mmcv's init_weights: g, theta, phi ~ N(0, 0.01) with zero bias (small pairwise products, so the softmax
        # starts soft), and the output's last layer zero.
        for m in (self.g, getattr(self, "theta", None), self.phi):
            conv = next((c for c in m.modules() if isinstance(c, nn.Conv3d)), None) if m is not None else None
            if conv is not None:
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
        last = self.conv_out.bn if norm else self.conv_out.conv
        if zero_init:
            nn.init.zeros_(last.weight)
        else:
            nn.init.normal_(last.weight, std=0.01)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C', T, H, W): theta(x), or x itself (gaussian)."""
        return x if self.mode == "gaussian" else self.theta(x)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               allowed: torch.Tensor | None = None) -> torch.Tensor:
        """q (N, Q, C'), k (N, C', K), v (N, K, C_g) -> (N, Q, C_g); ``allowed``: (N or 1, Q or 1, K), which keys
        each query may see (None: all, the offline block)."""
        pairwise = torch.matmul(q, k)
        if self.mode == "dot_product":
            if allowed is None:
                return torch.matmul(pairwise / pairwise.shape[-1], v)
            weights = allowed.to(pairwise.dtype)
            return torch.matmul(pairwise * weights / weights.sum(-1, keepdim=True), v)
        if self.mode == "embedded_gaussian" and self.use_scale:
            pairwise = pairwise / q.shape[-1] ** 0.5
        if allowed is not None:
            pairwise = torch.where(allowed, pairwise, torch.full_like(pairwise, float("-inf")))
        return torch.matmul(pairwise.softmax(dim=-1), v)

    def out(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x + conv_out(y), y (N, Q, C_g) laid back out as x's positions."""
        n, _, t, h, w = x.shape
        y = y.permute(0, 2, 1).reshape(n, self.inter_channels, t, h, w)
        return x + self.conv_out(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.queries(x).flatten(2).transpose(1, 2)
        k = self.phi(x).flatten(2)
        v = self.g(x).flatten(2).transpose(1, 2)
        return self.out(x, self.attend(q, k, v))


def _frame_of(positions_per_frame: int, frames: int, like: torch.Tensor) -> torch.Tensor:
    """The frame index of each flattened (t, h, w) position."""
    return torch.arange(frames, device=like.device).repeat_interleave(positions_per_frame)


class CoNonLocal3d(NonLocal3d, _Scheduled):
    """The causal non-local block: frame t attends to frames t - W + 1 .. t; one explicit state when streaming.

    Built from an offline block (``CoNonLocal3d.of``), sharing its parameters and their names.
    With W = 1 (a block that sees one frame per clip) it attends within the frame and keeps no
    state: ``edgevid.models.continual`` then leaves it out of the stateful modules.
    """

    window: int = 1

    @classmethod
    def of(cls, block: NonLocal3d, window: int) -> NonLocal3d:
        """``block`` made causal over ``window`` frames (the same parameter objects and names)."""
        co = cls.__new__(cls)
        nn.Module.__init__(co)
        for name in ("in_channels", "mode", "use_scale", "inter_channels"):
            setattr(co, name, getattr(block, name))
        for name, child in block.named_children():
            setattr(co, name, child)
        co.window = max(1, int(window))
        return co

    @property
    def has_state(self) -> bool:
        return self.window > 1

    def state_shape(self, current: torch.Tensor) -> tuple[int, ...]:
        """keys | values | filled of the last W - 1 frames, for this step's ``current`` (N, C_k + C_v + 1, 1, h', w')."""
        n, c, _, h, w = current.shape
        return (n, c, self.window - 1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, t, h, w = x.shape
        q = self.queries(x).flatten(2).transpose(1, 2)  # (N, T h w, C')
        k, v = self.phi(x), self.g(x)  # (N, C, T, h', w')
        if not self.streaming or self.window == 1:
            qf, kf = _frame_of(h * w, t, x), _frame_of(k.shape[3] * k.shape[4], t, x)
            allowed = (kf[None, :] <= qf[:, None]) & (kf[None, :] > qf[:, None] - self.window)
            return self.out(x, self.attend(q, k.flatten(2), v.flatten(2).transpose(1, 2), allowed[None]))
        current = torch.cat([k, v, torch.ones_like(k[:, :1])], dim=1)  # this frame's keys | values | filled
        state = self.take_state(current)
        window = torch.cat([state, current], dim=2)
        self.state_out = self._advance(window[:, :, 1:], state)
        c_k = k.shape[1]
        keys, values, filled = window[:, :c_k], window[:, c_k:-1], window[:, -1:]
        allowed = filled.flatten(2) > 0.5  # (N, 1, W h' w'): the slots of a young stream stay masked
        return self.out(x, self.attend(q, keys.flatten(2), values.flatten(2).transpose(1, 2), allowed))
