"""Streaming-state protocol: state as explicit inputs and outputs.

A streaming model is ``step(frame_t, *state_t) -> (logits_t, *state_t+1)``. Every stateful
module (online temporal shift, causal conv cache, ...) subclasses ``StatefulModule``:
in streaming mode it reads its state from ``state_in`` (zeros when ``None``) and leaves the
next one in ``state_out``. ``StreamingModel`` wires the explicit state tensors to those
modules in a fixed order (``named_modules`` order, i.e. depth-first definition order), so
export can name them ``state_in.<module path>`` / ``state_out.<module path>``.

Contract (tested for every streaming zoo entry): stepping T frames from the initial state
gives the same per-frame outputs as the causal clip model on those T frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgevid.errors import EdgevidError


@dataclass(frozen=True)
class StateSpec:
    """One state of a streaming model (batch-1 shape)."""

    path: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    init: float = 0.0


class StatefulModule(nn.Module):
    """Base of modules that carry state across time steps when streaming."""

    streaming: bool = False
    state_in: torch.Tensor | None = None
    state_out: torch.Tensor | None = None

    @property
    def has_state(self) -> bool:
        """False for a module that needs no state in this configuration (a time-strided pool of kernel 1, a causal
        non-local block that sees one frame per clip): it still steps, but no state is wired to it."""
        return True

    @property
    def can_stream(self) -> bool:
        """False for modules that need future frames (e.g. the bi-directional shift)."""
        return True

    def state_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """Shape of this module's state for the step input ``x``."""
        raise NotImplementedError

    def take_state(self, x: torch.Tensor) -> torch.Tensor:
        """The incoming state, or zeros (the initial value) when none was given."""
        if self.state_in is None:
            return x.new_zeros(self.state_shape(x))
        return self.state_in


def stateful_modules(model: nn.Module) -> list[tuple[str, StatefulModule]]:
    """(path, module) of every stateful module, in the fixed state order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, StatefulModule) and m.has_state]


class StreamingModel(nn.Module):
    """Online form of a causal video model: one frame in, per-frame logits and states out.

    ``model`` must provide ``forward_step(frame) -> logits`` (N, classes) for frames
    (N, 3, H, W). Weights are shared with ``model``, not copied.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        blocked = [name for name, m in stateful_modules(model) if not m.can_stream]
        if blocked:
            raise EdgevidError(
                f"{getattr(model, 'name', type(model).__name__)} cannot stream: its temporal shift is "
                "bi-directional and needs future frames; use the '-online' variant of the model "
                "(causal shift), or fine-tune one from this checkpoint with `edgevid train`"
            )
        self.model = model
        self._stateful = stateful_modules(model)

    @property
    def state_paths(self) -> list[str]:
        """Module paths of the states, in input/output order."""
        return [name for name, _ in self._stateful]

    def forward(self, frame: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if states and len(states) != len(self._stateful):
            raise ValueError(f"expected {len(self._stateful)} states, got {len(states)}")
        modules = [m for _, m in self._stateful]
        # Stateless ones too: a time-strided pool of kernel 1 steps differently from how it runs on a clip.
        stepping = [m for m in self.model.modules() if isinstance(m, StatefulModule)]
        for m in stepping:
            m.streaming = True
        for i, m in enumerate(modules):
            m.state_in = states[i] if states else None
        try:
            logits = self.model.forward_step(frame)
            new_states = tuple(m.state_out for m in modules)
        finally:
            for m in stepping:
                m.streaming, m.state_in, m.state_out = False, None, None
        return (logits, *new_states)

    step = forward

    @torch.no_grad()
    def state_specs(self, input_size: int | tuple[int, int]) -> list[StateSpec]:
        """The states for a (1, C, H, W) frame (C: 3, or a motion stack's channels), found by one probe
        step from zeros."""
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        param = next(self.model.parameters())
        frame = torch.zeros(1, getattr(self.model, "in_channels", 3), h, w, dtype=param.dtype, device=param.device)
        was_training = self.model.training
        self.model.eval()
        try:
            _, *outs = self.forward(frame)
        finally:
            self.model.train(was_training)
        return [StateSpec(p, tuple(s.shape), s.dtype) for p, s in zip(self.state_paths, outs)]

    def initial_states(self, input_size: int | tuple[int, int], batch: int = 1) -> list[torch.Tensor]:
        """Zero states for ``batch`` streams."""
        param = next(self.model.parameters())
        return [
            torch.full((batch, *s.shape[1:]), s.init, dtype=s.dtype, device=param.device)
            for s in self.state_specs(input_size)
        ]


def to_streaming(model: nn.Module) -> StreamingModel:
    """The online (streaming) form of a causal model; a clear error for a non-causal one."""
    return StreamingModel(model)
