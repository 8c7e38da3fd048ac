"""T3D: Temporal 3D ConvNets (Diba et al. 2017, arXiv 1711.08200): DenseNet3D-121 with Temporal Transition Layers.

DenseNet-121 (growth 32, bottleneck 4 x 32, blocks 6-12-24-16) with 3D kernels, whose
transition layers are Temporal Transition Layers (TTL): parallel BN-ReLU-Conv branches of
different temporal depths over the same input, concatenated, then a 2x2x2 average pool.

Sources, and which number comes from which:

- **Paper, Table 1** (T3D-121 column; read from an image of the paper's table in
  pclubiitk/model-zoo ``classification/T3D_TensorFlow/assets/architecture.png``). Output
  sizes are W x H x T for a 32 x 224 x 224 clip; a kernel "a x b x t" is t deep in time:

  ==================  ============  =========================================================
  layer               output        T3D-121
  ==================  ============  =========================================================
  3D convolution      112x112x16    7x7x3 conv, stride 2
  3D pooling          56x56x16      3x3x3 max pool, "stride 1" (see below)
  dense block 1       56x56x16      [1x1x1, 3x3x3] x 6
  TTL 1               56x56x16      [1x1x**1**, 3x3x**3**, 3x3x**6**] conv -> concat
                      28x28x8       2x2x2 avg pool, stride 2
  dense block 2       28x28x8       [1x1x1, 3x3x3] x 12
  TTL 2               28x28x8       [1x1x**1**, 3x3x**3**, 3x3x**4**] conv -> concat
                      14x14x4       2x2x2 avg pool, stride 2
  dense block 3       14x14x4       [1x1x1, 3x3x3] x 24
  TTL 3               14x14x4       [1x1x**1**, 3x3x**3**, 3x3x**4**] conv -> concat
                      7x7x2         2x2x2 avg pool, stride 2
  dense block 4       7x7x2         [1x1x1, 3x3x3] x 16
  classification      1x1x1         7x7x2 avg pool, 400-D softmax
  ==================  ============  =========================================================

  Its note: every "conv" is BN-ReLU-Conv; the bold numbers are the TTL's temporal depths.
  Fig. 1: a TTL is the parallel 1x1xT1, 3x3xT2, 3x3xT3 convs, "Conv Concat", then "Avg
  Pooling". Training (Sec. 4): "a stack of 32 RGB frames", resized to 224 x 224. No
  parameter or FLOP figure for T3D was found in the paper (nor TTL channel widths): the counts
  ``edgevid.models.cost`` reports are checked in tests/test_t3d.py against a count derived
  layer by layer from this table.
- **Reference code**, the authors' github MohsenFayyaz89/T3D at commit 7f66a74:
  ``models/DenseNet3D.py`` (the DenseNet3D baseline) and ``models/T3D.py``, which does not run
  (its ``_TTL`` calls ``super(_Transition, ...)`` and nests ``add_module`` calls inside
  ``nn.Sequential(...)``). Taken from it: 128 output channels per TTL branch (384 after the
  concat), ``growth_rate=32, bn_size=4, num_init_features=64``, conv0's padding (1, 3, 3), a
  BN-ReLU of its own per branch, ``norm5`` + ReLU before the pool, and the names
  ``features.conv0`` ... ``features.ttl1.b1.conv``, ``classifier``.

Where they disagree, and what is built here:

- Pooling after conv0: Table 1 says "stride 1" but halves 112 -> 56 in space and keeps 16
  frames; DenseNet3D.py strides 2 in all three axes (8 frames, ending at 7x7x1). Built:
  stride (1, 2, 2), the table's output sizes.
- T3D.py's TTL branches have no padding (their outputs cannot be concatenated) and depths
  (1, 3, 4) in every TTL; it then adds DenseNet's 1x1x1 transition conv (384 -> 384) before
  the pool. Built: Table 1 / Fig. 1 -- depths (1, 3, 6), (1, 3, 4), (1, 3, 4), "same" padding
  (the table keeps 56x56x16 up to the pool), concat, then the pool; no extra 1x1x1 conv.
- An even depth d has no symmetric "same" padding: the branch pads d/2 - 1 zero frames in
  front and d/2 behind (``padding="same"`` in torch and TensorFlow), so output t sees
  t - d/2 + 1 .. t + d/2 and every output frame is computed once (the MACs counted are the
  table's).
- Classification: a global average pool (the table's 7x7x2 at 224 px / 32 frames, and any
  other size too) and a linear layer; logits, no softmax (as every edgevid model).
- Preprocessing: "resized to 224 x 224"; ImageNet mean / std (the paper initialises T3D
  from ImageNet 2D networks), which it does not state.

Streaming (``t3d-densenet121-online``, ``edgevid.models.continual``): every branch conv deeper
than one frame becomes a causal ``CoConv3d`` (d - 1 frames of state, the even depths too), so
all branches of a TTL answer for the same frame and their concat is causal; the pools, conv0
and the global pool too. Total temporal stride 16 (conv0, then each TTL's pool): the stream
predicts every 16th frame, and a clip needs at least 16 frames.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.registry import ModelConfig, register

GROWTH, BN_SIZE, INIT_FEATURES = 32, 4, 64  # DenseNet-121's, kept by DenseNet3D.py
BLOCKS = (6, 12, 24, 16)  # Table 1, T3D-121
TTL_DEPTHS = ((1, 3, 6), (1, 3, 4), (1, 3, 4))  # Table 1's bold numbers, TTL 1-3
TTL_SPATIAL = (1, 3, 3)  # Table 1: the branches are 1x1, 3x3, 3x3 in space
TTL_WIDTH = 128  # output channels per TTL branch (reference code; the paper gives none)


class SameTimeConv3d(nn.Conv3d):
    """A bias-free Conv3d whose output keeps the clip's length for every temporal depth, even ones too.

    (d - 1) // 2 zero frames in front, d // 2 behind. The causal rewrite
    (``edgevid.models.continual``) replaces the module by a ``CoConv3d`` on the same
    parameters, which puts all d - 1 in front instead.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int]) -> None:
        super().__init__(in_channels, out_channels, kernel, padding=(0, kernel[1] // 2, kernel[2] // 2), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.kernel_size[0]
        front, back = (d - 1) // 2, d // 2
        if d > 1:
            # Concat, not F.pad: the exporter writes Pad-18, which ONNX's version converter cannot lower to opset 17.
            zero = torch.zeros_like(x[:, :, :1])
            x = torch.cat([zero.repeat(1, 1, front, 1, 1), x, zero.repeat(1, 1, back, 1, 1)], dim=2)
        return super().forward(x)


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv 1x1x1 (4k channels), BN-ReLU-Conv 3x3x3 (k), its output appended to its input."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm3d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv3d(in_channels, BN_SIZE * GROWTH, 1, bias=False)
        self.norm2 = nn.BatchNorm3d(BN_SIZE * GROWTH)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(BN_SIZE * GROWTH, GROWTH, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, new], 1)


def _dense_block(layers: int, in_channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        (f"denselayer{i + 1}", _DenseLayer(in_channels + i * GROWTH)) for i in range(layers)))


class TemporalTransition(nn.Module):
    """A TTL: BN-ReLU-Conv branches ``b1, b2, ...`` of temporal depths ``depths``, concatenated, then a 2x2x2 avg pool."""

    def __init__(self, in_channels: int, depths: tuple[int, ...], width: int = TTL_WIDTH) -> None:
        super().__init__()
        self.depths = tuple(depths)
        for i, (d, k) in enumerate(zip(self.depths, TTL_SPATIAL), start=1):
            setattr(self, f"b{i}", nn.Sequential(OrderedDict(
                norm=nn.BatchNorm3d(in_channels), relu=nn.ReLU(inplace=True),
                conv=SameTimeConv3d(in_channels, width, (d, k, k)))))
        self.pool = nn.AvgPool3d(2, 2)

    @property
    def out_channels(self) -> int:
        """Channels after the concat (the sum of the branches')."""
        return sum(b.conv.out_channels for b in self.branches)

    @property
    def branches(self) -> list[nn.Sequential]:
        """The branches, in concat order."""
        return [getattr(self, f"b{i}") for i in range(1, len(self.depths) + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.cat([b(x) for b in self.branches], 1))


class T3D(nn.Module):
    """T3D-121 (Table 1) over (N, 3, T, H, W) -> logits; torchvision DenseNet names, TTLs as ``features.ttl1-3``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv3d(3, INIT_FEATURES, (3, 7, 7), stride=2, padding=(1, 3, 3), bias=False),
            norm0=nn.BatchNorm3d(INIT_FEATURES), relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool3d(3, stride=(1, 2, 2), padding=1))
        channels = INIT_FEATURES
        for i, n in enumerate(BLOCKS, start=1):
            layers[f"denseblock{i}"] = _dense_block(n, channels)
            channels += n * GROWTH
            if i <= len(TTL_DEPTHS):
                ttl = TemporalTransition(channels, TTL_DEPTHS[i - 1])
                layers[f"ttl{i}"] = ttl
                channels = ttl.out_channels
        layers["norm5"] = nn.BatchNorm3d(channels)
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool3d(1)  # a module: the causal rewrite makes it a window mean
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():  # torchvision DenseNet's initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def ttls(self) -> list[TemporalTransition]:
        """The Temporal Transition Layers, in order."""
        return [m for m in self.features if isinstance(m, TemporalTransition)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        return self.classifier(self.avgpool(x).flatten(1))


def build_t3d(config: ModelConfig) -> Clip3DClassifier:
    """T3D-121 with ``config.num_classes`` outputs (random init: no public checkpoint exists)."""
    return Clip3DClassifier(T3D(config.num_classes), "classifier", name=config.name)


register(ModelConfig(
    # min_frames 16: the total temporal stride. The clip model would take 15 (conv0 rounds up),
    # the causal twin (zero frames in front, outputs on each stride's last input) needs all 16.
    name="t3d-densenet121", family="t3d", backbone="densenet121-3d", builder="edgevid.models.t3d:build_t3d",
    frames=32, min_frames=16, frame_stride=1, input_size=224, resize=224, num_classes=400,
    description="T3D-121: DenseNet3D-121 with Temporal Transition Layers, temporal depths 1/3/6 then 1/3/4 "
                "(Diba et al. 2017, Temporal 3D ConvNets; 32 x 224 x 224, 400 classes)",
))
