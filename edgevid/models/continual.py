"""Continual 3D CNNs (Hedegaard & Iosifidis, ECCV 2022): a 3D CNN stepped one frame at a time, with explicit state.

``to_continual(model)`` rewrites a ``Clip3DClassifier``'s temporal layers in place, keeping
every parameter name (the streaming model loads the clip model's checkpoint as it is):

- a Conv3d with temporal kernel K > 1 becomes ``CoConv3d``: causal along time, and when
  streaming it keeps its last K - 1 input frames as state (the pre-cached form,
  ``y_t = sum_k W_k * x_{t-k}``);
- a Max/AvgPool3d with temporal kernel K > 1 becomes ``CoPool3d``, the same way;
- a time-strided conv of temporal kernel 1 (a ResNet shortcut) becomes ``CoStrided``, and a
  time-strided pool of kernel 1 (MMAction2 I3D's pool1) a stateless ``CoPool3d``;
- a non-local block becomes ``CoNonLocal3d`` (``edgevid.models.non_local``): a position attends
  to the last W frames' positions only, W the frames the block sees in a clip of the model's
  length, and streaming keeps those frames' keys and values as its state;
- a global average pool (the head's, and each squeeze-excitation's) becomes
  ``CoWindowPool``: the mean of the last W frames' spatial means, W being the frames that
  layer sees in a clip of the model's length, kept as state when streaming.

Temporal strides: a layer of stride s emits one output for every s inputs, at the last of
them (inputs s-1, 2s-1, ...), covering the K inputs that end there (K - s zero frames in front
of the clip when K > s). So the last output of a clip covers its last frame. Streaming runs
every layer on every step (the ONNX graph is static); a layer whose input arrives every P-th
step, starting at step o (P: the product of the strides before it), keeps its state only on
the steps t with (t - o) mod P == 0, read from a step counter that is a state too; what it
computes on the other steps is never kept, and the network's output is held (``HoldLast``)
between the steps that make a new one: a network of total temporal stride 8 predicts every 8
frames, the latest window's.

Contract (tested): stepping T frames from the zero state gives, at every step t, the
causal clip model's output on frames 0..t. The causal model is not the original one
(symmetric temporal padding, outputs at the first input of each stride): their difference is
measured in the tests and reported. Padding along time shifts features relative to the
source network (MODELS.md), so a checkpoint trained symmetrically loses accuracy when
streamed; fine-tuning the ``-online`` entry, a causal model trained on clips, closes that.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevid.models.streaming import StatefulModule


def _triple(v: int | tuple[int, ...]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _causal(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """``x`` with K - s zero frames in front (or s - K frames cut off): outputs end on each stride's last input."""
    extra = kernel - stride
    if extra > 0:
        return _zeros_in_front(x, extra)
    return x[:, :, -extra:] if extra < 0 else x


def _zeros_in_front(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``x`` (N, C, T, H, W) with ``frames`` zero frames before it.

    Concat, not F.pad: the exporter writes Pad-18 (axes input), which ONNX's version converter
    cannot lower to the opset 17 the export ships.
    """
    return torch.cat([torch.zeros_like(x[:, :, :1]).repeat(1, 1, frames, 1, 1), x], dim=2)


class _Scheduled(StatefulModule):
    """A stateful temporal layer: when its input arrives (``period``, ``offset``) and this step's phase."""

    period: int = 1
    offset: int = 0
    phase: torch.Tensor | None = None  # (N, 1) step counter of the current step, set per step

    def _gate(self, like: torch.Tensor) -> torch.Tensor:
        """1 on the steps that bring this layer a real input ((t - offset) mod period == 0), else 0."""
        if self.phase is None or self.period == 1:
            return like.new_ones((like.shape[0],) + (1,) * (like.dim() - 1))
        gate = (torch.remainder(self.phase - self.offset, self.period) == 0).to(like.dtype)
        return gate.view(like.shape[0], *([1] * (like.dim() - 1)))

    def _advance(self, window: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """The new state: the window's last frames on a real step, the old state otherwise."""
        gate = self._gate(old)
        return gate * window + (1 - gate) * old


class CoConv3d(nn.Conv3d, _Scheduled):
    """A causal Conv3d (temporal kernel K > 1); streaming keeps its last K - 1 inputs."""

    @classmethod
    def of(cls, conv: nn.Conv3d) -> CoConv3d:
        """The causal version of ``conv`` with its very parameters (same state-dict keys).

        Temporal padding becomes causal zeros; an I3D conv's edge-replicated time padding too.
        """
        co = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, (0, *conv.padding[1:]),
                 conv.dilation, conv.groups, conv.bias is not None)
        co.weight = conv.weight
        co.bias = conv.bias
        return co

    def state_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], x.shape[1], self.kernel_size[0] - 1, x.shape[3], x.shape[4])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.streaming:
            return super().forward(_causal(x, self.kernel_size[0], self.stride[0]))
        state = self.take_state(x)
        window = torch.cat([state, x], dim=2)
        self.state_out = self._advance(window[:, :, 1:], state)
        return F.conv3d(window, self.weight, self.bias, (1, *self.stride[1:]), self.padding, self.dilation,
                        self.groups)


class CoStrided(nn.Conv3d):
    """A time-strided conv of temporal kernel 1: the clip keeps each stride's last input; a stream has no state."""

    @classmethod
    def of(cls, conv: nn.Conv3d) -> CoStrided:
        """The version of ``conv`` that samples the last input of each stride, same parameters."""
        co = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                 conv.groups, conv.bias is not None)
        co.weight = conv.weight
        co.bias = conv.bias
        return co

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == 1:  # a stream's one frame: the step counter decides whether it is kept downstream
            return F.conv3d(x, self.weight, self.bias, (1, *self.stride[1:]), self.padding, self.dilation, self.groups)
        return super().forward(_causal(x, 1, self.stride[0]))


class CoPool3d(_Scheduled):
    """A causal temporal max / average pool (kernel K > 1); streaming keeps its last K - 1 inputs.

    Zero frames in front for max pools too: the stream's states start at zero (the manifest's
    initial value), and every temporal max pool of these families follows a ReLU. A pool of
    temporal kernel 1 and stride s > 1 (MMAction2 I3D's pool1) keeps each stride's last input in
    a clip and needs no state in a stream, like ``CoStrided``.
    """

    def __init__(self, pool: nn.MaxPool3d | nn.AvgPool3d) -> None:
        super().__init__()
        k, s, p = (_triple(v) for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding))
        self.kind = "max" if isinstance(pool, nn.MaxPool3d) else "avg"
        self.kernel, self.stride, self.spatial_padding = k, s, (0, p[1], p[2])

    @property
    def has_state(self) -> bool:
        return self.kernel[0] > 1

    def state_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], x.shape[1], self.kernel[0] - 1, x.shape[3], x.shape[4])

    def _pool(self, x: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool3d(x, self.kernel, stride, self.spatial_padding)
        return F.avg_pool3d(x, self.kernel, stride, self.spatial_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.streaming:
            return self._pool(_causal(x, self.kernel[0], self.stride[0]), self.stride)
        if not self.has_state:  # one frame in, one out: the step counter decides whether it is kept downstream
            return self._pool(x, (1, *self.stride[1:]))
        state = self.take_state(x)
        window = torch.cat([state, x], dim=2)
        self.state_out = self._advance(window[:, :, 1:], state)
        return self._pool(window, (1, *self.stride[1:]))


class CoWindowPool(_Scheduled):
    """The mean of the last ``window`` frames' spatial means (a causal global average pool).

    ``last_only``: the head's pool, whose clip-model output is the last position only (one
    prediction per clip); a squeeze-excitation's gives every position its own causal mean.
    """

    def __init__(self, window: int, last_only: bool) -> None:
        super().__init__()
        self.window, self.last_only = max(1, int(window)), last_only

    @property
    def has_state(self) -> bool:
        """A window of one frame (a clip of exactly the total temporal stride) keeps nothing."""
        return self.window > 1

    def state_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], x.shape[1], self.window - 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(3, 4), keepdim=True)  # (N, C, T, 1, 1)
        w = self.window
        if not self.streaming:
            padded = _zeros_in_front(means, w - 1) if w > 1 else means  # zeros count: the stream's zero state
            if self.last_only:
                return padded[:, :, -w:].sum(dim=2, keepdim=True) / w
            return F.avg_pool3d(padded, (w, 1, 1), 1)
        if w == 1:
            return means
        state = self.take_state(x)
        window = torch.cat([state, means], dim=2)
        self.state_out = self._advance(window[:, :, 1:], state)
        return window.sum(dim=2, keepdim=True) / w


class HoldLast(_Scheduled):
    """The network's output, held between the steps that produce a new one."""

    def state_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(x.shape)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.streaming:
            return logits
        self.state_out = self._advance(logits, self.take_state(logits))
        return self.state_out


class StepCounter(StatefulModule):
    """Which step of the stream this is, modulo the longest period, as (N, 1): a state like the others."""

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = max(1, int(period))

    def state_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], 1)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        phase = self.take_state(frame)
        self.state_out = torch.remainder(phase + 1, self.period)
        return phase


def _is_global_pool(m: nn.Module) -> bool:
    return isinstance(m, nn.AdaptiveAvgPool3d) and _triple(m.output_size) == (1, 1, 1)


def _is_temporal(m: nn.Module) -> bool:
    from edgevid.models.non_local import NonLocal3d

    if isinstance(m, NonLocal3d):  # attends across frames: made causal over its clip's window
        return True
    if isinstance(m, nn.Conv3d):
        return _triple(m.kernel_size)[0] > 1 or _triple(m.stride)[0] > 1
    if isinstance(m, (nn.MaxPool3d, nn.AvgPool3d)):
        return _triple(m.kernel_size)[0] > 1 or _triple(m.stride or m.kernel_size)[0] > 1
    return _is_global_pool(m)


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    holder = root.get_submodule(parent) if parent else root
    if name.isdigit():
        holder[int(name)] = new
    else:
        setattr(holder, name, new)


@torch.no_grad()
def _lengths(net: nn.Module, paths: list[str], frames: int, size: int) -> tuple[dict[str, int], int]:
    """Each module's input length along time for a clip of ``frames``, and the output's (meta device)."""
    lengths: dict[str, int] = {}
    meta = copy.deepcopy(net).to("meta")
    for p in paths:
        meta.get_submodule(p).register_forward_pre_hook(
            lambda mod, args, p=p: lengths.__setitem__(p, int(args[0].shape[2])))
    out = meta(torch.empty(1, 3, frames, size, size, device="meta"))
    return lengths, int(out.shape[0])


def to_continual(model: nn.Module, frames: int, size: int = 64) -> nn.Module:
    """Rewrite ``model`` (a ``Clip3DClassifier``) into its causal, streamable form, in place; returns it.

    ``frames``: the clip length the model was trained on (sets each window pool's length).
    The modules' periods come from a probe of the rewritten (causal) network on the meta device:
    with an input length L that is a multiple of every period, a layer of period P sees L / P
    frames; its first input arrives at step P - 1.
    """
    from edgevid.models.non_local import CoNonLocal3d, NonLocal3d

    net = model.net
    found = {p: m for p, m in net.named_modules() if _is_temporal(m)}
    heads = [p for p, m in found.items() if _is_global_pool(m)]
    head = heads[-1] if heads else None
    window_lengths, _ = _lengths(net, list(found), frames, size)  # the original network at the model's length
    for path, module in found.items():
        if isinstance(module, NonLocal3d):
            new: nn.Module = CoNonLocal3d.of(module, window_lengths.get(path, 1))
        elif isinstance(module, nn.Conv3d):
            new = CoConv3d.of(module) if _triple(module.kernel_size)[0] > 1 else CoStrided.of(module)
        elif _is_global_pool(module):
            new = CoWindowPool(window_lengths.get(path, 1), last_only=path == head)
        else:
            new = CoPool3d(module)
        _replace(net, path, new)
    scheduled = {p: m for p, m in net.named_modules() if isinstance(m, _Scheduled)}
    strides = [_triple(m.stride)[0] for m in net.modules() if isinstance(m, (nn.Conv3d, CoPool3d))]
    base = frames * math.prod(strides)  # a multiple of every period
    counts, _ = _lengths(net, list(scheduled), base, size)
    for p, m in scheduled.items():
        m.period = max(1, base // max(counts[p], 1))
        # Each stride's output comes on its last input: o' = o + P (s - 1), from (P, o) = (1, 0)
        # that is always P - 1, on every branch alike.
        m.offset = m.period - 1
    last = list(scheduled.values())[-1]  # the head (or C3D's pool5): nothing after it strides in time
    stride = last.stride[0] if isinstance(last, (CoConv3d, CoPool3d)) else 1
    hold = HoldLast()
    hold.period, hold.offset = last.period * stride, last.offset + last.period * (stride - 1)
    longest = math.lcm(*(m.period for m in scheduled.values()), hold.period)
    # Without temporal strides every step is a real one: no counter, nothing to hold (no idle states).
    model.hold = hold if hold.period > 1 else None
    model.step_counter = StepCounter(longest) if longest > 1 else None
    model.continual = True
    return model


def emission(model: nn.Module) -> tuple[int, int]:
    """(every, first) of a stream: a new output every ``every`` steps, the first at step ``first`` (1-based).

    A network of total temporal stride P answers on steps P, 2P, ... (each stride's last input) and
    holds its last output in between; (1, 1) for any model without a hold (stride-free, TSM, LRCN).
    """
    hold = getattr(model, "hold", None)
    if hold is None:
        return 1, 1
    return hold.period, hold.offset + 1
