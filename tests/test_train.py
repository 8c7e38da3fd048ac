"""Tests of edgevid.train and the `edgevid train` / `edgevid eval` verbs.

- TSM (online, causal shift) learns to tell time-reversed class pairs apart in a short run
  on a small synthetic set; TSN, which averages frames, stays at chance on them.
- Resuming after an interruption ends with the same weights as an uninterrupted run.
- The best checkpoint loads with `build_model` and `edgevid eval` reproduces its accuracy.
- Bad input (empty folder, corrupt video, one class, missing files, nothing to resume,
  mismatched classes, bad options) is a one-line error and exit code 2, no traceback.

Everything runs on one torch thread: the test machines are small and shared, oversubscribed
threads are several times slower there, and one thread makes the numbers independent of
the core count.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevid.cli import main
from edgevid.data.synth import CLASSES, ORDER_PAIRS, clip_rng, generate_dataset, render_clip
from edgevid.data.video_io import read_frames, write_video
from edgevid.models import build_model
from edgevid.train.trainer import EpochResult, TrainConfig, last_path, train

# ---------------------------------------------------------------- settings

# The order test: one order pair, each clip of the second class the time reversal of a clip
# of the first. Tuned on this 2-core machine (see test_tsm_beats_tsn_on_order_pairs).
ORDER_PAIR = ("appearing", "disappearing")
ORDER_TRAIN, ORDER_VAL = 128, 32  # clips per class
ORDER_SIZE, ORDER_FRAMES = 64, 4  # video = model input: every frame is used, in train and val
# 4 epochs (5 before: 30 s more for nothing): TSM measured 0.50, 0.50, 0.94, 0.92 order-pair per epoch
# here, TSN at most 0.52.
ORDER_RUN = {"epochs": 4, "batch_size": 8, "lr": 2e-3, "width_mult": 1.0, "seed": 0}
TSM_MIN_PAIR, TSN_MAX_PAIR = 0.8, 0.65

# The small dataset of the resume / checkpoint / bad-input tests: all 11 classes.
TINY_ARGS = ["--size", "32", "--frames", "4", "--width", "0.25", "--batch-size", "8", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Train on one torch thread (conftest's one_torch_thread)."""


def write_order_pair_dataset(root: Path, pair: tuple[str, str], n_train: int, n_val: int, size: int,
                             frames: int, seed: int = 0) -> Path:
    """A dataset of one order pair in which clip k of ``pair[1]`` is clip k of ``pair[0]`` reversed.

    ``render_clip`` gives the two classes of a pair the same frames in opposite order when
    their generators start in the same state, so here both draw from the first class's
    generator. A model that averages frames then sees the same frames for both classes of
    every clip pair and is at chance by construction, not by luck of the draw; and a
    temporal model cannot shortcut order by memorising a clip's look.
    """
    assert pair in ORDER_PAIRS, f"{pair} is not an order pair of the synthetic set"
    root.mkdir(parents=True)
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for label, name in enumerate(pair):
        (root / name).mkdir()
        for k in range(n_train + n_val):
            clip, _ = render_clip(name, clip_rng(seed, CLASSES.index(pair[0]), k), size, frames)
            rel = f"{name}/{name}_{k:03d}.mp4"
            write_video(root / rel, clip, fps=8.0)
            lines["train" if k < n_train else "val"].append(f"{rel} {label}\n")
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in pair))
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("".join(rows))
    return root


@pytest.fixture(scope="module")
def order_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[EpochResult], Path]]:
    """TSM (online) and TSN trained with identical settings on the order-pair dataset."""
    root = tmp_path_factory.mktemp("order")
    data = write_order_pair_dataset(root / "data", ORDER_PAIR, ORDER_TRAIN, ORDER_VAL, ORDER_SIZE, ORDER_FRAMES)
    runs = {}
    for model in ("tsm", "tsn-mobilenetv2"):
        out = root / f"{model}.pt"
        cfg = TrainConfig(model=model, data=str(data), out=str(out), size=ORDER_SIZE, resize=ORDER_SIZE,
                          frames=ORDER_FRAMES, workers=0, progress=False, **ORDER_RUN)
        runs[model] = (train(cfg), out)
    for model, (history, _) in runs.items():  # shown with `pytest -s`: the measured numbers
        print(f"{model}: val order-pair per epoch {[round(h.val_pair, 3) for h in history]}, "
              f"top-1 {history[-1].val_top1:.3f}, {sum(h.seconds for h in history):.0f} s")
    return runs


# ---------------------------------------------------------------- TSM vs TSN


def test_order_pair_dataset_is_time_reversed(order_runs: dict[str, tuple[list[EpochResult], Path]]) -> None:
    """The premise of the next test: the two classes' clips are the same frames in opposite order."""
    data = order_runs["tsm"][1].parent / "data"
    first, second = ORDER_PAIR
    reversed_diff, same_order_diff = [], []
    for k in range(ORDER_TRAIN, ORDER_TRAIN + ORDER_VAL):
        forward = read_frames(data / first / f"{first}_{k:03d}.mp4").astype(np.float32)
        backward = read_frames(data / second / f"{second}_{k:03d}.mp4").astype(np.float32)
        assert forward.shape == backward.shape == (ORDER_FRAMES, ORDER_SIZE, ORDER_SIZE, 3)
        reversed_diff.append(np.abs(forward - backward[::-1]).mean())
        same_order_diff.append(np.abs(forward - backward).mean())
    # Equal up to MPEG-4 artefacts (a P-frame of one clip is the I-frame of the other, ~2 grey
    # levels at 64 px), and clearly different if the order is not reversed.
    assert np.mean(reversed_diff) < 3.0 and np.mean(same_order_diff) > 2 * np.mean(reversed_diff)


def test_tsm_beats_tsn_on_order_pairs(order_runs: dict[str, tuple[list[EpochResult], Path]]) -> None:
    tsm, _ = order_runs["tsm"]
    tsn, _ = order_runs["tsn-mobilenetv2"]
    summary = (f"TSM order-pair per epoch {[round(h.val_pair, 3) for h in tsm]}, "
               f"TSN {[round(h.val_pair, 3) for h in tsn]}")
    assert len(tsm) == len(tsn) == ORDER_RUN["epochs"]
    # The last epoch, not the best one: no selection on the val set in TSM's favour.
    assert tsm[-1].val_pair >= TSM_MIN_PAIR, summary
    # Every epoch: TSN is at chance whichever epoch one would pick.
    assert max(h.val_pair for h in tsn) <= TSN_MAX_PAIR, summary
    # With only the pair's two classes, top-1 is the same question as the order pair.
    assert tsm[-1].val_top1 == pytest.approx(tsm[-1].val_pair) and tsn[-1].val_top1 <= TSN_MAX_PAIR


def test_best_checkpoint_loads_and_eval_reproduces_it(order_runs: dict[str, tuple[list[EpochResult], Path]],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    history, ckpt = order_runs["tsm"]
    model = build_model("tsm", checkpoint=ckpt)
    assert model.labels == list(ORDER_PAIR) and model.num_classes == 2
    assert model.config.width_mult == ORDER_RUN["width_mult"]
    assert (model.config.frames, model.config.input_size, model.config.resize) == (ORDER_FRAMES, ORDER_SIZE,
                                                                                  ORDER_SIZE)
    best = max(history, key=lambda h: h.val_top1)  # the first best epoch is the one kept
    assert main(["eval", "--model", "tsm", "--data", str(ckpt.parent / "data"), "--checkpoint", str(ckpt),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"\[val, (\d+) clips\]: top-1 ([\d.]+), order-pair ([\d.]+)", out)
    assert match, out
    assert int(match[1]) == 2 * ORDER_VAL
    assert float(match[2]) == pytest.approx(best.val_top1, abs=1e-3)
    assert float(match[3]) == pytest.approx(best.val_pair, abs=1e-3)
    assert all(name in out for name in ORDER_PAIR)  # per-class lines
    tsn = build_model("tsn-mobilenetv2", checkpoint=order_runs["tsn-mobilenetv2"][1])
    assert tsn.labels == list(ORDER_PAIR) and tsn.config.shift == "none" and tsn.config.width_mult == 1.0


# ---------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 11 classes, 3 videos each (2 train, 1 val), 32 px, 4 frames."""
    root = tmp_path_factory.mktemp("tiny") / "ds"
    generate_dataset(root, seed=1, videos_per_class=3, frames=4, size=32, val_fraction=0.34, progress=False)
    return root


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "tsm", "--data", str(data), "-o", str(out), *TINY_ARGS, *extra]


@pytest.fixture(scope="module")
def resumed(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-epoch run interrupted (Ctrl-C) after epoch 1 and resumed, and the same run uninterrupted."""
    root = tmp_path_factory.mktemp("resume")
    straight, interrupted = root / "straight.pt", root / "resumed.pt"
    assert main(_train_args(tiny, straight, "--epochs", "2")) == 0

    real_replace = os.replace

    def replace_then_interrupt(src, dst):  # the first epoch's state is written, then Ctrl-C
        real_replace(src, dst)
        if str(dst).endswith(".last"):
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", replace_then_interrupt)
        assert main(_train_args(tiny, interrupted, "--epochs", "2")) == 130
    after_one = torch.load(last_path(interrupted), weights_only=True)
    assert after_one["epoch"] == 1
    shutil.copy(last_path(interrupted), root / "epoch1.last")
    assert main(_train_args(tiny, interrupted, "--epochs", "2", "--resume")) == 0
    return {"straight": straight, "resumed": interrupted, "epoch1": root / "epoch1.last", "data": tiny}


def test_resume_ends_where_an_uninterrupted_run_ends(resumed: dict[str, Path]) -> None:
    a = torch.load(last_path(resumed["straight"]), weights_only=True)
    b = torch.load(last_path(resumed["resumed"]), weights_only=True)
    one = torch.load(resumed["epoch1"], weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and len(b["history"]) == 2
    assert b["history"][0] == one["history"][0]  # epoch 1 kept, not redone
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert any(not torch.equal(v, one["model"][k]) for k, v in b["model"].items())  # epoch 2 did train
    drop = {"seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in a["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in b["history"]]


def test_resume_when_already_done_changes_nothing(resumed: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                                  ) -> None:
    before = last_path(resumed["resumed"]).read_bytes()
    assert main(_train_args(resumed["data"], resumed["resumed"], "--epochs", "2", "--resume")) == 0
    assert "already trained 2 epochs" in capsys.readouterr().err
    assert last_path(resumed["resumed"]).read_bytes() == before


def test_checkpoint_keeps_width_classes_and_labels(resumed: dict[str, Path]) -> None:
    model = build_model("tsm", checkpoint=resumed["straight"])
    assert model.config.width_mult == 0.25 and model.num_classes == len(CLASSES)
    assert model.labels == list(CLASSES)
    assert (model.config.frames, model.config.input_size) == (4, 32)
    assert model.config.shift == "causal" and model.config.can_stream
    ckpt = torch.load(resumed["straight"], weights_only=True)
    assert ckpt["metrics"]["val_top1"] == max(h["val_top1"] for h in
                                              torch.load(last_path(resumed["straight"]), weights_only=True)["history"])


# ---------------------------------------------------------------- bad input


def _error(capsys: pytest.CaptureFixture[str], verb: str) -> str:
    """The one error line of a failed command (asserting it is one line, no traceback)."""
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edgevid {verb}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_train_on_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(_train_args(tmp_path / "empty", tmp_path / "m.pt")) == 2
    assert "no videos found in" in _error(capsys, "train")
    assert not (tmp_path / "m.pt").exists()


def test_train_on_corrupt_video(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = Path(shutil.copytree(tiny, tmp_path / "ds"))
    victim = data / (data / "train.txt").read_text().split()[0]
    victim.write_bytes(os.urandom(3000))
    assert main(_train_args(data, tmp_path / "m.pt")) == 2
    err = _error(capsys, "train")
    assert str(victim) in err and "1 of 22 videos" in err and "--skip-unreadable" in err


def test_eval_skips_a_corrupt_video_when_asked(resumed: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = Path(shutil.copytree(resumed["data"], tmp_path / "ds"))
    victim = data / (data / "val.txt").read_text().split()[0]
    victim.write_bytes(os.urandom(3000))
    argv = ["eval", "--model", "tsm", "--data", str(data), "--checkpoint", str(resumed["straight"]), "--quiet"]
    assert main(argv) == 2
    assert victim.name in _error(capsys, "eval")
    assert main([*argv, "--skip-unreadable"]) == 0
    assert f"[val, {len(CLASSES) - 1} clips, 1 unreadable skipped]" in capsys.readouterr().out


def test_train_on_one_class(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(tiny / "static", tmp_path / "one" / "static")
    assert main(_train_args(tmp_path / "one", tmp_path / "m.pt")) == 2
    assert "only one class (static)" in _error(capsys, "train")


def test_train_on_list_naming_missing_files(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = Path(shutil.copytree(tiny, tmp_path / "ds"))
    with (data / "train.txt").open("a") as f:
        f.write("nowhere/gone.mp4 0\n")
    assert main(_train_args(data, tmp_path / "m.pt")) == 2
    err = _error(capsys, "train")
    assert "1 missing file(s)" in err and "nowhere/gone.mp4" in err


def test_resume_with_nothing_to_resume(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_train_args(tiny, tmp_path / "m.pt", "--resume")) == 2
    assert f"nothing to resume: {tmp_path / 'm.pt.last'} not found" in _error(capsys, "train")


def test_resume_refuses_other_settings_or_a_damaged_state(resumed: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(resumed["epoch1"], tmp_path / "m.pt.last")
    assert main([*_train_args(resumed["data"], tmp_path / "m.pt", "--resume"), "--width", "0.5"]) == 2
    assert "other settings (width_mult 0.25 -> 0.5)" in _error(capsys, "train")
    (tmp_path / "m.pt.last").write_bytes(b"not a checkpoint")
    assert main(_train_args(resumed["data"], tmp_path / "m.pt", "--resume")) == 2
    assert "damaged or was not written by edgevid train" in _error(capsys, "train")


def test_eval_with_classes_other_than_the_checkpoints(resumed: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("moving_left", "moving_right", "static"):
        shutil.copytree(resumed["data"] / name, tmp_path / "three" / name)
    assert main(["eval", "--model", "tsm", "--data", str(tmp_path / "three"), "--checkpoint",
                 str(resumed["straight"]), "--quiet"]) == 2
    err = _error(capsys, "eval")
    assert "do not match the checkpoint" in err and "dataset has 3" in err and "checkpoint 11" in err
    assert "not in the dataset: moving_up" in err


@pytest.mark.parametrize("extra, message", [
    (["--frames", "0"], "--frames must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "x3d-xs"], "--width-mult applies to the 2D-backbone families"),  # TINY_ARGS has --width 0.25
    (["--regime", "stream"], "--regime stream applies to the models whose stream outgrows their clip"),
    (["--model", "x3d-xs", "--regime", "stream"], "not to x3d-xs"),
    (["--stream-frames", "32"], "--stream-frames applies to --regime stream (the default of the streaming 3D CNNs"),
    (["--model", "x3d-xs-online", "--sampling", "segment"],
     "--sampling segment does not apply to the stream regime (the default of x3d-xs-online)"),
    (["--model", "x3d-xs-online", "--frames", "4", "--stream-frames", "4"],
     "--stream-frames must be more than --frames (4)"),
    (["--model", "r2plus1d-18-online", "--frames", "4"], "r2plus1d-18-online takes at least 8 frames per clip"),
])
def test_train_refuses_bad_options(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   extra: list[str], message: str) -> None:
    assert main([*_train_args(tiny, tmp_path / "m.pt"), *extra]) == 2
    assert message in _error(capsys, "train")


def test_train_output_that_is_a_folder(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_train_args(tiny, tmp_path)) == 2
    assert "is a directory" in _error(capsys, "train")


def test_frame_stride_is_the_typical_segment_gap():
    from edgevid.train.trainer import TrainConfig, _frame_stride

    segment = TrainConfig(model="tsm", data=".", out="x.pt", frames=8)
    assert _frame_stride(segment, [16, 16, 17, None]) == 2  # 16-frame videos, 8 segments
    assert _frame_stride(segment, [64, 64]) == 8
    assert _frame_stride(segment, [4]) == 1  # never below one frame
    dense = TrainConfig(model="tsm", data=".", out="x.pt", frames=8, sampling="dense")
    assert _frame_stride(dense, [64]) == 1
