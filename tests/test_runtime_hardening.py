"""Hardening of the runtime and `edgevid run` (issue 10): misuse, corrupt and odd inputs, noise, outputs.

Real artifacts (conftest fixtures), real video files written and damaged here, real
subprocesses where a crash, a traceback or a library's console message would show.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevid.data.video_io import VideoDecodeError, count_frames, read_frames
from edgevid.errors import EdgevidError
from edgevid.manifest import sha256_file
from edgevid.runtime import ClipSession, StreamSession, VideoSourceError, load, open_source
from edgevid.runtime.preprocess import resize_crop
from edgevid.runtime.video import ImageFolderSource

REPO = Path(__file__).resolve().parents[1]


def _edgevid(*argv: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevid.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, stdin=subprocess.DEVNULL)


def _frames(n: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[np.ndarray]:
    w, h = size
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        f = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(f, (t % w, 8), (t % w + 12, 30), (255, 255, 255), -1)
        out.append(f)
    return out


def _write(path: Path, frames: list[np.ndarray], fourcc: str) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def mjpg_with_bad_frames(path: Path, n: int, bad: list[int]) -> Path:
    """An n-frame MJPG .avi whose frames ``bad`` have their JPEG header zeroed (undecodable)."""
    _write(path, _frames(n), "MJPG")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == n
    for k in bad:
        data[starts[k] : starts[k] + 400] = bytes(400)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def stream_runner(runtime_stream_artifact):
    with load(runtime_stream_artifact, "onnxruntime") as runner:
        yield runner


@pytest.fixture(scope="module")
def clip_runner(runtime_clip_artifact):
    with load(runtime_clip_artifact, "onnxruntime") as runner:
        yield runner


# -- runtime API misuse -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stream", "clip"])
def test_session_misuse_is_a_clear_error(kind, stream_runner, clip_runner):
    session = StreamSession(stream_runner) if kind == "stream" else ClipSession(clip_runner)
    good = _frames(1)[0]
    bad = {
        "empty frame": np.zeros((0, 0, 3), np.uint8),
        "numpy array": good.tolist(),
        "uint8": good.astype(np.float32),
    }
    for message, frame in bad.items():
        with pytest.raises(EdgevidError, match=message):
            session.push(frame)
    with pytest.raises(EdgevidError, match="numpy array"):
        session.push_input([0.0] * 10)
    with pytest.raises(EdgevidError, match="float pixels"):
        session.push_input(np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(EdgevidError, match=r"shape \(3, 64, 64\)"):
        session.push_input(np.zeros((64, 64, 3), np.float32))
    session.push(good)  # the refused frames did not break it
    session.close()
    for call in (lambda: session.push(good), lambda: session.push_input(np.zeros((3, 64, 64), np.float32)),
                 session.reset):
        with pytest.raises(EdgevidError, match="session is closed"):
            call()


def test_nan_input_is_refused_and_the_stream_stays_clean(stream_runner):
    frames = _frames(1)
    reference = StreamSession(stream_runner, every=1).push(frames[0])
    session = StreamSession(stream_runner, every=1)
    nan = np.full((3, 64, 64), np.nan, np.float32)
    with pytest.raises(EdgevidError, match="non-finite"):
        session.push_input(nan)
    with pytest.raises(EdgevidError, match="non-finite"):
        session.push_input(np.where(np.eye(64, dtype=bool), np.inf, 0.0).astype(np.float32)[None].repeat(3, 0))
    np.testing.assert_allclose(session.push(frames[0]).logits, reference.logits, atol=1e-6)


def test_non_finite_logits_reset_the_stream(stream_runner):
    frames = _frames(6)
    fresh = np.stack([p.logits for p in map(StreamSession(stream_runner, every=1).push, frames)])
    session = StreamSession(stream_runner, every=1)
    for f in frames[:3]:
        session.push(f)
    # Past push_input's own check (as a model overflow would be): NaN reaches the backend.
    with pytest.raises(EdgevidError, match="session was reset"):
        session._consume(np.full((3, 64, 64), np.nan, np.float32), 3, 0.0)
    again = np.stack([p.logits for p in map(session.push, frames)])
    assert np.isfinite(again).all()
    np.testing.assert_allclose(again, fresh, atol=1e-5)  # states were reset, not poisoned


def test_warmup_predictions_are_marked(stream_runner):
    session = StreamSession(stream_runner, every=1)
    flags = [session.push(f).warmup for f in _frames(10)]
    t = stream_runner.manifest.sampling.frames
    assert flags == [True] * (t - 1) + [False] * (10 - t + 1)
    assert session.last.to_dict()["warmup"] is False


# -- frames: sizes, types --------------------------------------------------------------------


def _plain_resize_crop(frame: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """The reference: resize the whole frame, then centre-crop (what training always did)."""
    h, w = frame.shape[:2]
    scale = resize / min(h, w)
    nw, nh = max(crop, round(w * scale)), max(crop, round(h * scale))
    out = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return out[(nh - crop) // 2 : (nh - crop) // 2 + crop, (nw - crop) // 2 : (nw - crop) // 2 + crop]


def test_a_long_thin_frame_is_not_upscaled_whole():
    strip = np.random.default_rng(0).integers(0, 256, (1, 20000, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        out = resize_crop(strip, 73, 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (64, 64, 3)
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # the whole upscale needs 320 MiB


# The next two are equivalence checks of the crop-first change (they pass before it too):
# training and deployment must keep seeing the same pixels.
@pytest.mark.parametrize("shape", [(84, 112), (240, 320), (48, 64), (73, 200), (100, 100)])
def test_ordinary_frames_preprocess_exactly_as_before(shape):
    frame = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_crop(frame, 73, 64), _plain_resize_crop(frame, 73, 64))


@pytest.mark.parametrize("shape", [(20, 300), (1, 200), (300, 12), (40, 400)])
def test_cropped_first_frames_match_the_whole_resize(shape):
    rng = np.random.default_rng(2)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), (0, 0), 1.5)
    got, want = resize_crop(frame, 73, 64).astype(int), _plain_resize_crop(frame, 73, 64).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2  # bilinear at the same coordinates, fixed-point rounding aside


def test_absurd_frames_are_refused():
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10_001, 10_001, 3))  # no memory behind it
    with pytest.raises(EdgevidError, match="too large"):
        resize_crop(huge, 73, 64)


def test_float_tiffs_in_an_image_folder(tmp_path, runtime_stream_artifact):
    folder = tmp_path / "frames"
    folder.mkdir()
    base = _frames(1, (80, 60))[0]
    unit = base.astype(np.float32) / 255.0  # 0-1 floats, as most tools write them
    assert cv2.imwrite(str(folder / "f_0.tif"), unit)
    assert cv2.imwrite(str(folder / "f_1.tif"), base.astype(np.float32) * 1.5)  # 0-382: clipped
    assert cv2.imread(str(folder / "f_0.tif"), cv2.IMREAD_UNCHANGED).dtype == np.float32
    frames = list(ImageFolderSource(folder))
    assert all(f.dtype == np.uint8 for f in frames)
    assert np.abs(frames[0].astype(int) - base).max() <= 1
    np.testing.assert_array_equal(frames[1], np.clip(np.rint(base * 1.5), 0, 255).astype(np.uint8))
    proc = _edgevid("run", runtime_stream_artifact, "--video", folder)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "2 frames" in proc.stderr


def test_negative_camera_index_is_refused_not_a_crash():
    # In a subprocess: OpenCV segfaults on a negative index, which would take pytest down.
    code = ("from edgevid.runtime import open_source\n"
            "try:\n    open_source(-1)\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("VideoSourceError camera index must be between 0 and")


# -- corrupt video files ----------------------------------------------------------------------


def test_a_corrupt_frame_mid_video_is_skipped_and_counted(tmp_path):
    video = mjpg_with_bad_frames(tmp_path / "v.avi", 100, [30])
    with open_source(video) as source:
        frames = list(source)
        assert len(frames) == 99 and source.skipped == 1
    assert count_frames(video) == 99
    assert read_frames(video).shape[0] == 99
    np.testing.assert_array_equal(read_frames(video, [30])[0], frames[30])


def test_a_zeroed_chunk_in_an_mp4_is_skipped(tmp_path):
    video = _write(tmp_path / "v.mp4", _frames(100), "mp4v")
    data = bytearray(video.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 4000] = bytes(4000)
    video.write_bytes(bytes(data))
    with open_source(video) as source:
        n = sum(1 for _ in source)
        assert n + source.skipped == 100 and 1 <= source.skipped <= 10


@pytest.mark.parametrize("bad, message", [
    (list(range(30, 45)), "cannot be decoded from frame 30 of 100"),  # 15 in a row
    (list(range(10, 100, 6)), "15 of its 100 frames cannot be decoded"),  # 15% spread out
])
def test_too_many_bad_frames_fail(tmp_path, bad, message):
    video = mjpg_with_bad_frames(tmp_path / "v.avi", 100, bad)
    with pytest.raises(VideoSourceError, match=message), open_source(video) as source:
        list(source)
    with pytest.raises(VideoDecodeError, match=message):
        count_frames(video)
    with pytest.raises(VideoDecodeError, match=message):
        read_frames(video)


def test_a_truncated_video_is_not_a_short_one(tmp_path):
    video = mjpg_with_bad_frames(tmp_path / "v.avi", 100, [])
    data = video.read_bytes()
    cut = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"][60]
    video.write_bytes(data[:cut])
    with pytest.raises(VideoSourceError, match="from frame 60 of 100"), open_source(video) as source:
        list(source)


def test_run_reports_skipped_frames_without_ffmpeg_noise(tmp_path, runtime_stream_artifact):
    video = mjpg_with_bad_frames(tmp_path / "v.avi", 40, [12, 25])
    proc = _edgevid("run", runtime_stream_artifact, "--video", video, "--every", "1")
    assert proc.returncode == 0, proc.stderr
    assert "38 frames, 38 predictions" in proc.stderr
    assert "2 undecodable frames skipped" in proc.stderr
    assert "2 undecodable frames skipped" in proc.stdout.splitlines()[-1]
    assert "[mjpeg" not in proc.stderr and "WARN" not in proc.stderr, proc.stderr


# -- `edgevid run` output ---------------------------------------------------------------------


def test_run_text_ends_with_a_verdict_and_marks_warmup(runtime_stream_artifact, runtime_video):
    proc = _edgevid("run", runtime_stream_artifact, "--video", runtime_video, "--every", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    t = 8  # the stream fixture's sampling.frames
    assert lines[0].startswith("frame      0  ") and lines[0].endswith("[warm-up]")
    last = lines[-1]
    assert last.startswith("result: ") and last.endswith(f"(24 frames, 24 predictions, {t - 1} in warm-up)"), last
    assert not any(line.startswith("result:") for line in lines[:-1])


def test_run_quiet_and_json_result(runtime_stream_artifact, runtime_video, tmp_path):
    quiet = _edgevid("run", runtime_stream_artifact, "--video", runtime_video, "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert len(quiet.stdout.splitlines()) == 1 and quiet.stdout.startswith("result: ")
    proc = _edgevid("run", runtime_stream_artifact, "--video", runtime_video, "--json", "--every", "1",
                    "-o", tmp_path / "a.mp4")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    *preds, final = records
    assert [p["warmup"] for p in preds] == [True] * 7 + [False] * 17
    assert final == {"result": {"label": preds[-1]["label"], "score": preds[-1]["score"], "frames": 24,
                                "predictions": 24, "warmup_predictions": 7, "skipped_frames": 0}}
    assert (tmp_path / "a.mp4").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temporary file left behind


def test_run_writes_the_video_only_when_it_is_readable(tmp_path, runtime_stream_artifact, runtime_video):
    small = tmp_path / "full"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", f"edgevid-{uuid.uuid4().hex[:8]}",
                              str(small)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        (small / "keep.txt").write_text("mine")
        proc = _edgevid("run", runtime_stream_artifact, "--video", runtime_video, "-o", small / "out.mp4")
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1 and "writing the annotated video" in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and "WARN" not in proc.stderr, proc.stderr
        assert sorted(p.name for p in small.iterdir()) == ["keep.txt"]  # nothing half-written
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_run_keeps_an_existing_output_when_the_run_fails(tmp_path, runtime_stream_artifact):
    video = mjpg_with_bad_frames(tmp_path / "v.avi", 40, list(range(20, 40)))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    proc = _edgevid("run", runtime_stream_artifact, "--video", video, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "v.avi"]


# -- noise ------------------------------------------------------------------------------------


def test_ort_prints_no_removing_initializer_warnings(tmp_path, runtime_stream_artifact, runtime_video):
    import onnx
    from onnx import numpy_helper

    artifact = tmp_path / "artifact"
    shutil.copytree(runtime_stream_artifact, artifact)
    model = onnx.load(artifact / "model.onnx")
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused_const"))
    onnx.save(model, artifact / "model.onnx")
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["provenance"]["onnx_sha256"] = sha256_file(artifact / "model.onnx")
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    proc = _edgevid("run", artifact, "--video", runtime_video, "--backend", "onnxruntime", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Removing initializer" not in proc.stderr, proc.stderr


# -- the runtime benchmark --------------------------------------------------------------------


def test_runtime_benchmark_runs_with_tiny_settings(tmp_path, runtime_stream_artifact, runtime_clip_artifact):
    # The exported artifacts the benchmark would make with --tiny, from the fixtures (an
    # export takes a minute); the benchmark finds them in --work and reuses them.
    work = tmp_path / "work"
    shutil.copytree(runtime_stream_artifact, work / "stream-64-w0.5")
    shutil.copytree(runtime_clip_artifact, work / "clip-64-w0.5-t4")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_runtime.py"), "--tiny", "--work",
                           str(work), "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratios (median times)" in proc.stdout
    assert "session push / raw step" in proc.stdout
    ratios = json.loads((tmp_path / "b.json").read_text())["ratios"]
    assert all(np.isfinite(v) and v > 0 for v in ratios.values()), ratios
