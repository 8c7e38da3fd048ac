"""MMAction2's 3D recognizers as zoo entries: one entry per model-zoo config, named after it, with its public weights.

Each entry is the architecture of one MMAction2 1.x config exactly (``CONFIGS`` names it; the
networks are ``edgevid.models.mmaction3d``) and loads that config's checkpoints
(``{"state_dict": {"backbone.*", "cls_head.*"}, "meta": ...}``) unchanged. Its settings come
from the same config: frames and frame interval from ``SampleFrames``, crop and resize from the
single-view pipeline (``Resize(-1, R)`` + ``CenterCrop(C)``; the X3D configs have only a test
pipeline, ``Resize(-1, R)`` + ``ThreeCrop(R)``), mean / std from ``ActionDataPreprocessor`` on the
0-255 scale, divided by 255 for edgevid's 0-1 scale. The weights are the config's entry of its
``metafile.yml``: URL, the sha256 prefix MMAction2 puts in the file name (``publish_model``:
``sha256sum`` first 8 hex digits), and the published top-1 / top-5 (a citation, not our
measurement) with the views of its test pipeline (``num_clips`` x crops).

Where an older edgevid entry has the same name without ``-mmaction2`` it is another recipe:
``i3d-resnet50`` has temporal stride 1 and edge-replicated temporal padding where MMAction2's
I3D has stride 2 and zeros; ``x3d-s`` / ``x3d-m`` are PyTorchVideo's (no BN on the first
stage's shortcut, 160 px crops for X3D-S); ``slowfast-r50-*`` sample the Slow frames with
PyTorchVideo's linspace and fuse with BN + ReLU; ``c3d`` is the Sports-1M model.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.mmaction3d import (
    C3D,
    X3D,
    I3DHead,
    Recognizer3D,
    ResNet3d,
    ResNet3dPathway,
    ResNet3dSlowFast,
    SlowFastHead,
    X3DHead,
)
from edgevid.models.mmaction_2d import mmaction2_weights
from edgevid.models.registry import ModelConfig, WeightsSpec, register

# entry -> its MMAction2 config, relative to MMAction2's configs/ folder (also in the wheel, .mim/configs).
CONFIGS = {
    "i3d-r50-mmaction2": "recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py",
    "i3d-nl-resnet50": "recognition/i3d/i3d_imagenet-pretrained-r50-nl-embedded-gaussian_8xb8-32x2x1-100e_kinetics400-rgb.py",
    "i3d-nl-dot-product-resnet50":
        "recognition/i3d/i3d_imagenet-pretrained-r50-nl-dot-product_8xb8-32x2x1-100e_kinetics400-rgb.py",
    "i3d-nl-gaussian-resnet50": "recognition/i3d/i3d_imagenet-pretrained-r50-nl-gaussian_8xb8-32x2x1-100e_kinetics400-rgb.py",
    "slowonly-r50-4x16-mmaction2": "recognition/slowonly/slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb.py",
    "slowonly-r50-8x8-mmaction2": "recognition/slowonly/slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb.py",
    "slowfast-r50-4x16-mmaction2": "recognition/slowfast/slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py",
    "slowfast-r50-8x8-mmaction2": "recognition/slowfast/slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb.py",
    "r2plus1d-r34-mmaction2": "recognition/r2plus1d/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb.py",
    "c3d-ucf101-mmaction2": "recognition/c3d/c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb.py",
    "x3d-s-mmaction2": "recognition/x3d/x3d_s_13x6x1_facebook-kinetics400-rgb.py",
    "x3d-m-mmaction2": "recognition/x3d/x3d_m_16x5x1_facebook-kinetics400-rgb.py",
}


def _slowfast(rate: int, fusion_kernel: int) -> Callable[[int], nn.Module]:
    # resample_rate = speed_ratio (tau = alpha), channel_ratio 8 in both configs.
    return lambda n: Recognizer3D(
        ResNet3dSlowFast(resample_rate=rate, speed_ratio=rate, channel_ratio=8, fusion_kernel=fusion_kernel),
        SlowFastHead(2048 + 256, n))


def _slowonly(n: int) -> nn.Module:
    # ResNet3dSlowOnly: a pathway without laterals; conv1 1x7x7, no temporal stride, inflate (0, 0, 1, 1), no pool2.
    return Recognizer3D(ResNet3dPathway(conv1_kernel=(1, 7, 7), inflate=(0, 0, 1, 1), with_pool2=False),
                        I3DHead(2048, n))


def _i3d(non_local_mode: str | None = None) -> Callable[[int], nn.Module]:
    """_base_/models/i3d_r50.py; with a mode, the i3d_imagenet-pretrained-r50-nl-* configs' non-local blocks:
    on every other bottleneck of res3 and res4 (5 blocks), sub-sampled, unscaled, BN on the output."""
    non_local = ((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0)) if non_local_mode else 0
    cfg = {"mode": non_local_mode, "sub_sample": True, "use_scale": False} if non_local_mode else None
    return lambda n: Recognizer3D(
        ResNet3d(50, conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2,
                 inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
                 non_local=non_local, non_local_cfg=cfg),
        I3DHead(2048, n))


# entry -> (network for n classes, path of its classifier layer)
_NETS: dict[str, tuple[Callable[[int], nn.Module], str]] = {
    "i3d-r50-mmaction2": (_i3d(), "cls_head.fc_cls"),
    "i3d-nl-resnet50": (_i3d("embedded_gaussian"), "cls_head.fc_cls"),
    "i3d-nl-dot-product-resnet50": (_i3d("dot_product"), "cls_head.fc_cls"),
    "i3d-nl-gaussian-resnet50": (_i3d("gaussian"), "cls_head.fc_cls"),
    "slowonly-r50-4x16-mmaction2": (_slowonly, "cls_head.fc_cls"),
    "slowonly-r50-8x8-mmaction2": (_slowonly, "cls_head.fc_cls"),
    # _base_/models/slowfast_r50.py (4x16: tau = alpha = 8, fusion 5); the 8x8 config: 4, fusion_kernel 7
    "slowfast-r50-4x16-mmaction2": (_slowfast(8, 5), "cls_head.fc_cls"),
    "slowfast-r50-8x8-mmaction2": (_slowfast(4, 7), "cls_head.fc_cls"),
    # _base_/models/r2plus1d_r34.py: Conv2plus1d everywhere, SyncBN eps 1e-3, temporal strides (1, 2, 2, 2)
    "r2plus1d-r34-mmaction2": (lambda n: Recognizer3D(
        ResNet3d(34, conv1_kernel=(3, 7, 7), inflate=(1, 1, 1, 1), temporal_strides=(1, 2, 2, 2),
                 with_pool2=False, plus1d=True, eps=1e-3),
        I3DHead(512, n)), "cls_head.fc_cls"),
    # _base_/models/c3d_sports1m_pretrained.py: I3DHead with spatial_type None
    "c3d-ucf101-mmaction2": (lambda n: Recognizer3D(C3D(), I3DHead(4096, n, pool=False)), "cls_head.fc_cls"),
    # _base_/models/x3d.py: gamma_w 1, gamma_b 2.25, gamma_d 2.2; X3DHead(432), fc1 without bias
    "x3d-s-mmaction2": (lambda n: Recognizer3D(X3D(), X3DHead(432, n)), "cls_head.fc2"),
    "x3d-m-mmaction2": (lambda n: Recognizer3D(X3D(), X3DHead(432, n)), "cls_head.fc2"),
}


def build_mmaction(config: ModelConfig) -> Clip3DClassifier:
    """The MMAction2 recognizer of ``config.name``'s model-zoo config, with ``config.num_classes`` classes."""
    net, head = _NETS[config.name]
    return Clip3DClassifier(net(config.num_classes), head=head, name=config.name, layout="mmaction2")


def _weights(path: str, top1: float, top5: float | None, frames: int, size: int, crops: int = 3,
             **extra: object) -> WeightsSpec:
    """A checkpoint of MMAction2's model zoo (``path`` under its v1.0/recognition/ URL, as in the metafile).

    Views as the config's test pipeline takes them: ``num_clips`` 10 clips of ``frames``, three
    crops (``ThreeCrop``) or one (``CenterCrop``).
    """
    views = f"10 clips of {frames} frames x {crops} crop{'s' if crops > 1 else ''}"
    return mmaction2_weights(path, top1, top5, frames, size, views, **extra)


_IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
_IMAGENET_STD_255 = (58.395, 57.12, 57.375)


def _scale(values: tuple[float, ...]) -> tuple[float, float, float]:
    """0-255 (MMAction2's ActionDataPreprocessor) -> 0-1 (edgevid's preprocessing)."""
    a, b, c = (v / 255 for v in values)
    return a, b, c


def _entry(name: str, family: str, backbone: str, frames: int, stride: int, size: int, resize: int,
           weights: WeightsSpec, what: str, mean: tuple[float, ...] = _IMAGENET_MEAN_255,
           std: tuple[float, ...] = _IMAGENET_STD_255, **extra: object) -> None:
    config = CONFIGS[name].rsplit("/", 1)[1].removesuffix(".py")
    register(ModelConfig(
        name=name, family=family, backbone=backbone, builder="edgevid.models.mmaction_zoo:build_mmaction",
        frames=frames, frame_stride=stride, input_size=size, resize=resize, mean=_scale(mean), std=_scale(std),
        num_classes=weights.num_classes, can_stream=False, weights=(weights,),
        description=f"{what}; MMAction2 config {config} (its layout and preprocessing)", **extra))


_entry("i3d-r50-mmaction2", "i3d", "resnet50-3d-mmaction2", 32, 2, 224, 256, _weights(
    "i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb/"
    "i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb_20220812-e213c223.pth", 73.47, 91.27, 32, 224),
    "I3D ResNet-50: conv1 5x7x7 and pool1 with temporal stride 2, zero padding, pool2 after layer1",
    min_frames=5)  # conv1 and pool1 halve T, pool2 needs 2 frames left
# Non-local I3D (Wang et al. 2018): the same I3D with five non-local blocks, one entry per mode of MMAction2's configs.
_NL_WEIGHTS = {"i3d-nl-resnet50": ("embedded-gaussian", "afd8f562", 74.73, 91.80),
               "i3d-nl-dot-product-resnet50": ("dot-product", "8e1f2148", 74.80, 92.07),
               "i3d-nl-gaussian-resnet50": ("gaussian", "0c5cbf5a", 73.97, 91.33)}
for _name, (_mode, _hash, _top1, _top5) in _NL_WEIGHTS.items():
    _stem = f"i3d_imagenet-pretrained-r50-nl-{_mode}_8xb8-32x2x1-100e_kinetics400-rgb"
    _entry(_name, "i3d", "resnet50-3d-nl-mmaction2", 32, 2, 224, 256, _weights(
        f"i3d/{_stem}/{_stem}_20220812-{_hash}.pth", _top1, _top5, 32, 224),
        f"Non-local I3D ResNet-50 ({_mode.replace('-', ' ')} non-local blocks in res3 and res4, Wang et al. 2018)",
        min_frames=5)
_entry("slowonly-r50-4x16-mmaction2", "slowonly", "resnet50-slowonly-mmaction2", 4, 16, 224, 256, _weights(
    "slowonly/slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb/"
    "slowonly_r50_4x16x1_256e_8xb16_kinetics400-rgb_20220901-f6a40d08.pth", 72.68, 90.68, 4, 224),
    "SlowOnly R50 4x16 (the Slow pathway alone, 3x1x1 convs in res4-res5)")
_entry("slowonly-r50-8x8-mmaction2", "slowonly", "resnet50-slowonly-mmaction2", 8, 8, 224, 256, _weights(
    "slowonly/slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb/"
    "slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb_20220901-2132fc87.pth", 74.82, 91.80, 8, 224),
    "SlowOnly R50 8x8 (the Slow pathway alone, 3x1x1 convs in res4-res5)")
# min_frames: one Slow frame (tau); lengths that are not a multiple of tau run here, not in MMAction2.
_entry("slowfast-r50-4x16-mmaction2", "slowfast", "resnet50-slowfast-4x16-mmaction2", 32, 2, 224, 256, _weights(
    "slowfast/slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb/"
    "slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb_20220901-701b0f6f.pth", 75.55, 92.35, 32, 224),
    "SlowFast R50 4x16: Slow every 8th of 32 frames, alpha 8, lateral convs 5x1x1 without BN", min_frames=8)
_entry("slowfast-r50-8x8-mmaction2", "slowfast", "resnet50-slowfast-8x8-mmaction2", 32, 2, 224, 256, _weights(
    "slowfast/slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb/"
    "slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb_20220818-1cb6dfc8.pth", 76.80, 92.99, 32, 224),
    "SlowFast R50 8x8: Slow every 4th of 32 frames, alpha 4, lateral convs 7x1x1 without BN", min_frames=4)
_entry("r2plus1d-r34-mmaction2", "r2plus1d", "resnet34-2plus1d-mmaction2", 8, 8, 224, 256, _weights(
    "r2plus1d/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb/"
    "r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb_20220812-47cfe041.pth", 69.76, 88.41, 8, 224),
    "R(2+1)D-34: every conv factorised (1xkxk, BN, ReLU, kx1x1), temporal strides 1, 2, 2, 2")
# fc6 fixes the geometry: 512 x 1 x 4 x 4 features for 16-31 frames and 96-127 px (as edgevid's c3d).
_entry("c3d-ucf101-mmaction2", "c3d", "c3d-mmaction2", 16, 1, 112, 128, _weights(
    "c3d/c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb/"
    "c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb_20220811-31723200.pth", 83.08, 95.93, 16, 112,
    crops=1, dataset="UCF101 split 1", num_classes=101, labels="ucf101"),
    "C3D fine-tuned on UCF101 from Sports-1M, 101 classes",
    mean=(104, 117, 128), std=(1, 1, 1), min_frames=16, max_frames=31, crop_range=(96, 127))
# The X3D configs are PySlowFast's checkpoints converted (metafile: "Converted From"); their
# frame interval counts at 30 fps (SampleFrames target_fps=30). The metafile gives top-1 only.
_entry("x3d-s-mmaction2", "x3d", "x3d-mmaction2", 13, 6, 182, 182, _weights(
    "x3d/facebook/x3d_s_13x6x1_facebook-kinetics400-rgb_20201027-623825a0.pth", 73.3, None, 13, 182),
    "X3D-S (PySlowFast's weights converted)", mean=(114.75,) * 3, std=(57.38,) * 3)
_entry("x3d-m-mmaction2", "x3d", "x3d-mmaction2", 16, 5, 256, 256, _weights(
    "x3d/facebook/x3d_m_16x5x1_facebook-kinetics400-rgb_20201027-3f42382a.pth", 76.4, None, 16, 256),
    "X3D-M (PySlowFast's weights converted)", mean=(114.75,) * 3, std=(57.38,) * 3)
