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

register(ModelConfig(
    name="tsm-resnet50", family="tsm", backbone="resnet50", builder="edgevid.models.tsm:build_tsm",
    shift="bidirectional", description=_OFFLINE + " (official TSM ResNet-50 layout)",
))
register(ModelConfig(
    name="tsm-mobilenetv2", family="tsm", backbone="mobilenetv2", builder="edgevid.models.tsm:build_tsm",
    shift="bidirectional", description=_OFFLINE + " (official TSM MobileNetV2 layout)",
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
