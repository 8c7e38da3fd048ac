"""Issue 23, the data-synth, export, bench and manifest cases of the reliability probe, by probe id.

Each matrix case runs the real `edgevid` command (tests/probe.py) on the probe's exact input:
exit 2, one line naming the problem, no traceback, no library lines, nothing written, no
process left. The signal tests kill a running `data synth` and check the process tree and the
staging folder; the full-disk tests check that the message says what ran out.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from probe import (
    TAG_VAR,
    check_one_line,
    edgevid,
    kill_midway,
    kill_tagged,
    leftovers,
    new_tag,
    put,
    snapshot,
)

# --- options: bounds checked at parse time, before anything is allocated or written ---------------

_SYNTH = ["data", "synth", "-q", "-o"]
_EXPORT = ["export", "--model", "tsm", "--no-validate", "-q", "-o"]

# probe id -> (argv, expected substring of the error line). OUT stands for the output the command
# would create, ART for the shared stream artifact.
OUT, ART = "<out>", "<art>"
OPTION_CASES: dict[str, tuple[list[str], str]] = {
    "G1-synth-still-100000000": ([*_SYNTH, OUT, "--still", "100000000:0"], "--still: must be between 0 and 10000"),
    "G2-synth-frames-1e9": ([*_SYNTH, OUT, "--frames", "1e9"], "--frames: must be an integer, got '1e9'"),
    "G2-synth-frames-1000000000": ([*_SYNTH, OUT, "--frames", "1000000000"], "--frames: must be between 4 and 1024"),
    "G3-synth-size-100000": ([*_SYNTH, OUT, "--size", "100000"], "--size: must be between 32 and 4096"),
    "G4-synth-fps-inf": ([*_SYNTH, OUT, "--fps", "inf"], "--fps: must be a finite number, got inf"),
    "G5-synth-fps-nan": ([*_SYNTH, OUT, "--fps", "nan"], "--fps: must be a finite number, got nan"),
    "G5-synth-fps-too-many-decimals": ([*_SYNTH, OUT, "--fps", "116.50677907562469"],
                                       "cannot be written to an MPEG-4 file"),
    "G6-synth-drift-nan": ([*_SYNTH, OUT, "--drift", "nan"], "--drift: must be a finite number, got nan"),
    "G8-synth-videos-per-class-1e9": ([*_SYNTH, OUT, "--videos-per-class", "1e9"],
                                      "--videos-per-class: must be an integer, got '1e9'"),
    "G8-synth-videos-per-class-1000000000": ([*_SYNTH, OUT, "--videos-per-class", "1000000000"],
                                             "--videos-per-class: must be between 2 and 100000"),
    # Combinations within every single bound: one video past the machine's memory, a dataset past its disk.
    "G-synth-one-video-past-memory": ([*_SYNTH, OUT, "--frames", "1024", "--size", "4096", "--videos-per-class",
                                       "2"], "of memory, and this machine has"),
    "G-synth-dataset-past-disk": ([*_SYNTH, OUT, "--videos-per-class", "100000", "--frames", "1024", "--size",
                                   "1024"], "of disk space"),
    "G9-export-frames-100000": ([*_EXPORT, OUT, "--frames", "100000"], "--frames: must be between 1 and 1024"),
    "G10-export-size-100000": ([*_EXPORT, OUT, "--size", "100000"], "--size: must be between 8 and 4096"),
    "G11-export-tolerance-nan": ([*_EXPORT, OUT, "--tolerance", "nan"], "--tolerance: must be a finite number"),
    "G12-export-width-mult-0": ([*_EXPORT, OUT, "--width-mult", "0"], "--width-mult: must be in [0.05, 8]"),
    "G12-export-width-mult-nan": ([*_EXPORT, OUT, "--width-mult", "nan"], "--width-mult: must be a finite number"),
    "G-export-clip-input-past-the-manifest-ceiling": ([*_EXPORT, OUT, "--mode", "clip", "--frames", "1024", "--size",
                                                       "256"], "more than the 67108864 a manifest allows"),
    "G18-bench-threads-100000": (["bench", ART, "--threads", "100000"], "--threads: must be between 1 and 1024"),
    "G19-bench-seconds-inf": (["bench", ART, "--seconds", "inf"], "--seconds: must be a finite number, got inf"),
    "G19-bench-iterations-past-the-loop-bound": (["bench", ART, "--iterations", "100000000000"],
                                                 "--iterations must be between 1 and 10000000"),
}


@pytest.mark.parametrize("name", list(OPTION_CASES))
def test_option_case_is_one_clear_line(name, runtime_stream_artifact, tmp_path):
    argv, expected = OPTION_CASES[name]
    argv = [tmp_path / "out" if a == OUT else runtime_stream_artifact if a == ART else a for a in argv]
    _one_line_nothing_written(argv, expected, tmp_path, runtime_stream_artifact, timeout=60)


def _one_line_nothing_written(argv: list, expected: str, cwd: Path, *watched: Path, timeout: float = 120) -> str:
    """Run the command; assert the one-line contract, no process left, nothing written under ``cwd``/``watched``."""
    before = snapshot(cwd, *watched)
    tag = new_tag()
    try:
        proc = edgevid(argv, cwd=cwd, tag=tag, timeout=timeout)
        line = check_one_line(proc, expected)
        assert not leftovers(tag)
    finally:
        kill_tagged(tag)
    assert snapshot(cwd, *watched) == before, "the failed command wrote something"
    return line


def test_library_entry_points_check_the_same_bounds(tmp_path):
    """The CLI's types do not protect Python callers: the library functions refuse the same values."""
    from edgevid.commands.bench import MAX_CALLS
    from edgevid.data.synth import generate_dataset
    from edgevid.errors import EdgevidError
    from edgevid.export.api import export_model
    from edgevid.report import bench

    assert MAX_CALLS == bench.MAX_CALLS
    for kwargs, match in (({"fps": float("nan")}, "--fps must be a finite number"),
                          ({"fps": float("inf")}, "--fps must be a finite number"),
                          ({"drift": float("nan")}, "drift within"),
                          ({"still": (10**8, 0)}, "--still frames must be between 0 and"),
                          ({"frames": 10**9}, "--frames must be between 4"),
                          ({"val_fraction": float("nan")}, "--val-fraction")):
        with pytest.raises(EdgevidError, match=match):
            generate_dataset(tmp_path / "ds", progress=False, **kwargs)
    for kwargs, match in (({"tolerance": float("nan")}, "tolerance must be in"),
                          ({"width_mult": 0.0}, "width_mult must be in"),
                          ({"frames": 100_000}, "frames must be an integer between 1 and 1024"),
                          ({"size": 100_000}, "size must be an integer between 1 and 4096")):
        with pytest.raises(EdgevidError, match=match):
            export_model("tsm", tmp_path / "art", progress=False, **kwargs)
    with pytest.raises(EdgevidError, match="--seconds must be > 0 and at most"):
        bench.check_loop(10, None, float("inf"))
    assert list(tmp_path.iterdir()) == []


# --- manifests: `edgevid run ARTIFACT --video VIDEO` on a broken copy ------------------------------


def _raw(edit: Callable[[str], str]) -> Callable[[Path], None]:
    """Edit manifest.json as text (for what json.dumps cannot write)."""
    def apply(art: Path) -> None:
        path = art / "manifest.json"
        path.write_text(edit(path.read_text()))

    return apply


def _json(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        path = art / "manifest.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))  # ensure_ascii: a lone surrogate is written as "\ud800"

    return apply


def _padded_to_300_mb(art: Path) -> None:
    """A valid manifest, 300 MB long (whitespace before its closing brace)."""
    path = art / "manifest.json"
    text = path.read_text().rstrip()
    with open(path, "w") as fh:
        fh.write(text[:-1])
        block = " " * (1 << 20)
        for _ in range(300):
            fh.write(block)
        fh.write("}\n")


def _truncated_bin_rehashed(art: Path) -> None:
    """Half of model.bin, and a manifest whose hash matches the half (a bad copy that rewrote both)."""
    data = (art / "model.bin").read_bytes()[: (art / "model.bin").stat().st_size // 2]
    (art / "model.bin").write_bytes(data)
    _json(put("provenance", "openvino_bin_sha256", value=hashlib.sha256(data).hexdigest()))(art)


_DIGITS_5000 = "9" * 5000

# probe id -> (how to break the copy, backend, expected substring)
MANIFEST_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "M16-lone-surrogate-in-a-label": (_json(put("labels", 0, value="\ud800abc")), "onnxruntime",
                                      "labels[0] is not valid Unicode text"),
    "M16-lone-surrogate-in-a-provenance-key": (_json(put("provenance", "\udc00", value=1)), "onnxruntime",
                                               "a key in provenance is not valid Unicode text"),
    "M20-5000-digit-int": (_raw(lambda t: t.replace('"validation": {', f'"validation": {{"x": {_DIGITS_5000}, ', 1)),
                           "onnxruntime", "holds a number too long to read"),
    "M20-4000-digit-int-as-state-init": (_json(put("states", 0, "init", value=10**4000)), "onnxruntime",
                                         "states[0].init must be a finite number"),
    "M23-300-mb-manifest": (_padded_to_300_mb, "onnxruntime", "is larger than 16 MiB"),
    "M29-state-init-past-float32": (_json(put("states", 0, "init", value=1e300)), "onnxruntime",
                                    "states[0].init must be within"),
    "M29-mean-past-float32": (_json(put("preprocess", "mean", value=[1e308, 0.5, 0.5])), "onnxruntime",
                              "preprocess.mean[0] must be within"),
    "M29-denormal-std": (_json(put("preprocess", "std", value=[1e-320, 0.2, 0.2])), "onnxruntime",
                         "preprocess.std[0] must be within [1e-06"),
    "M30-inference-precision-f64": (_json(put("build", "openvino", "inference_precision", value="f64")), "openvino",
                                    "build.openvino.inference_precision must be one of f32, f16, bf16, default"),
    "X10-truncated-bin-with-recomputed-hash": (_truncated_bin_rehashed, "openvino",
                                               "OpenVINO could not read"),
}


@pytest.mark.parametrize("name", list(MANIFEST_CASES))
def test_manifest_case_is_one_clear_line(name, runtime_stream_artifact, runtime_video, tmp_path):
    breaks, backend, expected = MANIFEST_CASES[name]
    art = tmp_path / "art"
    shutil.copytree(runtime_stream_artifact, art)
    breaks(art)
    line = _one_line_nothing_written(["run", art, "--video", runtime_video, "--backend", backend], expected, tmp_path)
    if name.startswith("X10"):
        assert "model.bin" in line and "Exception from" not in line, line


def test_manifest_size_is_checked_before_reading(tmp_path):
    """A sparse 300 GB manifest.json is refused from its size, without reading it."""
    from edgevid.manifest import Manifest, ManifestError

    with open(tmp_path / "manifest.json", "wb") as fh:
        fh.truncate(300 << 30)
    t0 = time.perf_counter()
    with pytest.raises(ManifestError, match="larger than 16 MiB"):
        Manifest.load(tmp_path)
    assert time.perf_counter() - t0 < 1


# --- S2: a killed `data synth` leaves no staging folder and no process ----------------------------

# 11 classes x 150 videos of 64 px: several seconds on a small CPU, long enough to be signalled.
_LONG_SYNTH = ["data", "synth", "-q", "--videos-per-class", "150", "--size", "64", "--frames", "16"]


def _staging(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".ds."))


def _writing(folder: Path) -> bool:
    """The synth has staged at least one video."""
    return any(next(stage.glob("*/*.mp4"), None) for stage in _staging(folder))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_s2_killed_synth_leaves_no_staging_folder_and_no_process(sig, tmp_path):
    out = tmp_path / "ds"
    rc, stderr = kill_midway([*_LONG_SYNTH, "-o", out], tmp_path, sig, lambda *_: _writing(tmp_path),
                             "the synth writing its videos")
    assert rc == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert "Traceback" not in stderr
        assert list(tmp_path.iterdir()) == [], "SIGTERM left the staging folder"
        return
    stale = _staging(tmp_path)
    assert stale, "SIGKILL cannot clean up: the next synth to the same place must"
    done = edgevid(["data", "synth", "-q", "-o", out, "--videos-per-class", "2", "--frames", "4", "--size", "32"],
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _staging(tmp_path) == [] and (out / "synth.json").is_file()


# --- S6: a full disk or a file size limit is named as such -----------------------------------------


def _fsize_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_s6_file_size_limit_is_named(tmp_path):
    """RLIMIT_FSIZE in the child: OpenCV's writer stops at the limit without an error; the message must
    name the limit, not a corrupt file or a missing encoder."""
    work = tmp_path / "work"
    work.mkdir()
    tag = new_tag()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", TAG_VAR: tag}
    try:
        proc = subprocess.run([sys.executable, "-m", "edgevid.cli", "data", "synth", "-q", "-o", "ds",
                               "--videos-per-class", "2", "--size", "128"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL, preexec_fn=_fsize_limit(8_000))
        line = check_one_line(proc, "file size limit (8000 bytes")
        assert not leftovers(tag)
    finally:
        kill_tagged(tag)
    assert str(work / "ds") in line and ".partial" not in line, line
    assert list(work.iterdir()) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 300 KiB tmpfs (root only, where mount works); skipped elsewhere."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_s6_full_disk_is_named(small_tmpfs):
    line = _one_line_nothing_written(["data", "synth", "-q", "-o", small_tmpfs / "ds", "--videos-per-class", "4",
                                      "--size", "64"], "no space left on the device", small_tmpfs)
    assert "OpenCV" not in line and "corrupt" not in line, line
    assert list(small_tmpfs.iterdir()) == []
