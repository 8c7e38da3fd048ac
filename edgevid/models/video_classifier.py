"""The 2D-CNN video classifier shared by TSN and TSM: a frame backbone, a linear head,
and average consensus over time (Wang et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn

from edgevid.models.temporal_shift import TemporalShift


class VideoClassifier(nn.Module):
    """Scores every frame with ``backbone`` + ``fc`` and averages the frame scores.

    - ``forward(clip)``: (N, T, C, H, W) -> (N, classes), the clip score.
    - ``forward_frames(clip)``: (N, T, C, H, W) -> (N, T, classes), per-frame scores.
    - ``forward_step(frame)``: (N, C, H, W) -> (N, classes), one frame of the online form
      (used by ``StreamingModel``, which feeds the temporal states).

    C is 3 (RGB), or a motion stack's channels for a TSN temporal stream (``in_channels``).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, dropout: float = 0.5,
                 name: str = "") -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_dim, num_classes)
        self._shifts = [m for m in self.modules() if isinstance(m, TemporalShift)]

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.fc.out_features

    @property
    def stem(self) -> tuple[str, nn.Conv2d]:
        """(module path, module) of the first convolution: the one that sees the input channels."""
        return next((name, m) for name, m in self.named_modules() if isinstance(m, nn.Conv2d))

    @property
    def in_channels(self) -> int:
        """Channels of one input frame: 3 (RGB), 2L (flow) or 3L (RGB differences)."""
        return self.stem[1].in_channels

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes."""
        self.fc = nn.Linear(self.fc.in_features, num_classes)

    def forward_frames(self, clip: torch.Tensor) -> torch.Tensor:
        n, t = clip.shape[0], clip.shape[1]
        for m in self._shifts:  # the shift needs to know where one clip ends
            m.n_segment = t
        feats = self.backbone(clip.flatten(0, 1))
        return self.fc(self.dropout(feats)).view(n, t, -1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.forward_frames(clip).mean(dim=1)

    def forward_step(self, frame: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.backbone(frame)))
