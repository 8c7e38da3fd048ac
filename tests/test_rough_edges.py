"""Issue 30, the rough edges outside the report: what a newcomer hits first.

- INT8 of a model whose activations are constant (random weights behind zero-initialised
  BatchNorm) calibrates with min-max ranges instead of crashing in NNCF's histogram.
- A Jetson TensorRT bundle tried on a PC: without OpenCV, one line with the pip command that
  keeps the bundle's numpy<2; without TensorRT, one line that also says --backend onnxruntime
  (and that works); its requirements and README carry the numpy-1 OpenCV pin as advice only.
- deploy prints the bundle's final path, never its staging folder.
- ordinals in the Triton README ("every 2nd frame").
- zoo list labels the cost columns of entries whose shipped weights build another model.

The bundle is made once by the real `edgevid deploy` (tsm at 64 px, ~20 s); "cannot import"
is made real with a PYTHONPATH folder whose package raises the ImportError a missing one does.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from probe import check_one_line, edgevid

# --- 1. INT8 calibration of (nearly) constant activations ------------------------------------------------------


def _nearly_constant_model(scale: float):
    """x -> x * scale + 1 -> Conv: with scale 1e-7 the conv input spans a few float ulps around 1.0."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array(scale, np.float32), "s"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    nodes = [helper.make_node("Mul", ["x", "s"], ["xs"]), helper.make_node("Add", ["xs", "one"], ["a"]),
             helper.make_node("Conv", ["a", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _calibration():
    from edgevid.compress.quantize import CalibrationSet

    rng = np.random.default_rng(1)
    return CalibrationSet([{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)], 4,
                          "test", "none")


def _quantize(scale: float):
    from edgevid.compress.quantize import quantize_onnx

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = quantize_onnx(_nearly_constant_model(scale), _calibration())
    return result, [str(w.message) for w in caught if w.category.__module__.startswith("edgevid")]


def test_nncf_histogram_fails_on_a_nearly_constant_activation():
    """The case is real: NNCF's own HISTOGRAM estimator, as the recipe asks for it, raises numpy's error."""
    import nncf

    from edgevid.compress.quantize import _nncf_args, recipe_for

    model, calibration = _nearly_constant_model(1e-7), _calibration()
    with pytest.raises(ValueError, match="Too many bins for data range"):
        nncf.quantize(model, nncf.Dataset(calibration.samples),
                      **_nncf_args(nncf, model, calibration, recipe_for("onnxruntime"), ()))


def test_a_nearly_constant_activation_calibrates_with_min_max_ranges():
    import onnxruntime as ort

    result, warned = _quantize(1e-7)
    assert result.info["recipe"]["activation_range"] == "MINMAX"  # the manifest records what was used
    assert len(warned) == 1 and "min-max ranges" in warned[0], warned
    assert result.info["int8_layers"] == 1
    x = _calibration().samples[0]
    run = {name: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
           for name, m in (("fp32", _nearly_constant_model(1e-7)), ("int8", result.model))}
    # The conv output of a constant input is constant per channel: INT8 keeps it within a few quantization steps.
    peak = np.abs(run["fp32"]).max()
    assert np.isfinite(run["int8"]).all() and np.abs(run["int8"] - run["fp32"]).max() < 0.05 * peak


def test_an_ordinary_activation_keeps_the_histogram_ranges():
    result, warned = _quantize(1.0)
    assert result.info["recipe"]["activation_range"] == "HISTOGRAM" and warned == []


@pytest.mark.slow  # ~45-60 s: the stream ONNX export of X3D dominates
def test_x3d_int8_with_random_weights_exports(tmp_path):
    proc = edgevid(["export", "--model", "x3d-xs-online", "--precision", "int8", "--size", "64", "--calib-size", "2",
                    "-o", tmp_path / "x3d"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "min-max ranges" in line]
    assert len(warned) == 1 and "edgevid export: warning: " in warned[0], proc.stderr
    manifest = json.loads((tmp_path / "x3d" / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["build"]["int8"]["recipe"]["activation_range"] == "MINMAX"


# --- 2, 3. a Jetson TensorRT bundle on this PC ----------------------------------------------------------------


def _blocker(folder: Path, module: str) -> Path:
    """A PYTHONPATH folder where ``import <module>`` fails as it does when the package is not installed."""
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{module}'\", "
                                                 f"name={module!r})\n")
    return folder


@pytest.fixture(scope="module")
def orin_bundle(tmp_path_factory):
    """(folder, `edgevid deploy` process, a short mp4): tsm for orin-nano (TensorRT, numpy<2, no pip OpenCV)."""
    import cv2

    where = tmp_path_factory.mktemp("deploy")
    proc = edgevid(["deploy", "--model", "tsm", "--device", "orin-nano", "--size", "64", "-o", "orin"], cwd=where)
    assert proc.returncode == 0, proc.stderr[-3000:]
    video = where / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (96, 72))
    for t in range(20):
        frame = np.full((72, 96, 3), 40, np.uint8)
        frame[20:44, 4 + 3 * t:28 + 3 * t] = 255  # a box moving right
        writer.write(frame)
    writer.release()
    return where / "orin", proc, video


def test_deploy_prints_the_bundles_final_path(orin_bundle):
    bundle, proc, _ = orin_bundle
    out = proc.stdout + proc.stderr
    assert ".partial" not in out and "/artifact" not in out, out
    assert f"  wrote {bundle} in " in proc.stderr, proc.stderr
    assert (bundle / "bundle.json").is_file()


def test_without_opencv_run_is_one_line_with_the_numpy1_opencv(orin_bundle, tmp_path):
    from edgevid.runtime._opencv import OPENCV_FOR_NUMPY1

    bundle, _, video = orin_bundle
    env = {"PYTHONPATH": str(_blocker(tmp_path / "no-cv2", "cv2"))}
    proc = edgevid(["run", bundle, "--video", video, "--backend", "onnxruntime"], cwd=tmp_path, env=env)
    line = check_one_line(proc, f"pip install '{OPENCV_FOR_NUMPY1}'")
    assert "No module named 'cv2'" in line and "JetPack" in line
    assert OPENCV_FOR_NUMPY1.endswith(",<4.12")  # 4.12.0.88 requires numpy>=2 (PyPI metadata)


def test_the_bundle_advises_the_numpy1_opencv_and_installs_none(orin_bundle):
    from edgevid.runtime._opencv import OPENCV_FOR_NUMPY1

    bundle, _, _ = orin_bundle
    text = (bundle / "requirements.txt").read_text()
    requirements = [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]
    assert "numpy>=1.24,<2" in requirements and not [r for r in requirements if "opencv" in r], requirements
    assert f"pip install '{OPENCV_FOR_NUMPY1}'" in text  # as advice, in a comment
    readme = (bundle / "README.md").read_text()
    assert f"pip install '{OPENCV_FOR_NUMPY1}'" in readme
    assert "--backend onnxruntime" in readme


def test_without_tensorrt_run_says_onnxruntime_and_that_works(orin_bundle, tmp_path):
    bundle, _, video = orin_bundle
    env = {"PYTHONPATH": str(_blocker(tmp_path / "no-trt", "tensorrt"))}
    line = check_one_line(edgevid(["run", bundle, "--video", video], cwd=tmp_path, env=env), "--backend onnxruntime")
    assert "tensorrt is not installed" in line and "model.onnx" in line
    proc = edgevid(["run", bundle, "--video", video, "--backend", "onnxruntime", "--json"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1])["result"]["label"]


# --- 4. ordinals ----------------------------------------------------------------------------------------------


def test_ordinals():
    from edgevid.wording import every_nth, ordinal

    got = [ordinal(n) for n in (1, 2, 3, 4, 10, 11, 12, 13, 14, 21, 22, 23, 101, 111, 112, 113, 121)]
    assert got == ["1st", "2nd", "3rd", "4th", "10th", "11th", "12th", "13th", "14th", "21st", "22nd", "23rd",
                   "101st", "111th", "112th", "113th", "121st"]
    assert every_nth(1) == "every frame" and every_nth(2) == "every 2nd frame"


def test_the_triton_readme_says_every_2nd_frame(orin_bundle, tmp_path):
    from edgevid.export.triton import model_readme, write_repository
    from edgevid.manifest import Manifest

    bundle, _, _ = orin_bundle
    artifact = next(p for p in bundle.iterdir() if (p / "manifest.json").is_file())
    manifest = Manifest.load(artifact)
    assert manifest.sampling.stride == 2
    write_repository(artifact, tmp_path / "repo", name="tsm")
    readme = (tmp_path / "repo" / "tsm" / "README.md").read_text()
    assert "Send every 2nd frame, preprocessed" in readme and "2th" not in readme
    for stride, words in ((1, "Send every frame,"), (3, "Send every 3rd frame,"), (11, "Send every 11th frame,"),
                          (21, "Send every 21st frame,")):
        text = model_readme(tmp_path / "repo", "tsm", replace(manifest, sampling=replace(manifest.sampling,
                                                                                        stride=stride)),
                            "portable", "onnxruntime")
        assert words in text, (stride, text)


# --- 5. zoo list --------------------------------------------------------------------------------------------------


def test_zoo_list_shows_the_cost_of_the_model_its_shipped_weights_build(capsys):
    """The tsm row is the model `export --model tsm` builds (112 px, width 0.5, 11 classes), measured at that
    size; the zoo default it replaces (224 px, 400 classes) is in a note with its own cost."""
    from edgevid.cli import main
    from edgevid.models.cost import measure

    assert main(["zoo", "list"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("tsm-mobilenetv2-online (tsm) "))
    shipped = dict(measure("tsm-mobilenetv2-online", input_size=112, frames=8, width_mult=0.5, num_classes=11))
    default = measure("tsm-mobilenetv2-online")
    assert shipped["gmacs_per_clip"] < default["gmacs_per_clip"] / 4  # half the side, half the width
    cells = row.split()
    assert " 112 " in row and f"{shipped['gmacs_per_clip']:.2f}*" in cells, row
    assert "synth (112px, 8 frames, width 0.5, 11 classes)" in row
    note = next(line for line in text.splitlines() if line.startswith("* tsm-mobilenetv2-online:"))
    assert "zoo default, which train builds from scratch, is 224px, 8 frames, 400 classes" in note
    assert f"{default['gmacs_per_clip']:.2f} GMACs/clip" in note
    plain = next(line for line in text.splitlines() if line.startswith("r3d-18 "))
    assert "*" not in plain and " 112 " in plain  # no shipped weights: nothing to label
    assert main(["zoo", "list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    tsm = entries["tsm-mobilenetv2-online"]
    assert tsm["cost_of"] == tsm["shipped_arch"] == {"input_size": 112, "frames": 8, "width_mult": 0.5, "num_classes": 11}
    timing = {"every": shipped.pop("output_every"), "first": shipped.pop("first_output")}
    assert tsm["cost"] == shipped and tsm["stream_output"] == timing == {"every": 1, "first": 1}
    assert entries["r3d-18"]["shipped_arch"] is None


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`edgevid zoo list | head -1`: exit 0, no traceback and no 'Exception ignored' at exit.

    The reading end is closed before the command writes (it measures the zoo first), so every
    write meets a closed pipe, whatever the pipe's buffer size.
    """
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "edgevid.cli", "zoo", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 0, err
    assert err == "", err
