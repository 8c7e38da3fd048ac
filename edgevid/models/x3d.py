"""X3D: Expanding Architectures for Efficient Video Recognition (Feichtenhofer, CVPR 2020).

A 2D ResNet-like base expanded along time, frame rate, resolution, width, bottleneck width
and depth (MODELS.md), with depthwise 3x3x3 convs, squeeze-excitation and swish. X3D-XS, -S
and -M are ONE network (same weights and shapes) run on different clips: 4x160, 13x160 and
16x224 (MODELS.md; PyTorchVideo's ``hub/x3d.py``).

The network is PyTorchVideo's ``create_x3d`` rebuilt module for module, so its state dict has
exactly PyTorchVideo's keys and shapes and a model-zoo checkpoint (``{"model_state": ...}``)
loads unchanged. It differs only where PyTorchVideo does not export or does not fit edgevid:

- swish is ``nn.SiLU`` (the same x * sigmoid(x)), not PyTorchVideo's custom autograd Function,
  which torch's dynamo ONNX exporter cannot trace;
- the head pools with ``nn.AdaptiveAvgPool3d(1)``: PyTorchVideo's fixed ``AvgPool3d`` kernel is
  (T, ceil(S/32), ceil(S/32)), i.e. the whole final feature map at the config's own size, so
  the two are identical there, and the adaptive pool also runs at any other size;
- no softmax: edgevid models return raw logits (``create_x3d`` applies ``nn.Softmax`` by
  default in train and eval alike; build it with ``head_activation=None`` to compare);
- optional layers that PyTorchVideo leaves as ``None`` are ``nn.Identity`` here (no
  parameters, so no keys), so every forward is straight-line code.

MMAction2's X3D-S/M (PySlowFast's weights converted) are another network: the first stage's
shortcut has a BN there, which ``create_x3d`` leaves out; they are the ``x3d-s-mmaction2`` /
``x3d-m-mmaction2`` entries (``edgevid.models.mmaction_zoo``).

The building blocks below (``ResNetBasicStem``, ``BottleneckBlock``, ``ResBlock``,
``ResStage``, ``ResNetBasicHead``) carry PyTorchVideo's attribute names and are shared with
``slowfast.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.registry import ModelConfig, WeightsSpec, register

# Kinetics normalisation of PyTorchVideo's video transforms (and of the SlowFast codebase).
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


def _opt(module: nn.Module | None) -> nn.Module:
    """An absent optional layer as an identity (parameter-free: the state dict is unchanged)."""
    return nn.Identity() if module is None else module


def bn(channels: int) -> nn.BatchNorm3d:
    """PyTorchVideo's norm layer (eps 1e-5, momentum 0.1: torch's defaults)."""
    return nn.BatchNorm3d(channels)


def conv3d(c_in: int, c_out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1),
           padding: tuple[int, int, int] | None = None, groups: int = 1) -> nn.Conv3d:
    """A bias-free 3D conv, 'same' padding (k // 2) unless given, as PyTorchVideo builds them."""
    padding = tuple(k // 2 for k in kernel) if padding is None else padding
    return nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups, bias=False)


class Conv2plus1d(nn.Module):
    """PyTorchVideo's stem conv pair: ``conv_t`` runs first, then ``conv_xy``.

    In X3D's stem PyTorchVideo puts the spatial 1x3x3 conv under the name ``conv_t`` and the
    temporal depthwise 5x1x1 conv under ``conv_xy``; the names are kept (they are the
    checkpoint's keys), the order of application is PyTorchVideo's.
    """

    def __init__(self, conv_t: nn.Module, conv_xy: nn.Module) -> None:
        super().__init__()
        self.conv_t = conv_t
        self.conv_xy = conv_xy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_xy(self.conv_t(x))


class ResNetBasicStem(nn.Module):
    """conv -> norm -> activation -> pool (PyTorchVideo's ``ResNetBasicStem``)."""

    def __init__(self, conv: nn.Module, norm: nn.Module, activation: nn.Module,
                 pool: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.activation = activation
        self.pool = _opt(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(self.norm(self.conv(x))))


class SqueezeExcitation(nn.Module):
    """fvcore's 3D squeeze-excitation: x * sigmoid(fc2(relu(fc1(mean_thw(x))))), as ``block``."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        # A module, not x.mean(): the streaming form swaps it for a causal window (edgevid.models.continual).
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.block = nn.Sequential(
            nn.Conv3d(channels, reduced, kernel_size=1, bias=True), nn.ReLU(),
            nn.Conv3d(reduced, channels, kernel_size=1, bias=True), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.block(self.pool(x))


class BottleneckBlock(nn.Module):
    """conv_a/norm_a/act_a -> conv_b/norm_b/act_b -> conv_c/norm_c (PyTorchVideo's names)."""

    def __init__(self, conv_a: nn.Module, norm_a: nn.Module, act_a: nn.Module, conv_b: nn.Module,
                 norm_b: nn.Module, act_b: nn.Module, conv_c: nn.Module, norm_c: nn.Module) -> None:
        super().__init__()
        self.conv_a, self.norm_a, self.act_a = conv_a, norm_a, act_a
        self.conv_b, self.norm_b, self.act_b = conv_b, norm_b, act_b
        self.conv_c, self.norm_c = conv_c, norm_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_a(self.norm_a(self.conv_a(x)))
        x = self.act_b(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class ResBlock(nn.Module):
    """activation(shortcut(x) + branch2(x)); the shortcut is branch1_conv/branch1_norm or identity."""

    def __init__(self, branch2: nn.Module, activation: nn.Module, branch1_conv: nn.Module | None = None,
                 branch1_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.branch1_conv = _opt(branch1_conv)
        self.branch1_norm = _opt(branch1_norm)
        self.branch2 = branch2
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.branch1_norm(self.branch1_conv(x)) + self.branch2(x))


class ResStage(nn.Module):
    """A sequence of ``ResBlock`` under ``res_blocks``."""

    def __init__(self, res_blocks: list[nn.Module]) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(res_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class ProjectedPool(nn.Module):
    """X3D's head pooling: pre_conv/pre_norm/pre_act -> pool -> post_conv/post_act."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int) -> None:
        super().__init__()
        self.pre_conv = conv3d(dim_in, dim_inner, (1, 1, 1))
        self.pre_norm = bn(dim_inner)
        self.pre_act = nn.ReLU()
        # PyTorchVideo: AvgPool3d((T, ceil(S/32), ceil(S/32)), stride 1), the whole map at the
        # config's size; adaptive is the same there and also fits any other clip size.
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.post_conv = conv3d(dim_inner, dim_out, (1, 1, 1))
        # post_norm is None in PyTorchVideo (bn_lin5_on=False): no module, no keys.
        self.post_act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.pre_act(self.pre_norm(self.pre_conv(x))))
        return self.post_act(self.post_conv(x))


class ResNetBasicHead(nn.Module):
    """pool -> dropout -> proj (``nn.Linear``), raw logits (PyTorchVideo's ``ResNetBasicHead``).

    The input of ``proj`` is always (N, C, 1, 1, 1) here (the pool is global), so PyTorchVideo's
    permute / Linear / permute / output AdaptiveAvgPool3d(1) / view is one flatten + Linear.
    """

    def __init__(self, pool: nn.Module | None, dropout_rate: float, dim_in: int, num_classes: int) -> None:
        super().__init__()
        self.pool = _opt(pool)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.proj = nn.Linear(dim_in, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(self.pool(x)).flatten(1))


class Net(nn.Module):
    """``blocks`` applied in order (PyTorchVideo's ``Net``)."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def init_resnet_weights(model: nn.Module, fc_std: float = 0.01) -> None:
    """PyTorchVideo's ResNet init: MSRA convs, BN 1/0 (0 for each bottleneck's last BN), FC N(0, 0.01)."""
    final_bns = {id(m.norm_c) for m in model.modules() if isinstance(m, BottleneckBlock)}
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.constant_(m.weight, 0.0 if id(m) in final_bns else 1.0)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=fc_std)
            nn.init.zeros_(m.bias)


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """PyTorchVideo's ``round_width``: width * multiplier to a multiple of ``divisor``."""
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


def round_repeats(repeats: int, multiplier: float) -> int:
    """PyTorchVideo's ``round_repeats``: ceil(depth multiplier * repeats)."""
    return int(math.ceil(multiplier * repeats))


# create_x3d's defaults, which the model zoo's X3D-XS/S/M use unchanged (only the clip differs);
# the same numbers as the SlowFast repo's configs/Kinetics/pytorchvideo/X3D_{XS,S,M}.yaml.
WIDTH_FACTOR, DEPTH_FACTOR, BOTTLENECK_FACTOR = 2.0, 2.2, 2.25
STEM_DIM_IN, HEAD_DIM_OUT, SE_RATIO, DROPOUT = 12, 2048, 0.0625, 0.5
STAGE_DEPTHS = (1, 2, 5, 3)


def _x3d_block(dim_in: int, dim_inner: int, dim_out: int, stride: int, se: bool) -> ResBlock:
    """One X3D residual block: 1x1x1, depthwise 3x3x3 (+SE) with swish, 1x1x1."""
    conv_stride = (1, stride, stride)
    reduced = round_width(dim_inner, SE_RATIO)
    branch2 = BottleneckBlock(
        conv_a=conv3d(dim_in, dim_inner, (1, 1, 1)), norm_a=bn(dim_inner), act_a=nn.ReLU(),
        conv_b=conv3d(dim_inner, dim_inner, (3, 3, 3), conv_stride, groups=dim_inner),
        # PyTorchVideo: norm_b = Sequential(BN, SE or Identity), so the BN is key "norm_b.0".
        norm_b=nn.Sequential(bn(dim_inner), SqueezeExcitation(dim_inner, reduced) if se else nn.Identity()),
        act_b=nn.SiLU(),  # swish, without PyTorchVideo's custom autograd Function
        conv_c=conv3d(dim_inner, dim_out, (1, 1, 1)), norm_c=bn(dim_out))
    # create_x3d_res_block: a 1x1x1 shortcut conv when the shape changes, but a shortcut BN only
    # when the width changes (stage 1 keeps the stem's width: a strided conv without BN).
    shortcut = dim_in != dim_out or stride > 1
    return ResBlock(
        branch2=branch2, activation=nn.ReLU(),
        branch1_conv=nn.Conv3d(dim_in, dim_out, 1, stride=conv_stride, bias=False) if shortcut else None,
        branch1_norm=bn(dim_out) if dim_in != dim_out else None)


def build_x3d_net(num_classes: int = 400) -> Net:
    """PyTorchVideo's ``create_x3d`` (model-zoo XS/S/M settings) with export-clean layers."""
    stem_dim = round_width(STEM_DIM_IN, WIDTH_FACTOR)
    stem = ResNetBasicStem(
        conv=Conv2plus1d(conv_t=conv3d(3, stem_dim, (1, 3, 3), (1, 2, 2)),
                         conv_xy=conv3d(stem_dim, stem_dim, (5, 1, 1), groups=stem_dim)),
        norm=bn(stem_dim), activation=nn.ReLU())
    blocks: list[nn.Module] = [stem]
    dims = [STEM_DIM_IN]
    for _ in range(3):
        dims.append(round_width(dims[-1], 2.0))
    dim_in = stem_dim
    for base, depth in zip(dims, STAGE_DEPTHS):
        dim_out = round_width(base, WIDTH_FACTOR)
        dim_inner = int(BOTTLENECK_FACTOR * dim_out)
        # Every stage halves H and W in its first block; SE on every other block (1st, 3rd, ...).
        blocks.append(ResStage([
            _x3d_block(dim_in if i == 0 else dim_out, dim_inner, dim_out, 2 if i == 0 else 1, se=i % 2 == 0)
            for i in range(round_repeats(depth, DEPTH_FACTOR))]))
        dim_in = dim_out
    head_pool = ProjectedPool(dim_in, dim_inner, HEAD_DIM_OUT)  # dim_inner: the last stage's
    blocks.append(ResNetBasicHead(head_pool, DROPOUT, HEAD_DIM_OUT, num_classes))
    return Net(blocks)


def build_x3d(config: ModelConfig) -> Clip3DClassifier:
    """X3D-XS/S/M (one network; the config's frames and size pick the variant)."""
    return Clip3DClassifier(build_x3d_net(config.num_classes), head="blocks.5.proj", name=config.name)


_X3D = "X3D (Feichtenhofer, CVPR 2020): depthwise 3D ResNet with SE and swish; PyTorchVideo layout, {}"
# PyTorchVideo's model zoo (docs/source/model_zoo.md, Kinetics-400): its checkpoints, with their
# top-1 / top-5 of 10 clips x 3 crops. PyTorchVideo publishes no checksum: sha256 and hash_prefix stay empty.
_PTV_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/"

# frames / frame_stride: the SlowFast repo's X3D configs (NUM_FRAMES, SAMPLING_RATE); size: the
# train / single-crop test crop (PyTorchVideo hub's input_crop_size); resize: the test scale
# (TEST_CROP_SIZE of the 3-crop test, the shorter side the clip is resized to).
for _name, _frames, _stride, _size, _resize, _file, _top1, _top5 in (
        ("x3d-xs", 4, 12, 160, 182, "X3D_XS.pyth", 69.12, 88.63),
        ("x3d-s", 13, 6, 160, 182, "X3D_S.pyth", 73.33, 91.27),
        ("x3d-m", 16, 5, 224, 256, "X3D_M.pyth", 75.94, 92.72)):
    register(ModelConfig(
        name=_name, family="x3d", backbone="x3d", builder="edgevid.models.x3d:build_x3d",
        frames=_frames, frame_stride=_stride, input_size=_size, resize=_resize,
        mean=KINETICS_MEAN, std=KINETICS_STD, num_classes=400, can_stream=False,
        description=_X3D.format(f"{_frames}x{_size} clips"),
        weights=(WeightsSpec(
            name="kinetics400", file=_file, sha256="", num_classes=400, input_size=_size, frames=_frames,
            dataset="Kinetics-400", url=_PTV_ZOO + _file, source="pytorchvideo", labels_name="kinetics400",
            published=(("dataset", "Kinetics-400"), ("top1", _top1), ("top5", _top5),
                       ("views", f"10 clips of {_frames} frames x 3 crops"))),),
    ))
