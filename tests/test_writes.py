"""Writes: nothing a user owns is lost, nothing outside the output is touched, failures are one line.

- `data synth --force` replaces only a folder an earlier `data synth` wrote.
- Checkpoints (train's best and ``<out>.last``, compress) go through one atomic writer
  (``mkstemp`` + ``os.replace``): a symlink planted at the old predictable temp names is
  not followed; an existing file is replaced only with ``--force`` and only if edgevid wrote it.
- A failed write (file size limit: the same ``OSError`` path as a full disk) is one line
  naming the file, and leaves no temp file.
- An export killed with SIGTERM removes its temp dir and the parents it created; one killed
  outright leaves a temp dir that the next export to the same place removes.
- `compress` keeps the source checkpoint's frame stride (and frames, size, resize, width).
- One flag vocabulary: `-o/--output`, `--width-mult`, `-q/--quiet`, `--json`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgevid.cli import build_parser, main
from edgevid.errors import EdgevidError

TINY_TRAIN = ["--model", "tsm", "--size", "32", "--frames", "4", "--width-mult", "0.25", "--batch-size", "8",
              "--workers", "0", "--epochs", "1", "--quiet"]


def _error(capsys: pytest.CaptureFixture[str], verb: str) -> str:
    """The one error line of a failed command (asserting it is one line, no traceback)."""
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and lines[0].startswith(f"edgevid {verb}: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """11 classes x 2 videos, 4 frames of 32 px."""
    from edgevid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("writes") / "tiny"
    generate_dataset(root, seed=3, videos_per_class=2, frames=4, size=32, val_fraction=0.5, progress=False)
    return root


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Train on one torch thread (conftest's one_torch_thread)."""


# ---------------------------------------------------------------- data synth


def test_synth_force_replaces_only_its_own_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "code.py").write_text("precious\n")
    argv = ["data", "synth", "--videos-per-class", "2", "--frames", "4", "--size", "32", "-q"]
    assert main([*argv, "-o", str(project), "--force"]) == 2
    assert "not a dataset written by `edgevid data synth`" in _error(capsys, "data")
    assert (project / "code.py").read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["project"]  # no temp folder left either
    # An earlier synth dataset is ours to replace, and --json says what was written.
    ds = tmp_path / "ds"
    assert main([*argv, "-o", str(ds)]) == 0
    capsys.readouterr()
    (ds / "stale.txt").write_text("x")
    assert main([*argv, "-o", str(ds), "--force", "--json", "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(ds) and summary["train"] + summary["val"] == 22
    assert not (ds / "stale.txt").exists() and json.loads((ds / "synth.json").read_text())["seed"] == 1


# ---------------------------------------------------------------- the atomic writer


def _plant_symlinks(out: Path, tmp_path: Path) -> dict[Path, Path]:
    """Symlinks at the temp names the old code wrote through, each to a victim file outside."""
    planted = {}
    for name in (f"{out.name}.tmp", f"{out.name}.last.tmp"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("do not touch\n")
        (out.parent / name).symlink_to(victim)
        planted[out.parent / name] = victim
    return planted


def test_save_checkpoint_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    import torch

    from edgevid.models import build_model
    from edgevid.models.weights import save_checkpoint

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.pt"
    planted = _plant_symlinks(out, tmp_path)
    model = build_model("tsm", width_mult=0.25, num_classes=3)
    save_checkpoint(out, model, "tsm", ["a", "b", "c"], {"width_mult": 0.25, "num_classes": 3})
    for link, victim in planted.items():
        assert victim.read_text() == "do not touch\n" and link.is_symlink()
    assert torch.load(out, weights_only=True)["format"] == "edgevid"
    assert not out.is_symlink() and (out.stat().st_mode & 0o777) == 0o666 & ~_umask()
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["m.pt", *(p.name for p in planted)])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_train_writes_through_no_planted_symlink_and_keeps_existing_outputs(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    out = tmp_path / "m.pt"
    planted = _plant_symlinks(out, tmp_path)
    assert main(["train", "--data", str(tiny_data), "-o", str(out), *TINY_TRAIN, "--json"]) == 0
    for link, victim in planted.items():
        assert victim.read_text() == "do not touch\n" and link.is_symlink()
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == str(out) and [h["epoch"] for h in report["history"]] == [1]
    best = out.read_bytes()
    assert torch.load(out.with_name("m.pt.last"), weights_only=True)["epoch"] == 1
    # A second run into the same place needs --force (or --resume), checked before any training.
    t0 = time.perf_counter()
    assert main(["train", "--data", str(tiny_data), "-o", str(out), *TINY_TRAIN]) == 2
    assert "already exists; pass --force" in _error(capsys, "train")
    assert time.perf_counter() - t0 < 5 and out.read_bytes() == best
    # --force replaces an edgevid checkpoint, never a foreign file.
    foreign = tmp_path / "notes.pt"
    foreign.write_text("my notes\n")
    assert main(["train", "--data", str(tiny_data), "-o", str(foreign), *TINY_TRAIN, "--force"]) == 2
    assert "not an edgevid checkpoint; refusing to replace it" in _error(capsys, "train")
    assert foreign.read_text() == "my notes\n"
    # --resume continues into its own output without --force.
    resume = [a for a in TINY_TRAIN if a not in ("--epochs", "1")] + ["--epochs", "2", "--resume"]
    assert main(["train", "--data", str(tiny_data), "-o", str(out), *resume]) == 0
    assert torch.load(out.with_name("m.pt.last"), weights_only=True)["epoch"] == 2
    # --out and --width are the old names of -o/--output and --width-mult.
    args = build_parser().parse_args(["train", "--model", "tsm", "--data", "d", "--out", "x.pt", "--width", "0.5"])
    assert (args.output, args.width_mult) == ("x.pt", 0.5)


def _verbs(parser=None, prefix=()):
    """(verb path, its parser) for every leaf verb of the CLI, e.g. (("data", "synth"), parser)."""
    import argparse

    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, child in subs[0].choices.items():
        yield from _verbs(child, (*prefix, name))


# The verbs that write a file or folder the user names (run: the annotated video).
_WRITERS = {("data", "synth"), ("train",), ("export",), ("compress",), ("run",), ("report",)}


def test_every_verb_speaks_the_same_flags() -> None:
    """-q/--quiet and --json on every verb; -o/--output on every verb that writes; --width-mult, not --width."""
    verbs = dict(_verbs())
    assert _WRITERS <= set(verbs) and ("zoo", "list") in verbs and ("bench",) in verbs
    for path, parser in verbs.items():
        flags = {flag for action in parser._actions for flag in action.option_strings}
        verb = " ".join(path)
        assert {"-q", "--quiet", "--json"} <= flags, verb
        if path in _WRITERS:
            assert {"-o", "--output"} <= flags, verb
        assert "--out" not in flags or path == ("run",), verb  # run keeps --out as an alias
        if "--width-mult" in flags or "--width" in flags:
            assert "--width-mult" in flags, verb


_WRITE_UNDER_SIZE_LIMIT = r"""
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from edgevid.errors import EdgevidError
from edgevid.manifest import atomic_write_bytes
from edgevid.models import build_model
from edgevid.models.weights import save_checkpoint
out = Path(sys.argv[1])
for write in (lambda p: atomic_write_bytes(p, bytes(100_000)),
              lambda p: save_checkpoint(p, build_model("tsm", width_mult=0.25, num_classes=3), "tsm", list("abc"), {})):
    try:
        write(out)
    except EdgevidError as exc:
        print(exc)
    else:
        print("no error")
"""


def test_a_failed_write_is_one_line_and_leaves_the_old_file(tmp_path: Path) -> None:
    """A write that fails midway (here: a file size limit, EFBIG; a full disk is ENOSPC, same path)."""
    out = tmp_path / "m.pt"
    out.write_text("previous\n")
    proc = subprocess.run([sys.executable, "-c", _WRITE_UNDER_SIZE_LIMIT, str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == [f"cannot write {out}: File too large"] * 2, proc.stdout + proc.stderr
    assert out.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# ---------------------------------------------------------------- export: signals and stale temp dirs


_SIGTERM_WHILE_STAGING = r"""
import os, signal, sys, time
from pathlib import Path
from edgevid.staging import staged_directory
with staged_directory(Path(sys.argv[1]) / "a" / "b" / "out") as work:
    (work / "model.onnx").write_bytes(b"half")
    print("staged", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler exits before this ends
print("not interrupted")
"""


def test_sigterm_in_staging_removes_the_temp_dir_and_created_parents(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_WHILE_STAGING, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "staged"  # exited from the handler: nothing after the signal ran
    assert list(tmp_path.iterdir()) == []  # no temp dir, no parents it created


def test_staging_puts_the_default_sigterm_handling_back(tmp_path: Path) -> None:
    from edgevid.staging import staged_directory

    with staged_directory(tmp_path / "out") as work:
        (work / "f").write_text("x")
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and (tmp_path / "out" / "f").is_file()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_export_killed_by_sigterm_cleans_up_and_removes_stale_partials(tmp_path: Path) -> None:
    import socket

    from edgevid.staging import OWNER_FILE

    base = tmp_path / "exports"
    base.mkdir()
    host = socket.gethostname()
    planted = {}
    for name, owner in (("stale", {"pid": _dead_pid(), "host": host}),  # killed earlier: ours to remove
                        ("live", {"pid": os.getpid(), "host": host}),  # another export still running
                        ("otherhost", {"pid": _dead_pid(), "host": host + "-elsewhere"})):
        d = base / f".out.{name}.partial"
        d.mkdir()
        (d / OWNER_FILE).write_text(json.dumps(owner))
        planted[name] = d
    (base / ".out.foreign.partial").mkdir()  # no owner file: not ours
    before = set(base.iterdir())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edgevid.cli", "export", "--model", "tsm", "--size", "64",
                             "--mode", "clip", "--no-validate", "-q", "-o", str(base / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (set(base.iterdir()) - before) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        mine = set(base.iterdir()) - before
        assert proc.poll() is None and len(mine) == 1, (mine, proc.poll())
        assert next(iter(mine)).name.endswith(".partial")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in out + err, err
    left = set(base.iterdir())
    assert planted["stale"] not in left  # removed by this export
    assert {planted["live"], planted["otherhost"], base / ".out.foreign.partial"} == left  # own partial gone


# ---------------------------------------------------------------- compress


def test_compress_refuses_an_existing_output_before_working(tiny_data: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.pt"
    out.write_text("mine\n")
    argv = ["compress", "--model", "tsm", "--data", str(tiny_data), "--prune-channels", "0.25", "-o", str(out), "-q"]
    assert main(argv) == 2
    assert "already exists; pass --force" in _error(capsys, "compress")
    assert main([*argv, "--force"]) == 2
    assert "not an edgevid checkpoint" in _error(capsys, "compress")
    assert out.read_text() == "mine\n"


def test_compress_help_lists_no_unavailable_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    text = capsys.readouterr().out
    assert "--qat-epochs" not in text and "not available" not in text
    assert "-q, --quiet" in text and "--force" in text
    from edgevid.compress.pipeline import compress_model

    with pytest.raises(EdgevidError, match="not available in this build"):  # the library API still says so
        compress_model("tsm", ".", "x.pt", prune_channels=0.25, qat_epochs=1)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """(checkpoint, shipped config): the shipped TSM (frame stride 2), channel-pruned, not fine-tuned."""
    from edgevid.compress.pipeline import compress_model
    from edgevid.data.synth import generate_dataset
    from edgevid.models import build_model

    shipped = build_model("tsm", checkpoint="default").config
    assert shipped.frame_stride == 2, "the test needs a shipped checkpoint with a frame stride"
    root = tmp_path_factory.mktemp("compressed")
    generate_dataset(root / "D", videos_per_class=2, frames=16, size=64, progress=False)
    out = root / "pruned.pt"
    # At 64 px (the data's size) to keep the test short; the stride does not depend on it.
    compress_model("tsm", root / "D", out, checkpoint="default", prune_channels=0.25, epochs=0, size=64,
                   measure_latency=False)
    return out, shipped


def test_compress_keeps_the_frame_stride_and_sampling(compressed: tuple[Path, object]) -> None:
    """The shipped TSM samples every 2nd frame; the compressed model must too (export reads
    ``config.frame_stride`` into the manifest's ``sampling.stride``)."""
    import torch

    from edgevid.models import build_model

    out, shipped = compressed
    config = torch.load(out, weights_only=True)["config"]
    assert {k: config[k] for k in ("frame_stride", "frames", "input_size", "resize", "width_mult")} == \
        {"frame_stride": 2, "frames": shipped.frames, "input_size": 64,
         "resize": round(64 * shipped.resize / shipped.input_size), "width_mult": shipped.width_mult}
    assert build_model("tsm", checkpoint=out).config.frame_stride == 2


@pytest.mark.slow
def test_compressed_export_records_the_frame_stride(compressed: tuple[Path, object], tmp_path: Path) -> None:
    """The same through a real export (about a minute on a small CPU: kept out of the default suite)."""
    from edgevid.export.api import export_model
    from edgevid.manifest import Manifest

    export_model("tsm", tmp_path / "art", checkpoint=compressed[0], mode="stream", validate=False, progress=False)
    assert Manifest.load(tmp_path / "art").sampling.stride == 2


def _final_label_hits(artifact: Path, videos: list[tuple[Path, str]], **session_options: int) -> int:
    """Videos whose final prediction (as `edgevid run` makes it) is their label."""
    from edgevid import runtime

    hits = 0
    with runtime.load(artifact, "onnxruntime") as runner:
        for path, label in videos:
            session = runtime.open_session(runner, **session_options)
            for frame in runtime.open_source(str(path)):
                session.push(frame)
            hits += int(session.last is not None and session.last.label == label)
            session.close()
    return hits


@pytest.mark.slow  # 24 s: a compress -> export -> run chain
def test_compress_export_run_keeps_the_stride_and_the_accuracy(tmp_path: Path) -> None:
    """The regression as a user met it: shipped TSM (stride 2) -> compress -> export -> run.

    The compressed export must sample every 2nd frame like the shipped one and reach its
    final-label accuracy on held-out videos (light sparsity, no fine-tune: the weights barely
    move). Stepping every frame, as the broken compress made the runtime do, must score
    clearly lower on the same videos, or this test could not see the regression.
    """
    from edgevid.compress.pipeline import compress_model
    from edgevid.data.synth import generate_dataset
    from edgevid.export.api import export_model
    from edgevid.manifest import Manifest

    data = tmp_path / "heldout"
    generate_dataset(data, seed=1, videos_per_class=4, frames=16, size=112, val_fraction=0.5, progress=False)
    videos = [(p, p.parent.name) for p in sorted((data).glob("*/*.mp4"))
              if f"{p.parent.name}/{p.name}" in (data / "val.txt").read_text()]
    assert len(videos) >= 20
    compressed = tmp_path / "sparse.pt"
    compress_model("tsm", data, compressed, checkpoint="default", sparsity=0.2, epochs=0, measure_latency=False)
    shipped_art, compressed_art = tmp_path / "shipped", tmp_path / "compressed"
    export_model("tsm", shipped_art, checkpoint="default", mode="stream", validate=False, progress=False)
    export_model("tsm", compressed_art, checkpoint=compressed, mode="stream", validate=False, progress=False)
    assert Manifest.load(compressed_art).sampling == Manifest.load(shipped_art).sampling
    assert Manifest.load(compressed_art).sampling.stride == 2

    shipped = _final_label_hits(shipped_art, videos)
    kept = _final_label_hits(compressed_art, videos)
    every_frame = _final_label_hits(compressed_art, videos, every=1)
    assert kept >= shipped - 1, (kept, shipped, len(videos))
    assert kept > len(videos) / 2, (kept, len(videos))
    assert every_frame <= kept - 3, (every_frame, kept, len(videos))


def test_dataloader_workers_leave_no_sigchld_handler_behind(tiny_data: Path) -> None:
    """torch's DataLoader installs a process-wide SIGCHLD handler and never removes it; edgevid's
    training and evaluation put the previous handling back, so the program around them (here: the
    test run) is not interrupted on every child exit afterwards (it crashed this suite once)."""
    from torch.utils.data._utils import signal_handling

    from edgevid.train.evaluate import evaluate_checkpoint

    before = signal.getsignal(signal.SIGCHLD)
    result = evaluate_checkpoint("tsm", str(tiny_data), "default", workers=1, progress=False)
    assert result.clips > 0
    assert signal.getsignal(signal.SIGCHLD) == before
    assert signal_handling._SIGCHLD_handler_set is False  # a later DataLoader installs torch's again
