"""MMAction2 1.x's 2D recognizers (TSN and TSM on ResNet-50, TSM on MobileNetV2): their checkpoint keys, their weights.

The networks are edgevid's own ``tsn-resnet50``, ``tsm-resnet50`` and ``tsm-mobilenetv2``:
checked module for module against MMAction2 1.2.0 (``models/backbones/{resnet,resnet_tsm,
mobilenet_v2,mobilenet_v2_tsm}.py``, ``models/heads/{tsn,tsm}_head.py``), they compute the same
function, so no separate ``-mmaction2`` entry is needed:

- ResNet-50 is torchvision's (style 'pytorch': the 3x3 conv strides; BN eps 1e-5); MobileNetV2
  at width 1.0 is torchvision's (same ``make_divisible`` widths, ReLU6, 1280 features).
- ``ResNetTSM`` (``shift_div=8``, ``shift_place='blockres'``, ``temporal_pool=False``) shifts
  in front of every Bottleneck's ``conv1`` (R50: ``n_round`` 1, every block);
  ``MobileNetV2TSM`` in front of the expansion conv of every InvertedResidual with a residual
  connection (10 blocks). Channels [0, C/8) take frame t+1, [C/8, C/4) frame t-1, zeros at
  the borders: edgevid's bidirectional shift.
- ``TSMHead`` scores every frame then averages (``AvgConsensus``); ``TSNHead`` averages the
  pooled features then scores: the same numbers, the head being linear. Dropout is inference-free.
- ``ActionDataPreprocessor`` mean / std (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375) on
  0-255 are ImageNet's on 0-1, the entries' own; frames are RGB (no ``to_rgb`` flip).

- TSN flow (``recognition/tsn/tsn_imagenet-pretrained-r50_8xb32_5x1x3-110e_kinetics400-flow.py``):
  the same ResNet with ``in_channels=2 * clip_len`` (conv1 of 2L channels, nothing else differs), so
  its checkpoints take the same renaming into ``tsn-flow-resnet50``. Its input is L flow images per
  segment, u and v interleaved, oldest first (``RawFrameDecode`` stacks each frame's x and y images,
  ``FormatShape('NCHW')`` with modality Flow reshapes (L, 2, H, W) to (2L, H, W)), normalised with
  mean 128 / std 128 on 0-255: ``edgevid.runtime.motion``'s stack.

``from_mmaction2`` renames a checkpoint's keys (``{"state_dict": {"backbone.*", "cls_head.*"},
"meta": ...}`` as MMEngine saves it) to torchvision's names; ``weights.to_our_layout`` calls it.
``CONFIGS`` names the MMAction2 config of every public checkpoint the entries list.
"""

from __future__ import annotations

import re

import torch

from edgevid.errors import EdgevidError
from edgevid.models.registry import WeightsSpec

# MobileNetV2's InvertedResidual blocks per stage (MMAction2's ``arch_settings``, torchvision's
# ``inverted_residual_setting``): stage L, block B is torchvision's ``features[1 + sum(n[:L-1]) + B]``.
_MBV2_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
_MBV2_FIRST = {stage + 1: 1 + sum(_MBV2_BLOCKS[:stage]) for stage in range(len(_MBV2_BLOCKS))}
_MBV2_LAST = 1 + sum(_MBV2_BLOCKS)  # features[18]: the 1x1 conv to 1280 (MMAction2's ``conv2``)

_RESNET_CONV = re.compile(r"^(layer\d+\.\d+)\.(conv\d)\.(conv|bn)\.(.+)$")
_RESNET_DOWN = re.compile(r"^(layer\d+\.\d+)\.downsample\.(conv|bn)\.(.+)$")
_MBV2_CONV = re.compile(r"^layer(\d+)\.(\d+)\.conv\.(\d+)\.(conv|bn)\.(.+)$")
_STEM = re.compile(r"^(conv1|conv2)\.(conv|bn)\.(.+)$")


def is_mmaction2(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` has MMAction2's recognizer layout (its stem is a ConvModule, its head ``cls_head``)."""
    return "backbone.conv1.conv.weight" in state or any(k.startswith("cls_head.") for k in state)


def from_mmaction2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An MMAction2 TSN / TSM (ResNet or MobileNetV2) state dict in torchvision's names; others unchanged.

    The shift wrapper's ``.net`` segment is dropped: weights are matched by ``canonical_key``,
    so the same checkpoint loads into a shifted or an unshifted entry, as the official TSM ones do.
    """
    if not is_mmaction2(state):
        return state
    stem = state.get("backbone.conv1.conv.weight")
    if stem is not None and stem.dim() == 5:
        raise EdgevidError("this is a checkpoint of an MMAction2 3D recognizer (5-D convs), not of a 2D TSN / TSM: "
                           "use its '-mmaction2' entry (see `edgevid zoo list`)")
    inner = {k: k[len("backbone."):].replace(".net.", ".") for k in state if k.startswith("backbone.")}
    # MobileNetV2 blocks with an expansion conv have 3 ConvModules (conv.0-2), the first block 2.
    modules: dict[tuple[str, str], int] = {}
    for key in inner.values():
        if m := _MBV2_CONV.match(key):
            block = (m.group(1), m.group(2))
            modules[block] = max(modules.get(block, 0), int(m.group(3)) + 1)
    mobilenet = bool(modules)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("data_preprocessor."):
            continue  # the 0-255 mean / std some MMEngine versions saved: preprocessing, the entry's config
        if key.startswith("cls_head.fc_cls."):
            out["fc." + key[len("cls_head.fc_cls."):]] = value
        elif key in inner:
            out["backbone." + (_mobilenet_key(inner[key], modules) if mobilenet else _resnet_key(inner[key]))] = value
        else:
            out[key] = value  # not ours to map: load_state reports it as unexpected
    return out


def _resnet_key(key: str) -> str:
    """``conv1.conv`` / ``conv1.bn`` -> ``conv1`` / ``bn1``; ``downsample.conv`` / ``.bn`` -> ``downsample.0`` / ``.1``."""
    if m := _STEM.match(key):
        return f"conv1.{m.group(3)}" if m.group(2) == "conv" else f"bn1.{m.group(3)}"
    if m := _RESNET_CONV.match(key):
        block, conv, part, rest = m.groups()
        return f"{block}.{conv}.{rest}" if part == "conv" else f"{block}.{conv.replace('conv', 'bn')}.{rest}"
    if m := _RESNET_DOWN.match(key):
        block, part, rest = m.groups()
        return f"{block}.downsample.{0 if part == 'conv' else 1}.{rest}"
    return key


def _mobilenet_key(key: str, modules: dict[tuple[str, str], int]) -> str:
    """MMAction2's ``conv1`` / ``layerL.B.conv.I`` / ``conv2`` ConvModules -> torchvision's ``features.*``.

    torchvision nests every ConvModule but the block's last as ``conv.I.0`` (conv) / ``conv.I.1``
    (BN); the last (the projection, no activation) is a flat ``conv.I`` / ``conv.I+1``.
    """
    if m := _STEM.match(key):
        index = 0 if m.group(1) == "conv1" else _MBV2_LAST
        return f"features.{index}.{0 if m.group(2) == 'conv' else 1}.{m.group(3)}"
    if m := _MBV2_CONV.match(key):
        stage, block, module, part, rest = m.groups()
        if int(stage) not in _MBV2_FIRST:
            return key
        feature = _MBV2_FIRST[int(stage)] + int(block)
        i = int(module)
        if i < modules[(stage, block)] - 1:
            return f"features.{feature}.conv.{i}.{0 if part == 'conv' else 1}.{rest}"
        return f"features.{feature}.conv.{i if part == 'conv' else i + 1}.{rest}"
    return key


# --- MMAction2's model zoo: the checkpoints of these entries ----------------------------------------------------

_ROOT = "https://download.openmmlab.com/mmaction/v1.0/recognition/"
K400 = "Kinetics-400"
STHV2 = "Something-Something V2"


def mmaction2_weights(path: str, top1: float, top5: float | None, frames: int, size: int, views: str,
                      dataset: str = K400, num_classes: int = 400, labels: str = "kinetics400") -> WeightsSpec:
    """A checkpoint of MMAction2's model zoo: ``path`` under its v1.0/recognition/ URL, as in the metafile.

    The sha256 prefix is the file name's suffix (MMAction2's ``publish_model``: first 8 hex digits).
    Same fields as ``mmaction_zoo._weights`` (the 3D entries'); public here because the 2D families
    register before that module and cannot import it without reordering the zoo.
    """
    file = path.rsplit("/", 1)[1]
    figures = (("dataset", dataset), ("top1", top1)) + ((("top5", top5),) if top5 is not None else ()) \
        + (("views", views),)
    return WeightsSpec(
        name=labels, file=file, sha256="", num_classes=num_classes, input_size=size, frames=frames, dataset=dataset,
        url=_ROOT + path, source="mmaction2", hash_prefix=file.removesuffix(".pth").rsplit("-", 1)[1],
        published=figures, labels_name=labels)


# (entry, weights name) -> its MMAction2 config, relative to MMAction2's configs/ (also in the wheel, .mim/configs).
CONFIGS = {
    ("tsn-resnet50", "kinetics400"): "recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py",
    ("tsn-resnet50", "sthv2"): "recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x8-50e_sthv2-rgb.py",
    ("tsm-resnet50", "kinetics400"): "recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py",
    ("tsm-resnet50", "sthv2"): "recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb.py",
    ("tsm-mobilenetv2", "kinetics400"):
        "recognition/tsm/tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb.py",
}


def _zoo(entry: str, name: str, stamp: str, top1: float, top5: float, frames: int, views: str) -> WeightsSpec:
    """The checkpoint of ``CONFIGS[entry, name]``: MMAction2 files it as <config>/<config>_<date>-<sha256[:8]>.pth."""
    config = CONFIGS[entry, name].rsplit("/", 1)[1].removesuffix(".py")
    family = CONFIGS[entry, name].split("/")[1]
    extra = {"dataset": STHV2, "num_classes": 174, "labels": "sthv2"} if name == "sthv2" else {}
    return mmaction2_weights(f"{family}/{config}/{config}_{stamp}.pth", top1, top5, frames, 224, views, **extra)


# Figures of the metafiles (MMAction2 1.2.0, the wheel's configs/recognition/{tsn,tsm}/metafile.yml);
# the MobileNetV2 TSM is only in the README's table (configs/recognition/tsm/README.md). MMAction2
# calls TSN / TSM test segments "clips": "25 clips x 10 crop" is one view of 25 frames per crop.
# Views as its test pipelines take them: SampleFrames num_clips (twice_sample: 2 clips), TenCrop /
# ThreeCrop. A citation, not our measurement.
MMACTION2_WEIGHTS = {
    "tsn-resnet50": (
        _zoo("tsn-resnet50", "kinetics400", "20220906-cd10898e", 72.83, 90.65, 3, "1 clip of 25 frames x 10 crops"),
        _zoo("tsn-resnet50", "sthv2", "20230313-06ad7d03", 35.51, 67.09, 8, "1 clip of 25 frames x 10 crops"),
    ),
    "tsm-resnet50": (
        _zoo("tsm-resnet50", "kinetics400", "20220831-64d69186", 73.18, 90.56, 8, "1 clip of 8 frames x 10 crops"),
        _zoo("tsm-resnet50", "sthv2", "20230317-be0fc26e", 62.72, 87.70, 8, "2 clips of 8 frames x 3 crops"),
    ),
    "tsm-mobilenetv2": (
        _zoo("tsm-mobilenetv2", "kinetics400", "20230414-401127fd", 68.71, 88.32, 8, "1 clip of 8 frames x 3 crops"),
    ),
}
