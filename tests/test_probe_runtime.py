"""Issue 23, the `run` / runtime / report cases of the reliability probe, by their probe ids.

Each case runs the real `edgevid` command (tests/probe.py): exit 2, one line naming the
problem, no traceback, nothing written where it should not be, no process left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from probe import check_case, check_one_line, edgevid, kill_midway

# Runs a command as root without the capabilities that let root ignore file permissions, so a
# mode-000 folder is as unreadable as it is for any user (the suite runs as root in CI).
_NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def _png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` grey pixels (the data is one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# Forks the command from a fresh, small Python: Linux carries the forking process's RSS into
# the child's ru_maxrss across exec, so forking from pytest (hundreds of MiB) would hide the
# command's own peak. Writes the command's peak RSS in KiB to argv[1], exits with its status.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "edgevid.cli", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_with_rusage(argv: list, cwd: Path) -> tuple[subprocess.CompletedProcess, int]:
    """(completed process, the command's peak RSS in MiB)."""
    peak = cwd / ".peak"
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(peak), *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    kib = int(peak.read_text())
    peak.unlink()
    return proc, kib // 1024


@pytest.fixture
def art(runtime_stream_artifact, tmp_path):
    """A private copy of the small stream artifact."""
    dst = tmp_path / "art"
    shutil.copytree(runtime_stream_artifact, dst)
    return dst


def _frames_folder(tmp_path: Path, n: int = 4) -> Path:
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    return folder


# --- the one-line matrix ------------------------------------------------------------------------


def _u12(tmp_path, art, video):
    return ["run", art, "--video", video, "--salient", "1", "--max-frames", "4"], "fewer than one window"


def _u14(tmp_path, art, video):
    return ["run", art, "--camera", "2147483648"], "must be between 0 and 9999"


def _u15(tmp_path, art, video):
    return ["run", art, "--video=\u00b9"], "does not exist"


def _u16(tmp_path, art, video):
    (tmp_path / "3").write_bytes(b"not a video")
    return ["run", art, "--video", "3"], "cannot open video 3"


def _u18(tmp_path, art, video):
    folder = _frames_folder(tmp_path)
    os.mkfifo(folder / "f002x.png")
    return ["run", art, "--video", folder], "is not a regular file"


def _u20(tmp_path, art, video):
    folder = _frames_folder(tmp_path)
    _png(folder / "f001x.png", 100000, 100000)
    return ["run", art, "--video", folder], "header claims more than 100 megapixels"


def _u25(verb: str):
    def case(tmp_path, art, video):
        long = tmp_path / ("x" * 300)
        argv = {
            "run": ["run", long, "--video", video],
            "bench": ["bench", long],
            "export": ["export", "--model", "tsm", "-o", long / "a", "-q"],
            "train": ["train", "--model", "tsm", "--data", tmp_path, "-o", long / "m.pt", "-q"],
            "data": ["data", "synth", "-o", long, "-q"],
            "report": ["report", "--model", "tsm", "-o", long, "-q"],
            "deploy": ["deploy", "--model", "tsm", "--device", "x86-cpu", "-o", long, "-q"],
            "triton": ["triton", "write", art, "-o", long, "-q"],
        }[verb]
        return argv, "file name too long"
    return case


def _u27(tmp_path, art, video):
    (tmp_path / "mine.mp4").write_bytes(b"the user's own file")
    return ["run", art, "--video", video, "-o", tmp_path / "mine.mp4", "--force"], "is not a video edgevid wrote"


def _u27_no_force(tmp_path, art, video):
    (tmp_path / "mine.mp4").write_bytes(b"the user's own file")
    return ["run", art, "--video", video, "-o", tmp_path / "mine.mp4"], "already exists; pass --force"


def _report_over_foreign(tmp_path, art, video):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "report.md").write_text("# my own notes\n")
    return ["report", "--model", "tsm", "--quick", "-o", tmp_path / "notes", "-q"], "is not a file edgevid report wrote"


CASES = {
    "R-report-over-a-foreign-report-md": _report_over_foreign,
    "U12-salient-max-frames": _u12,
    "U14-camera-2147483648": _u14,
    "U15-video-superscript-one": _u15,
    "U16-video-3-is-a-file": _u16,
    "U18-fifo-named-png": _u18,
    "U20-png-header-100000x100000": _u20,
    "U27-out-over-a-foreign-file-force": _u27,
    "U27-out-over-an-existing-file": _u27_no_force,
    **{f"U25-G21-long-component-{verb}": _u25(verb)
       for verb in ("run", "bench", "export", "train", "data", "report", "deploy", "triton")},
}


@pytest.mark.parametrize("name", list(CASES))
def test_probe_case_is_one_clear_line(name, art, runtime_video, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    argv, expected = CASES[name](work, art, runtime_video)
    check_case(argv, expected, work, art)


def test_c13_cache_is_a_file(tmp_path):
    (tmp_path / "cachefile").write_text("x")
    proc = edgevid(["report", "--model", "tsm", "--quick", "--backends", "onnxruntime", "-o", tmp_path / "r", "-q"],
                   cwd=tmp_path, env={"EDGEVID_CACHE": str(tmp_path / "cachefile")})
    check_one_line(proc, "is not a folder; set EDGEVID_CACHE to a writable folder")
    assert not (tmp_path / "r").exists()


def test_c15_read_only_empty_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o555)
    env = {**os.environ, "EDGEVID_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([*_NO_DAC, sys.executable, "-m", "edgevid.cli", "report", "--model", "tsm", "--quick",
                           "--backends", "onnxruntime", "-o", str(tmp_path / "r"), "-q"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, timeout=300)
    check_one_line(proc, "set EDGEVID_CACHE to a writable folder")
    assert not any(cache.iterdir()) and not (tmp_path / "r").exists()


@pytest.mark.parametrize("verb", ["run", "bench"])
def test_u30_unreadable_artifact_folder(verb, art, runtime_video, tmp_path):
    art.chmod(0)
    try:
        argv = ["run", str(art), "--video", str(runtime_video)] if verb == "run" else ["bench", str(art)]
        proc = subprocess.run([*_NO_DAC, sys.executable, "-m", "edgevid.cli", *argv], capture_output=True,
                              text=True, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=120)
    finally:
        art.chmod(0o755)
    check_one_line(proc, "permission denied")


def test_u21_huge_png_is_refused_before_it_is_decoded(art, tmp_path):
    """A 0.4 MB PNG of 20000x20000 pixels: refused from its header, not after 1.2 GB of decoding."""
    import cv2

    folder = _frames_folder(tmp_path)
    cv2.imwrite(str(folder / "f001x.png"), np.zeros((20000, 20000), np.uint8))
    assert (folder / "f001x.png").stat().st_size < 2 * 2**20
    proc, peak_mib = _run_with_rusage(["run", art, "--video", folder], tmp_path)
    check_one_line(proc, "header claims more than 100 megapixels")
    assert peak_mib < 380, f"peak RSS {peak_mib} MiB: the image was decoded before it was refused"


def test_image_pixel_ceiling_is_the_frame_ceiling():
    from edgevid.runtime._opencv import MAX_IMAGE_PIXELS
    from edgevid.runtime.preprocess import MAX_FRAME_PIXELS

    assert MAX_IMAGE_PIXELS == MAX_FRAME_PIXELS
    assert os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS") == str(MAX_IMAGE_PIXELS)


# --- run --out: the write policy, and what a killed run leaves ----------------------------------


def test_u27_force_replaces_only_edgevids_own_video(art, runtime_video, tmp_path):
    from edgevid.runtime.video import written_by_edgevid

    out = tmp_path / "o.mp4"
    for extra in ([], ["--force"]):  # the second run replaces the first one's video
        proc = edgevid(["run", art, "--video", runtime_video, "-q", "-o", out, *extra], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert written_by_edgevid(out)
    import cv2

    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24 and cap.read()[0]  # the mark does not break the file
    cap.release()
    assert not written_by_edgevid(runtime_video)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _long_video(path: Path, frames: int) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_s1_killed_run_out_leaves_no_partial_video(sig, art, tmp_path):
    video = _long_video(tmp_path / "long.mp4", 3000)
    out = tmp_path / "o.mp4"
    rc, stderr = kill_midway(["run", art, "--video", video, "-o", out, "--every", "1"], tmp_path, sig,
                             lambda *_: bool(_partials(tmp_path)), "writing the video")
    assert rc == (143 if sig == signal.SIGTERM else -9)
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert _partials(tmp_path) == [], "SIGTERM left the temp video"
        assert "Traceback" not in stderr
        return
    assert _partials(tmp_path), "SIGKILL cannot clean up: the next run to the same file must"
    done = edgevid(["run", art, "--video", video, "-q", "-o", out, "--max-frames", "8"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _partials(tmp_path) == [] and out.is_file()


# --- a camera runs for months: memory stays flat ------------------------------------------------


def test_latency_stats_percentiles_match_numpy():
    from edgevid.runtime.stats import LatencyStats

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(0.0, 1.0, 5000), [1e-6, 0.0, 5e5]])
    stats = LatencyStats()
    for v in values:
        stats.add(float(v))
    assert len(stats) == len(values)
    assert stats.mean == pytest.approx(values.mean(), rel=1e-9)
    for q in (50, 90, 95, 99):
        assert stats.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.02)
    # Constant memory: more values, same buffer.
    size = stats._hist.nbytes
    for v in values:
        stats.add(float(v))
    assert stats._hist.nbytes == size


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_u23_million_frame_stream_keeps_rss_flat(runtime_stream_artifact, tmp_path):
    """10^6 frames through `edgevid run` (one network step every 8th frame): RSS flat after warm-up."""
    video = tmp_path / "long.avi"
    import cv2

    # MJPG at 32x32: encodes and decodes fast; a few distinct frames, repeated.
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 32))
    tiles = [np.full((32, 32, 3), 16 * i, np.uint8) for i in range(8)]
    for t in range(1_000_000):
        writer.write(tiles[t % 8])
    writer.release()
    proc = subprocess.Popen([sys.executable, "-m", "edgevid.cli", "run", str(runtime_stream_artifact), "--video",
                             str(video), "--every", "8", "-q"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    samples: list[int] = []
    while proc.poll() is None:
        time.sleep(2)
        try:
            samples.append(_rss_kib(proc.pid))
        except (OSError, AssertionError):
            break
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "1000000 frames" in out
    after_warmup = samples[len(samples) // 5:-1]
    assert len(after_warmup) >= 5, samples
    growth = (max(after_warmup) - min(after_warmup)) / 1024
    print(f"RSS after warm-up: {min(after_warmup) / 1024:.1f}-{max(after_warmup) / 1024:.1f} MiB over "
          f"{len(after_warmup)} samples (growth {growth:.2f} MiB)")
    assert growth < 5, f"RSS moved by {growth:.1f} MiB after warm-up: {samples}"


# --- the report's artifact cache ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached_entry(tmp_path_factory):
    """(cache, spec, entry) of one report artifact: the shipped TSM, stream FP32 for ONNX Runtime, 64 px."""
    from edgevid.models import DEFAULT_CHECKPOINT
    from edgevid.report import variants as var

    cache = tmp_path_factory.mktemp("report_cache")
    variant = var.Variant("onnxruntime", "stream", "fp32")
    spec = var.build_spec("tsm-mobilenetv2-online", DEFAULT_CHECKPOINT, variant, size=64, frames=None, calib=None,
                          calib_size=None, ckpt_hash=var.checkpoint_sha256("tsm-mobilenetv2-online", DEFAULT_CHECKPOINT))
    entry, reused, _ = var.ensure_artifact(spec, cache)
    assert not reused
    return cache, spec, entry


def test_c11_corrupt_cache_entry_is_rebuilt(cached_entry):
    from edgevid.report import variants as var
    from edgevid.runtime import open_artifact

    cache, spec, entry = cached_entry
    onnx = entry / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    again, reused, _ = var.ensure_artifact(spec, cache)
    assert again == entry and not reused
    open_artifact(entry).verified_file("onnx")  # intact again
    assert var.ensure_artifact(spec, cache)[1], "an intact entry is reused"


def test_c12_cache_entry_of_another_checkpoint_is_rebuilt(cached_entry):
    import json

    from edgevid.report import variants as var

    cache, spec, entry = cached_entry
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["provenance"]["checkpoint_sha256"] = "0" * 64
    (entry / "manifest.json").write_text(json.dumps(manifest))
    _, reused, _ = var.ensure_artifact(spec, cache)
    assert not reused
    rebuilt = json.loads((entry / "manifest.json").read_text())
    assert rebuilt["provenance"]["checkpoint_sha256"] == spec.checkpoint_sha256


# --- a backend's own failure at step time ----------------------------------------------------------


def _allocating_graph(art: Path) -> None:
    """Rewrite the artifact's ONNX so that every step asks ONNX Runtime for ~13 TB (the allocation
    fails inside the backend at step time, not at load), and re-hash it in the manifest."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from edgevid.manifest import sha256_file

    model = onnx.load(art / "model.onnx")
    graph = model.graph
    frame, logits = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{logits}_raw" if o == logits else o for o in node.output]
    big = helper.make_tensor("x8_big", TensorProto.INT64, [], [1 << 28])
    zero = helper.make_tensor("x8_zero", TensorProto.FLOAT, [], [0.0])
    axes = helper.make_tensor("x8_axes", TensorProto.INT64, [1], [0])
    graph.initializer.extend([big, zero, axes])
    graph.node.extend([
        helper.make_node("Shape", [frame], ["x8_shape"]),
        helper.make_node("ReduceProd", ["x8_shape"], ["x8_count"], keepdims=0),
        helper.make_node("Mul", ["x8_count", "x8_big"], ["x8_n"]),
        helper.make_node("Unsqueeze", ["x8_n", "x8_axes"], ["x8_dims"]),
        helper.make_node("ConstantOfShape", ["x8_dims"], ["x8_huge"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("ReduceSum", ["x8_huge"], ["x8_sum"], keepdims=0),
        helper.make_node("Mul", ["x8_sum", "x8_zero"], ["x8_nothing"]),
        helper.make_node("Add", [f"{logits}_raw", "x8_nothing"], [logits]),
    ])
    onnx.save(model, art / "model.onnx")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["provenance"]["onnx_sha256"] = sha256_file(art / "model.onnx")
    (art / "manifest.json").write_text(json.dumps(manifest))


def test_x8_allocation_failure_at_step_time_is_one_line(art, runtime_video, tmp_path):
    _allocating_graph(art)
    proc = edgevid(["run", art, "--video", runtime_video, "--backend", "onnxruntime"], cwd=tmp_path)
    check_one_line(proc, "onnxruntime failed at frame 0")


# --- report: what a killed run leaves ---------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_r13_killed_report_leaves_no_output_folder_and_no_process(sig, tmp_path):
    from edgevid.data.synth import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, seed=1, videos_per_class=2, frames=16, size=64, val_fraction=0.5, progress=False)
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["report", "--model", "tsm", "--backends", "onnxruntime", "--precisions", "fp32", "--modes", "stream",
            "--size", "64", "--data", data, "--cache", cache, "-o", out, "-q"]
    rc, stderr = kill_midway(argv, tmp_path, sig, lambda *_: bool(list(cache.glob(".*.partial"))),
                             "building the report's artifact")
    assert rc == (143 if sig == signal.SIGTERM else -9)
    assert not out.exists(), "the output folder was created before there was a report to write"
    if sig == signal.SIGTERM:
        assert not list(cache.glob(".*")), "SIGTERM left the staging folder"
        assert "Traceback" not in stderr
