"""torchvision's video CNNs (Tran et al. 2018; Xie et al. 2018), used from torchvision itself.

- ``r3d-18``: a 3D ResNet-18 (every conv 3x3x3);
- ``mc3-18``: mixed convolutions, 3D in the first stage only, 2D (1x3x3) after;
- ``r2plus1d-18``: every 3D conv factorised into a 1x3x3 spatial conv, BN + ReLU, then a
  3x1x1 temporal conv (the added nonlinearity eases training);
- ``s3d``: I3D with separable (2D + 1D) convolutions.

The networks are torchvision's builders (``weights=None``: nothing is downloaded), so a
torchvision state dict loads as it is (``net.`` + torchvision's keys). Preprocessing is
torchvision's: 112 px crops of a 128 px short side for the ResNets, 224 of 256 for S3D,
Kinetics mean/std. One change to S3D: torchvision pools its (2, 7, 7) feature map with a fixed
``AvgPool3d(2, 7, 7)`` and then averages, which is a global average exactly at its 224 px /
16-frame input; edgevid uses ``AdaptiveAvgPool3d(1)`` there, the same numbers at that size (a
test checks), and a model that also runs at other sizes.
"""

from __future__ import annotations

from torch import nn

from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.registry import ModelConfig, WeightsSpec, register

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision.transforms._presets.VideoClassification
KINETICS_STD = (0.22803, 0.22145, 0.216989)
_HEADS = {"r3d_18": "fc", "mc3_18": "fc", "r2plus1d_18": "fc", "s3d": "classifier.1"}


def build_torchvision_video(config: ModelConfig) -> Clip3DClassifier:
    """The torchvision video model named by ``config.backbone``, random init, ``num_classes`` outputs."""
    import torchvision

    arch = config.backbone
    net = getattr(torchvision.models.video, arch)(weights=None, num_classes=config.num_classes)
    if arch == "s3d":
        net.avgpool = nn.AdaptiveAvgPool3d(1)
    return Clip3DClassifier(net, _HEADS[arch], name=config.name)


# torchvision's weights enums (torchvision.models.video.*_Weights.KINETICS400_V1), copied here so
# that loading the zoo does not import torchvision: the URL (its file name ends in the sha256
# prefix torch.hub checks), meta["_metrics"] and the views meta["_docs"] names. Their
# meta["categories"] is edgevid/weights/labels/kinetics400.txt, line for line (a test compares all of it).
_TORCHVISION = "https://download.pytorch.org/models/"
_VIDEO_LEVEL = "video-level: 5 clips of 16 frames at 15 fps x 1 crop"


def _torchvision_weights(file: str, top1: float, top5: float, size: int, views: str = _VIDEO_LEVEL) -> WeightsSpec:
    return WeightsSpec(
        name="kinetics400", file=file, sha256="", num_classes=400, input_size=size, frames=16, dataset="Kinetics-400",
        url=_TORCHVISION + file, source="torchvision", hash_prefix=file.removesuffix(".pth").rsplit("-", 1)[1],
        published=(("dataset", "Kinetics-400"), ("top1", top1), ("top5", top5), ("views", views)),
        labels_name="kinetics400")


def _entry(name: str, arch: str, size: int, resize: int, description: str, weights: WeightsSpec,
           min_frames: int = 1) -> None:
    register(ModelConfig(
        name=name, family="video3d", backbone=arch, builder="edgevid.models.video3d:build_torchvision_video",
        frames=16, min_frames=min_frames, frame_stride=2, input_size=size, resize=resize, mean=KINETICS_MEAN,
        std=KINETICS_STD,
        num_classes=400, description=description + " (torchvision layout; 16 frames, ~15 fps of 30 fps video)",
        weights=(weights,),
    ))


_entry("r3d-18", "r3d_18", 112, 128, "R3D-18: 3D ResNet-18, every conv 3x3x3 (Tran et al. 2018)",
       _torchvision_weights("r3d_18-b3b3357e.pth", 63.2, 83.479, 112))
_entry("mc3-18", "mc3_18", 112, 128, "MC3-18: 3D convs in the first stage, 2D after (Tran et al. 2018)",
       _torchvision_weights("mc3_18-a90a0ba3.pth", 63.96, 84.13, 112))
_entry("r2plus1d-18", "r2plus1d_18", 112, 128, "R(2+1)D-18: 3D convs factorised into 2D spatial + 1D temporal "
       "(Tran et al. 2018)", _torchvision_weights("r2plus1d_18-91a641e6.pth", 67.463, 86.175, 112))
_entry("s3d", "s3d", 224, 256, "S3D: I3D with separable 2D + 1D convolutions (Xie et al. 2018)",
       _torchvision_weights("s3d-d76dad2f.pth", 68.368, 88.05, 224,
                            "clip-level: 1 clip of 128 frames at 15 fps x 1 crop"),
       min_frames=5)  # the stem and features.7 halve time, features.13 max-pools 2 frames
