"""LRCN (Donahue et al. 2015): per-frame CNN features into an LSTM; the LSTM's h and c are the stream's state.

Many-to-one for clips (the label is the LSTM's output after the last frame), many-to-many
when streaming: every frame updates h and c and gives a prediction. The LSTM is one
``nn.LSTMCell`` stepped over time, so the clip graph and the streaming step are the same
arithmetic (the stream equals the clip model frame by frame) and both export to plain ONNX
ops (MatMul, Sigmoid, Tanh).
"""

from __future__ import annotations

import torch
from torch import nn

from edgevid.models.backbones import build_backbone
from edgevid.models.registry import ModelConfig, register
from edgevid.models.streaming import StatefulModule

HIDDEN = 256


class LSTMState(StatefulModule):
    """The LSTM cell, with [h, c] as one state of shape (N, 2 * hidden) when streaming."""

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(features, hidden)
        self.hidden = hidden

    def state_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], 2 * self.hidden)

    def step(self, x: torch.Tensor, hc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: features (N, F) and [h, c] -> (h, new [h, c]).

        ``nn.LSTMCell``'s arithmetic on its own parameters, with the gates cut by slicing: the
        exporter turns the cell itself into a Split of opset 18, which has no down-conversion
        to the opsets TensorRT parses.
        """
        n, cell = self.hidden, self.cell
        h, c = hc[:, :n], hc[:, n:]
        gates = x @ cell.weight_ih.t() + cell.bias_ih + h @ cell.weight_hh.t() + cell.bias_hh
        i, f = torch.sigmoid(gates[:, :n]), torch.sigmoid(gates[:, n:2 * n])
        g, o = torch.tanh(gates[:, 2 * n:3 * n]), torch.sigmoid(gates[:, 3 * n:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, torch.cat([h, c], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Streaming: one frame's features (N, F) -> h, the new [h, c] left in ``state_out``."""
        h, self.state_out = self.step(x, self.take_state(x))
        return h


class LRCN(nn.Module):
    """MobileNetV2 frame features -> LSTM -> linear head."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, name: str = "") -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.lstm = LSTMState(feature_dim, HIDDEN)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(HIDDEN, num_classes)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.fc.out_features

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh head for ``num_classes`` classes."""
        self.fc = nn.Linear(self.fc.in_features, num_classes)

    def map_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Our own layout (``backbone.*``, ``lstm.cell.*``, ``fc.*``); a DataParallel ``module.`` prefix dropped."""
        return {k.removeprefix("module."): v for k, v in state.items()}

    def forward_frames(self, clip: torch.Tensor) -> torch.Tensor:
        """(N, T, 3, H, W) -> (N, T, classes): the prediction after each frame."""
        n, t = clip.shape[:2]
        feats = self.backbone(clip.flatten(0, 1)).view(n, t, -1)
        hc = feats.new_zeros(n, 2 * HIDDEN)
        outs = []
        for i in range(t):
            h, hc = self.lstm.step(feats[:, i], hc)
            outs.append(self.fc(self.dropout(h)))
        return torch.stack(outs, dim=1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """The clip's label: the prediction after its last frame (many-to-one)."""
        return self.forward_frames(clip)[:, -1]

    def forward_step(self, frame: torch.Tensor) -> torch.Tensor:
        """One frame (N, 3, H, W) when streaming (``StreamingModel`` feeds h and c)."""
        return self.fc(self.dropout(self.lstm(self.backbone(frame))))


def build_lrcn(config: ModelConfig) -> LRCN:
    """LRCN on the config's backbone and width."""
    backbone, dim = build_backbone(config.backbone, config.width_mult)
    return LRCN(backbone, dim, config.num_classes, name=config.name)


register(ModelConfig(
    name="lrcn-mobilenetv2", family="lrcn", backbone="mobilenetv2", builder="edgevid.models.lrcn:build_lrcn",
    can_stream=True, stream_smooth=1, stream_training=True,
    description="LRCN: MobileNetV2 frame features into an LSTM (h, c: the stream's state) (Donahue et al. 2015)",
))
