"""``what_ran``'s ``model_file``: the file each backend really loaded, not the artifact's target.

An FP32 export for OpenVINO holds ``model.onnx`` and ``model.xml``/``.bin``; the report's ONNX
Runtime and OpenVINO rows share it, so naming the artifact folder alone says nothing about
which file ran. TensorRT engines may come from the engine cache, outside the artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.tensorrt_fake import install  # tests/ is on sys.path (pytest's rootdir conftest)
from probe import edgevid


@pytest.mark.parametrize("backend, options, expected", [
    ("onnxruntime", {}, "model.onnx"),
    ("openvino", {}, "model.xml"),
    ("openvino", {"source": "onnx"}, "model.onnx"),  # OpenVINO told to read the ONNX of the same artifact
])
def test_model_file_is_the_file_the_backend_loaded(runtime_stream_artifact, backend, options, expected):
    from edgevid import runtime
    from edgevid.report.bench import what_ran

    assert runtime.open_artifact(runtime_stream_artifact).manifest.target == "openvino"
    with runtime.load(runtime_stream_artifact, backend, **options) as runner:
        ran = what_ran(runner)
    assert ran["model_file"] == expected and (runtime_stream_artifact / expected).is_file()


def test_bench_json_of_an_openvino_export_on_onnxruntime_names_model_onnx(runtime_stream_artifact, tmp_path):
    """The real command: the FP32 OpenVINO-target artifact benchmarked on ONNX Runtime."""
    proc = edgevid(["bench", runtime_stream_artifact, "--backend", "onnxruntime", "--warmup", "0",
                    "--iterations", "2", "--json", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ran = json.loads(proc.stdout)["what_ran"]
    assert ran["backend"] == "onnxruntime" and ran["model_file"] == "model.onnx"


@pytest.mark.usefixtures("own_engine_cache")
def test_a_tensorrt_engine_from_the_cache_is_named_by_its_path(trt_artifact, monkeypatch):
    """Built on first load (the fake TensorRT), then read from the cache: the engine's own path both times."""
    from edgevid.report.bench import what_ran
    from edgevid.runtime import load

    install(monkeypatch, "10.3.0.30")
    with load(trt_artifact, "tensorrt") as runner:
        source, first = runner.engine_source, what_ran(runner)["model_file"]
    engine = Path(first)
    assert source == "built" and engine.is_absolute() and engine.is_file()
    assert not engine.is_relative_to(trt_artifact.absolute())
    with load(trt_artifact, "tensorrt") as runner:
        assert runner.engine_source == "cache" and what_ran(runner)["model_file"] == first
