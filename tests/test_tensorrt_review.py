"""Issue 24: the second TensorRT review's seven bugs and its "also fix" list, on the fake TensorRT / cuda-python.

The fakes (``tests/fakes/tensorrt_fake.py``) enforce what each bug is about: onnx-tensorrt's
``convertDtype`` (no UINT64; INT64 -> INT32 on 8.x), weakly typed 8.x networks that run fp32
kernels without ``BuilderFlag.FP16`` whatever the ONNX's types, ``IRuntime.DLA_core``,
cuda-python's two module layouts and a machine CUDA runtime apart from cuda-python's. Each test
fails on the code before issue 24. Bug 2 (installing a bundle from its parent folder) is in
``tests/test_jetson_bundle.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomllib
from fakes.tensorrt_fake import engine_blob, install  # tests/ is on sys.path (pytest's rootdir conftest)
from onnx import TensorProto, helper, numpy_helper
from packaging.requirements import Requirement

from edgevid.errors import EdgevidError
from edgevid.manifest import sha256_file
from edgevid.runtime.backends import tensorrt_engine as te

ROOT = Path(__file__).parents[1]


pytestmark = pytest.mark.usefixtures("own_engine_cache")


def _rewrite(src: Path, dst: Path, proto: onnx.ModelProto, edit) -> Path:
    """A copy of the artifact ``src`` with ``proto`` as its model.onnx and ``edit`` applied to its manifest."""
    shutil.copytree(src, dst)
    onnx.save(proto, dst / "model.onnx")
    data = json.loads((dst / "manifest.json").read_text())
    edit(data)
    data["provenance"]["onnx_sha256"] = sha256_file(dst / "model.onnx")
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst


def _frames(artifact: Path, count: int = 5, seed: int = 1) -> list[np.ndarray]:
    from edgevid.runtime import open_artifact
    from edgevid.runtime.preprocess import preprocess_frame

    pre = open_artifact(artifact).manifest.preprocess
    rng = np.random.default_rng(seed)
    return [preprocess_frame(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8), pre) for _ in range(count)]


def _steps(artifact: Path, backend: str, frames: list[np.ndarray], **options) -> np.ndarray:
    from edgevid.runtime import load

    with load(artifact, backend, **options) as runner, runner.open_stream() as stream:
        return np.concatenate([stream.step(f[None]) for f in frames])


# ---------------------------------------------------------------- bug 1: CORRID of the tensorrt flavour


def test_bug1_the_triton_tensorrt_flavour_builds_its_corrid_as_int32(runtime_stream_artifact, tmp_path, monkeypatch):
    """CORRID was a UINT64 input: TensorRT's parser has no UINT64, so the production tensorrt model never built."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    from edgevid.export.triton import write_repository

    info = write_repository(runtime_stream_artifact, tmp_path / "repo", flavour="production", backend="tensorrt")
    folder = tmp_path / "repo" / info["model"]
    config = text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())
    corrid = next(c for c in config.sequence_batching.control_input if c.name == "CORRID").control[0]
    inputs = {v.name: v.type.tensor_type.elem_type for v in onnx.load(folder / "model.onnx").graph.input}
    assert pb.DataType.Name(corrid.data_type) == "TYPE_INT32" and inputs["CORRID"] == TensorProto.INT32
    for version in ("8.6.2.3", "10.3.0.30"):
        install(monkeypatch, version)
        import tensorrt

        data = te.build_engine(tensorrt, folder / "model.onnx", te.BuildOptions("fp32", profiles=1))
        engine = tensorrt.Runtime(tensorrt.Logger()).deserialize_cuda_engine(data)
        assert engine.get_tensor_dtype("CORRID").name == "INT32"
    # The fake parser refuses what the real one refuses: the same graph with a UINT64 CORRID.
    proto = onnx.load(folder / "model.onnx")
    next(v for v in proto.graph.input if v.name == "CORRID").type.tensor_type.elem_type = TensorProto.UINT64
    onnx.save(proto, tmp_path / "uint64.onnx")
    with pytest.raises(EdgevidError, match=r"Unsupported ONNX data type: UINT64 \(13\) of tensor 'CORRID'"):
        te.build_engine(tensorrt, tmp_path / "uint64.onnx", te.BuildOptions("fp32", profiles=1))
    # The onnxruntime flavour keeps Triton's usual UINT64 (ONNX Runtime has it).
    info = write_repository(runtime_stream_artifact, tmp_path / "repo", flavour="production", name="ort")
    inputs = {v.name: v.type.tensor_type.elem_type for v in onnx.load(tmp_path / "repo/ort/1/model.onnx").graph.input}
    assert inputs["CORRID"] == TensorProto.UINT64


# ---------------------------------------------------------------- bugs 3 and 4: cuda-python versions


def test_bug3_cuda_python_before_12_6_1_works_through_cuda_cudart(trt_artifact, monkeypatch):
    """cuda-python 12.2 to 12.6.0 has ``cuda.cudart`` and no ``cuda.bindings``: the backend refused to start."""
    from edgevid.runtime import load

    rec = install(monkeypatch, "10.3.0.30", cuda_layout="legacy")
    with load(trt_artifact, "tensorrt") as runner:
        assert runner.engine_source == "built"
    assert rec.builds == 1
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tensorrt"]
    spec = next(Requirement(d) for d in extra if d.startswith("cuda-python")).specifier
    assert list(spec.filter(["12.2.0", "12.6.0", "12.9.4", "13.0.0"])) == ["12.2.0", "12.6.0", "12.9.4"], spec


def test_bug4_every_bundle_with_tensorrt_pins_cuda_python_below_13():
    """The x86 bundle said ``cuda-python>=12.6``: pip took 13.x, which fails on a CUDA 12 driver (error 35)."""
    from edgevid.deploy import requirements
    from edgevid.devices.profiles import load_profiles

    profiles = [p for p in load_profiles() if p.supported and "tensorrt" in p.backends]
    assert {p.kind for p in profiles} == {"jetson", "gpu"}
    for profile in profiles:
        lines = [line.split("#")[0].strip() for line in requirements(profile, "0.1.0", "tensorrt").splitlines()]
        cuda = next(Requirement(line) for line in lines if line.startswith("cuda-python"))
        assert list(cuda.specifier.filter(["12.2.0", "12.9.4", "13.0.0"])) == ["12.2.0", "12.9.4"], profile.name
        # pip's plain `tensorrt` is now the CUDA 13 build (tensorrt_cu13): a CUDA 12 bundle names tensorrt-cu12.
        assert not [line for line in lines if line.startswith("tensorrt") and
                    Requirement(line).name == "tensorrt"], profile.name


# ---------------------------------------------------------------- bug 5: fp16 artifacts on TensorRT 8.x


@pytest.fixture(scope="module")
def fp16_artifact(trt_artifact, tmp_path_factory):
    """The tensorrt artifact with its graph in fp16 (fp32 I/O), as `export --precision fp16` writes it."""
    from edgevid.export.precision import convert_to_fp16

    proto = convert_to_fp16(onnx.load(trt_artifact / "model.onnx"))
    return _rewrite(trt_artifact, tmp_path_factory.mktemp("fp16") / "fp16", proto,
                    lambda d: (d.update(precision="fp16"), d["build"].update(fp16_in_graph=True)))


@pytest.mark.parametrize(("version", "flags"), [("8.5.2.2", ["FP16"]), ("8.6.2.3", ["FP16"]), ("10.3.0.30", [])])
def test_bug5_an_fp16_artifact_runs_fp16_kernels_on_every_tensorrt(version, flags, fp16_artifact, monkeypatch):
    """8.x networks are weakly typed: the ONNX's fp16 types are hints, and without BuilderFlag.FP16 the engine
    ran fp32 kernels. 10.x builds it strongly typed: its own types, no flag."""
    rec = install(monkeypatch, version)
    frames = _frames(fp16_artifact)
    got = _steps(fp16_artifact, "tensorrt", frames)
    build = rec.names("build")[0]
    assert rec.names("kernels") == ["fp16"] and [f for f in build["flags"] if f in ("FP16", "INT8")] == flags
    np.testing.assert_allclose(got, _steps(fp16_artifact, "onnxruntime", frames), atol=1e-6, rtol=0)
    assert te.plan_flags(te.version_tuple(version), te.BuildOptions("fp16")).set == tuple(flags)


# ---------------------------------------------------------------- bug 6: a shipped engine and the options asked for


def test_bug6_a_shipped_engine_built_with_other_options_is_not_used(trt_artifact, tmp_path, monkeypatch, capsys):
    """`run --dla-core 0` ran the shipped GPU engine: only the TensorRT version and GPU were compared."""
    from edgevid.export.tensorrt import build_engine_now
    from edgevid.runtime import load

    art = tmp_path / "shipped"
    shutil.copytree(trt_artifact, art)
    install(monkeypatch, "10.3.0.30", dla_cores=2)
    facts = build_engine_now(art / "model.onnx", art / "model.engine", precision="fp32", fp16_kernels=False)
    data = json.loads((art / "manifest.json").read_text())
    data["files"]["engine"] = "model.engine"
    data["provenance"]["engine_sha256"] = sha256_file(art / "model.engine")
    data["build"]["tensorrt"].update(facts)
    (art / "manifest.json").write_text(json.dumps(data))

    rec = install(monkeypatch, "10.3.0.30", dla_cores=2)
    with load(art, "tensorrt") as runner:
        assert runner.engine_source == "shipped"
    assert rec.builds == 0
    capsys.readouterr()
    with pytest.warns(UserWarning, match="fall back to the GPU"), load(art, "tensorrt", dla_core=0) as runner:
        assert runner.engine_source == "built"
    assert rec.builds == 1 and rec.names("build")[0]["dla"] == 0
    assert "was built with other options (dla_core None (now 0))" in capsys.readouterr().err
    with load(art, "tensorrt", fp16=True) as runner:
        assert runner.engine_source == "built"
    assert rec.builds == 2 and "FP16" in rec.names("build")[1]["flags"]
    # A static engine has no optimization profiles: max_streams asks for nothing it lacks.
    assert not te.options_differ(facts["options"], te.BuildOptions("fp32", profiles=4), dynamic=False)
    assert te.options_differ(facts["options"], te.BuildOptions("fp32", profiles=4), dynamic=True) == \
        ["profiles 1 (now 4)"]


# ---------------------------------------------------------------- bug 7: int64 I/O on TensorRT 8.x


@pytest.fixture(scope="module")
def int64_artifact(trt_artifact, tmp_path_factory):
    """The tensorrt artifact plus an int64 state ``counter`` [1, 5] (init 3) that adds itself to the logits and
    counts up by one per step: an int64 input and output whose values matter."""
    proto = onnx.load(trt_artifact / "model.onnx")
    graph = proto.graph
    logits = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["logits_raw" if o == logits else o for o in node.output]
    graph.initializer.append(numpy_helper.from_array(np.ones(1, np.int64), "counter_one"))
    graph.node.extend([
        helper.make_node("Cast", ["state_in.counter"], ["counter_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["logits_raw", "counter_f"], [logits]),
        helper.make_node("Add", ["state_in.counter", "counter_one"], ["state_out.counter"]),
    ])
    graph.input.append(helper.make_tensor_value_info("state_in.counter", TensorProto.INT64, [1, 5]))
    graph.output.append(helper.make_tensor_value_info("state_out.counter", TensorProto.INT64, [1, 5]))
    return _rewrite(trt_artifact, tmp_path_factory.mktemp("int64") / "int64", proto,
                    lambda d: d["states"].append({"path": "counter", "shape": [1, 5], "dtype": "int64", "init": 3}))


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.2.3", "10.3.0.30"])
def test_bug7_int64_inputs_and_outputs_run_on_every_tensorrt(version, int64_artifact, monkeypatch):
    """The 8.x parser makes INT64 I/O INT32, and the backend refused that with "re-export", which cannot help."""
    from edgevid.runtime import load

    rec = install(monkeypatch, version)
    frames = _frames(int64_artifact, 4)
    want = _steps(int64_artifact, "onnxruntime", frames)
    assert want[1, 0] - want[0, 0] != 0, "the counter must show in the logits, or this test sees nothing"
    np.testing.assert_allclose(_steps(int64_artifact, "tensorrt", frames), want, atol=1e-5, rtol=0)
    with load(int64_artifact, "tensorrt") as runner:
        assert {s.name: s.dtype for s in runner.input_specs()}["state_in.counter"] == "int64"
        assert runner.device_dtype("state_in.counter") == ("int32" if version.startswith("8.") else "int64")
        feeds = {s.name: np.zeros([1 if d == "?" else d for d in s.shape], s.dtype) for s in runner.input_specs()}
        feeds["state_in.counter"] = np.full((1, 5), 41, np.int64)
        out = runner.infer(feeds)["state_out.counter"]
        assert out.dtype == np.int64 and (out == 42).all()
        if version.startswith("8."):
            feeds["state_in.counter"] = np.full((1, 5), 2**40, np.int64)
            with pytest.raises(EdgevidError, match="'state_in.counter' holds int64 values outside int32"):
                runner.infer(feeds)
    assert rec.device == {} and rec.host == {}


# ---------------------------------------------------------------- also fix


def test_a_dla_engine_is_deserialized_for_the_dla_core_it_was_built_for(trt_artifact, monkeypatch):
    """IRuntime.DLA_core defaults to -1: an engine built for DLA core 1 ran on core 0."""
    from edgevid.runtime import load

    rec = install(monkeypatch, "10.3.0.30", dla_cores=2)
    with pytest.warns(UserWarning, match="fall back to the GPU"), load(trt_artifact, "tensorrt", dla_core=1) as runner:
        assert runner.engine_source == "built"
    with load(trt_artifact, "tensorrt", dla_core=1) as runner:
        assert runner.engine_source == "cache"
    assert engine_blob(runner.engine_path)["dla"] == 1
    assert [d["dla_core"] for d in rec.names("deserialize")] == [1, 1]


def test_the_cache_key_has_the_machines_cuda_runtime_not_cuda_pythons(trt_artifact, monkeypatch):
    """cuda-python's cudaRuntimeGetVersion is the CUDA it was built with: upgrading cuda-python rebuilt every
    engine, and a new CUDA on the machine did not."""
    from edgevid.runtime import load

    rec = install(monkeypatch, "10.3.0.30", runtime_version=12060, libcudart=12020)
    with load(trt_artifact, "tensorrt") as runner:
        meta = json.loads((runner.engine_path.parent / te.META_NAME).read_text())
    assert meta["device"]["cuda_runtime"] == 12020
    rec = install(monkeypatch, "10.3.0.30", runtime_version=12090, libcudart=12020)  # pip install -U cuda-python
    with load(trt_artifact, "tensorrt") as runner:
        assert runner.engine_source == "cache"
    rec = install(monkeypatch, "10.3.0.30", runtime_version=12090, libcudart=12060)  # a new CUDA on the machine
    with load(trt_artifact, "tensorrt") as runner:
        assert runner.engine_source == "built"
    assert rec.builds == 1


def test_the_int8_graph_is_checked_for_tensorrt_after_quantization(monkeypatch):
    """check_tensorrt_ready ran on the FP32 graph only; the INT8 graph TensorRT parses went unchecked."""
    from types import SimpleNamespace

    from edgevid.compress import calibration, export_int8, quantize
    from edgevid.manifest import Preprocess

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "g", [x], [y])
    quantized = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])  # Det: no TensorRT 8.5 op
    clips = SimpleNamespace(head=lambda n: clips, torch_clips=None, graph_clips=None, source="stub")
    monkeypatch.setattr(calibration, "load_clips", lambda *a, **k: clips)
    monkeypatch.setattr(calibration, "clip_samples", lambda c: [])
    monkeypatch.setattr(quantize, "quantize_onnx",
                        lambda proto, samples, **k: SimpleNamespace(model=quantized, info={}, states=None))
    kwargs = dict(streaming=None, states=[], mode="clip", preprocess=Preprocess(4, 4), frames=4, measure=False)
    with pytest.raises(EdgevidError, match="the graph is not TensorRT-ready: operators TensorRT 8.5 cannot parse: Det"):
        export_int8.quantize_for_export(quantized, target="tensorrt", **kwargs)
    assert export_int8.quantize_for_export(quantized, target="onnxruntime", **kwargs).model is quantized


def test_jetpack_5_is_named_for_what_it_can_do(monkeypatch, trt_artifact):
    """The backend said "JetPack >= 5.1" though edgevid needs JetPack 6; the JetPack 5 note lacked trtexec's
    path, --int8 for a Q/DQ export, and that the states are the user's code's to carry there."""
    from edgevid.devices.profiles import get_profile
    from edgevid.runtime import load

    install(monkeypatch, "8.4.3.1")
    with pytest.raises(EdgevidError) as err:
        load(trt_artifact, "tensorrt")
    assert "JetPack 6" in str(err.value) and "JetPack >= 5.1" not in str(err.value)
    for name in ("xavier-nx", "agx-xavier"):
        reason = get_profile(name).unsupported_reason
        for text in ("/usr/src/tensorrt/bin/trtexec --onnx=model.onnx", "--int8", "carries its states"):
            assert text in reason, (name, text)


# ---------------------------------------------------------------- the GPU check script


def test_the_gpu_check_fails_at_once_and_says_why_without_a_gpu(tmp_path):
    """benchmarks/gpu_check.sh is the whole GPU verification; where it cannot run it must fail loudly, not pass."""
    import subprocess

    from edgevid.export.tensorrt import engine_available

    if engine_available()[0]:
        pytest.skip("a GPU with TensorRT is here: run benchmarks/gpu_check.sh itself")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1] == \
        "gpu_check: FAILED: no usable NVIDIA GPU with TensorRT here (the line above says why)"
    assert "2/3" not in proc.stderr  # nothing after the failed step ran
