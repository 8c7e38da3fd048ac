"""MMAction2 1.x's 3D recognizers rebuilt module for module (the networks; the zoo entries are in mmaction_zoo.py).

Every module here carries MMAction2's attribute names, so a recognizer's state dict has exactly
the keys and shapes of the one MMAction2 builds from its config (``backbone.*``,
``cls_head.*``) and a model-zoo checkpoint (``{"state_dict": ..., "meta": ...}``) loads
unchanged. Sources (MMAction2 1.2.0): ``models/backbones/resnet3d.py`` (ResNet3d, its
blocks), ``resnet3d_slowfast.py`` (ResNet3dPathway, ResNet3dSlowFast), ``resnet3d_slowonly.py``,
``resnet2plus1d.py``, ``c3d.py``, ``x3d.py``, ``models/common/conv2plus1d.py``,
``models/heads/{i3d,slowfast,x3d}_head.py``, and mmcv's ``ConvModule`` (conv, then ``bn``,
then ``activate``).

Differences, none of which changes a logit (tested against MMAction2's own modules):

- activations are not in-place, and swish is ``nn.SiLU`` (mmcv's ``Swish``: x * sigmoid(x));
- SlowFast takes its Slow and Fast frames with a strided slice ``x[:, :, ::rate]`` where
  MMAction2 calls ``F.interpolate(mode="nearest", scale_factor=1/rate)``: the same frames
  (0, rate, 2 rate, ...) whenever the clip length is a multiple of the rate, the only lengths
  MMAction2 runs (otherwise its lateral concat fails); other lengths still run here, and the
  export is one ONNX Slice instead of a Resize;
- nothing of training only: no gradient checkpointing, frozen stages or weight init from
  URLs; non-local blocks (``edgevid.models.non_local``) sit where MMAction2's ``non_local``
  flags put them, after a bottleneck's ReLU.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _triple

Triple = int | tuple[int, int, int]


class Conv2plus1d(nn.Module):
    """MMAction2's (2+1)D conv: ``conv_s`` (1 x kh x kw) -> ``bn_s`` -> ReLU -> ``conv_t`` (kt x 1 x 1)."""

    def __init__(self, c_in: int, c_out: int, kernel: Triple, stride: Triple = 1, padding: Triple = 0,
                 bias: bool = False) -> None:
        super().__init__()
        k, s, p = _triple(kernel), _triple(stride), _triple(padding)
        # The paper's parameter-matching width, with MMAction2's constant 3 (not k[0]) and int().
        mid = int(3 * c_in * c_out * k[1] * k[2] / (c_in * k[1] * k[2] + 3 * c_out))
        self.conv_s = nn.Conv3d(c_in, mid, (1, k[1], k[2]), (1, s[1], s[2]), (0, p[1], p[2]), bias=bias)
        self.bn_s = nn.BatchNorm3d(mid)  # Conv2plus1d's own norm_cfg: BN3d, eps 1e-5
        self.relu = nn.ReLU()
        self.conv_t = nn.Conv3d(mid, c_out, (k[0], 1, 1), (s[0], 1, 1), (p[0], 0, 0), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_t(self.relu(self.bn_s(self.conv_s(x))))


class ConvModule(nn.Module):
    """mmcv's ``ConvModule``: ``conv`` -> ``bn`` -> ``activate`` (absent parts are parameter-free identities)."""

    def __init__(self, conv: nn.Module, bn: nn.Module | None = None, act: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn if bn is not None else nn.Identity()
        self.activate = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def conv_module(c_in: int, c_out: int, kernel: Triple, stride: Triple = 1, padding: Triple = 0, *,
                groups: int = 1, bias: bool = False, norm: bool = True, act: nn.Module | None = None,
                eps: float = 1e-5, plus1d: bool = False) -> ConvModule:
    """A ``ConvModule`` as MMAction2's configs build it: Conv3d (or Conv2plus1d), BN3d with ``eps``, ``act``."""
    if plus1d:
        conv: nn.Module = Conv2plus1d(c_in, c_out, kernel, stride, padding, bias=bias)
    else:
        conv = nn.Conv3d(c_in, c_out, kernel, stride, padding, groups=groups, bias=bias)
    return ConvModule(conv, nn.BatchNorm3d(c_out, eps=eps) if norm else None, act)


class BasicBlock3d(nn.Module):
    """ResNet-18/34 block: conv1 (ReLU) -> conv2, plus the (downsampled) input, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, spatial_stride: int, temporal_stride: int,
                 downsample: nn.Module | None, inflate: bool, eps: float, plus1d: bool, **_: object) -> None:
        super().__init__()
        k, p = ((3, 3, 3), (1, 1, 1)) if inflate else ((1, 3, 3), (0, 1, 1))
        self.conv1 = conv_module(inplanes, planes, k, (temporal_stride, spatial_stride, spatial_stride), p,
                                 act=nn.ReLU(), eps=eps, plus1d=plus1d)
        self.conv2 = conv_module(planes, planes, k, 1, p, eps=eps, plus1d=plus1d)
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.downsample(x))


class Bottleneck3d(nn.Module):
    """ResNet-50 block, 'pytorch' style (the 3x3 conv strides): conv1 -> conv2 -> conv3, plus the input, ReLU.

    ``inflate`` makes conv1 3x1x1 (inflate_style '3x1x1', every config here), else 1x1x1.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int, temporal_stride: int,
                 downsample: nn.Module | None, inflate: bool, eps: float, plus1d: bool,
                 inflate_style: str = "3x1x1", non_local: dict | None = None) -> None:
        super().__init__()
        if inflate and inflate_style == "3x1x1":
            k1, p1, k2, p2 = (3, 1, 1), (1, 0, 0), (1, 3, 3), (0, 1, 1)
        elif inflate:  # '3x3x3'
            k1, p1, k2, p2 = (1, 1, 1), (0, 0, 0), (3, 3, 3), (1, 1, 1)
        else:
            k1, p1, k2, p2 = (1, 1, 1), (0, 0, 0), (1, 3, 3), (0, 1, 1)
        self.conv1 = conv_module(inplanes, planes, k1, 1, p1, act=nn.ReLU(), eps=eps, plus1d=plus1d)
        self.conv2 = conv_module(planes, planes, k2, (temporal_stride, spatial_stride, spatial_stride), p2,
                                 act=nn.ReLU(), eps=eps, plus1d=plus1d)
        self.conv3 = conv_module(planes, planes * 4, 1, eps=eps, plus1d=plus1d)
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.relu = nn.ReLU()
        self.non_local_block: nn.Module | None = None
        if non_local is not None:  # after the block's ReLU, as MMAction2 places it
            from edgevid.models.non_local import NonLocal3d

            self.non_local_block = NonLocal3d(planes * 4, **non_local)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv3(self.conv2(self.conv1(x))) + self.downsample(x))
        return self.non_local_block(out) if self.non_local_block is not None else out


def _per_stage(value: int | tuple, stages: int) -> tuple:
    """MMAction2's ``_ntuple(num_stages)``: one int for every stage, or one entry per stage."""
    return (value,) * stages if isinstance(value, int) else tuple(value)


class ResNet3d(nn.Module):
    """MMAction2's ``ResNet3d`` (I3D, SlowOnly, a SlowFast pathway, R(2+1)D with ``plus1d``).

    conv1 (``conv1_kernel``, spatial stride 2, padding (k-1)//2) -> maxpool 1x3x3 (spatial
    stride 2) -> layer1 -> [pool2: 2x1x1 max, stride 2, if ``with_pool2``] -> layer2-4.
    ``inflate``: per stage, one flag or one per block (which blocks' convs are temporal);
    ``non_local`` the same for non-local blocks (bottlenecks only), built with ``non_local_cfg``
    (``edgevid.models.non_local.NonLocal3d``'s arguments).
    """

    def __init__(self, depth: int = 50, *, base_channels: int = 64, conv1_kernel: tuple[int, int, int] = (3, 7, 7),
                 conv1_stride_t: int = 1, pool1_stride_t: int = 1, inflate: int | tuple = (1, 1, 1, 1),
                 spatial_strides: tuple[int, ...] = (1, 2, 2, 2), temporal_strides: tuple[int, ...] = (1, 1, 1, 1),
                 with_pool2: bool = True, inflate_style: str = "3x1x1", plus1d: bool = False, eps: float = 1e-5,
                 lateral_inplanes: tuple[int, ...] = (0, 0, 0, 0), non_local: int | tuple = 0,
                 non_local_cfg: dict | None = None) -> None:
        super().__init__()
        block, stage_blocks = {18: (BasicBlock3d, (2, 2, 2, 2)), 34: (BasicBlock3d, (3, 4, 6, 3)),
                               50: (Bottleneck3d, (3, 4, 6, 3)), 101: (Bottleneck3d, (3, 4, 23, 3))}[depth]
        self.with_pool2 = with_pool2
        self.conv1 = conv_module(3, base_channels, conv1_kernel, (conv1_stride_t, 2, 2),
                                 tuple((k - 1) // 2 for k in conv1_kernel), act=nn.ReLU(), eps=eps, plus1d=plus1d)
        self.maxpool = nn.MaxPool3d((1, 3, 3), (pool1_stride_t, 2, 2), (0, 1, 1))
        self.pool2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1))
        inflations, non_locals = _per_stage(inflate, 4), _per_stage(non_local, 4)
        inplanes = base_channels
        for i, blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            flags = _per_stage(inflations[i], blocks)
            nl = tuple((non_local_cfg or {}) if f else None for f in _per_stage(non_locals[i], blocks))
            setattr(self, f"layer{i + 1}", self._layer(
                block, inplanes + lateral_inplanes[i], planes, blocks, spatial_strides[i], temporal_strides[i],
                flags, inflate_style, eps, plus1d, nl))
            inplanes = planes * block.expansion

    @staticmethod
    def _layer(block: type, inplanes: int, planes: int, blocks: int, spatial_stride: int, temporal_stride: int,
               inflate: tuple, inflate_style: str, eps: float, plus1d: bool,
               non_local: tuple[dict | None, ...]) -> nn.Sequential:
        """``make_res_layer``: a projection shortcut when the width or the spatial stride changes."""
        downsample = None
        if spatial_stride != 1 or inplanes != planes * block.expansion:
            downsample = conv_module(inplanes, planes * block.expansion, 1,
                                     (temporal_stride, spatial_stride, spatial_stride), eps=eps, plus1d=plus1d)
        nl = [{"non_local": cfg} if cfg is not None else {} for cfg in non_local]  # BasicBlock3d takes none
        layers = [block(inplanes, planes, spatial_stride, temporal_stride, downsample, inflate[0] == 1, eps, plus1d,
                        inflate_style=inflate_style, **nl[0])]
        for i in range(1, blocks):
            layers.append(block(planes * block.expansion, planes, 1, 1, None, inflate[i] == 1, eps, plus1d,
                                inflate_style=inflate_style, **nl[i]))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.layer1(x)
        if self.with_pool2:  # structural, fixed at build time
            x = self.pool2(x)
        return self.layer4(self.layer3(self.layer2(x)))


class ResNet3dPathway(ResNet3d):
    """A SlowFast pathway: ``ResNet3d`` plus, with ``lateral``, the Fast -> Slow convs.

    MMAction2's laterals (``conv1_lateral``, ``layer{1,2,3}_lateral``) are plain convs: kernel
    ``fusion_kernel`` x 1 x 1, temporal stride ``speed_ratio``, 2x the Fast width, no BN and no
    ReLU (``lateral_norm=False`` in every config); each stage's input widens by their output.
    """

    def __init__(self, *, lateral: bool = False, speed_ratio: int = 8, channel_ratio: int = 8,
                 fusion_kernel: int = 5, depth: int = 50, base_channels: int = 64, **kwargs: object) -> None:
        infl = 2  # lateral_infl
        expansion = 1 if depth < 50 else 4
        # _calculate_lateral_inplanes: the width of stage i's input before the lateral widens it.
        widths = [base_channels * 2**i * ((expansion // 2) ** (i > 0)) if expansion % 2 == 0
                  else base_channels * 2**i // 2 ** (i > 0) for i in range(4)]
        lateral_inplanes = tuple(w * infl // channel_ratio if lateral else 0 for w in widths)
        super().__init__(depth, base_channels=base_channels, lateral_inplanes=lateral_inplanes, **kwargs)
        self.lateral = lateral
        if not lateral:
            return

        def fuse(fast_width: int) -> ConvModule:
            return conv_module(fast_width, fast_width * infl, (fusion_kernel, 1, 1), (speed_ratio, 1, 1),
                               ((fusion_kernel - 1) // 2, 0, 0), norm=False)

        self.conv1_lateral = fuse(base_channels // channel_ratio)
        for i in range(3):  # no lateral after the last stage
            setattr(self, f"layer{i + 1}_lateral", fuse(base_channels * 2**i * expansion // channel_ratio))


class ResNet3dSlowFast(nn.Module):
    """MMAction2's ``ResNet3dSlowFast``: Slow frames every ``resample_rate``-th, Fast every (rate // speed_ratio)-th.

    The input is the whole sampled clip (32 frames at interval 2 in the configs); returns
    (slow features, fast features) for the head.
    """

    def __init__(self, *, resample_rate: int, speed_ratio: int, channel_ratio: int, fusion_kernel: int) -> None:
        super().__init__()
        self.resample_rate, self.speed_ratio = resample_rate, speed_ratio
        self.slow_path = ResNet3dPathway(lateral=True, speed_ratio=speed_ratio, channel_ratio=channel_ratio,
                                         fusion_kernel=fusion_kernel, conv1_kernel=(1, 7, 7), inflate=(0, 0, 1, 1))
        self.fast_path = ResNet3dPathway(lateral=False, base_channels=64 // channel_ratio, conv1_kernel=(5, 7, 7))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # nearest interpolation by 1/rate picks frames 0, rate, 2 rate, ... (see the module docstring)
        slow = self.slow_path.maxpool(self.slow_path.conv1(x[:, :, ::self.resample_rate]))
        fast_rate = self.resample_rate // self.speed_ratio
        fast = self.fast_path.maxpool(self.fast_path.conv1(x[:, :, ::fast_rate] if fast_rate > 1 else x))
        slow = torch.cat([slow, self.slow_path.conv1_lateral(fast)], 1)
        for i in range(1, 5):
            slow = getattr(self.slow_path, f"layer{i}")(slow)
            fast = getattr(self.fast_path, f"layer{i}")(fast)
            if i < 4:
                slow = torch.cat([slow, getattr(self.slow_path, f"layer{i}_lateral")(fast)], 1)
        return slow, fast


class C3D(nn.Module):
    """MMAction2's ``C3D`` backbone: conv1a-conv5b (conv + bias + ReLU), pools, fc6, fc7 (ReLU each).

    ``flatten`` of pool5 as MMAction2 does: 512 x 1 x 4 x 4 = 8192 features for fc6, which holds
    for 16-31 frames and 96-127 px crops (pool5 pads space by 1).
    """

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        from edgevid.models.c3d import C3D_CONVS, add_c3d_pools

        for name, c_in, c_out in C3D_CONVS:  # norm_cfg None: the conv has a bias (ConvModule's bias='auto')
            setattr(self, name, conv_module(c_in, c_out, 3, 1, 1, bias=True, norm=False, act=nn.ReLU()))
        add_c3d_pools(self)
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2a(self.pool1(self.conv1a(x))))
        x = self.pool3(self.conv3b(self.conv3a(x)))
        x = self.pool4(self.conv4b(self.conv4a(x)))
        x = self.pool5(self.conv5b(self.conv5a(x))).flatten(1)
        x = self.dropout(self.relu(self.fc6(x)))
        return self.relu(self.fc7(x))


def _round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """X3D's ``_round_width``: width * multiplier to a multiple of ``divisor``."""
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    return int(out + divisor if out < 0.9 * width else out)


class SEModule(nn.Module):
    """X3D's squeeze-excitation: x * sigmoid(fc2(relu(fc1(mean_thw(x))))), 1x1x1 convs with bias."""

    def __init__(self, channels: int, reduction: float) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        bottleneck = _round_width(channels, reduction)
        self.fc1 = nn.Conv3d(channels, bottleneck, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv3d(bottleneck, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BlockX3D(nn.Module):
    """X3D block: conv1 1x1x1 (ReLU) -> depthwise conv2 3x3x3 -> [SE] -> swish -> conv3 1x1x1, plus the input, ReLU."""

    def __init__(self, inplanes: int, planes: int, outplanes: int, spatial_stride: int,
                 downsample: nn.Module | None, se_ratio: float | None) -> None:
        super().__init__()
        self.conv1 = conv_module(inplanes, planes, 1, act=nn.ReLU())
        self.conv2 = conv_module(planes, planes, 3, (1, spatial_stride, spatial_stride), 1, groups=planes)
        self.se_module = SEModule(planes, se_ratio) if se_ratio is not None else nn.Identity()
        self.swish = nn.SiLU()
        self.conv3 = conv_module(planes, outplanes, 1)
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.swish(self.se_module(self.conv2(self.conv1(x)))))
        return self.relu(out + self.downsample(x))


class X3D(nn.Module):
    """MMAction2's ``X3D`` backbone (gamma_w, gamma_b, gamma_d of its config; SE on every other block).

    conv1_s (1x3x3, stride 2, no BN) -> conv1_t (5x1x1 depthwise, BN, ReLU) -> layer1-4 (each
    halves H and W; every first block has a 1x1x1 shortcut conv WITH BN, PyTorchVideo's
    ``create_x3d`` has none in stage 1) -> conv5 (1x1x1, BN, ReLU).
    """

    def __init__(self, gamma_w: float = 1.0, gamma_b: float = 2.25, gamma_d: float = 2.2,
                 se_ratio: float = 1 / 16) -> None:
        super().__init__()
        base = _round_width(24, gamma_w)
        self.conv1_s = conv_module(3, base, (1, 3, 3), (1, 2, 2), (0, 1, 1), norm=False)
        self.conv1_t = conv_module(base, base, (5, 1, 1), 1, (2, 0, 0), groups=base, act=nn.ReLU())
        layer_inplanes = base
        for i, depth in enumerate((1, 2, 5, 3)):
            blocks = int(math.ceil(gamma_d * depth))
            inplanes = base * 2**i
            planes = int(inplanes * gamma_b)
            downsample = conv_module(layer_inplanes, inplanes, 1, (1, 2, 2))  # stride 2 in every stage
            layer = [BlockX3D(layer_inplanes if b == 0 else inplanes, planes, inplanes, 2 if b == 0 else 1,
                              downsample if b == 0 else None, se_ratio if b % 2 == 0 else None)
                     for b in range(blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            layer_inplanes = inplanes
        self.feat_dim = int(layer_inplanes * gamma_b)
        self.conv5 = conv_module(layer_inplanes, self.feat_dim, 1, act=nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1_t(self.conv1_s(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.conv5(x)


class I3DHead(nn.Module):
    """``I3DHead``: [global average pool] -> dropout -> ``fc_cls`` (also SlowOnly's, R(2+1)D's and C3D's head)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5, pool: bool = True) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d(1) if pool else nn.Identity()  # C3D: spatial_type None
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_cls(self.dropout(self.avg_pool(x)).flatten(1))


class SlowFastHead(nn.Module):
    """``SlowFastHead``: each pathway pooled globally, concatenated FAST first, dropout, ``fc_cls``."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        slow, fast = x
        return self.fc_cls(self.dropout(torch.cat([self.avg_pool(fast), self.avg_pool(slow)], 1)).flatten(1))


class X3DHead(nn.Module):
    """``X3DHead``: global average pool -> ``fc1`` (2048, no bias) -> ReLU -> dropout -> ``fc2``."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5, mid_channels: int = 2048) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Linear(in_channels, mid_channels, bias=False)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc2 = nn.Linear(mid_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.relu(self.fc1(self.pool(x).flatten(1)))))


class Recognizer3D(nn.Module):
    """``Recognizer3D`` at inference, for one clip: ``cls_head(backbone(x))``, raw scores (no softmax).

    MMAction2's test mode averages the softmax over the views of a video (``average_clips='prob'``);
    a clip model returns the scores of one view, and edgevid's runtime averages over time.
    """

    def __init__(self, backbone: nn.Module, cls_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.backbone(x))
