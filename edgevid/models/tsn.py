"""TSN: Temporal Segment Networks (Wang et al. 2016), the baseline.

One frame per segment, a 2D CNN scores each, the average is the clip score. Frame order
is invisible to it. It has no temporal state, so its streaming form is per-frame scoring
(the runtime averages scores over recent frames).
"""

from __future__ import annotations

from edgevid.models.backbones import build_backbone
from edgevid.models.mmaction_2d import MMACTION2_WEIGHTS
from edgevid.models.registry import SYNTH_LABELS, ModelConfig, WeightsSpec, register
from edgevid.models.tsm import tsm_release
from edgevid.models.video_classifier import VideoClassifier


def build_tsn(config: ModelConfig) -> VideoClassifier:
    """TSN: the backbone with average consensus, no shift."""
    backbone, dim = build_backbone(config.backbone, config.width_mult)
    return VideoClassifier(backbone, dim, config.num_classes, dropout=0.5, name=config.name)


_TSN = "TSN baseline, average consensus, no temporal modelling"

# The baseline to the shipped online TSM: same backbone, width, data and schedule.
_TSN_SYNTH = WeightsSpec(
    name="synth", file="tsn-mobilenetv2_synth.pt",
    sha256="3d0e7982a6161bdd87a74abfc3187e4ec6ec87501cf33ee4188b9ae866347d72",
    num_classes=len(SYNTH_LABELS), labels=SYNTH_LABELS, input_size=112, frames=8, width_mult=0.5,
    dataset="edgevid data synth --seed 1 --videos-per-class 60 (held out), val split",
    metrics=(("top1", 0.197), ("order_pair", 0.517)),
    command="edgevid data synth -o synth60 --seed 0 --videos-per-class 60 && OMP_NUM_THREADS=1 edgevid train "
            "--model tsn-mobilenetv2 --data synth60 --width 0.5 --epochs 25 -o tsn.pt  (best epoch 20)",
)

register(ModelConfig(
    name="tsn-mobilenetv2", family="tsn", backbone="mobilenetv2", builder="edgevid.models.tsn:build_tsn",
    can_stream=True, description=_TSN, weights=(_TSN_SYNTH,),
))
# Reads MMAction2's TSN R50 (ResNet + TSNHead: average of the pooled features, then fc_cls, the
# same numbers as scoring each frame and averaging) and the TSM authors' TSN baseline.
register(ModelConfig(
    name="tsn-resnet50", family="tsn", backbone="resnet50", builder="edgevid.models.tsn:build_tsn",
    can_stream=True, description=_TSN + " (official TSM-repository and MMAction2 ResNet-50 layouts)",
    weights=MMACTION2_WEIGHTS["tsn-resnet50"] + (
        # trained on 5 segments; the README's uniform-sampling table, 1-crop column (10 crops: 69.9)
        tsm_release("TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth", 68.8, "1 clip of 8 frames x 1 crop"),
    ),
))
