"""TSM: Temporal Shift Module (Lin, Gan, Han, ICCV 2019) on ResNet-50 and MobileNetV2.

The shift sits on the residual branch in front of its first conv ("residual shift", the
official ``blockres`` placement), 1/8 of the channels each way:
- ResNet-50: ``conv1`` of every Bottleneck;
- MobileNetV2: the first (expansion) conv of every InvertedResidual with a residual
  connection, 10 blocks, which gives the official online demo's 10 shift buffers.
"""

from __future__ import annotations

from torch import nn

from edgevid.models.backbones import build_backbone
from edgevid.models.mmaction_2d import MMACTION2_WEIGHTS
from edgevid.models.registry import SYNTH_LABELS, ModelConfig, WeightsSpec, register
from edgevid.models.temporal_shift import TemporalShift
from edgevid.models.video_classifier import VideoClassifier


def insert_shifts(backbone: nn.Module, backbone_name: str, mode: str, shift_div: int) -> int:
    """Wrap the first conv of every residual branch in a ``TemporalShift``; returns the count."""
    from torchvision.models.mobilenetv2 import InvertedResidual
    from torchvision.models.resnet import Bottleneck

    count = 0
    for block in backbone.modules():
        if backbone_name == "resnet50" and isinstance(block, Bottleneck):
            block.conv1 = TemporalShift(block.conv1, block.conv1.in_channels, shift_div, mode)
            count += 1
        elif backbone_name == "mobilenetv2" and isinstance(block, InvertedResidual) and block.use_res_connect:
            first = block.conv[0][0]  # Conv2dNormActivation -> its Conv2d
            block.conv[0][0] = TemporalShift(first, first.in_channels, shift_div, mode)
            count += 1
    return count


def build_tsm(config: ModelConfig) -> VideoClassifier:
    """TSM with the config's shift mode (bidirectional offline, or causal/online)."""
    backbone, dim = build_backbone(config.backbone, config.width_mult)
    if insert_shifts(backbone, config.backbone, config.shift, config.shift_div) == 0:
        raise ValueError(f"no residual blocks to shift in {config.backbone}")
    return VideoClassifier(backbone, dim, config.num_classes, dropout=0.5, name=config.name)


_OFFLINE = "Offline TSM, bi-directional residual shift (1/8 each way), clip mode only"
_ONLINE = "Online TSM, causal residual shift (1/8 past-to-future), trains on clips and streams"

# The official releases (mit-han-lab/temporal-shift-module README, "Pretrained Models"): the
# layout ``weights.to_our_layout`` reads (module.base_model.*, new_fc). The repository publishes
# no checksum: sha256 and hash_prefix stay empty. Its K-400 label order is MMAction2's and
# torchvision's (tools/kinetics_label_map.txt, sorted), its SthV2 order the labels JSON's ids.
TSM_RELEASES = "https://hanlab18.mit.edu/projects/tsm/models/"


def tsm_release(file: str, top1: float, views: str, frames: int = 8, labels: str = "kinetics400") -> WeightsSpec:
    """An official TSM / TSN checkpoint (``<labels>-official``), its README's top-1 for ``views``."""
    dataset, classes = ("Something-Something V2", 174) if labels == "sthv2" else ("Kinetics-400", 400)
    return WeightsSpec(
        name=f"{labels}-official", file=file, sha256="", num_classes=classes, input_size=224, frames=frames,
        dataset=dataset, url=TSM_RELEASES + file, source="tsm", labels_name=labels,
        published=(("dataset", dataset), ("top1", top1), ("views", views)))


# Both read MMAction2's checkpoints of the same networks (edgevid.models.mmaction_2d: ResNetTSM /
# MobileNetV2TSM with shift_div 8, 'blockres', no temporal pool, TSMHead) and the official ones.
register(ModelConfig(
    name="tsm-resnet50", family="tsm", backbone="resnet50", builder="edgevid.models.tsm:build_tsm",
    shift="bidirectional", description=_OFFLINE + " (official TSM and MMAction2 ResNet-50 layouts)",
    weights=MMACTION2_WEIGHTS["tsm-resnet50"] + (
        # uniform sampling, the 1-crop column (10 crops: 72.8)
        tsm_release("TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth", 71.2,
                    "1 clip of 8 frames x 1 crop"),
        # "accurate setting": full resolution (3 crops of 256) x 2 clips
        tsm_release("TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth", 61.2,
                    "2 clips of 8 frames x 3 crops", labels="sthv2"),
    ),
))
register(ModelConfig(
    name="tsm-mobilenetv2", family="tsm", backbone="mobilenetv2", builder="edgevid.models.tsm:build_tsm",
    shift="bidirectional", description=_OFFLINE + " (official TSM and MMAction2 MobileNetV2 layouts)",
    weights=MMACTION2_WEIGHTS["tsm-mobilenetv2"] + (
        # dense sampling (8 frames, every 8th), 10 clips, full resolution (3 crops of 256)
        tsm_release("TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth", 69.5,
                    "10 clips of 8 frames (dense, every 8th) x 3 crops"),
    ),
))
register(ModelConfig(
    name="tsm-resnet50-online", family="tsm", backbone="resnet50", builder="edgevid.models.tsm:build_tsm",
    shift="causal", can_stream=True, description=_ONLINE,
))
# Trained here on the built-in synthetic set: the embedded default of export/eval/report.
_TSM_SYNTH = WeightsSpec(
    name="synth", file="tsm-mobilenetv2-online_synth.pt",
    sha256="193d6468a3fcef791b25f5cda7fda35e2b2c985b29d374010b4c217ef4af227d",
    num_classes=len(SYNTH_LABELS), labels=SYNTH_LABELS, input_size=112, frames=8, width_mult=0.5,
    dataset="edgevid data synth --seed 1 --videos-per-class 60 (held out), val split",
    metrics=(("top1", 0.909), ("order_pair", 0.908)),
    command="edgevid data synth -o synth60 --seed 0 --videos-per-class 60 && OMP_NUM_THREADS=1 edgevid train "
            "--model tsm --data synth60 --width 0.5 --epochs 25 -o tsm.pt  (best epoch 19; the run was "
            "interrupted after epoch 4 and continued with --resume)",
)

register(ModelConfig(
    name="tsm-mobilenetv2-online", family="tsm", backbone="mobilenetv2", builder="edgevid.models.tsm:build_tsm",
    shift="causal", can_stream=True, description=_ONLINE + " (the official online demo's model)",
    weights=(_TSM_SYNTH,),
), aliases=("tsm",))
