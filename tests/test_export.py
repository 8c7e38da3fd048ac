"""Export: every zoo entry to ONNX (clip and stream), run in ONNX Runtime and OpenVINO, against torch.

Every artifact is exported once per module (fixtures below) at test size: 64 px, 4 frames,
width 0.5 for MobileNetV2, 10 classes, with BatchNorm statistics re-estimated so that the
logits depend on the input. The weights go through a real checkpoint file, so the
checkpoint path and its provenance are exercised too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgevid.cli import main as cli_main
from edgevid.errors import EdgevidError
from edgevid.export import onnx as onnx_export
from edgevid.export import validate
from edgevid.export.api import export_model
from edgevid.export.openvino import openvino_runner
from edgevid.export.targets import DEFAULT_OPSET, MIN_OPSET, TARGETS
from edgevid.export.tensorrt import check_tensorrt_ready, engine_available
from edgevid.manifest import Manifest, sha256_file
from edgevid.models import build_model, get_config, list_models
from edgevid.models.batchnorm import recalibrate_batchnorm
from edgevid.models.streaming import to_streaming
from edgevid.models.weights import save_checkpoint
from edgevid.staging import staged_directory

SIZE, FRAMES, CLASSES = 64, 4, 10
FP32_TOL = validate.DEFAULT_TOLERANCE["fp32"]
FP16_TOL = validate.DEFAULT_TOLERANCE["fp16"]
# Every entry and mode of the registry. The full-width ResNet-50 entries take 15-20 s per export
# here: one of them (the online TSM, streaming) stays in the default run for the ResNet shift
# path, the others are `slow` (python -m pytest -m slow); they share every line of code with it.
_DEFAULT_RESNET = ("tsm-resnet50-online", "stream")


def _marked(name: str, mode: str):
    # RGB differences share every export line with flow (a motion stack of other channels): slow.
    motion = get_config(name).motion
    heavy = (get_config(name).backbone == "resnet50" and (name, mode) != _DEFAULT_RESNET) or \
        (motion is not None and motion.kind == "rgbdiff")
    return pytest.param(name, mode, marks=pytest.mark.slow) if heavy else pytest.param(name, mode)


# The 2D families (frame backbones with per-frame scores); the 3D CNNs have their own sweep in test_zoo3d.py.
FRAME_MODELS = [c for c in list_models() if c.family in ("tsm", "tsn")]
ZOO = [_marked(c.name, mode) for c in FRAME_MODELS for mode in (("clip", "stream") if c.can_stream else ("clip",))]
STREAMING = [pytest.param(c.name, marks=pytest.mark.slow) if c.backbone == "resnet50" or
             (c.motion is not None and c.motion.kind == "rgbdiff") else c.name for c in FRAME_MODELS if c.can_stream]
ONLINE_TSM = "tsm-mobilenetv2-online"  # the cheapest streaming model with states
MBV2_SHIFT_BUFFERS = 10  # the official online demo's 10 buffers (MODELS.md)
RESNET50_SHIFT_BUFFERS = 3 + 4 + 6 + 3  # one per Bottleneck


def _width(name: str) -> float | None:
    return 0.5 if get_config(name).backbone == "mobilenetv2" else None


def _calibrated(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, num_classes=CLASSES, width_mult=_width(name), global_rng=True)
    motion = get_config(name).motion  # a flow / RGB-difference stack instead of RGB
    clips = [torch.randn(2, FRAMES, motion.channels if motion else 3, SIZE, SIZE) for _ in range(2)]
    return recalibrate_batchnorm(model, clips).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """name -> (eval-mode torch model, path of its edgevid checkpoint), built once."""
    cache: dict[str, tuple[torch.nn.Module, Path]] = {}

    def get(name: str) -> tuple[torch.nn.Module, Path]:
        if name not in cache:
            model = _calibrated(name)
            path = tmp_path_factory.mktemp("ckpt") / f"{name}.pt"
            save_checkpoint(path, model, name, model.labels, {"num_classes": CLASSES, "width_mult": _width(name) or 1.0})
            cache[name] = (model, path)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory):
    """(name, mode) -> (directory, manifest) of the OpenVINO-target export (ONNX + IR), once."""
    cache: dict[tuple[str, str], tuple[Path, Manifest]] = {}

    def get(name: str, mode: str) -> tuple[Path, Manifest]:
        if (name, mode) not in cache:
            out = tmp_path_factory.mktemp("art") / f"{name}-{mode}"
            manifest = export_model(name, out, checkpoint=checkpoint(name)[1], mode=mode, target="openvino",
                                    frames=FRAMES, size=SIZE, progress=False)
            cache[(name, mode)] = (out, manifest)
        return cache[(name, mode)]

    return get


def _fresh_inputs(manifest: Manifest, seed: int = 7) -> validate.ValidationInputs:
    """Clips the export's own validation did not see."""
    return validate.make_inputs(manifest.preprocess, FRAMES, clips=2, seed=seed, motion=manifest.motion)


def _peak_close(got: np.ndarray, want: np.ndarray, tol: float) -> None:
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * float(np.abs(want).max()))


def _step_all(run, manifest: Manifest, clips: np.ndarray) -> np.ndarray:
    """Per-frame logits (C, T, K) of a streaming artifact, every stream from the initial state."""
    steps = validate.run_stream(run, manifest.states, clips, batch=None)
    return np.stack([s["logits"] for s in steps], axis=1)


# --------------------------------------------------------------------------- the zoo


@pytest.mark.parametrize("name,mode", ZOO)
def test_zoo_export_runs_in_onnxruntime_and_openvino_like_torch(name, mode, artifact, checkpoint):
    out, manifest = artifact(name, mode)
    model = checkpoint(name)[0]
    assert set(manifest.validation) == {"onnxruntime", "openvino"}
    for figures in manifest.validation.values():
        assert figures["passed"] and figures["max_rel_diff"] <= FP32_TOL and figures["top1_agreement"] == 1.0

    proto = onnx.load(str(out / "model.onnx"))
    assert onnx_export._opset_of(proto) == DEFAULT_OPSET
    inputs = _fresh_inputs(manifest)
    with torch.no_grad():
        per_frame = model.forward_frames(torch.from_numpy(inputs.torch_clips)).numpy()
    runs = {"onnxruntime": validate.onnxruntime_runner(out / "model.onnx"),
            "openvino": openvino_runner(out / "model.xml")}
    for run in runs.values():
        if mode == "clip":
            _peak_close(validate.run_clip(run, inputs.graph_clips, None)["logits"], per_frame.mean(1), FP32_TOL)
        else:  # T steps from the zero state equal the causal clip model frame by frame
            _peak_close(_step_all(run, manifest, inputs.graph_clips), per_frame, FP32_TOL)


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_onnx_stepped_equals_clip_onnx(name, artifact):
    clip_dir, clip_manifest = artifact(name, "clip")
    stream_dir, stream_manifest = artifact(name, "stream")
    inputs = _fresh_inputs(stream_manifest)
    per_frame = _step_all(validate.onnxruntime_runner(stream_dir / "model.onnx"), stream_manifest, inputs.graph_clips)
    clip_logits = validate.run_clip(validate.onnxruntime_runner(clip_dir / "model.onnx"), inputs.graph_clips, None)
    _peak_close(per_frame.mean(axis=1), clip_logits["logits"], FP32_TOL)


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_io_names_and_state_shapes_are_the_documented_ones(name, artifact, checkpoint):
    out, manifest = artifact(name, "stream")
    proto = onnx.load(str(out / "model.onnx"))
    inputs, outputs = onnx_export.graph_io(proto)
    streaming = to_streaming(checkpoint(name)[0])
    paths = streaming.state_paths
    assert [t.name for t in inputs] == ["frame"] + [f"state_in.{p}" for p in paths]
    assert [t.name for t in outputs] == ["logits"] + [f"state_out.{p}" for p in paths]
    assert [s.path for s in manifest.states] == paths
    assert [s.shape for s in manifest.states] == [list(s.shape) for s in streaming.state_specs(SIZE)]
    # TSN streams statelessly; online TSM-MobileNetV2 has the official demo's 10 shift buffers
    assert len(manifest.states) == {
        "tsn": 0, "tsm": MBV2_SHIFT_BUFFERS if "mobilenet" in name else RESNET50_SHIFT_BUFFERS}[manifest.family]
    by_name = {t.name: t for t in inputs + outputs}
    for state in manifest.states:
        for graph_name in (state.input, state.output):
            graph = by_name[graph_name]
            assert graph.shape[0] == "N" and state.shape[0] == 1
            assert graph.shape[1:] == state.shape[1:] and graph.dtype == state.dtype
    channels = manifest.motion.channels if manifest.motion else 3  # a flow stack: 2L
    assert inputs[0].shape == ["N", channels, SIZE, SIZE] and outputs[0].shape == ["N", CLASSES]


def test_manifest_metadata_and_provenance(artifact, checkpoint):
    out, manifest = artifact(ONLINE_TSM, "stream")
    proto = onnx.load(str(out / "model.onnx"))
    meta = onnx_export.read_metadata(proto)
    data = json.loads((out / "manifest.json").read_text())
    for key in ("model", "mode", "states", "inputs", "outputs", "preprocess", "sampling", "labels", "precision"):
        assert meta[key] == data[key], key
    assert meta["opset"] == DEFAULT_OPSET
    prov = manifest.provenance
    assert prov["onnx_sha256"] == sha256_file(out / "model.onnx")
    assert prov["openvino_xml_sha256"] == sha256_file(out / "model.xml")
    assert prov["openvino_bin_sha256"] == sha256_file(out / "model.bin")
    assert prov["checkpoint_sha256"] == meta["checkpoint_sha256"] == sha256_file(checkpoint(ONLINE_TSM)[1])
    assert {"torch", "onnx", "onnxruntime", "onnxslim", "openvino"} <= set(prov["tools"])
    assert Manifest.load(out).to_dict() == manifest.to_dict()
    assert manifest.build["openvino"]["inference_precision"] == "f32"  # CPU default would be bf16 on some CPUs


def test_export_output_satisfies_the_runtime_contract(artifact):
    from edgevid.runtime.artifact import open_artifact

    out, _ = artifact(ONLINE_TSM, "stream")
    art = open_artifact(out)
    assert art.verified_file("onnx").name == "model.onnx"
    assert art.verified_file("openvino_xml").name == "model.xml"


# --------------------------------------------------------------------------- the shift


class _FramesGraph(torch.nn.Module):
    """Per-frame logits of the clip model, to see where a change in one frame lands in time."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model.forward_frames(clip)


def _perturb_frame(x: torch.Tensor, t: int) -> torch.Tensor:
    y = x.clone()
    y[:, t] += torch.randn(y.shape[2:], generator=torch.Generator().manual_seed(1))
    return y


def _check_shift_delta(delta_onnx: np.ndarray, delta_torch: np.ndarray, t: int, bidirectional: bool) -> None:
    """Per-frame (T, K) logit changes after perturbing frame t: equal in ONNX and torch, and in time."""
    peak = float(np.abs(delta_torch).max())
    np.testing.assert_allclose(delta_onnx, delta_torch, rtol=0, atol=FP32_TOL * peak)
    change = np.abs(delta_onnx).max(axis=-1)
    assert change[t + 1] > 0.01 * peak  # the shifted channels carry frame t into frame t+1
    if bidirectional:
        assert change[t - 1] > 0.01 * peak  # ... and into frame t-1
    else:
        assert change[:t].max() <= 1e-6 * peak  # nothing flows back in time


def test_bidirectional_shift_exports_exactly(checkpoint, tmp_path):
    model = checkpoint("tsm-mobilenetv2")[0]
    proto = onnx_export.export_onnx(_FramesGraph(model), (torch.randn(1, FRAMES, 3, SIZE, SIZE),), ["frames"],
                                    ["frame_logits"], opset=DEFAULT_OPSET, dynamic_batch=False)
    onnx.save(proto, str(tmp_path / "frames.onnx"))
    run = validate.onnxruntime_runner(tmp_path / "frames.onnx")
    x = torch.randn(1, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    t = 1
    y = _perturb_frame(x, t)
    with torch.no_grad():
        delta_torch = (model.forward_frames(y) - model.forward_frames(x)).numpy()[0]
    delta_onnx = run({"frames": y.numpy()})["frame_logits"][0] - run({"frames": x.numpy()})["frame_logits"][0]
    _check_shift_delta(delta_onnx, delta_torch, t, bidirectional=True)


def test_online_shift_state_carries_frame_t_into_t_plus_1(artifact, checkpoint):
    out, manifest = artifact(ONLINE_TSM, "stream")
    model = checkpoint(ONLINE_TSM)[0]
    run = validate.onnxruntime_runner(out / "model.onnx")
    x = torch.from_numpy(_fresh_inputs(manifest).torch_clips[:1])
    t = 1
    y = _perturb_frame(x, t)
    with torch.no_grad():  # the causal clip model is the reference for the stepped stream
        delta_torch = (model.forward_frames(y) - model.forward_frames(x)).numpy()[0]
    delta_onnx = (_step_all(run, manifest, y.numpy()) - _step_all(run, manifest, x.numpy()))[0]
    _check_shift_delta(delta_onnx, delta_torch, t, bidirectional=False)


def test_clip_artifact_responds_to_one_frame_like_torch(artifact, checkpoint):
    out, manifest = artifact("tsm-mobilenetv2", "clip")
    model = checkpoint("tsm-mobilenetv2")[0]
    run = validate.onnxruntime_runner(out / "model.onnx")
    x = _fresh_inputs(manifest).graph_clips
    y = x.copy()
    y[:, 2] = np.roll(y[:, 2], 7, axis=-1)  # change frame 2 only
    with torch.no_grad():
        delta_torch = (model(torch.from_numpy(y)) - model(torch.from_numpy(x))).numpy()
    delta_onnx = validate.run_clip(run, y, None)["logits"] - validate.run_clip(run, x, None)["logits"]
    assert np.abs(delta_torch).max() > 10 * FP32_TOL * np.abs(model(torch.from_numpy(x)).detach().numpy()).max()
    _peak_close(delta_onnx, delta_torch, FP32_TOL)


# --------------------------------------------------------------------------- uint8, fp16, opsets


def test_uint8_input_equals_float_input_with_host_preprocessing(artifact, checkpoint, tmp_path):
    float_dir, float_manifest = artifact(ONLINE_TSM, "stream")
    out = tmp_path / "u8"
    manifest = export_model(ONLINE_TSM, out, checkpoint=checkpoint(ONLINE_TSM)[1], uint8_input=True,
                            frames=FRAMES, size=SIZE, progress=False)
    assert manifest.mode == "stream" and manifest.preprocess.uint8_input
    assert manifest.inputs[0].dtype == "uint8" and manifest.inputs[0].shape == ["N", SIZE, SIZE, 3]
    proto = onnx.load(str(out / "model.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    inputs = validate.make_inputs(manifest.preprocess, FRAMES, seed=7)  # same BGR clips, both ways
    assert inputs.graph_clips.dtype == np.uint8
    u8 = _step_all(validate.onnxruntime_runner(out / "model.onnx"), manifest, inputs.graph_clips)
    f32 = _step_all(validate.onnxruntime_runner(float_dir / "model.onnx"), float_manifest, inputs.torch_clips)
    _peak_close(u8, f32, FP32_TOL)


def test_uint8_tensorrt_export_casts_before_anything_else(checkpoint, tmp_path):
    """TensorRT takes uint8 only as a network input feeding a Cast: no uint8 Transpose (or any other
    uint8 layer) may follow the input, and check_tensorrt_ready refuses a graph that has one."""
    from onnx import helper

    out = tmp_path / "u8trt"
    export_model(ONLINE_TSM, out, checkpoint=checkpoint(ONLINE_TSM)[1], uint8_input=True, target="tensorrt",
                 frames=FRAMES, size=SIZE, progress=False, validate=False)
    proto = onnx.load(str(out / "model.onnx"))
    first = [n for n in proto.graph.node if proto.graph.input[0].name in n.input]
    assert [n.op_type for n in first] == ["Cast"]
    check_tensorrt_ready(proto)
    # The graph as it was exported before the fix: channels-last -> first on uint8, then the Cast.
    bad = helper.make_model(helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
         helper.make_node("Cast", ["t"], ["y"], to=onnx.TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(EdgevidError, match="uint8 input 'x' feeds Transpose .*Transpose .* makes the uint8 tensor 't'"):
        check_tensorrt_ready(bad)


def test_fp16_tensorrt_export_through_the_cli(checkpoint, artifact, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli_main(["export", "--model", "tsm", "--checkpoint", str(checkpoint(ONLINE_TSM)[1]), "--target", "trt",
                     "--precision", "fp16", "--frames", str(FRAMES), "--size", str(SIZE), "-q"])
    assert code == 0
    out = tmp_path / "exports" / f"{ONLINE_TSM}-stream-tensorrt-fp16"  # the default directory
    summary = capsys.readouterr().out
    assert str(out) in summary and "validation onnxruntime" in summary and "state_in.*" in summary
    manifest = Manifest.load(out)
    assert manifest.precision == "fp16" and manifest.target == "tensorrt"
    assert manifest.build["tensorrt"]["engine"] == ("built" if engine_available()[0] else "on_first_load")
    proto = onnx.load(str(out / "model.onnx"))
    check_tensorrt_ready(proto)
    assert onnx_export._opset_of(proto) == DEFAULT_OPSET
    io = list(proto.graph.input) + list(proto.graph.output)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)  # fp32 I/O, states included
    assert all(d.HasField("dim_value") for v in io for d in v.type.tensor_type.shape.dim)  # static
    floats = [i for i in proto.graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert floats and all(i.data_type == onnx.TensorProto.FLOAT16 for i in floats)  # fp16 weights

    # Runs in ONNX Runtime on the CPU, within the fp16 tolerance, and really computes in fp16.
    inputs = _fresh_inputs(manifest)
    model = checkpoint(ONLINE_TSM)[0]
    with torch.no_grad():
        want = model.forward_frames(torch.from_numpy(inputs.torch_clips)).numpy()
    got16 = np.concatenate([_step_all(validate.onnxruntime_runner(out / "model.onnx"), manifest,
                                      inputs.graph_clips[i:i + 1]) for i in range(len(inputs.graph_clips))])
    _peak_close(got16, want, FP16_TOL)
    fp32_dir, fp32_manifest = artifact(ONLINE_TSM, "stream")
    got32 = _step_all(validate.onnxruntime_runner(fp32_dir / "model.onnx"), fp32_manifest, inputs.graph_clips)
    assert np.abs(got16 - want).max() > 10 * np.abs(got32 - want).max()


class _Tiny(torch.nn.Module):
    """Conv, causal shift, global average pool, linear: the op mix of the zoo in a second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        from edgevid.models.temporal_shift import shift_causal

        n, t = clip.shape[:2]
        x = torch.relu(self.conv(clip.flatten(0, 1)))
        x = shift_causal(x, t, 2)
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x).view(n, t, -1).mean(1)


@pytest.mark.parametrize("opset", sorted({MIN_OPSET, DEFAULT_OPSET, onnx_export.EXPORTER_OPSET,
                                          TARGETS["onnxruntime"].max_opset}))
def test_the_file_has_exactly_the_requested_opset(opset, tmp_path):
    torch.manual_seed(0)
    module = _Tiny().eval()
    x = torch.randn(2, FRAMES, 3, 16, 16)
    proto = onnx_export.export_onnx(module, (x,), ["frames"], ["logits"], opset=opset, dynamic_batch=True)
    assert onnx_export._opset_of(proto) == opset
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.save(proto, str(tmp_path / "m.onnx"))
    run = validate.onnxruntime_runner(tmp_path / "m.onnx")
    x3 = torch.randn(3, FRAMES, 3, 16, 16)  # another batch size: the batch axis is dynamic
    with torch.no_grad():
        _peak_close(run({"frames": x3.numpy()})["logits"], module(x3).numpy(), FP32_TOL)


# --------------------------------------------------------------------------- failures leave nothing


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.filterwarnings("ignore::edgevid.export.api.RandomWeightsWarning")
@pytest.mark.parametrize("case,kwargs,message", [
    ("unknown target", {"target": "tflite"}, "unknown target 'tflite'"),
    ("opset tensorrt cannot parse", {"target": "tensorrt", "opset": 18}, "too new for target tensorrt"),
    ("opset onnxruntime cannot parse", {"opset": TARGETS["onnxruntime"].max_opset + 1}, "too new for target onnxruntime"),
    ("opset too old", {"opset": MIN_OPSET - 1}, "too old"),
    ("unknown precision", {"precision": "int4"}, "unknown precision"),
    ("unknown mode", {"mode": "window"}, "unknown mode"),
    ("bi-directional model streamed", {"model": "tsm-mobilenetv2", "mode": "stream"}, "cannot stream"),
    ("unknown model", {"model": "i3d"}, "unknown model 'i3d'"),
    ("width on resnet", {"model": "tsn-resnet50", "width_mult": 0.5}, "no width multiplier"),
])
def test_bad_arguments_fail_clearly_and_write_nothing(case, kwargs, message, tmp_path):
    kwargs = {"model": ONLINE_TSM, **kwargs}
    out = tmp_path / "sub" / "out"
    with pytest.raises(EdgevidError, match=message):
        export_model(kwargs.pop("model"), out, progress=False, **kwargs)
    assert _snapshot(tmp_path) == set()


def test_existing_output_dir_needs_force_and_is_left_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(EdgevidError, match="already exists; pass --force"):
        export_model(ONLINE_TSM, out, progress=False)
    with pytest.raises(EdgevidError, match="not an edgevid export"):  # --force never deletes a foreign folder
        export_model(ONLINE_TSM, out, force=True, progress=False)
    assert _snapshot(tmp_path) == {"out", "out/keep.txt"} and (out / "keep.txt").read_text() == "mine"


def test_checkpoint_of_another_architecture_is_refused(checkpoint, tmp_path):
    mbv2_model, mbv2_ckpt = checkpoint(ONLINE_TSM)
    with pytest.raises(EdgevidError, match=f"is a {ONLINE_TSM} checkpoint, not tsn-resnet50"):
        export_model("tsn-resnet50", tmp_path / "a", checkpoint=mbv2_ckpt, progress=False)
    plain = tmp_path / "plain.pt"
    torch.save(mbv2_model.state_dict(), plain)  # no metadata: caught by the key/shape check
    with pytest.raises(EdgevidError, match="does not fit"):
        export_model("tsn-resnet50", tmp_path / "b", checkpoint=plain, progress=False)
    assert _snapshot(tmp_path) == {"plain.pt"}


def test_failed_validation_names_the_output_and_leaves_nothing(checkpoint, tmp_path):
    name = "tsn-mobilenetv2"
    with pytest.raises(EdgevidError, match=r"validation failed on onnxruntime: output 'logits' differs from torch "
                                           r"by up to [0-9.e-]+"):
        # fp16 differs from torch for sure; a tolerance of 1e-9 cannot be met
        export_model(name, tmp_path / "sub" / "out", checkpoint=checkpoint(name)[1], mode="clip", target="tensorrt",
                     precision="fp16", frames=FRAMES, size=SIZE, tolerance=1e-9, progress=False)
    assert _snapshot(tmp_path) == set()


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    code = cli_main(["export", "--model", ONLINE_TSM, "--target", "tensorrt", "--opset", "19",
                     "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("edgevid export: error: opset 19 is too new for target tensorrt")
    assert not (tmp_path / "x").exists()


def test_staged_directory_replaces_an_export_only_on_success(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError), staged_directory(out, force=True) as work:
        (work / "model.onnx").write_text("half")
        raise RuntimeError("boom")
    assert _snapshot(tmp_path) == {"art", "art/manifest.json"}  # old export intact, no temp left
    with staged_directory(out, force=True) as work:
        (work / "manifest.json").write_text('{"new": 1}')
    assert _snapshot(tmp_path) == {"art", "art/manifest.json"}
    assert json.loads((out / "manifest.json").read_text()) == {"new": 1}


def test_random_weights_are_announced_and_recorded(tmp_path):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        # an entry that ships no checkpoint (tsm / tsn-mobilenetv2 would use theirs)
        manifest = export_model("tsm-mobilenetv2", tmp_path / "r", mode="clip", target="tensorrt", frames=2, size=32,
                                width_mult=0.25, num_classes=3, validate=False, progress=False)
    assert manifest.provenance["weights"] == "random-init" and manifest.provenance["checkpoint_sha256"] is None
    assert manifest.validation == {"skipped": True}
    digest = hashlib.sha256((tmp_path / "r" / "model.onnx").read_bytes()).hexdigest()
    assert manifest.provenance["onnx_sha256"] == digest


@pytest.mark.gpu
def test_tensorrt_engine_is_built_when_a_gpu_is_present(checkpoint, tmp_path):
    ok, why = engine_available()
    if not ok:
        pytest.skip(why)
    manifest = export_model(ONLINE_TSM, tmp_path / "e", checkpoint=checkpoint(ONLINE_TSM)[1], target="tensorrt",
                            precision="fp16", frames=FRAMES, size=SIZE, progress=False)
    assert manifest.build["tensorrt"]["engine"] == "built" and (tmp_path / "e" / "model.engine").is_file()
    assert manifest.provenance["engine_sha256"] == sha256_file(tmp_path / "e" / "model.engine")
    assert manifest.validation["tensorrt"]["passed"]  # the engine itself, against torch
    assert manifest.build["tensorrt"]["device"]["tensorrt"] == manifest.build["tensorrt"]["tensorrt_version"]
