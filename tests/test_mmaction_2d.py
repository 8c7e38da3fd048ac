"""MMAction2's 2D recognizers (TSN R50, TSM R50, TSM MobileNetV2) against MMAction2 itself, config by config.

edgevid's ``tsn-resnet50``, ``tsm-resnet50`` and ``tsm-mobilenetv2`` are the networks of these
configs (``edgevid.models.mmaction_2d``), so they list the configs' checkpoints and read their
layout. The reference is MMAction2 1.2.0's own ``Recognizer2D`` built from the config's ``model``
dict as its wheel ships it (random weights, BatchNorm affine and statistics randomized:
``tests/mmaction_ref.py``), saved as MMEngine saves a checkpoint; that file goes through
``build_model`` and the real ONNX export (one case through the ``edgevid export`` command), and
the logits of edgevid's torch model and of the ONNX Runtime session must equal the recognizer's
``extract_feat(inputs, stage="head")`` (backbone over every segment, then the head with its
average over segments) on the same normalized clip. A checkpoint with one weight changed must
not, and the same checkpoint in the entry without (or with) the shift must not either.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from mmaction_ref import skip_without_mmaction
from torch import nn

skip_without_mmaction()

from mmaction_ref import build_recognizer, config_model, config_path, register, save_mmaction_checkpoint  # noqa: E402

from edgevid.errors import EdgevidError  # noqa: E402
from edgevid.models import build_model, get_config  # noqa: E402
from edgevid.models.mmaction_2d import CONFIGS  # noqa: E402
from edgevid.models.tsm import TSM_RELEASES  # noqa: E402

TOL = 1e-4  # max |difference| relative to the reference's peak logit
BATCH = 2
SIZE = 64
CASES = [f"{entry}:{weights}" for entry, weights in CONFIGS]
# A weight of each network whose change must show: the shifted conv where there is one.
PERTURB = {
    "tsn-resnet50": "backbone.layer3.0.conv2.conv.weight",
    "tsm-resnet50": "backbone.layer2.0.conv1.conv.net.weight",
    "tsm-mobilenetv2": "backbone.layer3.1.conv.0.net.conv.weight",
}
# The entry with the same backbone and the other shift: the checkpoint loads, the logits must differ.
OTHER_SHIFT = {"tsn-resnet50": "tsm-resnet50", "tsm-resnet50": "tsn-resnet50", "tsm-mobilenetv2": "tsn-mobilenetv2"}
VIA_CLI = "tsm-mobilenetv2"  # the cheapest export goes through `edgevid export`, the others through export_model


def _split(case: str) -> tuple[str, str]:
    entry, weights = case.split(":")
    return entry, weights


def _spec(entry: str, weights: str):
    (spec,) = [w for w in get_config(entry).weights if w.name == weights and w.source == "mmaction2"]
    return spec


def _rel(got: torch.Tensor | np.ndarray, want: torch.Tensor) -> float:
    return float((torch.as_tensor(got) - want).abs().max() / want.abs().max())


def _full_config(entry: str, weights: str):
    from mmengine.config import Config

    return Config.fromfile(config_path(CONFIGS[entry, weights]))


# --- the entry is the config's network, with its preprocessing --------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_entry_follows_its_mmaction2_config(case):
    """Backbone, shift, head, classes, crop, resize, segments and mean / std (0-255 / 255) from the config."""
    from mmaction.registry import MODELS

    register()
    entry, weights = _split(case)
    cfg, c, spec = _full_config(entry, weights), get_config(entry), _spec(entry, weights)
    backbone, head = cfg.model.backbone, cfg.model.cls_head

    def arg(module: dict, key: str):
        """A config value, else the registered class's default (what MODELS.build uses)."""
        if key in module:
            return module[key]
        for cls in MODELS.get(module["type"]).__mro__:  # ResNetTSM passes **kwargs on to ResNet
            params = inspect.signature(cls.__init__).parameters
            if key in params:
                return params[key].default
        raise KeyError(key)

    assert {"ResNet": "resnet50", "ResNetTSM": "resnet50", "MobileNetV2TSM": "mobilenetv2"}[backbone.type] == c.backbone
    if c.backbone == "resnet50":
        assert (arg(backbone, "depth"), arg(backbone, "style")) == (50, "pytorch")
    else:
        assert arg(backbone, "widen_factor") == c.width_mult == 1.0
    if c.family == "tsm":
        assert arg(backbone, "is_shift") and arg(head, "is_shift") and head.type == "TSMHead"
        assert c.shift == "bidirectional" and arg(backbone, "shift_div") == c.shift_div == 8
        if backbone.type == "ResNetTSM":
            assert arg(backbone, "shift_place") == "blockres" and not arg(backbone, "temporal_pool")
        assert not arg(head, "temporal_pool")
    else:
        assert backbone.type == "ResNet" and head.type == "TSNHead" and c.shift == "none"
    assert arg(head, "consensus")["type"] == "AvgConsensus" and arg(head, "spatial_type") == "avg"
    assert head.num_classes == spec.num_classes
    assert head.in_channels == {"resnet50": 2048, "mobilenetv2": 1280}[c.backbone]

    steps = {s["type"]: s for s in cfg.val_pipeline}
    sample = steps["SampleFrames"]
    assert sample["clip_len"] == 1 and sample["num_clips"] == spec.frames  # one frame per segment
    assert (c.input_size, c.resize) == (steps["CenterCrop"]["crop_size"], steps["Resize"]["scale"][1]) \
        == (spec.input_size, 256)
    pre = cfg.model.data_preprocessor
    assert pre.get("format_shape", "NCHW") == "NCHW" and not pre.get("to_rgb", False)  # RGB as decoded
    np.testing.assert_allclose(np.array(c.mean) * 255, pre.mean, rtol=1e-6)
    np.testing.assert_allclose(np.array(c.std) * 255, pre.std, rtol=1e-6)


def _published(entry: str, weights: str) -> tuple[str, float, float]:
    """(checkpoint URL, top-1, top-5) the source publishes for the config."""
    import yaml

    rel = CONFIGS[entry, weights]
    stem = Path(rel).stem
    meta = yaml.safe_load((Path(config_path(rel)).parent / "metafile.yml").read_text())["Models"]
    found = [m for m in meta if m["Name"] == stem]
    if not found:  # The MobileNetV2 TSM is in configs/recognition/tsm/README.md's table only (1.2.0).
        assert stem == "tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb"
        return ("https://download.openmmlab.com/mmaction/v1.0/recognition/tsm/" + stem + "/" + stem
                + "_20230414-401127fd.pth", 68.71, 88.32)
    (result,) = found[0]["Results"]
    return found[0]["Weights"], result["Metrics"]["Top 1 Accuracy"], result["Metrics"]["Top 5 Accuracy"]


@pytest.mark.parametrize("case", CASES)
def test_public_weights_are_the_metafiles(case):
    """URL, sha256 prefix (the file name's suffix), published top-1 / top-5, views of the config's test pipeline."""
    entry, weights = _split(case)
    spec, cfg = _spec(entry, weights), _full_config(entry, weights)
    url, top1, top5 = _published(entry, weights)
    assert (spec.url, spec.file, spec.sha256) == (url, url.rsplit("/", 1)[1], "")
    assert len(spec.hash_prefix) == 8 and int(spec.hash_prefix, 16) >= 0 and spec.file.endswith(f"-{spec.hash_prefix}.pth")
    published = dict(spec.published)
    assert (published["top1"], published["top5"]) == (top1, top5)
    test = {s["type"]: s for s in cfg.test_pipeline}
    clips = 2 if test["SampleFrames"].get("twice_sample") else 1
    crops = 10 if "TenCrop" in test else 3 if "ThreeCrop" in test else 1
    frames = test["SampleFrames"]["num_clips"]  # MMAction2's "clips" of a TSN / TSM test: its segments
    assert published["views"] == f"{clips} clip{'s' if clips > 1 else ''} of {frames} frames x {crops} crops"
    dataset = {"kinetics400": "Kinetics-400", "sthv2": "Something-Something V2"}[weights]
    assert published["dataset"] == spec.dataset == dataset and spec.labels_name == weights == spec.name
    assert spec.num_classes == cfg.model.cls_head.num_classes == {"kinetics400": 400, "sthv2": 174}[weights]


def test_official_tsm_releases_match_their_entries():
    """The TSM repository's checkpoints sit on the entry whose architecture their file name spells."""
    releases = [(c, w) for c in (get_config(n) for n in ("tsn-resnet50", "tsm-resnet50", "tsm-mobilenetv2"))
                for w in c.weights if w.source == "tsm"]
    assert len(releases) == 4
    for config, w in releases:
        assert w.url == TSM_RELEASES + w.file and w.sha256 == w.hash_prefix == ""  # no checksum published
        assert w.name == f"{w.labels_name}-official" and f"_{config.backbone}_" in w.file
        assert ("_shift8_blockres_" in w.file) == (config.shift == "bidirectional")
        assert w.num_classes == {"kinetics400": 400, "sthv2": 174}[w.labels_name]
        assert ("kinetics" in w.file) == (w.labels_name == "kinetics400") and "top1" in dict(w.published)


# --- the checkpoint gives MMAction2's logits -------------------------------------------------------------------


@dataclass
class Case:
    entry: str
    frames: int
    reference: nn.Module  # MMAction2's Recognizer2D, eval mode
    checkpoint: Path
    clip: torch.Tensor  # (N, T, 3, H, W), already normalized: the layout of both
    want: torch.Tensor  # reference logits


def _forward(model: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """Recognizer2D's backbone + head (the segment average included) on (N, T, 3, H, W)."""
    with torch.no_grad():
        return model.extract_feat(clip, stage="head")[0]


def _case(case: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
    entry, weights = _split(case)
    frames = _spec(entry, weights).frames  # the config's segments (TSMHead reshapes by its num_segments, 8)
    gen = torch.Generator().manual_seed(7)
    calib = torch.randn(BATCH, frames, 3, SIZE, SIZE, generator=gen)
    ref = build_recognizer(config_model(CONFIGS[entry, weights]), calibrate=lambda m: _forward(m, calib))
    path = tmp_path_factory.mktemp(entry) / f"{entry}_{weights}.pth"
    save_mmaction_checkpoint(ref, path, meta={"cfg": Path(config_path(CONFIGS[entry, weights])).read_text()})
    clip = torch.randn(BATCH, frames, 3, SIZE, SIZE, generator=gen)
    return Case(entry, frames, ref, path, clip, _forward(ref, clip))


_CACHE: dict[str, Case] = {}


@pytest.fixture(scope="module")
def mm_case(request, tmp_path_factory) -> Case:
    """One case at a time (the R50 references are large): built on first use, dropped for the next."""
    if request.param not in _CACHE:
        _CACHE.clear()
        _CACHE[request.param] = _case(request.param, tmp_path_factory)
    return _CACHE[request.param]


def _export(case: Case, out: Path) -> None:
    """``edgevid export --checkpoint FILE`` (the command for one entry, ``export_model`` for the others)."""
    if case.entry == VIA_CLI:
        from edgevid.cli import main

        assert main(["export", "--model", case.entry, "--checkpoint", str(case.checkpoint), "--mode", "clip",
                     "--frames", str(case.frames), "--size", str(SIZE), "-o", str(out), "-q"]) == 0
    else:
        from edgevid.export.api import export_model

        export_model(case.entry, out, checkpoint=case.checkpoint, mode="clip", frames=case.frames, size=SIZE,
                     progress=False)


# The ResNet-50 cases take 20-26 s each here: TSM MobileNetV2 (through the CLI) runs by default, the
# ResNet-50 ones (Kinetics, and SthV2's 174-class heads) with -m slow.
@pytest.mark.parametrize("mm_case", [c if c.startswith("tsm-mobilenetv2") else pytest.param(c, marks=pytest.mark.slow)
                                     for c in CASES], indirect=True)
def test_mmaction2_checkpoint_gives_mmaction2_logits_in_torch_and_onnxruntime(mm_case, tmp_path):
    from edgevid.manifest import Manifest
    from edgevid.runtime.crosscheck import onnxruntime_runner

    case = mm_case
    saved = torch.load(case.checkpoint, weights_only=True)
    assert set(saved) == {"meta", "state_dict"} and all(k.startswith(("backbone.", "cls_head."))
                                                        for k in saved["state_dict"])
    ours = build_model(case.entry, checkpoint=case.checkpoint).eval()
    with torch.no_grad():
        got = ours(case.clip)
    assert got.shape == case.want.shape == (BATCH, saved["state_dict"]["cls_head.fc_cls.weight"].shape[0])
    assert float(case.want.std(0).mean()) > 1e-3 * float(case.want.abs().max())  # the input matters
    assert _rel(got, case.want) < TOL

    out = tmp_path / "art"
    _export(case, out)
    manifest = Manifest.load(out)
    assert manifest.validation["onnxruntime"]["passed"]
    logits = onnxruntime_runner(out / "model.onnx")({"frames": case.clip.numpy()})["logits"]
    assert _rel(logits, case.want) < TOL

    # The comparison can fail: one tensor of the checkpoint with 5% noise is told apart (all of it: a
    # single channel can be one that ReLU silences on this clip) ...
    key = PERTURB[case.entry]
    state = dict(saved["state_dict"])
    weight = state[key]
    state[key] = weight + 0.05 * weight.std() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3))
    perturbed = tmp_path / "perturbed.pth"
    torch.save({"meta": saved["meta"], "state_dict": state}, perturbed)
    with torch.no_grad():
        other = build_model(case.entry, checkpoint=perturbed).eval()(case.clip)
    assert _rel(other, case.want) > 10 * TOL and _rel(logits, other) > 10 * TOL
    # ... and so is the shift: the same weights in the entry with the other shift (no shift, or the shift).
    with torch.no_grad():
        unshifted = build_model(OTHER_SHIFT[case.entry], checkpoint=case.checkpoint).eval()(case.clip)
    assert _rel(unshifted, case.want) > 10 * TOL


# --- layouts are told apart --------------------------------------------------------------------------------------


def test_mmaction2_3d_checkpoint_in_a_2d_entry_is_one_line(tmp_path):
    """A 3D recognizer's checkpoint (5-D stem) given to a TSM entry names what reads it, not 300 missing keys."""
    state = {"backbone.conv1.conv.weight": torch.zeros(64, 3, 1, 7, 7), "cls_head.fc_cls.weight": torch.zeros(400, 2048),
             "cls_head.fc_cls.bias": torch.zeros(400)}
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "slowonly.pth")
    with pytest.raises(EdgevidError, match=r"MMAction2 3D recognizer .* use its '-mmaction2' entry"):
        build_model("tsm-resnet50", checkpoint=tmp_path / "slowonly.pth")


def test_data_preprocessor_constants_in_a_checkpoint_are_not_weights(tmp_path):
    """Older MMEngine checkpoints hold the 0-255 mean / std as ``data_preprocessor.*``: skipped, not refused."""
    ref = build_recognizer(config_model(CONFIGS["tsm-mobilenetv2", "kinetics400"]))
    state = ref.state_dict() | {"data_preprocessor.mean": torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1),
                                "data_preprocessor.std": torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)}
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "tsm.pth")
    ours = build_model("tsm-mobilenetv2", checkpoint=tmp_path / "tsm.pth").eval()
    clip = torch.randn(1, 8, 3, SIZE, SIZE)
    with torch.no_grad():
        assert _rel(ours(clip), _forward(ref, clip)) < TOL
