"""I3D ResNet-50: a 2D ImageNet ResNet-50 inflated to 3D (Carreira & Zisserman 2017).

The network keeps torchvision's ResNet-50 module names (``conv1``, ``bn1``, ``layer1.0.conv1``,
..., ``fc``), so a torchvision / ImageNet ResNet-50 state dict loads into it, each 2D conv
weight inflated (``edgevid.models.inflate``): the stem becomes 5x7x7, the first conv of the
bottlenecks MMAction2 inflates (``(1,1,1), (1,0,1,0), (1,0,1,0,1,0), (0,1,0)``) 3x1x1, the other
convs 1xkxk; a temporal max pool after ``layer1`` halves the frames. An image checkpoint then
gives, on a static clip, the 2D network's output on that frame (tested). 8 frames, 8 apart.

It borrows MMAction2's inflation pattern, not its network: the stem and pool1 keep temporal
stride 1 and the inflated convs pad time by edge replication (what the static-clip property
needs), where MMAction2's ``i3d_r50`` configs stride time by 2 in conv1 and pool1 and pad with
zeros. An MMAction2 I3D checkpoint therefore computes something else here: that network is the
``i3d-r50-mmaction2`` entry (``edgevid.models.mmaction_zoo``), which loads those checkpoints.
"""

from __future__ import annotations

from torch import nn

from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.inflate import inflate_conv, inflate_state_dict
from edgevid.models.registry import ModelConfig, register

# Which bottleneck's first conv is inflated to 3x1x1 (MMAction2's I3D ResNet-50, inflate_style 3x1x1).
INFLATE = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))


def _bn3d(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(bn.num_features, eps=bn.eps, momentum=bn.momentum)


class I3DResNet50(nn.Module):
    """ResNet-50 inflated: (N, 3, T, H, W) -> logits, torchvision's module names."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        import torchvision

        r = torchvision.models.resnet50(weights=None)
        self.conv1 = inflate_conv(r.conv1, 5)
        self.bn1 = _bn3d(r.bn1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        self.pool2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1))  # after layer1: half the frames
        for i, pattern in enumerate(INFLATE):
            layer = getattr(r, f"layer{i + 1}")
            for block, inflate in zip(layer, pattern):
                block.conv1 = inflate_conv(block.conv1, 3 if inflate else 1)
                block.conv2 = inflate_conv(block.conv2, 1)
                block.conv3 = inflate_conv(block.conv3, 1)
                for name in ("bn1", "bn2", "bn3"):
                    setattr(block, name, _bn3d(getattr(block, name)))
                if block.downsample is not None:
                    block.downsample = nn.Sequential(inflate_conv(block.downsample[0], 1), _bn3d(block.downsample[1]))
            setattr(self, f"layer{i + 1}", layer)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(r.fc.in_features, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool2(self.layer1(x))
        x = self.layer4(self.layer3(self.layer2(x)))
        return self.fc(self.avgpool(x).flatten(1))


def build_i3d(config: ModelConfig) -> Clip3DClassifier:
    """I3D ResNet-50; a 2D (ImageNet) ResNet-50 checkpoint is inflated when it loads."""
    return Clip3DClassifier(I3DResNet50(config.num_classes), "fc", name=config.name,
                            inflate=lambda state, model: inflate_state_dict(state, model))


register(ModelConfig(
    name="i3d-resnet50", family="i3d", backbone="resnet50-inflated", builder="edgevid.models.i3d:build_i3d",
    frames=8, min_frames=2, frame_stride=8, input_size=224, resize=256, num_classes=400,  # pool2 halves time
    description="I3D ResNet-50: ImageNet ResNet-50 inflated to 3D (Carreira & Zisserman 2017), temporal stride 1 and "
                "edge-replicated temporal padding; MMAction2's I3D is i3d-r50-mmaction2",
))
