"""The torch-free runtime: backends, sessions, video sources and `edgevid run`.

The artifacts come from the real exporter (fixtures in conftest.py); the reference is the
torch model on the same decoded, identically preprocessed frames.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevid.cli import main as cli_main
from edgevid.errors import EdgevidError
from edgevid.manifest import sha256_file
from edgevid.runtime import ClipSession, StreamSession, load, open_source
from edgevid.runtime.preprocess import preprocess_frame
from edgevid.runtime.session import softmax

BACKENDS = ["onnxruntime", "openvino"]
ATOL = 1e-4  # runtime vs torch, fp32 (measured ~1e-5)


@pytest.fixture(scope="module")
def runners(runtime_stream_artifact):
    """One loaded runner per CPU backend, shared by the tests of this module."""
    loaded = {name: load(runtime_stream_artifact, name) for name in BACKENDS}
    yield loaded
    for runner in loaded.values():
        runner.close()


@pytest.fixture(scope="module")
def video_frames(runtime_video):
    """The decoded frames of the test mp4 (what every consumer sees)."""
    with open_source(runtime_video) as source:
        return list(source)


@pytest.fixture(scope="module")
def reference(runtime_model, video_frames, runners):
    """Torch per-frame logits of the causal clip model over the whole video."""
    import torch

    spec = runners["onnxruntime"].manifest.preprocess
    x = np.stack([preprocess_frame(f, spec) for f in video_frames])
    with torch.no_grad():
        return runtime_model[0].forward_frames(torch.from_numpy(x)[None])[0].numpy()


def run_stream(session, frames) -> np.ndarray:
    return np.stack([session.push(f).logits for f in frames])


# -- correctness ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_matches_torch_per_frame_on_encoded_video(runners, backend, video_frames, reference):
    # The logits must move over the video, or a runtime that drops the states could pass.
    assert reference.std(axis=0).mean() > 0.02
    got = run_stream(StreamSession(runners[backend]), video_frames)
    np.testing.assert_allclose(got, reference, atol=ATOL, rtol=0)


def test_states_carry_information(runners, video_frames, reference):
    # Resetting before every frame (no temporal state) must NOT reproduce the reference.
    session = StreamSession(runners["onnxruntime"])
    stateless = []
    for frame in video_frames:
        session.reset()
        stateless.append(session.push(frame).logits)
    stateless = np.stack(stateless)
    np.testing.assert_allclose(stateless[0], reference[0], atol=ATOL)  # same first frame
    assert np.abs(stateless[1:] - reference[1:]).max() > 1e-2


def test_onnxruntime_and_openvino_variants_agree(runtime_stream_artifact, runners, video_frames):
    ort = run_stream(StreamSession(runners["onnxruntime"]), video_frames)
    variants = {
        "openvino stateful on IR": runners["openvino"],
        "openvino explicit state I/O": load(runtime_stream_artifact, "openvino", stateful=False),
        "openvino on model.onnx": load(runtime_stream_artifact, "ov", source="onnx"),
    }
    for name, runner in variants.items():
        got = run_stream(StreamSession(runner), video_frames)
        np.testing.assert_allclose(got, ort, atol=ATOL, rtol=0, err_msg=name)
        assert (got.argmax(1) == ort.argmax(1)).all(), name
    assert runners["openvino"].compile_config()["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.mark.parametrize("backend", BACKENDS)
def test_interleaved_streams_equal_each_alone(runners, backend, video_frames):
    runner = runners[backend]
    videos = [video_frames, video_frames[::-1], video_frames[7:] + video_frames[:7]]
    alone = [run_stream(StreamSession(runner), v) for v in videos]
    assert np.abs(alone[0] - alone[1]).max() > 1e-2  # different inputs, different outputs
    sessions = [StreamSession(runner) for _ in videos]
    together = [[], [], []]
    for frames in zip(*videos):
        for k, (session, frame) in enumerate(zip(sessions, frames)):
            together[k].append(session.push(frame).logits)
    for k in range(len(videos)):
        np.testing.assert_allclose(np.stack(together[k]), alone[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_reproduces_the_first_run(runners, backend, video_frames):
    session = StreamSession(runners[backend], smooth=3)
    first = [session.push(f) for f in video_frames[:10]]
    session.reset()
    second = [session.push(f) for f in video_frames[:10]]
    assert [p.frame for p in second] == list(range(10))
    np.testing.assert_allclose([p.logits for p in second], [p.logits for p in first], atol=1e-6, rtol=0)
    np.testing.assert_allclose([p.scores for p in second], [p.scores for p in first], atol=1e-6, rtol=0)


def test_every_n_skips_frames_and_smoothing_averages_scores(runners, video_frames):
    runner = runners["onnxruntime"]
    session = StreamSession(runner, every=2, smooth=3, topk=3)
    preds = [session.push(f) for f in video_frames]
    assert [p is None for p in preds] == [i % 2 == 1 for i in range(len(video_frames))]
    kept = [p for p in preds if p is not None]
    assert [p.frame for p in kept] == list(range(0, len(video_frames), 2))
    # every=2 means the model sees only the even frames, as a dense stream of them would
    dense = run_stream(StreamSession(runner), video_frames[::2])
    np.testing.assert_allclose([p.logits for p in kept], dense, atol=1e-6, rtol=0)
    probs = softmax(dense)
    labels = runner.manifest.labels
    for k, pred in enumerate(kept):
        window = probs[max(0, k - 2) : k + 1].mean(axis=0)
        np.testing.assert_allclose(pred.scores, window, atol=1e-6)
        assert [lab for lab, _ in pred.topk] == [labels[i] for i in np.argsort(-window)[:3]]
        assert pred.score == pytest.approx(window.max(), abs=1e-6)


def test_clip_session_ring_buffer_matches_torch(runtime_clip_artifact, runtime_model, video_frames):
    import torch

    with load(runtime_clip_artifact) as runner:
        t = runner.manifest.sampling.frames
        assert t == 4
        session = ClipSession(runner, topk=3)
        preds = [session.push(f) for f in video_frames[:11]]
        assert all(p is None for p in preds[: t - 1]) and all(p is not None for p in preds[t - 1 :])
        x = np.stack([preprocess_frame(f, runner.manifest.preprocess) for f in video_frames[:11]])
        for i in (t - 1, 6, 10):  # the first full clip, and after the ring has wrapped
            with torch.no_grad():
                ref = runtime_model[0](torch.from_numpy(x[i - t + 1 : i + 1])[None])[0].numpy()
            np.testing.assert_allclose(preds[i].logits, ref, atol=ATOL, rtol=0)
            assert preds[i].frame == i
        session.reset()
        assert session.push(video_frames[0]) is None  # the ring is empty again
        with pytest.raises(EdgevidError, match="clip mode"):
            StreamSession(runner)


def test_runner_reports_reflected_io_and_runs_stateless(runners):
    runner = runners["onnxruntime"]
    m = runner.manifest
    assert [s.name for s in runner.input_specs()] == ["frame", *m.state_input_names]
    assert [s.name for s in runner.output_specs()] == ["logits", *m.state_output_names]
    # one explicit call from the initial states equals the first step of a stream
    frame = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    feeds = {"frame": frame, **{s.input: np.full(s.shape, s.init, np.float32) for s in m.states}}
    out = runner.infer(feeds)
    assert set(out) == {"logits", *m.state_output_names}
    with runner.open_stream() as stream:
        np.testing.assert_allclose(stream.step(frame), out["logits"], atol=1e-6)


def test_grayscale_bgra_and_odd_sized_frames_are_converted(runners, video_frames):
    runner = runners["onnxruntime"]
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in video_frames[:6]]
    as_gray = run_stream(StreamSession(runner), gray)
    as_bgr = run_stream(StreamSession(runner), [cv2.cvtColor(g, cv2.COLOR_GRAY2BGR) for g in gray])
    np.testing.assert_allclose(as_gray, as_bgr, atol=1e-6)
    bgra = [cv2.cvtColor(f, cv2.COLOR_BGR2BGRA) for f in video_frames[:6]]
    np.testing.assert_allclose(run_stream(StreamSession(runner), bgra),
                               run_stream(StreamSession(runner), video_frames[:6]), atol=1e-6)
    session = StreamSession(runner)  # sizes change mid-stream, one smaller than the crop
    for frame in (video_frames[0], cv2.resize(video_frames[1], (30, 50)), cv2.resize(video_frames[2], (640, 360))):
        assert np.isfinite(session.push(frame).logits).all()


# -- torch-free ----------------------------------------------------------------------------


def test_runtime_and_cli_never_import_torch(runtime_stream_artifact, runtime_video, tmp_path):
    code = f"""
import sys
import edgevid.runtime as rt
for backend in ("onnxruntime", "openvino"):
    with rt.load({str(runtime_stream_artifact)!r}, backend) as runner:
        session = rt.StreamSession(runner)
        for frame in rt.open_source({str(runtime_video)!r}):
            session.push(frame)
from edgevid.cli import main
rc = main(["run", {str(runtime_stream_artifact)!r}, "--video", {str(runtime_video)!r}, "--json",
           "--out", {str(tmp_path / "o.mp4")!r}])
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "onnx", "nncf"))
print("RESULT", rc, forbidden)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "RESULT 0 []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


# -- the CLI -------------------------------------------------------------------------------


def test_cli_run_json_and_annotated_video(runtime_stream_artifact, runtime_video, video_frames, runners, tmp_path):
    out = tmp_path / "annotated.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "edgevid.cli", "run", str(runtime_stream_artifact), "--video", str(runtime_video),
         "--backend", "ort", "--json", "--every", "2", "--smooth", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    *records, final = [json.loads(line) for line in result.stdout.splitlines()]
    assert final["result"]["predictions"] == len(records)  # the last line is the verdict
    n = len(video_frames)
    assert [r["frame"] for r in records] == list(range(0, n, 2))
    session = StreamSession(runners["onnxruntime"], every=2, smooth=2)
    expected = [p for p in map(session.push, video_frames) if p is not None]
    assert [r["label"] for r in records] == [p.label for p in expected]
    for r in records:
        scores = [t["score"] for t in r["topk"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        assert set(r["latency_ms"]) == {"preprocess", "infer"}
    assert f"{n} frames, {n // 2} predictions" in result.stderr
    for stage in ("fps", "decode", "preprocess", "infer"):
        assert stage in result.stderr
    cap = cv2.VideoCapture(str(out))
    written = []
    while (frame := cap.read()[1]) is not None:
        written.append(frame)
    cap.release()
    assert len(written) == n and written[0].shape == video_frames[0].shape
    # the label box is drawn top-left; the rest of the picture is the video
    h, w = written[0].shape[:2]
    top_left = np.abs(written[5][: h // 5, : w // 3].astype(int) - video_frames[5][: h // 5, : w // 3]).mean()
    rest = np.abs(written[5][h // 2 :].astype(int) - video_frames[5][h // 2 :]).mean()
    assert top_left > 20 > rest


def test_cli_runs_a_folder_of_mixed_frames(runtime_stream_artifact, video_frames, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(video_frames[:9]):
        if i % 3 == 1:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        elif i % 3 == 2:
            frame = cv2.resize(frame, (200, 120))
        cv2.imwrite(str(folder / f"frame_{i}.png"), frame)  # natural order: frame_2 before frame_10
    rc = cli_main(["run", str(runtime_stream_artifact), "--video", str(folder)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith("frame      0  ")  # the running top prediction, one line per change
    assert "9 frames, 9 predictions" in err


# -- bad input: one line, exit 2, no traceback ------------------------------------------------


def cli_error(capsys, *argv: str) -> str:
    """Run `edgevid run` in-process; assert exit 2 with exactly one error line; return it."""
    rc = cli_main(["run", *argv])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgevid run: error:"), err
    return lines[0]


def _edit_manifest(directory: Path, edit) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _rehash(data: dict, directory: Path) -> None:
    data["provenance"]["onnx_sha256"] = sha256_file(directory / "model.onnx")


BROKEN = {
    "not json": (lambda d: (d / "manifest.json").write_text("{ not json"), "not valid JSON"),
    "truncated onnx": (lambda d: (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:5000]),
                       "does not match manifest.json (sha256"),
    "onnx hash missing": (lambda d: _edit_manifest(d, lambda m: m["provenance"].pop("onnx_sha256")),
                          "records no provenance.onnx_sha256"),
    "frame shape": (lambda d: _edit_manifest(d, lambda m: m["inputs"][0]["shape"].__setitem__(-1, 112)),
                    "input 'frame' has shape [N,3,64,64] in the model, [N,3,64,112] in the manifest"),
    "state renamed": (lambda d: _edit_manifest(d, lambda m: m["states"][0].__setitem__("path", "x.y")),
                      "are in the manifest but not in the model"),
    "state dtype": (lambda d: _edit_manifest(d, lambda m: m["states"][-1].__setitem__("dtype", "float16")),
                    "is float32 in the model, float16 in the manifest"),
    "garbage onnx, rehashed": (
        lambda d: ((d / "model.onnx").write_bytes(b"not a model" * 100),
                   _edit_manifest(d, lambda m: _rehash(m, d))),
        "onnxruntime cannot load"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_cli_refuses_a_broken_artifact(case, runtime_stream_artifact, runtime_video, tmp_path, capsys):
    broken = tmp_path / "artifact"
    shutil.copytree(runtime_stream_artifact, broken)
    damage, message = BROKEN[case]
    damage(broken)
    line = cli_error(capsys, str(broken), "--video", str(runtime_video), "--backend", "onnxruntime")
    assert message in line


def test_cli_refuses_a_changed_openvino_ir(runtime_stream_artifact, runtime_video, tmp_path, capsys):
    broken = tmp_path / "artifact"
    shutil.copytree(runtime_stream_artifact, broken)
    (broken / "model.bin").write_bytes((broken / "model.bin").read_bytes()[:-64])
    assert "model.bin does not match manifest.json" in cli_error(capsys, str(broken), "--video", str(runtime_video))


@pytest.mark.parametrize("case", ["missing artifact", "missing video", "corrupt video", "no camera",
                                  "empty folder", "unknown backend"])
def test_cli_bad_sources_and_options(case, runtime_stream_artifact, runtime_video, tmp_path, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00junk" * 500)
    (tmp_path / "empty").mkdir()
    argv, message = {
        "missing artifact": ([str(tmp_path / "nope"), "--video", str(runtime_video)], "does not exist"),
        "missing video": ([str(runtime_stream_artifact), "--video", str(tmp_path / "nope.mp4")], "does not exist"),
        "corrupt video": ([str(runtime_stream_artifact), "--video", str(garbage)], "cannot open video"),
        "no camera": ([str(runtime_stream_artifact), "--camera", "9"], "cannot open camera 9"),
        "empty folder": ([str(runtime_stream_artifact), "--video", str(tmp_path / "empty")], "has no images"),
        "unknown backend": ([str(runtime_stream_artifact), "--video", str(runtime_video), "--backend", "tflite"],
                            "unknown backend 'tflite'"),
    }[case]
    assert message in cli_error(capsys, *argv)


def test_cli_reports_a_stream_that_disappears(runtime_stream_artifact, runtime_video, capsys):
    # A network stream (served over HTTP here) that stops mid-way is a lost camera, not an end.
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(runtime_video.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{runtime_video.name}"
        rc = cli_main(["run", str(runtime_stream_artifact), "--video", url, "--json"])
    finally:
        server.shutdown()
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    assert len(out.splitlines()) == 24  # every frame before the loss was predicted
    assert "24 frames, 24 predictions" in err  # the summary still comes
    assert err.strip().splitlines()[-1] == (
        f"edgevid run: error: {url} stopped delivering frames after 24 frames (disconnected or stream lost)")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_missing_tensorrt_names_the_extra(runtime_stream_artifact, runtime_video, capsys):
    line = cli_error(capsys, str(runtime_stream_artifact), "--video", str(runtime_video), "--backend", "trt")
    assert "pip install 'edgevid[tensorrt]'" in line


# -- TensorRT (GPU only) ---------------------------------------------------------------------


@pytest.mark.gpu
def test_tensorrt_stream_matches_onnxruntime(runtime_stream_artifact, runners, video_frames, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt")
    monkeypatch.setenv("EDGEVID_CACHE", str(tmp_path / "cache"))  # the engine is built and cached here
    artifact = tmp_path / "artifact"
    shutil.copytree(runtime_stream_artifact, artifact)
    ort = run_stream(StreamSession(runners["onnxruntime"]), video_frames)
    with load(artifact, "tensorrt") as runner:
        assert runner.engine_source == "built"
        a, b = StreamSession(runner), StreamSession(runner)
        together = [(a.push(f).logits, b.push(g).logits) for f, g in zip(video_frames, video_frames[::-1])]
        np.testing.assert_allclose([x for x, _ in together], ort, atol=1e-3, rtol=0)
        a.reset()
        np.testing.assert_allclose(run_stream(a, video_frames), ort, atol=1e-3, rtol=0)
    assert list((tmp_path / "cache" / "tensorrt").glob("*/model.engine"))
    with load(artifact, "tensorrt") as runner:  # second load reuses the cached engine
        assert runner.engine_source == "cache"
        np.testing.assert_allclose(run_stream(StreamSession(runner), video_frames[:4]), ort[:4], atol=1e-3)
