"""SlowFast networks for video recognition (Feichtenhofer, Fan, Malik, He; ICCV 2019).

Two ResNet-50 pathways over one clip of 32 frames at stride 2 (MODELS.md): a Fast path over
all of them with beta = 1/8 of the channels, and a Slow path over every alpha-th with full
width. After the stem and after res2, res3 and res4 a lateral connection fuses Fast into
Slow: a time-strided conv (stride alpha, 2*beta*C channels) whose output is concatenated to
the Slow features. Both pathways are pooled globally, concatenated (2048 + 256 channels) and
classified. Two entries, named for their "T x tau" setting:

- ``slowfast-r50-8x8``: alpha 4 (Slow: 8 frames at tau 8), fusion kernel 7x1x1. PyTorchVideo's
  hub ``slowfast_r50`` (``create_slowfast(model_depth=50, slowfast_fusion_conv_kernel_size=(7, 1, 1))``
  on create_slowfast's defaults, stride 4) and its model zoo's ``SLOWFAST_8x8_R50.pyth``: the
  one people use.
- ``slowfast-r50-4x16`` (alias ``slowfast-r50``, its name before the 8x8 entry existed): alpha 8
  (Slow: 4 frames at tau 16), fusion kernel 5x1x1, the settings of the SlowFast repo's
  ``configs/Kinetics/pytorchvideo/SLOWFAST_4x16_R50.yaml`` (ALPHA 8, BETA_INV 8,
  FUSION_CONV_CHANNEL_RATIO 2, FUSION_KERNEL_SZ 5), i.e.
  ``create_slowfast(..., slowfast_fusion_conv_kernel_size=(5, 1, 1), slowfast_fusion_conv_stride=(8, 1, 1),
  head_pool_kernel_sizes=((4, 7, 7), (32, 7, 7)))``.

The network is PyTorchVideo's ``create_slowfast`` rebuilt module for module, so its state dict
(``{"model_state": ...}``) loads unchanged; a checkpoint of the other variant is refused with
its name (its fusion kernels differ). The rest of create_slowfast's defaults already are the
paper's R50: stems 1x7x7 (Slow) / 5x7x7 (Fast), temporal 3x1x1 conv_a only in res4-res5 of
Slow and everywhere in Fast, spatial strides 1, 2, 2, 2. MMAction2's SlowFast (other lateral
convs, other frame picking) is ``edgevid.models.mmaction3d``.

Differences, for export and for edgevid's one-input clip runtime:

- the model takes ONE clip, the Fast path's 32 frames; the graph picks the Slow frames
  itself, with the official packing (PyTorchVideo's / the SlowFast repo's ``PackPathway``:
  ``index_select`` at ``linspace(0, T - 1, T // alpha).long()``, for 4x16 frames 0, 10, 20, 31
  of 32), which the public checkpoints were trained and tested with; a plain ``[::alpha]`` slice
  (0, 8, 16, 24) would feed them Slow frames they never saw in that position;
- the head pools with ``nn.AdaptiveAvgPool3d(1)`` per pathway, identical to PyTorchVideo's
  fixed AvgPool3d kernels (T/alpha, S/32, S/32) and (T, S/32, S/32) at the config's size;
- no list inputs inside: each stage maps (slow, fast) to (slow, fast);
- raw logits (no activation); ReLUs are not in-place.
"""

from __future__ import annotations

import torch
from torch import nn

from edgevid.errors import EdgevidError
from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.registry import ModelConfig, WeightsSpec, register
from edgevid.models.x3d import (
    KINETICS_MEAN,
    KINETICS_STD,
    BottleneckBlock,
    ResBlock,
    ResNetBasicHead,
    ResNetBasicStem,
    ResStage,
    bn,
    conv3d,
    init_resnet_weights,
)

ALPHA = 8  # Fast / Slow frame-rate ratio of the 4x16 model (8x8: 4)
BETA_INV = 8  # Slow / Fast channel ratio
FUSION_RATIO = 2  # lateral conv: 2 * beta * C output channels
FUSION_KERNEL = 5  # 5x1x1 time-strided conv of the 4x16 model (8x8: 7)
# entry -> (alpha, fusion kernel): the lateral convs' temporal stride and kernel.
VARIANTS = {"slowfast-r50-4x16": (8, 5), "slowfast-r50-8x8": (4, 7)}
STAGE_DEPTHS = (3, 4, 6, 3)  # ResNet-50
SPATIAL_STRIDES = (1, 2, 2, 2)
# conv_a temporal kernel per stage: Slow is 2D (1x1x1) in res2-res3, Fast is 3x1x1 throughout.
SLOW_TEMPORAL, FAST_TEMPORAL = (1, 1, 3, 3), (3, 3, 3, 3)
STEM_DIM, DROPOUT = 64, 0.5


def slow_indices(frames: int, alpha: int = ALPHA, device: torch.device | None = None) -> torch.Tensor:
    """The Slow path's frames of a ``frames``-long Fast clip: the official ``PackPathway`` packing.

    ``linspace(0, T - 1, T // alpha)`` for T a multiple of alpha (the official clips); ceil(T / alpha)
    frames otherwise, the temporal length the stride-alpha lateral convs give, so any T runs.
    """
    return torch.linspace(0, frames - 1, -(-frames // alpha), device=device).long()


class FuseFastToSlow(nn.Module):
    """Lateral connection: slow <- cat(slow, relu(bn(time-strided conv(fast))))."""

    def __init__(self, fast_dim: int, alpha: int = ALPHA, kernel: int = FUSION_KERNEL) -> None:
        super().__init__()
        self.conv_fast_to_slow = conv3d(fast_dim, fast_dim * FUSION_RATIO, (kernel, 1, 1), (alpha, 1, 1))
        self.norm = bn(fast_dim * FUSION_RATIO)
        self.activation = nn.ReLU()

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fuse = self.activation(self.norm(self.conv_fast_to_slow(fast)))
        return torch.cat([slow, fuse], 1), fast


class MultiPathWayWithFuse(nn.Module):
    """One stage of both pathways, then the optional lateral fusion (PyTorchVideo's names)."""

    def __init__(self, slow: nn.Module, fast: nn.Module, fusion: FuseFastToSlow | None) -> None:
        super().__init__()
        self.multipathway_blocks = nn.ModuleList([slow, fast])
        self.multipathway_fusion = fusion  # None after res5 (PyTorchVideo: an nn.Identity, no keys)

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slow, fast = self.multipathway_blocks[0](slow), self.multipathway_blocks[1](fast)
        if self.multipathway_fusion is not None:  # structural, fixed at build time
            slow, fast = self.multipathway_fusion(slow, fast)
        return slow, fast


class PoolConcatPathway(nn.Module):
    """Global average pool of each pathway, concatenated along channels."""

    def __init__(self) -> None:
        super().__init__()
        # PyTorchVideo: AvgPool3d((T/alpha, S/32, S/32)) and AvgPool3d((T, S/32, S/32)), stride 1:
        # the whole map at the config's size, which the adaptive pool equals (and fits any size).
        self.pool = nn.ModuleList([nn.AdaptiveAvgPool3d(1), nn.AdaptiveAvgPool3d(1)])

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.pool[0](slow), self.pool[1](fast)], 1)


def _stem(dim: int, temporal: int) -> ResNetBasicStem:
    """conv kx7x7 stride (1, 2, 2) -> BN -> ReLU -> max pool 1x3x3 stride (1, 2, 2)."""
    return ResNetBasicStem(
        conv=conv3d(3, dim, (temporal, 7, 7), (1, 2, 2)), norm=bn(dim), activation=nn.ReLU(),
        pool=nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))


def _res_stage(depth: int, dim_in: int, dim_inner: int, dim_out: int, temporal: int, stride: int) -> ResStage:
    """A ResNet bottleneck stage (create_res_stage): Tx1x1, 1x3x3 (strided in block 0), 1x1x1."""
    blocks = []
    for i in range(depth):
        c_in, s = (dim_in, stride) if i == 0 else (dim_out, 1)
        branch2 = BottleneckBlock(
            conv_a=conv3d(c_in, dim_inner, (temporal, 1, 1)), norm_a=bn(dim_inner), act_a=nn.ReLU(),
            conv_b=conv3d(dim_inner, dim_inner, (1, 3, 3), (1, s, s)), norm_b=bn(dim_inner), act_b=nn.ReLU(),
            conv_c=conv3d(dim_inner, dim_out, (1, 1, 1)), norm_c=bn(dim_out))
        # create_res_block: a projection shortcut (conv + BN) whenever width or stride changes.
        project = c_in != dim_out or s > 1
        blocks.append(ResBlock(
            branch2=branch2, activation=nn.ReLU(),
            branch1_conv=nn.Conv3d(c_in, dim_out, 1, stride=(1, s, s), bias=False) if project else None,
            branch1_norm=bn(dim_out) if project else None))
    return ResStage(blocks)


class SlowFastNet(nn.Module):
    """PyTorchVideo's SlowFast ``Net`` (``blocks.0-6``) over one (N, 3, T_fast, H, W) clip.

    ``alpha`` / ``fusion_kernel``: 8 / 5 for the 4x16 model, 4 / 7 for the 8x8 one.
    """

    def __init__(self, num_classes: int = 400, alpha: int = ALPHA, fusion_kernel: int = FUSION_KERNEL) -> None:
        super().__init__()
        self.alpha = alpha
        fast_stem = STEM_DIM // BETA_INV
        stems = MultiPathWayWithFuse(_stem(STEM_DIM, 1), _stem(fast_stem, 5),
                                     FuseFastToSlow(fast_stem, alpha, fusion_kernel))
        blocks: list[nn.Module] = [stems]
        dim_in, dim_out = STEM_DIM, STEM_DIM * 4
        for idx, depth in enumerate(STAGE_DEPTHS):
            # Slow's input carries the fused Fast channels: C + 2 * C / 8.
            slow_in = dim_in + dim_in * FUSION_RATIO // BETA_INV
            slow = _res_stage(depth, slow_in, dim_out // 4, dim_out, SLOW_TEMPORAL[idx], SPATIAL_STRIDES[idx])
            fast = _res_stage(depth, dim_in // BETA_INV, dim_out // 4 // BETA_INV, dim_out // BETA_INV,
                              FAST_TEMPORAL[idx], SPATIAL_STRIDES[idx])
            last = idx == len(STAGE_DEPTHS) - 1
            fusion = None if last else FuseFastToSlow(dim_out // BETA_INV, alpha, fusion_kernel)
            blocks.append(MultiPathWayWithFuse(slow, fast, fusion))
            dim_in, dim_out = dim_out, dim_out * 2
        blocks.append(PoolConcatPathway())
        blocks.append(ResNetBasicHead(None, DROPOUT, dim_in + dim_in // BETA_INV, num_classes))
        self.blocks = nn.ModuleList(blocks)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # T is static in a traced graph, so the indices become a constant there.
        slow, fast = torch.index_select(x, 2, slow_indices(x.shape[2], self.alpha, device=x.device)), x
        for block in self.blocks[:-2]:
            slow, fast = block(slow, fast)
        return self.blocks[-1](self.blocks[-2](slow, fast))


_FUSION_KEY = "blocks.0.multipathway_fusion.conv_fast_to_slow.weight"


def _check_variant(state: dict[str, torch.Tensor], model: Clip3DClassifier) -> dict[str, torch.Tensor]:
    """Refuse a checkpoint of the other SlowFast variant by name (its lateral kernels differ), not by shapes."""
    got = state.get("net." + _FUSION_KEY)
    if got is not None and got.dim() == 5:
        want = model.state_dict()["net." + _FUSION_KEY].shape[2]
        other = next((n for n, (_, k) in VARIANTS.items() if k == got.shape[2]), None)
        if got.shape[2] != want and other is not None:
            raise EdgevidError(f"this is a {other} checkpoint (fusion kernel {got.shape[2]}x1x1), not {model.name}: "
                               f"use --model {other}")
    return state


def build_slowfast(config: ModelConfig) -> Clip3DClassifier:
    """SlowFast R50 (4x16 or 8x8, by entry) over one clip of ``config.frames`` Fast frames."""
    alpha, kernel = VARIANTS[config.name]
    return Clip3DClassifier(SlowFastNet(config.num_classes, alpha, kernel), head="blocks.6.proj", name=config.name,
                            inflate=_check_variant)


# PyTorchVideo's model zoo (docs/source/model_zoo.md, Kinetics-400): top-1 / top-5 of 10 clips x 3
# crops. PyTorchVideo publishes no checksum for its files: sha256 and hash_prefix stay empty.
_PTV_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/"


def _ptv_weights(file: str, top1: float, top5: float) -> WeightsSpec:
    return WeightsSpec(
        name="kinetics400", file=file, sha256="", num_classes=400, input_size=224, frames=32,
        dataset="Kinetics-400", url=_PTV_ZOO + file, source="pytorchvideo", labels_name="kinetics400",
        published=(("dataset", "Kinetics-400"), ("top1", top1), ("top5", top5),
                   ("views", "10 clips of 32 frames x 3 crops")))


# Both: NUM_FRAMES 32, SAMPLING_RATE 2 (the Fast clip), TRAIN_CROP_SIZE 224, test scale 256
# (TEST_CROP_SIZE of the 3-crop test); the SlowFast repo's SLOWFAST_{4x16,8x8}_R50.yaml.
_SF = "SlowFast {} R50 (Feichtenhofer et al., ICCV 2019): Slow {} frames + Fast 32 frames (alpha {}, beta 1/8) " \
      "over one clip; PyTorchVideo layout{}"
register(ModelConfig(
    name="slowfast-r50-8x8", family="slowfast", backbone="resnet50-slowfast-8x8",
    builder="edgevid.models.slowfast:build_slowfast",
    frames=32, frame_stride=2, input_size=224, resize=256, mean=KINETICS_MEAN, std=KINETICS_STD,
    num_classes=400, can_stream=False,
    description=_SF.format("8x8", 8, 4, " (PyTorchVideo hub's slowfast_r50)"),
    weights=(_ptv_weights("SLOWFAST_8x8_R50.pyth", 76.94, 92.69),),
))
register(ModelConfig(
    name="slowfast-r50-4x16", family="slowfast", backbone="resnet50-slowfast-4x16",
    builder="edgevid.models.slowfast:build_slowfast",
    frames=32, frame_stride=2, input_size=224, resize=256, mean=KINETICS_MEAN, std=KINETICS_STD,
    num_classes=400, can_stream=False,
    description=_SF.format("4x16", 4, 8, ""),
    weights=(_ptv_weights("SLOWFAST_4x16_R50.pyth", 75.34, 91.89),),
), aliases=("slowfast-r50",))  # its name before the 8x8 entry: old commands and checkpoints keep working
