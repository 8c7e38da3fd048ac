"""Issue 26's models: TSN temporal streams (flow, RGB difference), cross-modality init, two-stream fusion.

The MMAction2 case builds MMAction2 1.2.0's own TSN-flow recognizer from the config its wheel
ships (``tests/mmaction_ref.py``: random weights, BatchNorm randomized), feeds it flow images the
way its data pipeline reads them (``RawFrameDecode`` with modality Flow from x_/y_ image files,
``FormatShape('NCHW')``, its ``ActionDataPreprocessor``), and compares with ``tsn-flow-resnet50``
on edgevid's (N, T, 2L, H, W) stack built from the same images.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevid.errors import EdgevidError
from edgevid.manifest import Motion
from edgevid.models import build_model, get_config, list_models
from edgevid.models.registry import SYNTH_LABELS
from edgevid.models.two_stream import (
    DEFAULT_FUSION,
    CrossModalityWarning,
    TwoStream,
    checkpoint_config,
    combine,
    cross_modality_init,
    load,
)
from edgevid.models.weights import save_checkpoint

SIZE, FRAMES, CLASSES = 64, 3, 5
FLOW = Motion("flow", 5, "dis", "fast", 20.0)
RGBDIFF = Motion("rgbdiff", 5)
# Section 4 of the pinned design: the entries and their motion.
EXPECTED = {"tsn-flow-mobilenetv2": FLOW, "tsn-flow-resnet50": FLOW,
            "tsn-rgbdiff-mobilenetv2": RGBDIFF, "tsn-rgbdiff-resnet50": RGBDIFF}
MOTION_TSN = [c.name for c in list_models() if c.motion is not None and c.family == "tsn"]
TWO_STREAM = [c.name for c in list_models() if c.family == "two-stream"]
FLOW_CONFIG = "recognition/tsn/tsn_imagenet-pretrained-r50_8xb32_5x1x3-110e_kinetics400-flow.py"
TOL = 1e-4  # max |difference| relative to the reference's peak logit


def _small(name: str, classes: int = CLASSES, seed: int = 0, **kw):
    """A zoo model at test size whose outputs depend on its input (BatchNorm statistics from random clips)."""
    from edgevid.models.batchnorm import recalibrate_batchnorm

    config = get_config(name)
    width = 0.5 if config.backbone == "mobilenetv2" else None
    torch.manual_seed(seed)
    model = build_model(name, num_classes=classes, width_mult=width, global_rng=True, **kw)
    channels = config.motion.channels if config.motion else 3
    return recalibrate_batchnorm(model, [torch.randn(2, FRAMES, channels, SIZE, SIZE)]).eval()


# --- the registry -----------------------------------------------------------------------------------------------


def test_registry_has_the_designed_entries():
    assert sorted(MOTION_TSN) == sorted(EXPECTED)
    assert sorted(TWO_STREAM) == ["two-stream-mobilenetv2", "two-stream-resnet50"]
    assert all(get_config(n).motion is None for n in ("tsn-mobilenetv2", "tsn-resnet50", "tsm-mobilenetv2"))


@pytest.mark.parametrize("name", MOTION_TSN)
def test_motion_entry_builds_and_scores_its_stack(name):
    config = get_config(name)
    assert config.motion == EXPECTED[name]
    assert (config.family, config.can_stream, config.frames, config.frame_stride) == ("tsn", True, 8, 1)
    channels = config.motion.channels
    assert channels == {"flow": 10, "rgbdiff": 15}[config.motion.kind]
    model = build_model(name, num_classes=CLASSES).eval()
    assert model.in_channels == channels and model.config.motion == config.motion
    with torch.no_grad():
        out = model(torch.randn(2, FRAMES, channels, SIZE, SIZE))
        assert out.shape == (2, CLASSES) and torch.isfinite(out).all()
        with pytest.raises(RuntimeError):  # an RGB clip is not its input
            model(torch.randn(2, FRAMES, 3, SIZE, SIZE))


@pytest.mark.parametrize("name", TWO_STREAM)
def test_two_stream_entry_builds_and_scores_both_clips(name):
    config = get_config(name)
    # One input: the RGB frame, then the flow stack (rgb=True): 3 + 2L channels.
    assert (config.family, config.motion, config.frames, config.frame_stride) == \
        ("two-stream", replace(FLOW, rgb=True), 8, 1)
    assert config.motion.channels == 3 + FLOW.channels
    model = build_model(name, num_classes=CLASSES).eval()
    assert isinstance(model, TwoStream) and model.fusion == DEFAULT_FUSION == {"rgb": 1.0, "flow": 1.5}
    assert (model.rgb.in_channels, model.flow.in_channels) == (3, FLOW.channels)
    assert all(k.startswith(("rgb.", "flow.")) for k in model.state_dict())
    with torch.no_grad():
        rgb, flow = torch.randn(2, FRAMES, 3, SIZE, SIZE), torch.randn(2, FRAMES, FLOW.channels, SIZE, SIZE)
        out = model(rgb, flow)
        one_input = model(torch.cat([rgb, flow], dim=2))
        steps = torch.stack([model.forward_step(torch.cat([rgb, flow], dim=2)[:, t]) for t in range(FRAMES)], 1)
    assert out.shape == (2, CLASSES)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(2))  # log of fused probabilities
    torch.testing.assert_close(one_input, out)  # the one-input form (export, runtime) is the same model
    assert model.in_channels == 3 + FLOW.channels
    # Streaming: each step is both streams' per-frame scores fused (TSN scores frames; the session averages).
    per_frame = model._fuse(model.rgb.forward_frames(rgb), model.flow.forward_frames(flow))
    torch.testing.assert_close(steps, per_frame)


def test_zoo_cost_measures_motion_and_two_stream_inputs():
    from edgevid.models.cost import _measure

    flow, rgb, both = (_measure(get_config(n)) for n in ("tsn-flow-mobilenetv2", "tsn-mobilenetv2",
                                                          "two-stream-mobilenetv2"))
    # The 10-channel stem costs more than the RGB one; the two-stream model is both networks.
    assert flow["gmacs_per_clip"] > rgb["gmacs_per_clip"] and flow["params"] > rgb["params"]
    assert both["params"] == flow["params"] + rgb["params"]
    assert both["gmacs_per_frame"] == pytest.approx(flow["gmacs_per_frame"] + rgb["gmacs_per_frame"], abs=2e-3)


# --- cross-modality initialization ----------------------------------------------------------------------------


def test_cross_modality_init_is_the_mean_replicated():
    torch.manual_seed(0)
    rgb = torch.randn(16, 3, 7, 7)
    flow = cross_modality_init(rgb, 10)
    assert flow.shape == (16, 10, 7, 7)
    for c in range(10):
        torch.testing.assert_close(flow[:, c], rgb.mean(dim=1))
    with pytest.raises(ValueError):
        cross_modality_init(torch.randn(16, 10, 7, 7), 10)


def test_cross_modality_response_is_the_rgb_response_to_grey():
    """A stack constant per channel (a_c) gives the RGB conv's response to a grey image of level sum(a) / 3."""
    torch.manual_seed(1)
    rgb = torch.randn(8, 3, 3, 3)
    flow = cross_modality_init(rgb, 10)
    levels = torch.rand(2, 10) * 2 - 1
    stack = levels[:, :, None, None].expand(2, 10, 12, 12)
    grey = (levels.sum(dim=1) / 3)[:, None, None, None].expand(2, 3, 12, 12)
    got = F.conv2d(stack, flow, stride=2, padding=1)
    torch.testing.assert_close(got, F.conv2d(grey, rgb, stride=2, padding=1))
    # not true of the RGB weights themselves on a coloured image: the averaging is what makes it hold
    coloured = levels[:, :3, None, None].expand(2, 3, 12, 12)
    assert not torch.allclose(F.conv2d(coloured, rgb, padding=1),
                              F.conv2d((coloured.mean(1, keepdim=True)).expand(2, 3, 12, 12), rgb, padding=1))


@pytest.mark.parametrize("name", ["tsn-flow-mobilenetv2", "tsn-rgbdiff-mobilenetv2"])
def test_rgb_checkpoint_loads_into_a_motion_stream(name):
    """The shipped RGB TSN (width 0.5, 11 classes): first conv by cross-modality init, every other weight as is."""
    rgb = build_model("tsn-mobilenetv2", checkpoint="default")
    with pytest.warns(CrossModalityWarning, match="cross-modality init") as caught:
        model = build_model(name, checkpoint=rgb.config.default_weights.path)
    assert len([w for w in caught if issubclass(w.category, CrossModalityWarning)]) == 1
    assert (model.config.width_mult, model.num_classes, model.labels) == (0.5, 11, list(SYNTH_LABELS))
    stem = "backbone.features.0.0.weight"
    ours, theirs = model.state_dict(), rgb.state_dict()
    channels = get_config(name).motion.channels
    assert ours[stem].shape[1] == channels
    assert torch.equal(ours[stem], cross_modality_init(theirs[stem], channels))
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k != stem)


def test_motion_checkpoint_does_not_load_into_an_rgb_tsn(tmp_path):
    flow = _small("tsn-flow-mobilenetv2")
    save_checkpoint(tmp_path / "flow.pt", flow, "tsn-flow-mobilenetv2", [f"c{i}" for i in range(CLASSES)],
                    {"width_mult": 0.5, "num_classes": CLASSES})
    with pytest.raises(EdgevidError, match="shape mismatch") as err:
        build_model("tsn-mobilenetv2", checkpoint=tmp_path / "flow.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(EdgevidError, match="shape mismatch"):  # 10 flow channels are not 15 RGB differences
        build_model("tsn-rgbdiff-mobilenetv2", checkpoint=tmp_path / "flow.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own entry: no cross-modality, no warning
        again = build_model("tsn-flow-mobilenetv2", checkpoint=tmp_path / "flow.pt")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), flow.state_dict().values()))


# --- two-stream fusion ------------------------------------------------------------------------------------------


def _clips(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, FRAMES, 3, SIZE, SIZE, generator=gen),
            torch.randn(2, FRAMES, FLOW.channels, SIZE, SIZE, generator=gen))


def test_fused_scores_are_the_weighted_average_of_softmaxes():
    rgb, flow = _small("tsn-mobilenetv2"), _small("tsn-flow-mobilenetv2", seed=1)
    rgb_clip, flow_clip = _clips()
    with torch.no_grad():
        p_rgb, p_flow = rgb(rgb_clip).softmax(-1), flow(flow_clip).softmax(-1)
        fused = TwoStream(rgb, flow)(rgb_clip, flow_clip)
        only_flow = TwoStream(rgb, flow, {"rgb": 0, "flow": 2})(rgb_clip, flow_clip)
    torch.testing.assert_close(fused.exp(), (1.0 * p_rgb + 1.5 * p_flow) / 2.5)
    assert not torch.allclose(fused.exp(), (p_rgb + p_flow) / 2, atol=1e-4)  # the weights matter
    torch.testing.assert_close(only_flow.exp(), p_flow)
    for bad in ({"rgb": 1.0}, {"rgb": -1, "flow": 1}, {"rgb": 0, "flow": 0}, {"rgb": float("nan"), "flow": 1}):
        with pytest.raises(EdgevidError, match="fusion"):
            TwoStream(rgb, flow, bad)
    with pytest.raises(EdgevidError, match="classes"):
        TwoStream(rgb, _small("tsn-flow-mobilenetv2", classes=CLASSES + 1))


def test_combine_two_checkpoints_and_reload_the_two_stream_checkpoint(tmp_path):
    labels = [f"action_{i}" for i in range(CLASSES)]
    rgb, flow = _small("tsn-mobilenetv2"), _small("tsn-flow-mobilenetv2", seed=1)
    arch = {"width_mult": 0.5, "num_classes": CLASSES, "input_size": SIZE, "resize": SIZE}
    save_checkpoint(tmp_path / "rgb.pt", rgb, "tsn-mobilenetv2", labels, arch)
    save_checkpoint(tmp_path / "flow.pt", flow, "tsn-flow-mobilenetv2", labels, arch)
    both = combine(tmp_path / "rgb.pt", tmp_path / "flow.pt", {"rgb": 1.0, "flow": 2.0}).eval()
    assert (both.config.name, both.config.width_mult, both.config.input_size, both.config.motion) == \
        ("two-stream-mobilenetv2", 0.5, SIZE, replace(FLOW, rgb=True))
    assert both.labels == labels and both.fusion == {"rgb": 1.0, "flow": 2.0}
    state = both.state_dict()
    assert all(torch.equal(state["rgb." + k], v) for k, v in rgb.state_dict().items())
    assert all(torch.equal(state["flow." + k], v) for k, v in flow.state_dict().items())
    rgb_clip, flow_clip = _clips()
    with torch.no_grad():
        want = TwoStream(rgb, flow, {"rgb": 1.0, "flow": 2.0})(rgb_clip, flow_clip)
        torch.testing.assert_close(both(rgb_clip, flow_clip), want)

    save_checkpoint(tmp_path / "two.pt", both, both.config.name, both.labels, checkpoint_config(both))
    again = load(tmp_path / "two.pt").eval()
    assert again.fusion == {"rgb": 1.0, "flow": 2.0} and again.labels == labels
    assert again.flow.config.motion == FLOW and again.rgb.config.motion is None
    with torch.no_grad():
        torch.testing.assert_close(again(rgb_clip, flow_clip), want)
    plain = build_model("two-stream-mobilenetv2", checkpoint=tmp_path / "two.pt")  # the weights and the fusion
    assert plain.fusion == {"rgb": 1.0, "flow": 2.0}
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), state.values()))

    with pytest.raises(EdgevidError, match="not a two-stream checkpoint"):
        load(tmp_path / "rgb.pt")
    other = _small("tsn-flow-mobilenetv2", classes=CLASSES + 1)
    save_checkpoint(tmp_path / "flow6.pt", other, "tsn-flow-mobilenetv2", labels + ["x"],
                    arch | {"num_classes": CLASSES + 1})
    with pytest.raises(EdgevidError, match="different classes"):
        combine(tmp_path / "rgb.pt", tmp_path / "flow6.pt")
    with pytest.raises(EdgevidError):  # the streams swapped: the RGB entry cannot take the flow weights
        combine(tmp_path / "flow.pt", tmp_path / "rgb.pt")


# --- MMAction2's TSN-flow layout --------------------------------------------------------------------------------


def _mmaction():
    for name in ("mmengine", "mmcv", "mmaction"):
        pytest.importorskip(name)
    import mmaction_ref

    return mmaction_ref


def _write_flow_images(folder: Path, frames: int, seed: int) -> list[np.ndarray]:
    """x_/y_ uint8 flow images 1..frames as MMAction2's flow extraction names them; the (H, W, 2) arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    fields = []
    for i in range(1, frames + 1):
        q = rng.integers(0, 256, size=(SIZE, SIZE, 2), dtype=np.uint8)
        cv2.imwrite(str(folder / f"x_{i:05d}.png"), q[..., 0])  # lossless: both sides see the same numbers
        cv2.imwrite(str(folder / f"y_{i:05d}.png"), q[..., 1])
        fields.append(q)
    return fields


def test_mmaction2_tsn_flow_layout_gives_mmaction2_logits(tmp_path):
    ref_lib = _mmaction()
    ref_lib.register()
    from mmaction.datasets.transforms import FormatShape, RawFrameDecode

    from edgevid.runtime.motion import flow_to_input

    cfg = ref_lib.config_model(FLOW_CONFIG)
    length = FLOW.length
    # The entry is this config's network with this input: ResNet-50 on 2L channels, TSN head, flow mean/std 128.
    assert (cfg["backbone"]["type"], cfg["backbone"]["depth"], cfg["backbone"]["in_channels"]) == \
        ("ResNet", 50, FLOW.channels)
    assert cfg["cls_head"]["type"] == "TSNHead" and cfg["cls_head"]["consensus"]["type"] == "AvgConsensus"
    assert cfg["data_preprocessor"]["mean"] == cfg["data_preprocessor"]["std"] == [128, 128] * length

    # MMAction2's input: per video, T segments of L consecutive flow images, read and shaped by its pipeline.
    batch, segments = 2, FRAMES
    fields = {}
    mm_inputs = []
    for v in range(batch):
        folder = tmp_path / f"video{v}"
        fields[v] = _write_flow_images(folder, segments * length, seed=v)
        results = {"frame_dir": str(folder), "filename_tmpl": "{}_{:05d}.png", "modality": "Flow",
                   "frame_inds": np.arange(1, segments * length + 1), "clip_len": length, "num_clips": segments}
        results = FormatShape(input_format="NCHW").transform(RawFrameDecode().transform(results))
        assert results["imgs"].shape == (segments, FLOW.channels, SIZE, SIZE)
        mm_inputs.append(torch.from_numpy(np.ascontiguousarray(results["imgs"])))

    calib = torch.randn(batch, segments, FLOW.channels, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    ref = ref_lib.build_recognizer(cfg, calibrate=lambda m: m.extract_feat(calib, stage="head"))
    mm_clip, _ = ref.data_preprocessor.preprocess(mm_inputs, None)  # (N, T, 2L, H, W), (q - 128) / 128
    with torch.no_grad():
        want = ref.extract_feat(mm_clip, stage="head")[0]

    # Ours: the design's stack, built here independently: u1, v1, ..., uL, vL, oldest first, flow_to_input.
    ours = np.empty((batch, segments, FLOW.channels, SIZE, SIZE), np.float32)
    for v in range(batch):
        for t in range(segments):
            for i in range(length):
                q = fields[v][t * length + i]
                ours[v, t, 2 * i], ours[v, t, 2 * i + 1] = flow_to_input(q[..., 0]), flow_to_input(q[..., 1])
    ours = torch.from_numpy(ours)
    assert torch.equal(ours, mm_clip)  # the same channel order and normalisation, bit for bit

    path = tmp_path / "tsn_flow_r50.pth"
    ref_lib.save_mmaction_checkpoint(ref, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CrossModalityWarning)  # already 2L channels: loaded as is
        model = build_model("tsn-flow-resnet50", checkpoint=path).eval()
    assert model.num_classes == 400
    with torch.no_grad():
        got = model(ours)
    rel = float((got - want).abs().max() / want.abs().max())
    assert rel < TOL, rel

    # The comparison can fail: u and v swapped, or the fields in reverse order, change the logits...
    swapped = ours.view(batch, segments, length, 2, SIZE, SIZE).flip(3).reshape_as(ours)
    reversed_ = ours.view(batch, segments, length, 2, SIZE, SIZE).flip(2).reshape_as(ours)
    with torch.no_grad():
        for other in (swapped, reversed_):
            assert float((model(other) - want).abs().max() / want.abs().max()) > 100 * TOL
    # ...and so does one weight changed in the checkpoint.
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["state_dict"]["backbone.layer3.0.conv2.conv.weight"] *= 1.05
    torch.save(state, tmp_path / "perturbed.pth")
    with torch.no_grad():
        perturbed = build_model("tsn-flow-resnet50", checkpoint=tmp_path / "perturbed.pth").eval()(ours)
    assert float((perturbed - want).abs().max() / want.abs().max()) > 10 * TOL
