"""C3D (Tran et al. 2015): eight 3x3x3 convolutions, 2x2x2 pools except the first (1x2x2), two fc layers.

The classic Sports-1M layout and names (the Caffe model's): ``conv1a``, ``conv2a``,
``conv3a/b``, ``conv4a/b``, ``conv5a/b``, ``fc6``, ``fc7``, then the classifier ``fc8``, with
``pool5`` padded (0, 1, 1) so a 3 x 16 x 112 x 112 clip leaves 512 x 1 x 4 x 4 = 8192 features
for ``fc6`` (MODELS.md: about 39.5 GFLOPs per clip). ``fc6`` fixes that geometry: 96-127 px
crops and 16-31 frames give 4 x 4 x 1; other sizes are refused before an export (an adaptive
pool would lift the limit, but ONNX has no operator for a non-global one). MMAction2's C3D (the same
network under ``backbone.conv1a.conv.*`` ... ``cls_head.fc_cls`` names, its UCF101 preprocessing) is
the ``c3d-ucf101-mmaction2`` entry (``edgevid.models.mmaction_zoo``).
"""

from __future__ import annotations

from torch import nn

from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.registry import ModelConfig, register

# C3D's Sports-1M mean/std are per-pixel Caffe means on 0-255; these are their channel means on
# the 0-1 scale (RGB), with unit-ish std, the usual port.
C3D_MEAN = (0.4039, 0.3804, 0.3490)
C3D_STD = (0.2549, 0.2549, 0.2549)


# The Sports-1M layer table (name, in, out), shared with MMAction2's C3D (edgevid.models.mmaction3d).
C3D_CONVS = (("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
             ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512))


def add_c3d_pools(net: nn.Module) -> None:
    """pool1 (space only) to pool5 (space padded by 1: 512 x 1 x 4 x 4 = 8192 features for fc6)."""
    net.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
    for i in (2, 3, 4):
        setattr(net, f"pool{i}", nn.MaxPool3d(2, 2))
    net.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))


class C3DNet(nn.Module):
    """C3D over (N, 3, T, H, W) -> logits, with the Sports-1M module names."""

    def __init__(self, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        for name, cin, cout in C3D_CONVS:
            setattr(self, name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        add_c3d_pools(self)
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        r = self.relu
        x = self.pool1(r(self.conv1a(x)))
        x = self.pool2(r(self.conv2a(x)))
        x = self.pool3(r(self.conv3b(r(self.conv3a(x)))))
        x = self.pool4(r(self.conv4b(r(self.conv4a(x)))))
        x = self.pool5(r(self.conv5b(r(self.conv5a(x)))))
        # The last 16-frame window: 16 frames leave exactly one position; the causal (streaming)
        # form sees longer clips, whose last position is the latest window.
        x = x[:, :, -1:].flatten(1)
        x = self.dropout(r(self.fc6(x)))
        x = self.dropout(r(self.fc7(x)))
        return self.fc8(x)


def build_c3d(config: ModelConfig) -> Clip3DClassifier:
    """C3D with ``config.num_classes`` outputs (96-127 px, 16-31 frame clips: fc6's 8192 inputs)."""
    return Clip3DClassifier(C3DNet(config.num_classes), "fc8", name=config.name)


register(ModelConfig(
    name="c3d", family="c3d", backbone="c3d", builder="edgevid.models.c3d:build_c3d", frames=16, min_frames=16,
    max_frames=31, crop_range=(96, 127), frame_stride=1,
    input_size=112, resize=128, mean=C3D_MEAN, std=C3D_STD, num_classes=487,
    description="C3D: 3x3x3 convs, 2x2x2 pools (pool1 1x2x2), fc6/fc7 (Tran et al. 2015; Sports-1M layout, 487 classes)",
))
