"""The bad-input matrix: every user mistake gets one line `edgevid <verb>: error: ...`, exit 2.

Each case builds its inputs in a fresh folder, runs the real `edgevid` command in a
subprocess (so a segfault, a traceback or a stray OpenCV/FFmpeg message would show), and
checks: exit code 2, no "Traceback" anywhere, the error line names the problem, and the
only lines on stderr are edgevid's own (progress lines and warnings allowed, nothing from
a library). The combined output of the whole matrix is written to
``<pytest basetemp>/bad_input_matrix.log`` and the last test greps it for "Traceback".

A case is a function ``(ctx) -> (argv, expected_substring)`` registered with ``@case``;
``ctx`` (``Ctx`` below) gives a fresh tmp folder and the shared small artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from probe import put

CASES: dict[str, Callable[[Ctx], tuple[list[str], str]]] = {}
_LOG: list[str] = []


def case(name: str) -> Callable:
    """Register a bad-input case under ``name`` (its pytest id)."""

    def register(fn: Callable) -> Callable:
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return register


@dataclass
class Ctx:
    """What a case may use: ``tmp`` (fresh, empty), the shared artifacts and files."""

    tmp: Path
    shared: dict

    @property
    def stream_artifact(self) -> Path:
        """A small ONNX Runtime stream export (read-only: copy it with ``artifact_copy``)."""
        return self.shared["stream"]

    @property
    def clip_artifact(self) -> Path:
        return self.shared["clip"]

    @property
    def video(self) -> Path:
        """A short real mp4 (24 frames, 112x84)."""
        return self.shared["video"]

    @property
    def checkpoint(self) -> Path:
        """An edgevid checkpoint of a tiny online TSM (64 px, width 0.5, 5 classes)."""
        return self.shared["checkpoint"]

    def artifact_copy(self, which: str = "stream") -> Path:
        """A private copy of an artifact, to break."""
        dst = self.tmp / f"{which}-artifact"
        shutil.copytree(self.shared[which], dst)
        return dst

    def edit_manifest(self, artifact: Path, edit: Callable[[dict], None]) -> Path:
        """Apply ``edit`` to the artifact's manifest.json in place."""
        path = artifact / "manifest.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
        return artifact


@pytest.fixture(scope="module")
def shared(tmp_path_factory, runtime_model, runtime_stream_artifact, runtime_clip_artifact, runtime_video):
    import torch

    from edgevid.models.weights import save_checkpoint

    model = runtime_model[0]
    ckpt = tmp_path_factory.mktemp("bad_input_ckpt") / "tiny.pt"
    save_checkpoint(ckpt, model, model.config.name, [f"c{i}" for i in range(model.num_classes)],
                    {"width_mult": 0.5, "num_classes": model.num_classes, "frames": 8, "frame_stride": 2,
                     "input_size": 64, "resize": 73})
    assert torch.load(ckpt, weights_only=True)["format"] == "edgevid"
    return {"stream": runtime_stream_artifact, "clip": runtime_clip_artifact, "video": runtime_video,
            "checkpoint": ckpt}


def _edgevid(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgevid.cli", *argv], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# Cases. Each group below is kept together; add new cases at the end of their group.
# ---------------------------------------------------------------------------------------------

# --- writes: data loss, writes outside the output, unwritable destinations -------------------
# /proc accepts no new files, even for root (tests may run as root, which ignores permission bits).

_PROC = "/proc/edgevid-test"


def _a_file(ctx: Ctx) -> Path:
    path = ctx.tmp / "file"
    path.write_text("a regular file\n")
    return path


def _synth(out: object, *extra: str) -> list:
    return ["data", "synth", "-o", out, "--videos-per-class", "2", "--frames", "4", "--size", "32", "-q", *extra]


def _export(out: object) -> list:
    return ["export", "--model", "tsm", "--size", "64", "--no-validate", "-q", "-o", out]


def _train(ctx: Ctx, out: object, *extra: str) -> list:
    # The output is checked before any data is read: the data folder is never reached.
    return ["train", "--model", "tsm", "--data", ctx.tmp, "-o", out, "--size", "32", "-q", *extra]


def _compress(ctx: Ctx, out: object, *extra: str) -> list:
    return ["compress", "--model", "tsm", "--data", ctx.tmp, "--prune-channels", "0.25", "-o", out, "-q", *extra]


@case("writes-synth-force-into-a-project")
def _(ctx: Ctx) -> tuple[list, str]:
    (ctx.tmp / "project").mkdir()
    (ctx.tmp / "project" / "main.py").write_text("precious\n")
    return _synth(ctx.tmp / "project", "--force"), "not a dataset written by `edgevid data synth`"


@case("writes-synth-under-a-file")
def _(ctx: Ctx) -> tuple[list, str]:
    return _synth(_a_file(ctx) / "ds"), "is not a directory"


@case("writes-synth-into-proc")
def _(ctx: Ctx) -> tuple[list, str]:
    return _synth(_PROC), "/proc does not accept new files"


@case("writes-export-under-a-file")
def _(ctx: Ctx) -> tuple[list, str]:
    return _export(_a_file(ctx) / "art"), "is not a directory"


@case("writes-export-into-proc")
def _(ctx: Ctx) -> tuple[list, str]:
    return _export(_PROC), "/proc does not accept new files"


@case("writes-train-under-a-file")
def _(ctx: Ctx) -> tuple[list, str]:
    return _train(ctx, _a_file(ctx) / "sub" / "m.pt"), "is not a directory"


@case("writes-train-into-proc")
def _(ctx: Ctx) -> tuple[list, str]:
    return _train(ctx, f"{_PROC}/m.pt"), "/proc does not accept new files"


@case("writes-train-existing-output")
def _(ctx: Ctx) -> tuple[list, str]:
    return _train(ctx, _a_file(ctx)), "already exists; pass --force to replace it"


@case("writes-train-force-over-a-foreign-file")
def _(ctx: Ctx) -> tuple[list, str]:
    return _train(ctx, _a_file(ctx), "--force"), "is not an edgevid checkpoint; refusing to replace it"


@case("writes-train-stale-state-without-resume")
def _(ctx: Ctx) -> tuple[list, str]:
    (ctx.tmp / "m.pt.last").write_text("an earlier run's state\n")
    return _train(ctx, ctx.tmp / "m.pt"), "pass --resume to continue that run, or --force"


@case("writes-compress-under-a-file")
def _(ctx: Ctx) -> tuple[list, str]:
    return _compress(ctx, _a_file(ctx) / "sub" / "c.pt"), "is not a directory"


@case("writes-compress-into-proc")
def _(ctx: Ctx) -> tuple[list, str]:
    return _compress(ctx, f"{_PROC}/c.pt"), "/proc does not accept new files"


@case("writes-compress-existing-output")
def _(ctx: Ctx) -> tuple[list, str]:
    return _compress(ctx, _a_file(ctx)), "already exists; pass --force to replace it"


@case("writes-compress-force-over-a-foreign-file")
def _(ctx: Ctx) -> tuple[list, str]:
    return _compress(ctx, _a_file(ctx), "--force"), "is not an edgevid checkpoint; refusing to replace it"

# --- manifests and artifacts -----------------------------------------------------------------


def _manifest_case(name: str, edit: Callable[[dict], None], expected: str, backend: str = "onnxruntime") -> None:
    """Register `edgevid run` on a copy of the stream artifact whose manifest ``edit`` broke."""

    @case(name)
    def _(ctx: Ctx) -> tuple[list[str], str]:
        art = ctx.edit_manifest(ctx.artifact_copy(), edit)
        return ["run", art, "--video", ctx.video, "--backend", backend], expected


_manifest_case("manifest-onnx-absolute", put("files", "onnx", value="/etc/passwd"),
               "files.onnx must be a plain file name")
_manifest_case("manifest-onnx-dotdot", put("files", "onnx", value="../../x/model.onnx"),
               "files.onnx must be a plain file name")
_manifest_case("manifest-engine-outside", put("files", "engine", value="../../victim.txt"),
               "files.engine must be a plain file name")
_manifest_case("manifest-state-init-string", put("states", 0, "init", value="zero"),
               'states[0].init must be a finite number, got "zero"')
_manifest_case("manifest-frames-1e9", put("sampling", "frames", value=1e9), "sampling.frames must be an integer")
_manifest_case("manifest-frames-huge", put("sampling", "frames", value=10**9),
               "sampling.frames must be between 1 and 1024")
_manifest_case("manifest-files-not-object", put("files", value="model.onnx"), "files must be an object")
_manifest_case("manifest-provenance-not-object", put("provenance", value=[]), "provenance must be an object")
_manifest_case("manifest-std-zero", put("preprocess", "std", 1, value=0), "preprocess.std[1] must be > 0, got 0")
_manifest_case("manifest-resize-below-crop", put("preprocess", "resize", value=8),
               "preprocess.resize must be >= crop")
_manifest_case("manifest-labels-not-list", put("labels", value="abcde"), "labels must be a list")
_manifest_case("manifest-state-shape-huge", put("states", 0, "shape", value=[1, 100000, 100000]),
               "states[0].shape has more than")
_manifest_case("manifest-bin-hash-missing", lambda d: d["provenance"].pop("openvino_bin_sha256"),
               "records no provenance.openvino_bin_sha256", backend="openvino")


@case("manifest-onnx-symlink-outside")
def _(ctx: Ctx) -> tuple[list[str], str]:
    art = ctx.artifact_copy()
    outside = ctx.tmp / "elsewhere.onnx"
    (art / "model.onnx").rename(outside)  # same bytes: the hash matches, the link must still be refused
    (art / "model.onnx").symlink_to(outside)
    return ["run", art, "--video", ctx.video, "--backend", "onnxruntime"], "outside the artifact folder"


@case("manifest-openvino-only-manifest-outside")
def _(ctx: Ctx) -> tuple[list[str], str]:
    (ctx.tmp / "other").mkdir()
    shutil.copy(ctx.stream_artifact / "model.onnx", ctx.tmp / "other" / "model.onnx")
    art = ctx.tmp / "art"
    art.mkdir()
    shutil.copy(ctx.stream_artifact / "manifest.json", art / "manifest.json")
    ctx.edit_manifest(art, put("files", value={"openvino_xml": "../other/model.onnx"}))
    return ["run", art, "--video", ctx.video, "--backend", "openvino"], "files.openvino_xml must be a plain file name"


@case("manifest-run-smooth-huge")
def _(ctx: Ctx) -> tuple[list[str], str]:
    return ["run", ctx.stream_artifact, "--video", ctx.video, "--smooth", "1000000000"], "smooth must be <= 10000"


# --- runtime and `edgevid run` ---------------------------------------------------------------


def _run_video(ctx: Ctx, name: str, frames: int, fourcc: str = "mp4v", bad: tuple[int, ...] = ()) -> Path:
    """A real ``frames``-frame video in ctx.tmp; ``bad`` frames (MJPG only) get their JPEG header zeroed."""
    import cv2
    import numpy as np

    path = ctx.tmp / name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    if bad:
        data = bytearray(path.read_bytes())
        starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
        for k in bad:
            data[starts[k] : starts[k] + 400] = bytes(400)
        path.write_bytes(bytes(data))
    return path


@case("run-camera-negative")
def _(ctx):
    return ["run", ctx.stream_artifact, "--camera", "-1"], "must be between 0 and 9999, got -1"


@case("run-corrupt-stretch-mid-video")
def _(ctx):
    video = _run_video(ctx, "v.avi", 60, "MJPG", bad=tuple(range(20, 35)))
    return ["run", ctx.stream_artifact, "--video", video], "cannot be decoded from frame 20 of 60"


@case("run-truncated-mp4")
def _(ctx):
    video = _run_video(ctx, "v.mp4", 30)
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # moov atom lost
    return ["run", ctx.stream_artifact, "--video", video], "cannot open video"


@case("run-clip-video-too-short")
def _(ctx):
    video = _run_video(ctx, "short.mp4", 3)
    return ["run", ctx.clip_artifact, "--video", video], "has 3 frames; the clip model needs 4 sampled frames"


@case("run-output-is-the-input")
def _(ctx):
    video = ctx.tmp / "mine.mp4"
    shutil.copy(ctx.video, video)
    return ["run", ctx.stream_artifact, "--video", video, "-o", "./mine.mp4"], "is the input video"


@case("run-output-without-video-extension")
def _(ctx):
    return ["run", ctx.stream_artifact, "--video", ctx.video, "-o", "annotated"], "needs one of the extensions"


@case("bench-unknown-backend")
def _(ctx):
    return ["bench", ctx.stream_artifact, "--backend", "tpu"], "unknown backend 'tpu'"


@case("bench-missing-artifact")
def _(ctx):
    return ["bench", ctx.tmp / "nowhere"], "does not exist"


@case("bench-zero-iterations")
def _(ctx):
    return ["bench", ctx.stream_artifact, "--iterations", "0"], "--iterations: must be >= 1"


@case("bench-precision-hint-not-openvino")
def _(ctx):
    return ["bench", ctx.stream_artifact, "--backend", "ort", "--precision-hint", "f32"], "openvino only"


@case("bench-dla-core-not-tensorrt")
def _(ctx):
    return ["bench", ctx.stream_artifact, "--backend", "ort", "--dla-core", "0"], "--dla-core applies to the tensorrt"


# --- devices and deploy bundles ------------------------------------------------------------------


@case("device-unknown")
def _(ctx):
    return ["export", "--model", "tsm", "--device", "pi5", "-o", ctx.tmp / "out"], "unknown device 'pi5'"


@case("device-unsupported")
def _(ctx):
    return ["deploy", "--model", "tsm", "--device", "jetson-nano", "-o", ctx.tmp / "b"], "is not supported: JetPack 4.6"


@case("device-cannot-run-the-target")
def _(ctx):
    return (["export", "--model", "tsm", "--device", "x86-cpu", "--target", "tensorrt", "-o", ctx.tmp / "out"],
            "x86-cpu runs openvino, onnxruntime, not tensorrt")


@case("device-opset-too-new")
def _(ctx):
    return (["export", "--model", "tsm", "--device", "orin-nano", "--opset", "19", "-o", ctx.tmp / "out"],
            "too new")


@case("bundle-without-its-manifest")
def _(ctx):
    bundle = ctx.tmp / "bundle"
    shutil.copytree(ctx.stream_artifact, bundle / "art")
    (bundle / "art" / "manifest.json").unlink()
    (bundle / "bundle.json").write_text(json.dumps({"artifacts": [{"path": "art"}]}))
    return ["run", bundle, "--video", ctx.video], "art/manifest.json is missing"


@case("triton-clip-artifact")
def _(ctx):
    return (["triton", "write", ctx.clip_artifact, "-o", ctx.tmp / "repo"],
            "a triton sequence model needs a stream export")


@case("triton-model-name-clash")
def _(ctx):
    (ctx.tmp / "repo" / "tsm").mkdir(parents=True)
    return (["triton", "write", ctx.stream_artifact, "-o", ctx.tmp / "repo", "--name", "tsm"],
            "already has a model 'tsm'")


@case("run-triton-server-down")
def _(ctx):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ["run", "--triton", f"127.0.0.1:{port}", "--model", "tsm", "--video", ctx.video], f"Triton at 127.0.0.1:{port}"


@case("gate-threshold-out-of-range")
def _(ctx):
    return ["run", ctx.stream_artifact, "--video", ctx.video, "--gate", "delta:0"], "threshold is in grey levels"


@case("gate-on-a-clip-artifact")
def _(ctx):
    return ["run", ctx.clip_artifact, "--video", ctx.video, "--gate", "delta"], "clip-mode artifact"


@case("salient-more-windows-than-the-video-has")
def _(ctx):
    return ["run", ctx.stream_artifact, "--video", ctx.video, "--salient", "9"], "--salient 9 is more than the"


@case("report-unknown-backend")
def _(ctx):
    return ["report", "--model", "tsm", "--backends", "onnxruntime,tpu", "-o", ctx.tmp / "r"], "unknown backend 'tpu'"


@case("report-missing-data")
def _(ctx):
    return ["report", "--model", "tsm", "--data", ctx.tmp / "nowhere", "-o", ctx.tmp / "r"], "does not exist"


@case("report-output-is-a-file")
def _(ctx):
    (ctx.tmp / "taken").write_text("x")
    return ["report", "--model", "tsm", "-o", ctx.tmp / "taken"], "is not a folder"


# --- checkpoints, export, compress, flags ----------------------------------------------------


def _checkpoint_with(ctx: Ctx, **config) -> Path:
    import torch

    data = torch.load(ctx.checkpoint, weights_only=True)
    data["config"].update(config)
    path = ctx.tmp / "edited.pt"
    torch.save(data, path)
    return path


@case("ckpt-negative-input-size")
def _(ctx):
    return (["export", "--model", "tsm-mobilenetv2-online", "--checkpoint", _checkpoint_with(ctx, input_size=-5),
             "-o", ctx.tmp / "out", "-q"], "config input_size=-5")


@case("ckpt-absurd-frames")
def _(ctx):
    return (["export", "--model", "tsm-mobilenetv2-online", "--checkpoint", _checkpoint_with(ctx, frames=10**9),
             "-o", ctx.tmp / "out", "-q"], "config frames=")


@case("ckpt-not-a-checkpoint")
def _(ctx):
    (ctx.tmp / "notes.pt").write_text("not a checkpoint")
    return (["export", "--model", "tsm", "--checkpoint", ctx.tmp / "notes.pt", "-o", ctx.tmp / "out", "-q"],
            "cannot read checkpoint")


@case("ckpt-other-family")
def _(ctx):
    return (["export", "--model", "tsn-mobilenetv2", "--checkpoint", ctx.checkpoint, "-o", ctx.tmp / "out", "-q"],
            "not tsn-mobilenetv2")


@case("export-unknown-model")
def _(ctx):
    return (["export", "--model", "resnet9000", "-o", ctx.tmp / "out"], "unknown model 'resnet9000'")


@case("export-int8-option-without-int8")
def _(ctx):
    return (["export", "--model", "tsm", "--calib-size", "4", "-o", ctx.tmp / "out"], "only apply to --precision int8")


@case("export-unknown-target")
def _(ctx):
    return (["export", "--model", "tsm", "--target", "tpu", "-o", ctx.tmp / "out"], "tpu")


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name, shared, tmp_path):
    work = tmp_path / "case"
    work.mkdir()
    argv, expected = CASES[name](Ctx(work, shared))
    proc = _edgevid([str(a) for a in argv], cwd=work)
    _LOG.append(f"=== {name}: edgevid {' '.join(map(str, argv))}\nrc={proc.returncode}\n"
                f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}")
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 2, f"rc={proc.returncode}\n{proc.stderr}"
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("edgevid "), errors[0]
    assert expected.lower() in errors[0].lower(), errors[0]
    # Nothing but edgevid's own lines: no OpenCV/FFmpeg/ORT chatter around the error.
    foreign = [line for line in proc.stderr.splitlines()
               if line.strip() and not line.startswith(("edgevid", "  ", "usage:", "note:", "warning:"))]
    assert not foreign, foreign


def test_matrix_output_has_no_traceback(tmp_path_factory):
    log = tmp_path_factory.getbasetemp() / "bad_input_matrix.log"
    log.write_text("\n".join(_LOG))
    assert len(_LOG) == len(CASES), "run the whole matrix (this test reads its output)"
    assert "Traceback" not in log.read_text()
