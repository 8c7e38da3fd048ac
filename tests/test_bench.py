"""`edgevid bench`: latency of one artifact, JSON against its schema, strided streams, OpenVINO precision."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def stride2_artifact(runtime_stream_artifact, tmp_path_factory):
    """The small stream artifact with ``sampling.stride`` 2, as the shipped TSM has.

    The stride is not in the graph: it only tells the runtime to step every 2nd frame, so
    the fixture's graph with its manifest saying 2 is exactly a stride-2 artifact.
    """
    out = tmp_path_factory.mktemp("bench") / "stream-stride2"
    shutil.copytree(runtime_stream_artifact, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["sampling"]["stride"] = 2
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _bench_json(*argv: str) -> dict:
    """Run `edgevid bench --json` in a fresh interpreter; also checks that torch was never imported."""
    code = ("import json, sys; from edgevid.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'bench imported torch'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "bench", *argv, "--json"], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bench_json_on_a_stride2_stream_artifact(stride2_artifact, backend):
    from edgevid import runtime
    from edgevid.report.bench import example_frame
    from edgevid.report.schema import validate

    # A session skips every other frame on this artifact (what timing push_input would trip on).
    with runtime.load(stride2_artifact, "onnxruntime") as runner:
        session = runtime.open_session(runner)
        frame = example_frame(runner.manifest)
        assert session.push_input(frame) is not None and session.push_input(frame) is None
        session.close()

    result = _bench_json(str(stride2_artifact), "--backend", backend, "--warmup", "2", "--iterations", "7")
    validate(result, "bench")
    assert result["backend"] == backend and result["mode"] == "stream"
    assert result["sampling"] == {"frames": 8, "stride": 2}
    assert result["unit"] == "stream step (1 frame)" and result["input_shape"] == [1, 3, 64, 64]
    lat = result["latency_ms"]
    assert result["iterations"] == lat["count"] == 7
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # A step consumes one sampled frame = 2 video frames.
    assert result["throughput"]["video_fps"] == pytest.approx(2 * result["throughput"]["calls_per_s"], rel=1e-3)
    assert result["memory_mb"]["peak_rss"] > 0 and result["file_mb"] > 0
    ran = result["what_ran"]
    if backend == "onnxruntime":
        assert ran["providers"] == ["CPUExecutionProvider"]
    else:
        assert ran["inference_precision"] == "f32"  # fp32 artifact: compiled strict f32 by default
        assert ran["compiled"]["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bench_layers_profiles_the_call_per_layer_type(runtime_stream_artifact, backend):
    from edgevid.report.schema import validate

    result = _bench_json(str(runtime_stream_artifact), "--backend", backend, "--warmup", "1", "--iterations", "3",
                         "--layers")
    validate(result, "bench")
    rows = result["layers"]["layers"]
    assert result["layers"]["calls"] == 50 and rows and sum(r["share"] for r in rows) == pytest.approx(1, abs=0.01)
    assert [r["us_per_call"] for r in rows] == sorted((r["us_per_call"] for r in rows), reverse=True)
    names = [r["layer"] for r in rows]
    if backend == "onnxruntime":  # convolutions split by kind, named by their weights
        assert {"Conv (1x1)", "Conv (depthwise)"} <= set(names), names
    else:  # the kernel each layer ran with, its precision included (strict f32 for an fp32 artifact)
        assert any(n.startswith("Convolution [") and n.endswith("_f32]") for n in names), names


def test_bench_layers_refuses_a_backend_without_a_profiler(runtime_stream_artifact, capsys):
    from edgevid.cli import main

    assert main(["bench", str(runtime_stream_artifact), "--backend", "tensorrt", "--layers"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layers reads ONNX Runtime's or OpenVINO's profiler" in err[0]


def test_bench_openvino_precision_hint_is_read_back(runtime_stream_artifact):
    """--precision-hint default: the plugin's own choice (bf16 on CPUs with AMX/avx512_bf16)."""
    import openvino as ov

    plugin_default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    result = _bench_json(str(runtime_stream_artifact), "--backend", "ov", "--precision-hint", "default",
                         "--threads", "1", "--warmup", "0", "--iterations", "3")
    assert result["what_ran"]["inference_precision"] == plugin_default
    assert "INFERENCE_PRECISION_HINT" not in result["what_ran"]["requested"]
    assert result["what_ran"]["threads"] == "1"


def test_bench_clip_artifact_for_seconds(runtime_clip_artifact):
    from edgevid.report.schema import validate

    result = _bench_json(str(runtime_clip_artifact), "--seconds", "0.3", "--warmup", "1")
    validate(result, "bench")
    assert result["unit"] == "clip inference (4 frames)" and result["input_shape"] == [1, 4, 3, 64, 64]
    assert result["iterations"] >= 1 and result["seconds_requested"] == 0.3


def test_bench_prints_a_readable_summary(stride2_artifact):
    proc = subprocess.run([sys.executable, "-m", "edgevid.cli", "bench", str(stride2_artifact), "--iterations", "5",
                           "--warmup", "1", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "stream step (1 frame)" in proc.stdout and "p99" in proc.stdout and "stride 2" in proc.stdout
