"""The TensorRT backend against fake ``tensorrt`` / ``cuda.bindings.runtime`` modules (no GPU here).

The fakes (``tests/fakes/tensorrt_fake.py``) enforce the rules of TensorRT 8.5, 8.6, 10.3 and
11 and run the engine's ONNX with ONNX Runtime on "device" memory that is host memory, so
these tests check the builder flags per version, optimization profiles per context, the
engine cache (keys, read-only artifacts, shipped engines of another TensorRT), the check
of a new engine against ONNX Runtime, DLA, the timing cache, state double-buffering and
resets, two interleaved streams, and the errors a user meets. Real-GPU tests are marked
``gpu`` elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes.tensorrt_fake import Props, install  # tests/ is on sys.path (pytest's rootdir conftest)

from edgevid.errors import EdgevidError
from edgevid.runtime.backends import tensorrt_engine as te

VERSIONS = ["8.5.2.2", "8.6.2.3", "10.3.0.30", "11.1.0.4"]


pytestmark = pytest.mark.usefixtures("own_engine_cache")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(artifact: Path, edit) -> Path:
    path = artifact / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return artifact


def _frames(manifest, count=6, seed=1):
    from edgevid.runtime.preprocess import preprocess_frame

    rng = np.random.default_rng(seed)
    return [preprocess_frame(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8), manifest.preprocess)
            for _ in range(count)]


def _ort_steps(artifact: Path, frames) -> np.ndarray:
    from edgevid.runtime import load

    with load(artifact, "onnxruntime") as runner, runner.open_stream() as stream:
        return np.concatenate([stream.step(f[None]) for f in frames])


def _int8_artifact(src: Path, dst: Path) -> Path:
    """``src`` with a Q/DQ pair on its frame input and precision int8: what a Q/DQ network looks like to TensorRT."""
    import onnx
    from onnx import helper, numpy_helper

    from edgevid.manifest import sha256_file

    art = _copy(src, dst)
    proto = onnx.load(art / "model.onnx")
    graph = proto.graph
    frame = graph.input[0].name
    graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), "qdq_scale"),
                              numpy_helper.from_array(np.array(0, np.int8), "qdq_zero")])
    for node in graph.node:
        node.input[:] = ["frame_dq" if i == frame else i for i in node.input]
    graph.node.insert(0, helper.make_node("DequantizeLinear", ["frame_q", "qdq_scale", "qdq_zero"], ["frame_dq"]))
    graph.node.insert(0, helper.make_node("QuantizeLinear", [frame, "qdq_scale", "qdq_zero"], ["frame_q"]))
    onnx.save(proto, art / "model.onnx")
    return _edit(art, lambda d: (d.update(precision="int8"),
                                 d["provenance"].update(onnx_sha256=sha256_file(art / "model.onnx"))))


# ---------------------------------------------------------------- flags per TensorRT version (pure)


@pytest.mark.parametrize(("version", "opts", "network", "flags"), [
    ((8, 5, 2), te.BuildOptions("fp32"), ("EXPLICIT_BATCH",), ()),
    ((8, 6, 2), te.BuildOptions("int8"), ("EXPLICIT_BATCH",), ("INT8",)),  # bug 1: 8.x needs INT8 for Q/DQ
    ((8, 6, 2), te.BuildOptions("fp32", fp16_kernels=True), ("EXPLICIT_BATCH",), ("FP16",)),
    ((8, 5, 2), te.BuildOptions("int8", fp16_kernels=True), ("EXPLICIT_BATCH",), ("FP16", "INT8")),
    ((10, 3, 0), te.BuildOptions("fp32"), ("STRONGLY_TYPED",), ()),
    ((10, 3, 0), te.BuildOptions("int8"), ("STRONGLY_TYPED",), ()),  # strongly typed keeps Q/DQ, refuses INT8
    ((10, 3, 0), te.BuildOptions("fp32", fp16_kernels=True), (), ("FP16",)),
    ((10, 3, 0), te.BuildOptions("int8", dla_core=0), (), ("FP16", "INT8", "GPU_FALLBACK")),
    ((11, 1, 0), te.BuildOptions("int8", fp16_kernels=True), ("STRONGLY_TYPED",), ()),
])
def test_flags_per_tensorrt_version(version, opts, network, flags):
    plan = te.plan_flags(version, opts)
    assert plan.network == network and plan.set == flags
    assert ("TF32" in plan.clear) == ("FP16" not in flags and version[0] < 11)


def test_tensorrt_11_says_fp16_needs_an_fp16_export_and_refuses_dla():
    plan = te.plan_flags((11, 1, 0), te.BuildOptions("fp32", fp16_kernels=True))
    assert "export with --precision fp16" in plan.notes[0]
    with pytest.raises(EdgevidError, match="DLA needs the TensorRT 10.x of JetPack 6"):
        te.plan_flags((11, 1, 0), te.BuildOptions("fp32", dla_core=0))


# ---------------------------------------------------------------- builds through the fake, per version


@pytest.mark.parametrize("version", VERSIONS)
def test_int8_engine_builds_and_matches_onnxruntime_on_every_version(version, trt_artifact, tmp_path, monkeypatch):
    """Bug 1: TensorRT 8.5/8.6 refuse a Q/DQ network without BuilderFlag.INT8."""
    from edgevid.runtime import load

    art = _int8_artifact(trt_artifact, tmp_path / "int8")
    rec = install(monkeypatch, version)
    frames = _frames(load(art, "onnxruntime").manifest)
    with load(art, "tensorrt") as runner, runner.open_stream() as stream:
        got = np.concatenate([stream.step(f[None]) for f in frames])
    build = rec.names("build")[0]
    assert ("INT8" in build["flags"]) == (version[0] == "8")
    assert rec.builds == 1 and runner.engine_source == "built"
    np.testing.assert_allclose(got, _ort_steps(art, frames), rtol=0, atol=1e-6)


def test_jetson_artifacts_build_fp16_kernels_by_default(trt_artifact, tmp_path, monkeypatch):
    """An fp32 export for a Jetson profile gets fp16 kernels (weakly typed on 10.x), checked at the fp16 tolerance."""
    from edgevid.runtime import load

    art = _edit(_copy(trt_artifact, tmp_path / "jetson"), lambda d: d.update(device="orin-nano"))
    for version, network_flag in (("8.6.2.3", 1 << 0), ("10.3.0.30", 0)):
        rec = install(monkeypatch, version)
        with load(art, "tensorrt", rebuild=True) as runner:
            assert runner.build_options.fp16_kernels
        build = rec.names("build")[0]
        assert "FP16" in build["flags"] and build["network_flags"] == network_flag
    rec = install(monkeypatch, "10.3.0.30")
    with load(art, "tensorrt", rebuild=True, fp16=False):  # the option overrides the profile
        pass
    assert rec.names("build")[0]["flags"] == [] and rec.names("build")[0]["network_flags"] == 1 << 1


def test_dtypes_come_from_our_own_map_not_nptype(trt_artifact, monkeypatch):
    """Bug 3: TensorRT 8.5.2's trt.nptype uses np.bool, gone in numpy 1.24-1.26 (JetPack 5)."""
    from edgevid.runtime import load

    install(monkeypatch, "8.5.2.2")
    with load(trt_artifact, "tensorrt") as runner:
        assert {s.dtype for s in runner.input_specs()} == {"float32"}
    assert te.numpy_dtype(type("T", (), {"name": "HALF"})(), "x") == "float16"
    with pytest.raises(EdgevidError, match="tensor 'x' has TensorRT type BF16"):
        te.numpy_dtype(type("T", (), {"name": "BF16"})(), "x")


# ---------------------------------------------------------------- contexts and profiles


@pytest.mark.parametrize("version", VERSIONS[:3])
def test_two_streams_on_a_dynamic_engine_each_get_a_profile(version, runtime_stream_artifact, monkeypatch):
    """Bug 2: on 8.x a second context of a dynamic-shape engine needs its own optimization profile.

    Two streams on an ONNX Runtime export (dynamic batch), stepped interleaved, each give the
    outputs of an ONNX Runtime stream on its own frames.
    """
    from edgevid.runtime import load

    rec = install(monkeypatch, version)
    manifest = load(runtime_stream_artifact, "onnxruntime").manifest
    a, b = _frames(manifest, 5, seed=2), _frames(manifest, 5, seed=3)
    with load(runtime_stream_artifact, "tensorrt") as runner:
        s1, s2 = runner.open_stream(), runner.open_stream()
        out1, out2 = [], []
        for fa, fb in zip(a, b):
            out1.append(s1.step(fa[None]))
            out2.append(s2.step(fb[None]))
        s1.close()
        s3 = runner.open_stream()  # a closed stream's profile is free again
        s3.step(a[0][None])
        s2.close()
        s3.close()
    expected_profiles = 1 if version.startswith("10") else te.DEFAULT_PROFILES
    assert rec.names("build")[0]["profiles"] == expected_profiles
    np.testing.assert_allclose(np.concatenate(out1), _ort_steps(runtime_stream_artifact, a), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.concatenate(out2), _ort_steps(runtime_stream_artifact, b), atol=1e-6, rtol=0)


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_many_streams_step_in_one_call_within_the_batch_profile(version, runtime_stream_artifact, monkeypatch):
    """Issue 29: a dynamic-batch engine built with max_batch=N takes N streams in one call (profile 1..N,
    tuned for N); each stream's logits equal its frames stepped alone. Past N is one clear error,
    and so is a batch the profile does not take."""
    from edgevid.runtime import BackendError, MultiStreamSession, load

    rec = install(monkeypatch, version)
    manifest = load(runtime_stream_artifact, "onnxruntime").manifest
    videos = [_frames(manifest, 4, seed=s) for s in (4, 5, 6)]
    def executes():
        return sum(c[0] == "execute" for c in rec.calls)

    with load(runtime_stream_artifact, "tensorrt", max_batch=3) as runner:
        with MultiStreamSession(runner, smooth=1, every=1) as multi:
            for k in range(3):
                multi.add(k)
            before = executes()  # the build's own check against ONNX Runtime ran calls too
            got = [multi.push_inputs({k: v[t] for k, v in enumerate(videos)}) for t in range(4)]
            assert executes() - before == 4  # one call per tick for the three streams
            with pytest.raises(BackendError, match="at most 3 streams in one call"):
                multi.add(3)
        frames = np.stack([v[0] for v in videos] + [videos[0][1]])
        with pytest.raises(BackendError, match=r"outside the engine's optimization profile \(built for batch 1 to 3\)"):
            runner.infer({manifest.inputs[0].name: frames,
                          **{p.input: np.zeros((4, *p.shape[1:]), p.dtype) for p in manifest.states}})
    for k, video in enumerate(videos):
        np.testing.assert_allclose(np.stack([g[k].logits for g in got]), _ort_steps(runtime_stream_artifact, video),
                                   atol=1e-6, rtol=0)


def test_more_streams_than_profiles_is_a_clear_error(runtime_stream_artifact, monkeypatch):
    from edgevid.runtime import BackendError, load

    install(monkeypatch, "8.6.2.3")
    with load(runtime_stream_artifact, "tensorrt", max_streams=2) as runner:
        first, second = runner.open_stream(), runner.open_stream()
        with pytest.raises(BackendError, match="all 2 are in use: close a stream, load with max_streams=N"):
            runner.open_stream()
        first.close()
        runner.open_stream().close()
        second.close()


def test_stream_state_double_buffering_and_reset(trt_artifact, monkeypatch):
    """Stepping, resetting and stepping again equals a fresh ONNX Runtime stream each time."""
    from edgevid.runtime import load

    rec = install(monkeypatch, "10.3.0.30")
    frames = _frames(load(trt_artifact, "onnxruntime").manifest, 7, seed=4)
    want = _ort_steps(trt_artifact, frames)
    with load(trt_artifact, "tensorrt") as runner:
        stream = runner.open_stream()
        first = np.concatenate([stream.step(f[None]) for f in frames])
        stream.reset()
        again = np.concatenate([stream.step(f[None]) for f in frames[:3]])
        stream.close()
    np.testing.assert_allclose(first, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(again, want[:3], atol=1e-6, rtol=0)
    assert not np.allclose(want[1], want[0], atol=1e-4), "the states must matter, or this test sees nothing"
    assert rec.device == {} and rec.host == {}, "every device and pinned buffer is freed on close"


# ---------------------------------------------------------------- the engine cache


def test_a_read_only_artifact_builds_once_and_caches_in_the_user_cache(trt_artifact, tmp_path, monkeypatch):
    """Bug 7: a read-only artifact built the engine twice per load and never cached it."""
    from edgevid.runtime import load

    art = _copy(trt_artifact, tmp_path / "ro")
    for p in [art, *art.iterdir()]:
        p.chmod(stat.S_IRUSR | stat.S_IXUSR | (stat.S_IRUSR if p.is_file() else 0))
    try:
        rec = install(monkeypatch, "10.3.0.30")
        with load(art, "tensorrt") as runner:
            assert runner.engine_source == "built"
            cached = runner.engine_path
        assert rec.builds == 1 and cached.is_file() and cached.is_relative_to(tmp_path / "cache" / "tensorrt")
        with load(art, "tensorrt") as runner:
            assert runner.engine_source == "cache"
        assert rec.builds == 1
        assert sorted(p.name for p in art.iterdir()) == ["manifest.json", "model.onnx"]
    finally:
        for p in [art, *art.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize(("what", "change"), [
    ("tensorrt version", {"version": "10.3.1.2"}),
    ("GPU SM count", {"props": Props(multiProcessorCount=16)}),
    ("compute capability", {"props": Props(major=8, minor=6)}),
    ("CUDA driver", {"driver_version": 12080}),
])
def test_the_cache_key_covers_what_makes_an_engine_valid(what, change, trt_artifact, monkeypatch):
    """All Orin modules report "Orin": the key must tell them apart by more than the name."""
    from edgevid.runtime import load

    rec = install(monkeypatch, "10.3.0.30")
    with load(trt_artifact, "tensorrt"):
        pass
    with load(trt_artifact, "tensorrt"):
        pass
    assert rec.builds == 1
    rec = install(monkeypatch, **{"version": "10.3.0.30", **change})
    with load(trt_artifact, "tensorrt") as runner:
        assert runner.engine_source == "built", what
    assert rec.builds == 1


def test_a_changed_build_option_or_a_damaged_cache_rebuilds(trt_artifact, monkeypatch):
    from edgevid.runtime import load

    rec = install(monkeypatch, "8.6.2.3")
    with load(trt_artifact, "tensorrt") as runner:
        path = runner.engine_path
    meta = json.loads((path.parent / te.META_NAME).read_text())
    assert meta["device"]["gpu"] == "Orin" and meta["check_against_onnxruntime"]["passed"]
    with load(trt_artifact, "tensorrt", fp16=True):
        pass
    assert rec.builds == 2  # another option: another engine
    path.write_bytes(path.read_bytes()[:-3])  # torn write: the sha256 in meta.json no longer matches
    with load(trt_artifact, "tensorrt") as runner:
        assert runner.engine_source == "built"
    assert rec.builds == 3
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_shipped_engine_of_another_tensorrt_is_never_deserialized(trt_artifact, tmp_path, monkeypatch, capsys):
    """An engine exported with TensorRT 8.6 on the device, loaded after an upgrade to 10.3."""
    from edgevid.manifest import sha256_file
    from edgevid.runtime import load

    install(monkeypatch, "8.6.2.3")
    art = _copy(trt_artifact, tmp_path / "shipped")
    from edgevid.export.tensorrt import build_engine_now

    facts = build_engine_now(art / "model.onnx", art / "model.engine", precision="fp32", fp16_kernels=False)
    _edit(art, lambda d: (d["files"].update(engine="model.engine"),
                          d["provenance"].update(engine_sha256=sha256_file(art / "model.engine")),
                          d["build"]["tensorrt"].update(facts)))
    rec = install(monkeypatch, "8.6.2.3")
    with load(art, "tensorrt") as runner:
        assert runner.engine_source == "shipped"
    assert rec.builds == 0 and rec.deserialized == 1
    rec = install(monkeypatch, "10.3.0.30")
    with load(art, "tensorrt") as runner:
        assert runner.engine_source == "built"
    assert rec.deserialized == 1 and rec.builds == 1  # only the new engine was deserialized
    assert "was built by TensorRT 8.6.2.3 on Orin; this is TensorRT 10.3.0.30" in capsys.readouterr().err


def test_a_new_engine_that_disagrees_with_onnxruntime_is_refused_and_not_cached(trt_artifact, monkeypatch):
    from edgevid.runtime import load

    rec = install(monkeypatch, "10.3.0.30")
    rec.corrupt = 1.5
    with pytest.raises(EdgevidError, match="validation failed on tensorrt: output .* differs from ONNX Runtime"):
        load(trt_artifact, "tensorrt")
    assert not list((Path(os.environ["EDGEVID_CACHE"]) / "tensorrt").glob("*/model.engine"))
    assert rec.device == {}, "a refused engine frees what it allocated"


def test_the_timing_cache_persists_between_builds(trt_artifact, monkeypatch):
    from edgevid.runtime import load

    rec = install(monkeypatch, "10.3.0.30")
    with load(trt_artifact, "tensorrt"):
        pass
    with load(trt_artifact, "tensorrt", rebuild=True):
        pass
    blobs = rec.names("create_timing_cache")
    assert blobs[0] == b"" and blobs[1] == b"fake-timing-cache+"


def test_the_first_build_says_what_it_is_doing(trt_artifact, monkeypatch, capsys):
    from edgevid.runtime import load

    install(monkeypatch, "10.3.0.30")
    with load(trt_artifact, "tensorrt"):
        pass
    err = capsys.readouterr().err
    assert "edgevid: building a TensorRT 10.3.0.30 engine from stream-tensorrt/model.onnx for Orin" in err
    with load(trt_artifact, "tensorrt"):
        pass
    assert "building" not in capsys.readouterr().err


# ---------------------------------------------------------------- DLA


def test_dla_builds_with_gpu_fallback_and_names_the_layers_that_fall_back(trt_artifact, monkeypatch):
    from edgevid.runtime import load

    rec = install(monkeypatch, "10.3.0.30", dla_cores=2)
    with pytest.warns(UserWarning, match=r"layers cannot run on DLA core 1 and fall back to the GPU: .*node_cat"):
        with load(trt_artifact, "tensorrt", dla_core=1) as runner:
            assert runner.build_options.dla_core == 1
    build = rec.names("build")[0]
    assert build["dla"] == 1 and build["device"] == 1 and {"FP16", "GPU_FALLBACK"} <= set(build["flags"])
    install(monkeypatch, "10.3.0.30", dla_cores=0)
    with pytest.raises(EdgevidError, match="DLA core 0 does not exist: this device has 0 DLA core"):
        load(trt_artifact, "tensorrt", dla_core=0)


# ---------------------------------------------------------------- errors a user meets


def test_cuda_insufficient_driver_is_named_not_no_gpu(trt_artifact, monkeypatch):
    """Bug 5: cuda-python 13 on JetPack 6's CUDA 12 driver fails with error 35, once shown as "no GPU"."""
    from edgevid.runtime import load

    install(monkeypatch, "10.3.0.30", count_error=35)
    with pytest.raises(EdgevidError) as err:
        load(trt_artifact, "tensorrt")
    assert "cudaErrorInsufficientDriver (35)" in str(err.value) and "cuda-python>=12.2,<13" in str(err.value)
    install(monkeypatch, "10.3.0.30", device_count=0)
    with pytest.raises(EdgevidError, match="no CUDA GPU is visible"):
        load(trt_artifact, "tensorrt")


def test_the_tensorrt_extra_pins_cuda_python_below_13():
    import tomllib

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["tensorrt"]
    assert any(d.replace(" ", "").startswith("cuda-python") and "<13" in d for d in extras), extras


def test_a_builder_that_cannot_start_is_one_line(trt_artifact, monkeypatch):
    from edgevid.runtime import load

    install(monkeypatch, "10.3.0.30", builder_fails=True)
    with pytest.raises(EdgevidError, match=r"TensorRT could not create its builder \(pybind11::init\(\): factory "
                                           r"function returned nullptr\): is the NVIDIA driver loaded"):
        load(trt_artifact, "tensorrt")


def test_on_a_jetson_the_install_advice_is_jetpacks_tensorrt(trt_artifact, monkeypatch):
    from edgevid.devices import detect
    from edgevid.runtime import load

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    monkeypatch.setattr(detect, "is_jetson", lambda root="/": True)
    with pytest.raises(EdgevidError, match="sudo apt install python3-libnvinfer"):
        load(trt_artifact, "tensorrt")
    monkeypatch.setattr(detect, "is_jetson", lambda root="/": False)
    with pytest.raises(EdgevidError, match=r"pip install 'edgevid\[tensorrt\]'"):
        load(trt_artifact, "tensorrt")


def test_bench_on_the_fake_reports_what_ran(trt_artifact, monkeypatch):
    from edgevid.report.bench import bench_artifact
    from edgevid.report.schema import validate

    install(monkeypatch, "8.6.2.3")
    result = bench_artifact(trt_artifact, "tensorrt", iterations=5, warmup=1)
    validate(result, "bench")
    ran = result["what_ran"]
    assert ran["tensorrt"] == "8.6.2.3" and ran["engine"] == "built" and ran["fp16_kernels"] is False
    assert "Orin (sm 8.7, 8 SMs)" == ran["device"]


def test_export_on_a_gpu_ships_an_engine_validated_against_torch(runtime_model, tmp_path, monkeypatch):
    """With TensorRT and a GPU (here: the fakes), export builds the engine, validates it against torch and
    records the TensorRT and GPU it was built by; the runtime then loads that engine, no rebuild."""
    from edgevid.export.api import export_model
    from edgevid.runtime import load

    rec = install(monkeypatch, "8.6.2.3")
    out = tmp_path / "exported"
    manifest = export_model("tsm-mobilenetv2-online", out, checkpoint=runtime_model[1], size=64, num_classes=5,
                            width_mult=0.5, mode="stream", target="tensorrt", frames=4, progress=False,
                            device="orin-nano")
    trt = manifest.build["tensorrt"]
    assert trt["engine"] == "built" and trt["device"]["tensorrt"] == "8.6.2.3" and trt["options"]["fp16_kernels"]
    assert manifest.validation["tensorrt"]["passed"] and manifest.validation["tensorrt"]["tolerance"] == 5e-2
    assert "FP16" in rec.names("build")[0]["flags"] and rec.builds == 1
    with load(out, "tensorrt") as runner:
        assert runner.engine_source == "shipped"
    assert rec.builds == 1
