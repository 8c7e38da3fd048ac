"""Two-stream networks (Simonyan & Zisserman 2014) in TSN's form (Wang et al. 2016).

- The temporal stream is a TSN whose frame input is a motion stack the host computes
  (``edgevid.runtime.motion``): L optical-flow fields (2L channels) or L RGB differences (3L).
  Entries ``tsn-flow-<backbone>`` and ``tsn-rgbdiff-<backbone>`` (family "tsn": same network,
  same checkpoint layout as ``tsn-<backbone>`` but for the first conv).
- Cross-modality initialization: an RGB checkpoint loaded into a motion stream gives its first
  conv the RGB weights averaged over the 3 channels and replicated C times (``cross_modality_init``;
  ``weights.load_state`` applies it and says so in one warning line).
- ``TwoStream``: the RGB TSN and the flow TSN, late fusion of their softmax scores with weights
  (RGB 1 : flow 1.5, TSN's). Entries ``two-stream-<backbone>``; ``combine`` builds one from a
  checkpoint of each stream, ``load`` reads a two-stream checkpoint with its fusion weights.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from edgevid.errors import EdgevidError, EdgevidWarning
from edgevid.manifest import Motion
from edgevid.models.backbones import build_backbone
from edgevid.models.registry import SYNTH_LABELS, ModelConfig, WeightsSpec, get_config, register
from edgevid.models.video_classifier import VideoClassifier

# TSN's temporal-stream input: 5 flow fields (10 channels); DIS "fast" is OpenCV's cheapest preset
# that still resolves the built-in set's motions; +-20 px quantized as TSN stores its flow images.
FLOW = Motion("flow", 5, "dis", "fast", 20.0)
RGBDIFF = Motion("rgbdiff", 5)
DEFAULT_FUSION: dict[str, float] = {"rgb": 1.0, "flow": 1.5}  # TSN's weights (RGB 1 : flow 1.5)
# The config fields that make one stream's architecture; a two-stream config hands them to both.
_STREAM_ARCH = ("width_mult", "num_classes", "frames", "frame_stride", "input_size", "resize")


class CrossModalityWarning(EdgevidWarning):
    """An RGB checkpoint's first conv was turned into a motion stream's by cross-modality init."""


def cross_modality_init(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """TSN's cross-modality init: (O, 3, k, k) RGB conv weights -> (O, channels, k, k).

    The mean over the RGB channels, replicated ``channels`` times (not rescaled, as in TSN): the
    motion conv's response to a stack is the RGB conv's response to a grey image whose level is
    the stack's channel sum / 3.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected RGB conv weights (O, 3, k, k), got {tuple(weight.shape)}")
    if channels < 1:
        raise ValueError(f"channels must be positive, not {channels}")
    return weight.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1).contiguous()


def adapt_rgb_stems(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> list[str]:
    """Cross-modality init, in place, of every motion stream's first conv that ``state`` gives 3-channel weights.

    ``state`` is in ``model``'s own key names (after the layout mapping). Returns the adapted keys
    and warns once naming them; a state without RGB stems is left as it is (its shapes are checked
    by the caller).
    """
    adapted = []
    for prefix, module in model.named_modules():
        if not isinstance(module, VideoClassifier) or module.in_channels == 3:
            continue
        path, conv = module.stem
        key = f"{prefix}.{path}.weight" if prefix else f"{path}.weight"
        value = state.get(key)
        if value is not None and value.dim() == 4 and value.shape[1] == 3 \
                and value.shape[0] == conv.out_channels and value.shape[2:] == conv.weight.shape[2:]:
            state[key] = cross_modality_init(value, conv.in_channels)
            adapted.append(key)
    if adapted:
        channels = ", ".join(str(state[k].shape[1]) for k in adapted)
        warnings.warn(CrossModalityWarning(
            f"{source} is an RGB checkpoint: initialized the first conv ({', '.join(adapted)}) of the {channels}-channel "
            "motion input by cross-modality init (RGB weights averaged, replicated); everything else loaded as is"),
            stacklevel=3)
    return adapted


def build_motion_tsn(config: ModelConfig) -> VideoClassifier:
    """TSN's temporal stream: the backbone's first conv takes the motion stack (``config.motion.channels``)."""
    if config.motion is None:
        raise EdgevidError(f"{config.name} has no motion input: build it with edgevid.models.tsn.build_tsn")
    backbone, dim = build_backbone(config.backbone, config.width_mult, in_channels=config.motion.channels)
    return VideoClassifier(backbone, dim, config.num_classes, dropout=0.5, name=config.name)


def check_fusion(fusion: Mapping[str, Any]) -> dict[str, float]:
    """Fusion weights ``{"rgb": w, "flow": w}``: finite, non-negative, not both zero (one line otherwise)."""
    if not isinstance(fusion, Mapping) or set(fusion) != {"rgb", "flow"}:
        raise EdgevidError(f"fusion must give exactly the weights 'rgb' and 'flow', not {fusion!r}")
    out = {}
    for key in ("rgb", "flow"):
        value = fusion[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise EdgevidError(f"fusion weight {key}={value!r} must be a finite number >= 0")
        out[key] = float(value)
    if out["rgb"] + out["flow"] <= 0:
        raise EdgevidError("fusion weights rgb and flow are both 0: at least one stream must count")
    return out


class TwoStream(nn.Module):
    """An RGB TSN (``.rgb``) and a flow TSN (``.flow``) fused late by weighted softmax scores.

    ``forward(x)`` takes ONE input, (N, T, 3 + 2L, H, W): each step's normalised RGB frame, then
    its flow stack (what ``edgevid.runtime.motion`` makes for a ``Motion`` with ``rgb=True``), so
    the two streams export, stream, quantize and run as one ordinary single-input graph;
    ``forward(rgb_clip, flow_clip)`` takes them apart. It returns the log of the fused scores,
    ``log((w_rgb * softmax(rgb) + w_flow * softmax(flow)) / (w_rgb + w_flow))`` (TSN fuses class
    scores): "logits" whose softmax, as every session takes it, is exactly the fused scores.
    """

    def __init__(self, rgb: VideoClassifier, flow: VideoClassifier, fusion: Mapping[str, Any] | None = None,
                 name: str = "") -> None:
        super().__init__()
        if rgb.num_classes != flow.num_classes:
            raise EdgevidError(f"the RGB stream has {rgb.num_classes} classes and the flow stream "
                               f"{flow.num_classes}: both must score the same classes")
        self.name = name
        self.rgb = rgb
        self.flow = flow
        self.fusion = check_fusion(DEFAULT_FUSION if fusion is None else fusion)

    @property
    def num_classes(self) -> int:
        """Number of output classes (both streams')."""
        return self.rgb.num_classes

    @property
    def streams(self) -> dict[str, VideoClassifier]:
        """The two networks by fusion key: each exports and streams as an ordinary TSN."""
        return {"rgb": self.rgb, "flow": self.flow}

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh heads for ``num_classes`` classes in both streams."""
        self.rgb.reset_classifier(num_classes)
        self.flow.reset_classifier(num_classes)

    def map_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each stream's part (``rgb.*``, ``flow.*``) through the single-stream layout mapping; other keys
        are left for ``load_state`` to report."""
        from edgevid.models.weights import to_our_layout

        out = {k: v for k, v in state.items() if not k.startswith(("rgb.", "flow."))}
        for prefix in ("rgb.", "flow."):
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            out.update({prefix + k: v for k, v in to_our_layout(part).items()} if part else {})
        return out

    @property
    def in_channels(self) -> int:
        """Channels of the one input: 3 (RGB) + the flow stack's."""
        return 3 + self.flow.in_channels

    def _fuse(self, rgb_logits: torch.Tensor, flow_logits: torch.Tensor) -> torch.Tensor:
        w_rgb, w_flow = self.fusion["rgb"], self.fusion["flow"]
        scores = w_rgb * rgb_logits.softmax(dim=-1) + w_flow * flow_logits.softmax(dim=-1)
        return torch.log(scores / (w_rgb + w_flow))

    def forward(self, x: torch.Tensor, flow_clip: torch.Tensor | None = None) -> torch.Tensor:
        if flow_clip is None:  # one input: RGB channels first, then the flow stack
            x, flow_clip = x[:, :, :3], x[:, :, 3:]
        return self._fuse(self.rgb(x), self.flow(flow_clip))

    def forward_step(self, x: torch.Tensor) -> torch.Tensor:
        """One stream step on (N, 3 + 2L, H, W): each stream's per-frame logits, fused (TSN streams per frame)."""
        return self._fuse(self.rgb.forward_step(x[:, :3]), self.flow.forward_step(x[:, 3:]))


def stream_configs(config: ModelConfig) -> tuple[ModelConfig, ModelConfig]:
    """The (RGB, flow) TSN configs of a two-stream config: its backbone, architecture fields and motion."""
    arch = {k: getattr(config, k) for k in _STREAM_ARCH}
    rgb = replace(get_config(f"tsn-{config.backbone}"), **arch)
    flow = replace(get_config(f"tsn-flow-{config.backbone}"), **arch)
    # The two-stream motion has rgb=True (its one input starts with the RGB frame); the flow stream's not.
    return rgb, (replace(flow, motion=replace(config.motion, rgb=False)) if config.motion is not None else flow)


def build_two_stream(config: ModelConfig) -> TwoStream:
    """Both TSN streams of ``config`` (random init: the RGB stream first), TSN's fusion weights."""
    from edgevid.models.tsn import build_tsn

    rgb_config, flow_config = stream_configs(config)
    return TwoStream(build_tsn(rgb_config), build_motion_tsn(flow_config), name=config.name)


def _attach(model: TwoStream, config: ModelConfig, rgb: nn.Module, flow: nn.Module, labels: list[str]) -> TwoStream:
    """Set the attributes ``build_model`` gives a model (``config``, ``labels``, ``weights_info``) on both levels."""
    model.config, model.labels, model.weights_info = config, labels, None
    model.rgb.config, model.rgb.labels, model.rgb.weights_info = rgb.config, labels, getattr(rgb, "weights_info", None)
    model.flow.config, model.flow.labels = flow.config, labels
    model.flow.weights_info = getattr(flow, "weights_info", None)
    return model


def combine(rgb_ckpt: str | os.PathLike, flow_ckpt: str | os.PathLike, fusion: Mapping[str, Any] | None = None,
            *, backbone: str | None = None) -> TwoStream:
    """A two-stream model from a checkpoint of each stream: ``tsn-<backbone>`` (RGB) and ``tsn-flow-<backbone>``.

    Our checkpoints name their entry; for another layout (MMAction2's TSN RGB and flow, a plain
    state dict) pass ``backbone``. Both must score the same classes (and, where they list them,
    the same labels). The result's ``config`` is the ``two-stream-<backbone>`` entry with the
    RGB stream's architecture and the flow stream's motion.
    """
    from edgevid.models import build_model
    from edgevid.models.weights import read_checkpoint, split_checkpoint

    fusion = check_fusion(DEFAULT_FUSION if fusion is None else fusion)
    names = {}
    for role, path in (("rgb", rgb_ckpt), ("flow", flow_ckpt)):
        _, meta = split_checkpoint(read_checkpoint(path))
        names[role] = meta.get("model") or None
    backbones = {get_config(n).backbone for n in names.values() if n} | ({backbone} if backbone else set())
    if len(backbones) != 1:
        found = ", ".join(f"{r}: {n}" for r, n in names.items() if n) or "no entry names"
        raise EdgevidError(f"cannot tell the two-stream backbone ({found}): "
                           + ("both streams must share one backbone" if backbones else "pass backbone"))
    (bb,) = backbones
    rgb = build_model(f"tsn-{bb}", checkpoint=rgb_ckpt)
    flow = build_model(f"tsn-flow-{bb}", checkpoint=flow_ckpt)
    if rgb.config.motion is not None or flow.config.motion is None or flow.config.motion.kind != "flow":
        raise EdgevidError(f"{rgb_ckpt} must be an RGB TSN and {flow_ckpt} a flow TSN checkpoint")
    # a checkpoint without labels (generic names) takes the other's
    if rgb.num_classes != flow.num_classes or (rgb.labels != flow.labels
                                               and not (_generic(rgb.labels) or _generic(flow.labels))):
        raise EdgevidError(f"{rgb_ckpt} and {flow_ckpt} score different classes "
                           f"({rgb.num_classes}: {rgb.labels[:3]}... vs {flow.num_classes}: {flow.labels[:3]}...)")
    labels = flow.labels if _generic(rgb.labels) else rgb.labels
    # The RGB stream's architecture, but the flow stream's frame stride: flow fields between frames
    # further apart are larger motions than it was trained on, while a TSN RGB stream scores each
    # frame alone and does not depend on the stride.
    arch = {k: getattr(rgb.config, k) for k in _STREAM_ARCH} | {"frame_stride": flow.config.frame_stride}
    config = replace(get_config(f"two-stream-{bb}"), **arch, motion=replace(flow.config.motion, rgb=True))
    return _attach(TwoStream(rgb, flow, fusion, name=config.name), config, rgb, flow, labels)


def _generic(labels: list[str]) -> bool:
    """Whether ``labels`` are ``build_model``'s stand-in names (class_0, ...): a checkpoint without labels."""
    return labels == [f"class_{i}" for i in range(len(labels))]


def load(path: str | os.PathLike) -> TwoStream:
    """A two-stream checkpoint of ours (``rgb.*`` / ``flow.*`` weights, ``fusion`` in its config) with its fusion weights."""
    from edgevid.models import build_model
    from edgevid.models.weights import read_checkpoint, split_checkpoint

    _, meta = split_checkpoint(read_checkpoint(path))
    name = meta.get("model")
    if not name or get_config(name).family != "two-stream":
        raise EdgevidError(f"{path} is not a two-stream checkpoint (its model: {name or 'not recorded'})")
    fusion = (meta.get("config") or {}).get("fusion")
    model = build_model(name, checkpoint=path)
    if fusion is not None:
        model.fusion = check_fusion(fusion)
    rgb_config, flow_config = stream_configs(model.config)
    for stream, config in ((model.rgb, rgb_config), (model.flow, flow_config)):
        stream.config, stream.labels, stream.weights_info = config, model.labels, None
    return model


def checkpoint_config(model: TwoStream) -> dict[str, Any]:
    """The ``config`` to save a two-stream model with (``weights.save_checkpoint``): architecture and fusion."""
    config = model.config
    return {k: getattr(config, k) for k in _STREAM_ARCH} | {"fusion": dict(model.fusion)}


_MOTION_TSN = "TSN temporal stream on {what} (TSN: cross-modality init from any RGB checkpoint)"

# The temporal stream and the two-stream model trained on the built-in set, beside the shipped TSN
# and TSM (same backbone, width, size, data): held-out figures measured with `edgevid eval`.
_HELD_OUT = "edgevid data synth --seed 1 --videos-per-class 60 (held out), val split"
def _synth(file: str, sha256: str, top1: float, order_pair: float, command: str) -> WeightsSpec:
    """Weights trained on the built-in set at the shipped TSN's width, size and frames."""
    return WeightsSpec(name="synth", file=file, sha256=sha256, num_classes=len(SYNTH_LABELS), labels=SYNTH_LABELS,
                       input_size=112, frames=8, width_mult=0.5, dataset=_HELD_OUT,
                       metrics=(("top1", top1), ("order_pair", order_pair)), command=command)


_FLOW_SYNTH = _synth(
    "tsn-flow-mobilenetv2_synth.pt", "ada37f1ff2c33c379d38d29c1ed1b0f438957e45b9340b8be8569dfc9d5d5b5e", 0.515, 0.808,
    "edgevid data synth -o synth60 --seed 0 --videos-per-class 60 && OMP_NUM_THREADS=1 edgevid train "
    "--model tsn-flow-mobilenetv2 --data synth60 --width 0.5 --epochs 20 -o flow.pt  (best epoch 16)")
# The two shipped streams (their own commands) in one checkpoint, with TSN's fusion (RGB 1 : flow 1.5).
_TWO_STREAM_SYNTH = _synth(
    "two-stream-mobilenetv2_synth.pt", "fa30cdeee087c7ca2b5d7b00049213923cdfafee4734a83ecdde62fb3a5fdb4b", 0.538, 0.717,
    "edgevid data synth -o synth60 --seed 0 --videos-per-class 60 && (train tsn.pt and flow.pt: the "
    "tsn-mobilenetv2 and tsn-flow-mobilenetv2 synth commands) && python -c \"from edgevid.models.two_stream "
    "import combine, checkpoint_config; from edgevid.models.weights import save_checkpoint; "
    "m = combine('tsn.pt', 'flow.pt'); save_checkpoint('two-stream.pt', m, m.config.name, m.labels, "
    "checkpoint_config(m))\"")

for _backbone in ("mobilenetv2", "resnet50"):
    register(ModelConfig(
        name=f"tsn-flow-{_backbone}", family="tsn", backbone=_backbone,
        builder="edgevid.models.two_stream:build_motion_tsn", frames=8, frame_stride=1, can_stream=True,
        motion=FLOW, weights=(_FLOW_SYNTH,) if _backbone == "mobilenetv2" else (),
        description=_MOTION_TSN.format(what="a stack of 5 optical-flow fields (10 channels)")
        + (" (MMAction2's TSN-flow layout)" if _backbone == "resnet50" else ""),
    ))
    register(ModelConfig(
        name=f"tsn-rgbdiff-{_backbone}", family="tsn", backbone=_backbone,
        builder="edgevid.models.two_stream:build_motion_tsn", frames=8, frame_stride=1, can_stream=True,
        motion=RGBDIFF, description=_MOTION_TSN.format(what="a stack of 5 RGB differences (15 channels)"),
    ))
for _backbone in ("mobilenetv2", "resnet50"):
    # motion: the RGB frame and the flow stack the host computes, one input (see TwoStream).
    register(ModelConfig(
        name=f"two-stream-{_backbone}", family="two-stream", backbone=_backbone,
        builder="edgevid.models.two_stream:build_two_stream", frames=8, frame_stride=1, can_stream=True,
        motion=replace(FLOW, rgb=True), weights=(_TWO_STREAM_SYNTH,) if _backbone == "mobilenetv2" else (), description="two-stream: RGB TSN + flow TSN, late fusion of softmax scores (RGB 1 : flow 1.5)",
    ))
