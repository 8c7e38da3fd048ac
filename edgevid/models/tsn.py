"""TSN: Temporal Segment Networks (Wang et al. 2016), the baseline.

One frame per segment, a 2D CNN scores each, the average is the clip score. Frame order
is invisible to it. It has no temporal state, so its streaming form is per-frame scoring
(the runtime averages scores over recent frames).
"""

from __future__ import annotations

from edgevid.models.backbones import build_backbone
from edgevid.models.registry import ModelConfig, register
from edgevid.models.video_classifier import VideoClassifier


def build_tsn(config: ModelConfig) -> VideoClassifier:
    """TSN: the backbone with average consensus, no shift."""
    backbone, dim = build_backbone(config.backbone, config.width_mult)
    return VideoClassifier(backbone, dim, config.num_classes, dropout=0.5, name=config.name)


_TSN = "TSN baseline, average consensus, no temporal modelling"

register(ModelConfig(
    name="tsn-mobilenetv2", family="tsn", backbone="mobilenetv2", builder="edgevid.models.tsn:build_tsn",
    can_stream=True, description=_TSN,
))
register(ModelConfig(
    name="tsn-resnet50", family="tsn", backbone="resnet50", builder="edgevid.models.tsn:build_tsn",
    can_stream=True, description=_TSN,
))
