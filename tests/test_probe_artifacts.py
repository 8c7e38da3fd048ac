"""Issue 23, the TensorRT engine cache, deploy bundle and training cases of the reliability probe.

By probe id: C1/C3 (a TensorRT engine cache others could write: planted engines, planted
links), D8/D10/D- (deploy bundles: long paths, unhashed files, errors naming the wrong
file), G7/G14/G15/G16 (train's numbers: seeds, non-finite learning rates and weights,
worker counts) and S3 (train's process tree after SIGTERM / SIGKILL). The command cases run
the real `edgevid` (tests/probe.py): exit 2, one line naming the problem, no traceback,
nothing written, nothing left running. TensorRT runs on the fakes of tests/fakes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fakes.tensorrt_fake import install  # tests/ is on sys.path (pytest's rootdir conftest)
from probe import check_one_line, edgevid, kill_midway, leftovers, new_tag, snapshot

from edgevid.errors import EdgevidError, EdgevidWarning
from edgevid.runtime.backends import tensorrt_engine as te

LONG = "b" * 300  # one path component longer than any file system's NAME_MAX (255)


# ---------------------------------------------------------------- shared inputs


@pytest.fixture(scope="module")
def bundle_base(runtime_stream_artifact, tmp_path_factory) -> Path:
    """A deploy bundle for x86-cpu around the small stream artifact (``pack_bundle``: no export needed)."""
    from edgevid.deploy import pack_bundle
    from edgevid.devices.profiles import get_profile
    from edgevid.runtime import open_artifact

    work = tmp_path_factory.mktemp("bundle") / "bundle"
    work.mkdir()
    shutil.copytree(runtime_stream_artifact, work / "artifact")
    pack_bundle(work, work / "artifact", get_profile("x86-cpu"), open_artifact(work / "artifact").manifest)
    return work


@pytest.fixture
def bundle(bundle_base, tmp_path) -> Path:
    """A private copy of the bundle, to break."""
    return Path(shutil.copytree(bundle_base, tmp_path / "bundle"))


@pytest.fixture(scope="module")
def nan_checkpoint(runtime_model, tmp_path_factory) -> Path:
    """The small online TSM's state dict with one weight tensor NaN (what `train --lr inf` wrote)."""
    import torch

    state = {k: v.clone() for k, v in runtime_model[0].state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].fill_(float("nan"))
    path = tmp_path_factory.mktemp("nan_ckpt") / "diverged.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    """The tiny synthetic dataset of the probe: 11 classes, 2 videos each, 8 frames of 32 px."""
    root = tmp_path_factory.mktemp("synth")
    proc = edgevid(["data", "synth", "-o", root / "data", "--videos-per-class", "2", "--frames", "8", "--size", "32",
                    "-q"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "data"


def _wheel(folder: Path) -> Path:
    return next(folder.glob("edgevid-*.whl"))


def _tamper_wheel(b: Path) -> None:
    with open(_wheel(b), "ab") as fh:
        fh.write(b"\0")  # a zip still opens with trailing bytes: pip would install it


def _wheel_as_link(b: Path) -> None:
    wheel = _wheel(b)
    shutil.move(wheel, b.parent / wheel.name)
    wheel.symlink_to(b.parent / wheel.name)


def _plant_in_artifact(b: Path) -> None:
    artifact = json.loads((b / "bundle.json").read_text())["artifacts"][0]["path"]
    (b / artifact / "extra.onnx").write_bytes(b"planted")


def _drop_hashes(b: Path) -> None:
    info = json.loads((b / "bundle.json").read_text())
    del info["files"]
    (b / "bundle.json").write_text(json.dumps(info))


def _artifact_path_escapes(b: Path) -> None:
    info = json.loads((b / "bundle.json").read_text())
    info["artifacts"][0]["path"] = "../elsewhere"
    (b / "bundle.json").write_text(json.dumps(info))


# ---------------------------------------------------------------- the command matrix: exit 2, one line


TRAIN = ["train", "--model", "tsm", "--data", "{data}", "-o", "{tmp}/m.pt", "--size", "32", "--frames", "4",
         "--width", "0.25", "--epochs", "1", "--workers", "0", "-q"]


@pytest.mark.parametrize(("extra", "expected"), [
    pytest.param(["--lr", "inf"], "argument --lr: must be a finite number, got inf", id="G15-train-lr-inf"),
    pytest.param(["--lr", "nan"], "argument --lr: must be a finite number, got nan", id="G15-train-lr-nan"),
    pytest.param(["--lr", "0"], "argument --lr: must be in (0, 10], got 0", id="G15-train-lr-zero"),
    pytest.param(["--lr", "-0.1"], "argument --lr: must be in (0, 10]", id="G15-train-lr-negative"),
    pytest.param(["--lr", "1e400"], "argument --lr: must be a finite number", id="G15-train-lr-overflow"),
    pytest.param(["--workers", "1000"], "argument --workers: must be between 0 and", id="G16-train-workers-1000"),
    pytest.param(["--seed", "-1"], "argument --seed: must be between 0 and 4294967295, got -1",
                 id="G7-train-seed-minus-1"),
    pytest.param(["--seed", str(2**32)], "argument --seed: must be between 0 and 4294967295",
                 id="G14-train-seed-2**32"),
    pytest.param(["--width", "inf"], "argument --width-mult/--width: must be a finite number",
                 id="G15-train-width-inf"),
])
def test_train_numbers_are_refused_at_parse_time(extra, expected, tmp_path):
    """G7/G14/G15/G16: a seed numpy refuses (a traceback), inf/NaN rates (NaN weights), 1000 worker processes."""
    argv = [a.format(data=tmp_path / "data", tmp=tmp_path) for a in TRAIN] + extra
    before, tag = snapshot(tmp_path), new_tag()
    proc = edgevid(argv, cwd=tmp_path, tag=tag)
    check_one_line(proc, expected)
    assert snapshot(tmp_path) == before
    assert leftovers(tag) == []


BUNDLE_CASES = [
    pytest.param(_tamper_wheel, "was changed after deploy: edgevid-", id="D10-tampered-wheel"),
    pytest.param(_wheel_as_link, "is not a plain file inside it", id="D10-wheel-swapped-for-a-link"),
    pytest.param(_plant_in_artifact, "has files bundle.json does not list", id="D10-file-planted-in-artifact"),
    pytest.param(_drop_hashes, "records no file hashes", id="D10-bundle-without-hashes"),
    pytest.param(_artifact_path_escapes, "bundle.json: artifacts[0].path must be a plain file name",
                 id="D-bundle-json-error-names-bundle-json"),
]


@pytest.mark.parametrize(("breakage", "expected"), BUNDLE_CASES)
def test_a_changed_bundle_is_refused_by_run(breakage, expected, bundle, runtime_video, tmp_path):
    """D10: nothing in a bundle was hashed, so a tampered wheel or artifact ran; D-: errors named manifest.json."""
    breakage(bundle)
    before, tag = snapshot(tmp_path), new_tag()
    proc = edgevid(["run", bundle, "--video", runtime_video, "--backend", "onnxruntime"], cwd=tmp_path, tag=tag)
    line = check_one_line(proc, expected)
    assert "manifest.json:" not in line
    assert snapshot(tmp_path) == before
    assert leftovers(tag) == []


@pytest.mark.parametrize("argv", [
    pytest.param(["deploy", "--model", "tsm", "--device", "x86-cpu", "-o", "{tmp}/" + LONG, "-q"],
                 id="D8-deploy-300-char-bundle-path"),
    pytest.param(["run", "{tmp}/" + LONG, "--video", "{tmp}/clip.mp4"], id="D8-run-300-char-bundle-path"),
    pytest.param(["bench", "{tmp}/" + LONG], id="D8-bench-300-char-bundle-path"),
])
def test_a_300_character_bundle_path_is_one_line(argv, tmp_path):
    """D8: a path component over NAME_MAX gave a traceback."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    before, tag = snapshot(tmp_path), new_tag()
    proc = edgevid(argv, cwd=tmp_path, tag=tag)
    check_one_line(proc, "too long")
    assert snapshot(tmp_path) == before
    assert leftovers(tag) == []


def test_export_refuses_non_finite_weights(nan_checkpoint, tmp_path):
    """G15: a checkpoint with NaN weights exported and "validated" with max diff 0 and 100% agreement."""
    before, tag = snapshot(tmp_path), new_tag()
    proc = edgevid(["export", "--model", "tsm", "--checkpoint", nan_checkpoint, "--width-mult", "0.5", "--size", "64",
                    "--frames", "4", "-o", tmp_path / "out"], cwd=tmp_path, tag=tag)
    check_one_line(proc, "holds NaN or inf in 1 of")
    assert snapshot(tmp_path) == before
    assert leftovers(tag) == []


# ---------------------------------------------------------------- D10: the bundle records and checks its hashes


def test_a_bundle_hashes_every_file_and_ships_sha256sums(bundle, runtime_video, tmp_path):
    """D10: bundle.json and SHA256SUMS list every file (wheel, artifact, README, requirements); `run` passes on it."""
    from edgevid.manifest import sha256_file

    info = json.loads((bundle / "bundle.json").read_text())
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert sorted(info["files"]) == [f for f in files if f not in ("bundle.json", "SHA256SUMS")]
    assert info["files"][info["wheel"]] == sha256_file(bundle / info["wheel"])
    sums = dict(reversed(line.split("  ", 1)) for line in (bundle / "SHA256SUMS").read_text().splitlines())
    assert sums == {**info["files"], "bundle.json": sha256_file(bundle / "bundle.json")}
    assert "sha256sum -c SHA256SUMS" in (bundle / "README.md").read_text()
    proc = edgevid(["run", bundle, "--video", runtime_video, "--backend", "onnxruntime", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if shutil.which("sha256sum"):  # the README's check, with the system's own tool
        ok = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        _tamper_wheel(bundle)
        bad = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
        assert bad.returncode != 0 and info["wheel"] in bad.stdout


# ---------------------------------------------------------------- G15: non-finite weights are never saved or validated


def test_save_checkpoint_refuses_non_finite_weights(runtime_model, tmp_path):
    """G15: `train --lr inf` wrote a checkpoint with 158 of 262 tensors non-finite (rc 0)."""
    import copy

    import torch

    from edgevid.models.weights import save_checkpoint

    model = copy.deepcopy(runtime_model[0])
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    with pytest.raises(EdgevidError, match="holds NaN or inf in 1 of"):
        save_checkpoint(tmp_path / "m.pt", model, "tsm-mobilenetv2-online", [f"c{i}" for i in range(5)], {})
    assert list(tmp_path.iterdir()) == []


def test_training_that_diverges_stops_before_saving(synth_data, tmp_path):
    """G15: a run whose weights go NaN (here: a classifier of 1e38 weights, so the first loss is inf)
    stops with one line and writes neither the checkpoint nor the resumable state."""
    import torch

    from edgevid.models import build_model

    model = build_model("tsm", num_classes=11, width_mult=0.25)
    state = model.state_dict()
    head = next(k for k in state if k.endswith("fc.weight"))
    state[head].fill_(1e38)
    torch.save(state, tmp_path / "huge.pt")
    before, tag = snapshot(tmp_path), new_tag()
    argv = [a.format(data=synth_data, tmp=tmp_path) for a in TRAIN] + ["--checkpoint", tmp_path / "huge.pt"]
    proc = edgevid(argv, cwd=tmp_path, tag=tag)
    check_one_line(proc, "training diverged in epoch 1")
    assert snapshot(tmp_path) == before
    assert leftovers(tag) == []


def test_validation_fails_on_nan_outputs():
    """G15: NaN logits on both sides passed validation with max diff 0 and 100% top-1 agreement."""
    import torch

    from edgevid.export.validate import ValidationInputs, validate_run

    clips = np.zeros((2, 4, 3, 8, 8), np.float32)
    inputs = ValidationInputs(clips, clips, "zeros")

    def torch_model(x):
        return torch.full((x.shape[0], 5), float("nan"))

    def exported(feeds):
        return {"logits": np.full((len(feeds["frames"]), 5), np.nan, np.float32)}

    with pytest.raises(EdgevidError, match="validation failed on onnxruntime: the torch model gives NaN or inf"):
        validate_run("onnxruntime", exported, mode="clip", model=torch_model, streaming=None, states=[],
                     inputs=inputs, batch=None, tolerance=1e-3)


# ---------------------------------------------------------------- C1 / C3: the TensorRT engine cache is private


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """This test's own engine cache root (``$EDGEVID_CACHE/tensorrt``), warnings not yet given."""
    monkeypatch.setenv("EDGEVID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(te, "_WARNED", set(), raising=False)
    return tmp_path / "cache" / "tensorrt"


def _first_build(trt_artifact, monkeypatch) -> Path:
    """Build and cache the engine once; its cache entry folder."""
    from edgevid.runtime import load

    install(monkeypatch, "10.3.0.30")
    with load(trt_artifact, "tensorrt") as runner:
        assert runner.engine_source == "built"
        return runner.engine_path.parent


def _plant(entry: Path) -> None:
    """Another user's engine with a self-consistent meta.json (its sha256 matches the planted bytes)."""
    import hashlib

    blob = json.loads((entry / te.ENGINE_NAME).read_bytes())
    planted = json.dumps({**blob, "planted": True}).encode()
    meta = json.loads((entry / te.META_NAME).read_text())
    meta["engine_sha256"] = hashlib.sha256(planted).hexdigest()
    (entry / te.ENGINE_NAME).write_bytes(planted)
    (entry / te.META_NAME).write_text(json.dumps(meta))


def _entry_is_a_link(cache: Path, entry: Path, elsewhere: Path) -> None:
    shutil.copytree(entry, elsewhere)
    _plant(elsewhere)
    shutil.rmtree(entry)
    entry.symlink_to(elsewhere, target_is_directory=True)


def _root_is_a_link(cache: Path, entry: Path, elsewhere: Path) -> None:
    shutil.copytree(cache, elsewhere)
    _plant(elsewhere / entry.name)
    shutil.rmtree(cache)
    cache.symlink_to(elsewhere, target_is_directory=True)


def _root_group_writable(cache: Path, entry: Path, elsewhere: Path) -> None:
    _plant(entry)
    cache.chmod(0o777)


def _entry_group_writable(cache: Path, entry: Path, elsewhere: Path) -> None:
    _plant(entry)
    entry.chmod(0o770)


def _engine_of_another_user(cache: Path, entry: Path, elsewhere: Path) -> None:
    _plant(entry)
    os.chown(entry / te.ENGINE_NAME, 65534, 65534)
    os.chown(entry / te.META_NAME, 65534, 65534)


def _entry_of_another_user(cache: Path, entry: Path, elsewhere: Path) -> None:
    _plant(entry)
    os.chown(entry, 65534, 65534)


_ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.mark.parametrize(("plant", "says"), [
    pytest.param(_entry_is_a_link, "is a link or not a folder", id="C3-cache-entry-is-a-planted-link"),
    pytest.param(_root_is_a_link, "is a link or not a folder", id="C3-cache-root-is-a-planted-link"),
    pytest.param(_root_group_writable, "is writable by group or others: chmod go-w",
                 id="C1-planted-engine-in-a-world-writable-cache"),
    pytest.param(_entry_group_writable, "is writable by group or others: chmod go-w",
                 id="C1-planted-engine-in-a-group-writable-entry"),
    pytest.param(_engine_of_another_user, "belongs to user id 65534", id="C1-planted-engine-of-another-user",
                 marks=_ROOT_ONLY),
    pytest.param(_entry_of_another_user, "belongs to user id 65534", id="C1-cache-entry-of-another-user",
                 marks=_ROOT_ONLY),
])
def test_an_engine_cache_others_could_write_is_never_used(plant, says, trt_artifact, cache, tmp_path, monkeypatch):
    """C1: a planted engine with a self-consistent meta.json was deserialized; C3: a planted link was
    written through. Now: one warning naming the path and the fix, the engine built for this run,
    nothing read from or written into the planted place."""
    from edgevid.runtime import load

    entry = _first_build(trt_artifact, monkeypatch)
    elsewhere = tmp_path / "attacker"
    plant(cache, entry, elsewhere)
    watched = snapshot(elsewhere)
    rec = install(monkeypatch, "10.3.0.30")
    with pytest.warns(EdgevidWarning, match=says) as caught:
        with load(trt_artifact, "tensorrt") as runner:
            assert runner.engine_source == "built"
            cached = runner.engine_path
    assert rec.builds == 1
    if cached is not None:  # a private entry holding another user's files: ours replace them
        assert cached.stat().st_uid == os.geteuid() and b"planted" not in cached.read_bytes()
    assert len([w for w in caught if "TensorRT engine cache" in str(w.message)]) == 1  # warned once
    assert snapshot(elsewhere) == watched  # nothing written through the link


def test_the_engine_cache_is_private_and_reused(trt_artifact, cache, monkeypatch):
    """C1: folders 0700, files 0600 whatever the umask; meta.json records the engine's sha256; the next load uses it."""
    import hashlib
    import stat

    from edgevid.runtime import load

    old = os.umask(0o002)  # Ubuntu's default for users: group-writable files
    try:
        entry = _first_build(trt_artifact, monkeypatch)
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700 and stat.S_IMODE(entry.stat().st_mode) == 0o700
    for name in (te.ENGINE_NAME, te.META_NAME):
        assert stat.S_IMODE((entry / name).stat().st_mode) == 0o600, name
    meta = json.loads((entry / te.META_NAME).read_text())
    assert meta["engine_sha256"] == hashlib.sha256((entry / te.ENGINE_NAME).read_bytes()).hexdigest()
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp")]
    rec = install(monkeypatch, "10.3.0.30")
    with load(trt_artifact, "tensorrt") as runner:
        assert runner.engine_source == "cache"
    assert rec.builds == 0


# ---------------------------------------------------------------- S3: train's process tree after SIGTERM / SIGKILL


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _running_workers(tag: str, train_pid: int) -> int:
    """DataLoader workers of ``train_pid`` that have started their loop (a thread beside the main one)."""
    procs = {int(line.split(":")[0]): line for line in leftovers(tag, wait=0)}
    servers = [pid for pid, cmd in procs.items() if "multiprocessing.forkserver" in cmd
               and _status(pid).get("PPid") == str(train_pid)]
    return sum(1 for pid in procs if servers and _status(pid).get("PPid") == str(servers[0])
               and int(_status(pid).get("Threads", "1")) > 1)


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGTERM, id="S3-train-sigterm"),
                                 pytest.param(signal.SIGKILL, id="S3-train-sigkill")])
def test_train_leaves_no_process_and_no_partial_file(sig, synth_data, tmp_path):
    """S3: after SIGTERM or SIGKILL of `train --workers 2`, its forkserver, workers and resource
    tracker stayed (300-550 MB each); now all are gone within seconds, and nothing partial is left."""
    out = tmp_path / "out"
    out.mkdir()
    argv = ["train", "--model", "tsm", "--data", synth_data, "-o", out / "m.pt", "--size", "32", "--frames", "4",
            "--width", "0.25", "--batch-size", "2", "--workers", "2", "--epochs", "50", "-q"]
    rc, stderr = kill_midway(argv, tmp_path, sig, lambda pid, tag: _running_workers(tag, pid) >= 2,
                             "both DataLoader workers running", grace=10)
    assert rc == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert "Traceback" not in stderr
    assert [p.name for p in out.iterdir() if p.name not in ("m.pt", "m.pt.last")] == []  # no temp file
