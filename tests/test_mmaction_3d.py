"""MMAction2's 3D recognizers: each ``-mmaction2`` entry against MMAction2 itself, built from its model-zoo config.

The reference is MMAction2 1.2.0's own recognizer (``MODELS.build`` of the config's ``model``
dict, read from the configs in its wheel; random weights, BatchNorm affine and statistics
randomized: ``tests/mmaction_ref.py``). Its state dict is saved as MMEngine saves a checkpoint
(``{"meta": ..., "state_dict": ...}``) and goes through ``build_model(..., checkpoint=)`` and the
real ONNX export; the logits of edgevid's torch model and of the ONNX Runtime and OpenVINO sessions must equal
``cls_head(backbone(x))`` of the reference on the same normalized clip, and a reference with one
perturbed weight must not. Small clips (64 px, few frames; C3D's fc6 fixes 16 frames and 96 px)
keep each case to seconds: an export takes 7-15 s on two cores (more while they are shared).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from mmaction_ref import skip_without_mmaction
from torch import nn

skip_without_mmaction()

from mmaction_ref import build_recognizer, config_model, config_path, save_mmaction_checkpoint  # noqa: E402

from edgevid.errors import EdgevidError  # noqa: E402
from edgevid.models import build_model, get_config  # noqa: E402
from edgevid.models.mmaction_zoo import CONFIGS  # noqa: E402

TOL = 1e-4  # max |difference| relative to the reference's peak logit
# The gaussian non-local entry through another backend: its pairwise products are x . x' of the raw features
# (no theta to soften, see _soften_attention), so float32 rounding inside exp() shows in the logits.
BACKEND_TOL = {"i3d-nl-gaussian-resnet50": 1e-3}
BATCH = 2
ENTRIES = list(CONFIGS)


@dataclass(frozen=True)
class Geometry:
    frames: int  # the fewest frames that still exercise every temporal stride / pathway
    size: int
    perturb: str  # a weight of the reference whose change must show in the logits


GEOMETRY = {
    "i3d-r50-mmaction2": Geometry(8, 64, "backbone.layer2.0.conv1.conv.weight"),  # 8 -> 4 -> 2 -> 1 frames
    # 16 frames: 2 frames at res3 / res4, so the non-local blocks attend across time; a block's g is perturbed.
    "i3d-nl-resnet50": Geometry(16, 64, "backbone.layer3.1.non_local_block.g.0.conv.weight"),
    "i3d-nl-dot-product-resnet50": Geometry(16, 64, "backbone.layer2.3.non_local_block.phi.0.conv.weight"),
    "i3d-nl-gaussian-resnet50": Geometry(16, 64, "backbone.layer2.1.non_local_block.g.0.conv.weight"),
    "slowonly-r50-4x16-mmaction2": Geometry(4, 64, "backbone.layer3.0.conv1.conv.weight"),
    "slowonly-r50-8x8-mmaction2": Geometry(8, 64, "backbone.layer3.0.conv1.conv.weight"),
    # 16 frames: 2 (4x16) or 4 (8x8) Slow frames; the lateral Fast -> Slow conv is the perturbed weight.
    "slowfast-r50-4x16-mmaction2": Geometry(16, 64, "backbone.slow_path.layer1_lateral.conv.weight"),
    "slowfast-r50-8x8-mmaction2": Geometry(16, 64, "backbone.slow_path.layer1_lateral.conv.weight"),
    # 4 frames: 4 -> 2 -> 1 -> 1 through the temporal strides (1, 2, 2, 2)
    "r2plus1d-r34-mmaction2": Geometry(4, 64, "backbone.layer2.0.conv1.conv.conv_t.weight"),
    "c3d-ucf101-mmaction2": Geometry(16, 96, "backbone.conv3b.conv.weight"),  # fc6 fixes 16 frames, 96-127 px
    "x3d-s-mmaction2": Geometry(4, 64, "backbone.layer2.1.conv2.conv.weight"),
    "x3d-m-mmaction2": Geometry(4, 64, "backbone.layer1.0.downsample.bn.running_var"),
}


def _rel(got: torch.Tensor | np.ndarray, want: torch.Tensor) -> float:
    return float((torch.as_tensor(got) - want).abs().max() / want.abs().max())


def _full_config(name: str):
    from mmengine.config import Config

    return Config.fromfile(config_path(CONFIGS[name]))


def _metafile_entry(name: str) -> dict:
    import yaml

    rel = CONFIGS[name]
    meta = Path(config_path(rel)).parent / "metafile.yml"
    stem = Path(rel).stem
    (entry,) = [m for m in yaml.safe_load(meta.read_text())["Models"] if m["Name"] == stem]
    return entry


# --- the entry is its config ------------------------------------------------------------------


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_follows_its_mmaction2_config(name):
    """Frames, interval, crop, resize, classes and mean / std (0-255 / 255) from the config's own pipeline."""
    cfg = _full_config(name)
    c = get_config(name)
    pipeline = cfg.get("val_pipeline") or cfg.test_pipeline  # the X3D configs have a test pipeline only
    steps = {s["type"]: s for s in pipeline}
    sample = steps["SampleFrames"]
    crop = steps["CenterCrop"]["crop_size"] if "CenterCrop" in steps else steps["ThreeCrop"]["crop_size"]
    assert (c.frames, c.frame_stride) == (sample["clip_len"], sample["frame_interval"])
    assert (c.input_size, c.resize) == (crop, steps["Resize"]["scale"][1])
    assert c.num_classes == cfg.model.cls_head.num_classes
    pre = cfg.model.data_preprocessor
    assert pre.format_shape == "NCTHW" and not pre.get("to_rgb", False)  # frames in decode (RGB) order
    np.testing.assert_allclose(np.array(c.mean) * 255, pre.mean, rtol=1e-6)
    np.testing.assert_allclose(np.array(c.std) * 255, pre.std, rtol=1e-6)
    c.check_input(GEOMETRY[name].frames, GEOMETRY[name].size)  # the test geometry is one the entry takes


@pytest.mark.parametrize("name", ENTRIES)
def test_public_weights_are_the_metafiles(name):
    """URL, sha256 prefix (file-name suffix), published top-1 / top-5 and parameter count: the config's metafile."""
    entry = _metafile_entry(name)
    c = get_config(name)
    (w,) = c.weights
    assert (w.source, w.url, w.sha256) == ("mmaction2", entry["Weights"], "")
    assert w.file == entry["Weights"].rsplit("/", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{8}", w.hash_prefix) and w.file.endswith(f"-{w.hash_prefix}.pth")
    (result,) = entry["Results"]
    published = dict(w.published)
    assert published["top1"] == result["Metrics"]["Top 1 Accuracy"]
    assert published.get("top5") == result["Metrics"].get("Top 5 Accuracy")
    assert published["dataset"].startswith(result["Dataset"]) and w.dataset == published["dataset"]
    cfg = _full_config(name)
    crops = 3 if any(s["type"] == "ThreeCrop" for s in cfg.test_pipeline) else 1
    clips = next(s for s in cfg.test_pipeline if s["type"] == "SampleFrames")["num_clips"]
    assert published["views"] == f"{clips} clips of {c.frames} frames x {crops} crop{'s' if crops > 1 else ''}"
    assert (w.num_classes, w.frames, w.input_size) == (c.num_classes, c.frames, c.input_size)
    assert w.labels_name == ("ucf101" if "ucf101" in name else "kinetics400")
    params = entry["Metadata"]["Parameters"]
    want = float(params[:-1]) * 1e6 if isinstance(params, str) else float(params)
    with torch.device("meta"):
        got = sum(p.numel() for p in build_model(name).parameters())
    assert abs(got - want) / want < 0.002, (got, want)  # the metafile rounds to 0.1M (X3D: exact)


@pytest.mark.parametrize("name", [n for n in ENTRIES if not n.startswith("x3d")])
def test_multiply_adds_match_the_metafiles_flops(name):
    """The full-size network: MACs per view of the config's test pipeline (frames x its crop, e.g. 32 x 256 x 256)
    equal the metafile's FLOPs to 1.5% (MMAction2 counts conv / fc multiply-adds, plus a little for BN and
    pooling). X3D is left out: its metafile copies PySlowFast's figure, counted another way."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = _full_config(name)
    c = get_config(name)
    crop = next(s["crop_size"] for s in cfg.test_pipeline if s["type"] in ("ThreeCrop", "CenterCrop"))
    want = float(_metafile_entry(name)["Metadata"]["FLOPs"].removesuffix("G"))
    with torch.device("meta"):
        model = build_model(name).eval()
        clip = torch.empty(1, c.frames, 3, crop, crop)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(clip)
    got = counter.get_total_flops() / 2e9
    assert abs(got - want) / want < 0.015, (got, want)


# --- the checkpoint gives MMAction2's logits -------------------------------------------------


@dataclass
class Case:
    name: str
    geometry: Geometry
    reference: nn.Module  # MMAction2's recognizer, eval mode
    checkpoint: Path
    clip: torch.Tensor  # (N, T, 3, H, W), already normalized: edgevid's clip layout
    want: torch.Tensor  # reference logits
    other: torch.Tensor  # logits of the reference with GEOMETRY[name].perturb changed


def _forward(model: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """MMAction2's recognizer on an edgevid clip: backbone + head on (N, 3, T, H, W)."""
    with torch.no_grad():
        return model.cls_head(model.backbone(clip.transpose(1, 2).contiguous()))


def _soften_attention(ref: nn.Module) -> None:
    """theta of each non-local block at 1/20 of its random init (N(0, 0.01), mmcv's): in this random network the
    unscaled pairwise products reach 1e4 in res4 (post-ReLU features all positive, 1024 channels), a one-hot
    softmax whose exp() turns float32 rounding into logit errors of 1e-3 in any backend. Softened, they stay
    below ~1e2 (a trained network's regime) and the comparison is exact to 1e-4. The gaussian mode has no theta."""
    with torch.no_grad():
        for m in ref.modules():
            if type(m).__name__ == "NonLocal3d" and hasattr(m, "theta"):
                m.theta.conv.weight.mul_(0.05)


def _case(name: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
    g = GEOMETRY[name]
    gen = torch.Generator().manual_seed(7)
    calib = torch.randn(BATCH, g.frames, 3, g.size, g.size, generator=gen)
    ref = build_recognizer(config_model(CONFIGS[name]), calibrate=lambda m: _forward(m, calib))
    _soften_attention(ref)
    path = tmp_path_factory.mktemp(name) / f"{name}.pth"
    save_mmaction_checkpoint(ref, path, meta={"cfg": Path(config_path(CONFIGS[name])).read_text()})
    clip = torch.randn(BATCH, g.frames, 3, g.size, g.size, generator=gen)
    perturbed = copy.deepcopy(ref)
    with torch.no_grad():
        weight = perturbed.state_dict()[g.perturb]  # shares storage with the module
        weight.view(weight.shape[0], -1)[0] *= 1.5
    return Case(name, g, ref, path, clip, _forward(ref, clip), _forward(perturbed, clip))


_CACHE: dict[str, Case] = {}


@pytest.fixture(scope="module")
def case(request, tmp_path_factory) -> Case:
    """One case at a time (the R50 references are large): built on first use, dropped for the next
    (pytest groups the tests of one module-scoped parameter together)."""
    if request.param not in _CACHE:
        _CACHE.clear()
        _CACHE[request.param] = _case(request.param, tmp_path_factory)
    return _CACHE[request.param]


@pytest.mark.parametrize("case", ENTRIES, indirect=True)
def test_mmaction2_checkpoint_gives_mmaction2_logits(case):
    """The checkpoint as MMEngine writes it, through build_model(checkpoint=): the reference's logits, to 1e-4."""
    saved = torch.load(case.checkpoint, weights_only=True)
    assert set(saved) == {"meta", "state_dict"}
    assert all(k.startswith(("backbone.", "cls_head.")) for k in saved["state_dict"])
    ours = build_model(case.name, checkpoint=case.checkpoint).eval()
    with torch.no_grad():
        got = ours(case.clip)
    assert got.shape == case.want.shape == (BATCH, get_config(case.name).num_classes)
    assert float(case.want.std(0).mean()) > 1e-3 * float(case.want.abs().max())  # the input matters
    assert _rel(got, case.want) < TOL
    # The comparison can fail: the reference with one weight changed is told apart.
    assert _rel(got, case.other) > 10 * TOL


# Each export takes 10-15 s here: two run by default (the non-local I3D, which is MMAction2's I3D plus its
# attention, and X3D), every entry with -m slow.
_EXPORTED_BY_DEFAULT = ("i3d-nl-resnet50", "x3d-s-mmaction2")


@pytest.mark.parametrize("case", [n if n in _EXPORTED_BY_DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in ENTRIES], indirect=True)
def test_mmaction2_checkpoint_exports_with_mmaction2_logits_in_onnxruntime_and_openvino(case, tmp_path):
    """``export_model(..., checkpoint=, target="openvino")`` (clip mode, validated): ONNX Runtime and OpenVINO (f32)
    give the reference's logits, to 1e-4."""
    from edgevid.export.api import export_model
    from edgevid.export.openvino import openvino_runner
    from edgevid.runtime.crosscheck import onnxruntime_runner

    g = case.geometry
    out = tmp_path / "art"
    manifest = export_model(case.name, out, checkpoint=case.checkpoint, mode="clip", target="openvino",
                            frames=g.frames, size=g.size, progress=False)
    assert {b: v["passed"] for b, v in manifest.validation.items()} == {"onnxruntime": True, "openvino": True}
    tol = BACKEND_TOL.get(case.name, TOL)
    for run in (onnxruntime_runner(out / "model.onnx"), openvino_runner(out / "model.xml")):
        logits = run({"frames": case.clip.numpy()})["logits"]
        assert _rel(logits, case.want) < tol
        assert _rel(logits, case.other) > 10 * tol


# --- layouts are told apart -------------------------------------------------------------------


def test_mmaction2_checkpoint_for_a_non_mmaction2_entry_names_the_entry(tmp_path):
    """An MMAction2 X3D checkpoint given to PyTorchVideo's X3D entry, and the other way round: refused, naming the
    entries that read it (not a list of missing keys)."""
    ref = build_recognizer(config_model(CONFIGS["x3d-s-mmaction2"]))
    path = tmp_path / "x3d.pth"
    save_mmaction_checkpoint(ref, path)
    with pytest.raises(EdgevidError, match="MMAction2 checkpoint .* does not fit x3d-s: use --model x3d-s-mmaction2"):
        build_model("x3d-s", checkpoint=path)
    torch.save({"model_state": build_model("x3d-s").net.state_dict()}, tmp_path / "ptv.pyth")
    with pytest.raises(EdgevidError, match="x3d-s-mmaction2 reads MMAction2 checkpoints .* use --model x3d-xs"):
        build_model("x3d-s-mmaction2", checkpoint=tmp_path / "ptv.pyth")


def test_data_preprocessor_constants_in_a_checkpoint_are_not_weights(tmp_path):
    """Older MMEngine checkpoints hold the 0-255 mean / std as ``data_preprocessor.*``: skipped, not refused."""
    ref = build_recognizer(config_model(CONFIGS["x3d-s-mmaction2"]))
    state = ref.state_dict() | {"data_preprocessor.mean": torch.full((3, 1, 1, 1), 114.75),
                                "data_preprocessor.std": torch.full((3, 1, 1, 1), 57.38)}
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "x3d.pth")
    ours = build_model("x3d-s-mmaction2", checkpoint=tmp_path / "x3d.pth").eval()
    clip = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        assert _rel(ours(clip), _forward(ref, clip)) < TOL


def test_slowfast_picks_mmaction2s_frames():
    """The strided slice equals MMAction2's nearest interpolation by 1/tau on the clip lengths it runs."""
    from torch.nn.functional import interpolate

    x = torch.arange(32.0).view(1, 1, 32, 1, 1).expand(1, 3, 32, 2, 2)
    for rate in (4, 8):
        nearest = interpolate(x, mode="nearest", scale_factor=(1.0 / rate, 1.0, 1.0))
        assert torch.equal(x[:, :, ::rate], nearest)
