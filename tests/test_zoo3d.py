"""The 3D-CNN families of the zoo: every entry builds, runs, exports and quantizes; public layouts load unchanged.

Parametrized over the registry (every entry that is not TSM/TSN), so a new 3D entry is tested by
registering it. Exports of the big networks take 10-30 s each here, so the default run exports
one representative (mc3-18) and the full registry sweep (export + ORT/OpenVINO vs torch, INT8)
is marked ``slow`` (``python -m pytest -m slow``). PyTorchVideo's X3D / SlowFast layouts are
tested in ``test_models_pytorchvideo.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevid.models import build_model, get_config, list_models

# The 3D clip entries; their streaming ("-online") forms and LRCN are tested in test_streaming3d.py.
ZOO3D = [c.name for c in list_models() if c.family not in ("tsm", "tsn", "lrcn") and not c.can_stream]
DEFAULT_EXPORT = "mc3-18"  # the cheapest torchvision video network: exported in the default run


def _geometry(name: str) -> tuple[int, int]:
    """(frames, size) small enough for this machine that the entry still takes them."""
    c = get_config(name)
    size = c.crop_range[0] if c.crop_range else 64
    return max(8, c.min_frames), size


def _sweep(names: list[str]) -> list:
    return [pytest.param(n) if n == DEFAULT_EXPORT else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _calibrated(model: torch.nn.Module, frames: int, size: int) -> torch.nn.Module:
    """BatchNorm statistics from random clips, so outputs depend on the input (not just on the biases)."""
    from edgevid.models.batchnorm import recalibrate_batchnorm

    torch.manual_seed(0)
    return recalibrate_batchnorm(model, [torch.randn(2, frames, 3, size, size)]).eval()


def _peak_close(got: np.ndarray, want: np.ndarray, rel: float = 1e-3) -> float:
    diff = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12))
    assert diff < rel, diff
    return diff


@pytest.mark.parametrize("name", ZOO3D)
def test_every_3d_entry_builds_runs_and_reports_its_cost(name):
    from edgevid.models.cost import measure

    frames, size = _geometry(name)
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, frames, 3, size, size))
    assert out.shape == (1, 7) and torch.isfinite(out).all()
    cost = measure(name)
    c = get_config(name)
    assert cost["params"] == sum(p.numel() for p in build_model(name).parameters())
    assert cost["gmacs_per_clip"] > 0.1 and cost["gmacs_per_frame"] is None  # clip models: no streaming cost
    assert c.frames >= c.min_frames and not c.can_stream


@pytest.mark.parametrize("name", _sweep(ZOO3D))
def test_3d_entry_exports_and_matches_torch_in_onnxruntime_and_openvino(name, tmp_path):
    from edgevid.export.api import export_model
    from edgevid.export.openvino import openvino_runner
    from edgevid.models.weights import save_checkpoint
    from edgevid.runtime.crosscheck import onnxruntime_runner

    frames, size = _geometry(name)
    model = _calibrated(build_model(name, num_classes=6), frames, size)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, name, [f"c{i}" for i in range(6)], {"num_classes": 6})
    manifest = export_model(name, tmp_path / "art", checkpoint=ckpt, mode="clip", target="openvino", frames=frames,
                            size=size, progress=False)
    assert {b: v["passed"] for b, v in manifest.validation.items()} == {"onnxruntime": True, "openvino": True}
    clip = torch.randn(2, frames, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(clip).numpy()
    for run in (onnxruntime_runner(tmp_path / "art" / "model.onnx"), openvino_runner(tmp_path / "art" / "model.xml")):
        _peak_close(run({"frames": clip.numpy()})["logits"], want)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO3D)
def test_3d_entry_int8_export_runs_with_its_accuracy_check(name, tmp_path):
    from edgevid.models.weights import save_checkpoint
    from edgevid.pipeline import export
    from edgevid.runtime.crosscheck import onnxruntime_runner

    frames, size = _geometry(name)
    model = _calibrated(build_model(name, num_classes=11), frames, size)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, name, [f"c{i}" for i in range(11)], {"num_classes": 11})
    manifest = export(name, tmp_path / "int8", checkpoint=ckpt, mode="clip", precision="int8", frames=frames,
                      size=size, calib_size=4, progress=False)
    int8 = manifest.build["int8"]
    assert int8["int8_layers"] > 0 and "clip_top1_agreement" in int8["accuracy"]
    out = onnxruntime_runner(tmp_path / "int8" / "model.onnx")({"frames": np.zeros((1, frames, 3, size, size), np.float32)})
    assert np.isfinite(out["logits"]).all()


# ---------------------------------------------------------------- public layouts (torchvision, C3D, inflation)


def _torchvision_reference(arch: str, num_classes: int, frames: int, size: int) -> torch.nn.Module:
    import torchvision

    from edgevid.models.batchnorm import recalibrate_batchnorm

    torch.manual_seed(1)
    ref = getattr(torchvision.models.video, arch)(weights=None, num_classes=num_classes)
    wrapped = _Permuted(ref)
    recalibrate_batchnorm(wrapped, [torch.randn(2, frames, 3, size, size)])
    return ref.eval()


class _Permuted(torch.nn.Module):
    """A (N, 3, T, H, W) network behind the (N, T, 3, H, W) clip interface (for BatchNorm recalibration)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, clip):
        return self.net(clip.transpose(1, 2))


@pytest.mark.parametrize("name,arch", [pytest.param(n, a, marks=() if n == DEFAULT_EXPORT else pytest.mark.slow)
                                       for n, a in (("r3d-18", "r3d_18"), ("mc3-18", "mc3_18"),
                                                    ("r2plus1d-18", "r2plus1d_18"), ("s3d", "s3d"))])
def test_a_torchvision_checkpoint_exports_unchanged(name, arch, tmp_path, capsys):
    """torchvision's own state dict, through `edgevid export --checkpoint`: the ONNX equals torchvision's model."""
    from edgevid.cli import main
    from edgevid.runtime.crosscheck import onnxruntime_runner

    frames, size = (16, 224) if arch == "s3d" else _geometry(name)
    ref = _torchvision_reference(arch, 9, frames, size)
    ckpt = tmp_path / f"{arch}.pth"
    torch.save(ref.state_dict(), ckpt)
    assert main(["export", "--model", name, "--checkpoint", str(ckpt), "--mode", "clip", "--frames", str(frames),
                 "--size", str(size), "-o", str(tmp_path / "art"), "-q"]) == 0
    capsys.readouterr()
    clip = torch.randn(1, frames, 3, size, size, generator=torch.Generator().manual_seed(5))
    got = onnxruntime_runner(tmp_path / "art" / "model.onnx")({"frames": clip.numpy()})["logits"]
    with torch.no_grad():
        want = ref(clip.transpose(1, 2)).numpy()
        _peak_close(got, want)
        first_conv = next(m for m in ref.modules() if isinstance(m, torch.nn.Conv3d))
        first_conv.weight.mul_(1.1)  # sensitivity: a perturbed reference is told apart
        assert np.max(np.abs(ref(clip.transpose(1, 2)).numpy() - got)) / np.max(np.abs(want)) > 1e-3


def test_s3d_global_pool_equals_torchvisions_at_its_own_size():
    """torchvision's S3D pools with a fixed AvgPool3d(2, 7, 7) then averages; edgevid's global average
    gives the same logits at S3D's 224 px / 16-frame input."""
    import torchvision

    torch.manual_seed(2)
    ref = torchvision.models.video.s3d(weights=None, num_classes=5).eval()
    ours = build_model("s3d", num_classes=5, global_rng=True).eval()
    ours.net.load_state_dict(ref.state_dict())
    clip = torch.randn(1, 16, 3, 224, 224)
    with torch.no_grad():
        _peak_close(ours(clip).numpy(), ref(clip.transpose(1, 2)).numpy(), 1e-5)


def test_c3d_takes_the_sports1m_layout_and_refuses_other_geometries(tmp_path):
    from edgevid.errors import EdgevidError
    from edgevid.export.api import export_model

    keys = set(build_model("c3d").net.state_dict())
    expected = {f"{layer}.{p}" for layer in ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a",
                                             "conv5b", "fc6", "fc7", "fc8") for p in ("weight", "bias")}
    assert keys == expected
    assert tuple(build_model("c3d").net.fc6.weight.shape) == (4096, 8192)  # 512 x 1 x 4 x 4 after pool5
    sports1m = {k: torch.randn_like(v) for k, v in build_model("c3d").net.state_dict().items()}
    torch.save(sports1m, tmp_path / "c3d_sports1m.pth")  # the public layout: plain keys, no prefix
    loaded = build_model("c3d", checkpoint=tmp_path / "c3d_sports1m.pth")
    assert torch.equal(loaded.net.conv3b.weight, sports1m["conv3b.weight"]) and loaded.num_classes == 487
    with pytest.raises(EdgevidError, match="c3d takes 96-127 px crops"):
        export_model("c3d", tmp_path / "x", size=64, progress=False)
    with pytest.raises(EdgevidError, match="c3d takes 16-31 frames per clip"):
        export_model("c3d", tmp_path / "x", frames=8, progress=False)


def test_an_inflated_image_checkpoint_gives_the_2d_output_on_a_static_clip(tmp_path):
    """I3D from a 2D ImageNet-layout ResNet-50: on a clip of one repeated frame, the 2D network's output."""
    import torchvision

    torch.manual_seed(4)
    image = torchvision.models.resnet50(weights=None, num_classes=10)
    image.train()
    with torch.no_grad():  # BatchNorm statistics of real-looking activations
        for m in image.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        image(torch.randn(4, 3, 64, 64))
    image.eval()
    torch.save(image.state_dict(), tmp_path / "resnet50_imagenet_layout.pth")
    i3d = build_model("i3d-resnet50", checkpoint=tmp_path / "resnet50_imagenet_layout.pth").eval()
    assert i3d.num_classes == 10
    frame = torch.randn(1, 3, 64, 64)
    static = frame[:, None].repeat(1, 8, 1, 1, 1)
    with torch.no_grad():
        two_d = image(frame).numpy()
        _peak_close(i3d(static).numpy(), two_d, 1e-4)
        moving = static.clone()
        moving[:, 4:] = torch.randn(1, 4, 3, 64, 64)
        assert np.max(np.abs(i3d(moving).numpy() - two_d)) / np.max(np.abs(two_d)) > 1e-2  # time matters


def test_a_3d_model_trains_on_the_synthetic_set(tmp_path):
    """A short train run of one 3D family: the loss falls, the best checkpoint loads and evaluates."""
    from edgevid.data.synth import generate_dataset
    from edgevid.train.evaluate import evaluate_checkpoint
    from edgevid.train.trainer import TrainConfig, train

    data = tmp_path / "synth"
    generate_dataset(data, seed=3, videos_per_class=3, frames=8, size=32, val_fraction=0.34, progress=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = train(TrainConfig(model="mc3-18", data=str(data), out=str(tmp_path / "mc3.pt"), epochs=2, size=32,
                                    frames=8, batch_size=8, lr=2e-3, workers=0, progress=False))
    finally:
        torch.set_num_threads(before)
    assert len(history) == 2 and all(np.isfinite(h.train_loss) for h in history)
    model = build_model("mc3-18", checkpoint=tmp_path / "mc3.pt")
    assert model.num_classes == 11 and model.config.frames == 8 and model.config.input_size == 32
    result = evaluate_checkpoint("mc3-18", str(data), str(tmp_path / "mc3.pt"), workers=0, progress=False)
    assert result.clips > 0 and 0.0 <= result.top1 <= 1.0


def test_channel_pruning_shrinks_a_3d_model_and_the_checkpoint_exports(tmp_path):
    from edgevid.compress.pipeline import compress_model
    from edgevid.data.synth import CLASSES, generate_dataset
    from edgevid.export.api import export_model
    from edgevid.models.weights import save_checkpoint

    data = tmp_path / "synth"
    generate_dataset(data, seed=4, videos_per_class=2, frames=8, size=32, val_fraction=0.5, progress=False)
    base = _calibrated(build_model("mc3-18", num_classes=11), 8, 32)
    save_checkpoint(tmp_path / "base.pt", base, "mc3-18", list(CLASSES), {"num_classes": 11, "frames": 8,
                                                                         "input_size": 32, "resize": 37})
    report = compress_model("mc3-18", data, tmp_path / "pruned.pt", checkpoint=str(tmp_path / "base.pt"),
                            prune_channels=0.5, epochs=0, measure_latency=False)
    assert report.macs_after < 0.6 * report.macs_before and report.params_after < report.params_before
    pruned = build_model("mc3-18", checkpoint=tmp_path / "pruned.pt")
    assert sum(p.numel() for p in pruned.parameters()) == report.params_after
    manifest = export_model("mc3-18", tmp_path / "art", checkpoint=tmp_path / "pruned.pt", mode="clip", size=32,
                            frames=8, progress=False)
    assert manifest.validation["onnxruntime"]["passed"]


def test_a_3d_model_gets_report_rows(tmp_path, capsys):
    """`edgevid report` on a 3D clip model: clip rows measured, stream rows skipped with the reason."""
    import json

    from edgevid.cli import main
    from edgevid.data.synth import CLASSES, generate_dataset
    from edgevid.models.weights import save_checkpoint
    from edgevid.report.schema import validate

    data = tmp_path / "synth"
    generate_dataset(data, seed=6, videos_per_class=2, frames=16, size=40, val_fraction=0.5, progress=False)
    model = _calibrated(build_model("mc3-18", num_classes=11), 8, 32)
    save_checkpoint(tmp_path / "mc3.pt", model, "mc3-18", list(CLASSES), {"num_classes": 11, "frames": 8,
                                                                         "input_size": 32, "resize": 37})
    assert main(["report", "--model", "mc3-18", "--checkpoint", str(tmp_path / "mc3.pt"), "--data", str(data),
                 "--backends", "onnxruntime", "--precisions", "fp32", "--videos", "4", "--rounds", "2", "--block", "3",
                 "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "report"), "-q"]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    validate(report, "report")
    assert [r["variant"] for r in report["rows"]] == ["torch/clip/fp32", "onnxruntime/clip/fp32"]
    assert report["rows"][1]["agreement"]["prediction_top1"] == 1.0 and report["rows"][1]["latency_ms"]["count"] == 6
    assert any("its causal twin streams: edgevid report --model mc3-18-online" in s["reason"]
               for s in report["skipped"])
