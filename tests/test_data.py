"""Tests of edgevid.data: the synthetic dataset, readers, sampling, bad inputs, and `edgevid data synth`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgevid.cli import main
from edgevid.data.datasets import VideoClipDataset, open_dataset
from edgevid.data.sampling import ClipSampler, dense_indices, segment_indices
from edgevid.data.sources import (
    DatasetError,
    load_annotation_list,
    load_class_folders,
    resolve_split,
)
from edgevid.data.synth import CLASSES, ORDER_PAIRS, clip_rng, generate_dataset, render_clip
from edgevid.data.video_io import VideoDecodeError, count_frames, read_frames
from edgevid.errors import EdgevidError

SIZE, FRAMES, PER_CLASS = 64, 8, 3


def _make(root: Path, seed: int = 0) -> Path:
    generate_dataset(
        root,
        seed=seed,
        videos_per_class=PER_CLASS,
        frames=FRAMES,
        size=SIZE,
        val_fraction=0.34,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset shared by the read-only tests."""
    return _make(tmp_path_factory.mktemp("synth") / "ds")


def _copy(synth: Path, tmp_path: Path) -> Path:
    """A private copy of the shared dataset, for tests that damage it."""
    return Path(shutil.copytree(synth, tmp_path / "ds"))


# ---------------------------------------------------------------- the synthetic dataset


def test_classes_are_order_pairs_plus_static() -> None:
    paired = [name for pair in ORDER_PAIRS for name in pair]
    assert len(CLASSES) == 11 and len(set(CLASSES)) == 11
    assert sorted(paired + ["static"]) == sorted(CLASSES)


def test_same_seed_same_dataset(synth: Path, tmp_path: Path) -> None:
    again = _make(tmp_path / "again", seed=0)
    other = _make(tmp_path / "other", seed=1)
    for name in ("classes.txt", "train.txt", "val.txt"):
        assert (again / name).read_bytes() == (synth / name).read_bytes()
    rel = (synth / "train.txt").read_text().split()[0]
    assert np.array_equal(read_frames(synth / rel), read_frames(again / rel))
    assert not np.array_equal(read_frames(synth / rel), read_frames(other / rel))


def test_files_decode_with_right_frame_count_and_size(synth: Path) -> None:
    videos = sorted(synth.glob("*/*.mp4"))
    assert len(videos) == len(CLASSES) * PER_CLASS
    for path in videos[:: PER_CLASS * 2]:
        assert count_frames(path) == FRAMES
        frames = read_frames(path)
        assert frames.shape == (FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
    # Selected indices come back in the order asked for, repeats included.
    assert np.array_equal(read_frames(videos[0], [3, 1, 1]), read_frames(videos[0])[[3, 1, 1]])


def test_label_lists_match_folders(synth: Path) -> None:
    classes = (synth / "classes.txt").read_text().split()
    assert tuple(classes) == CLASSES
    listed = {}
    for split in ("train", "val"):
        for line in (synth / f"{split}.txt").read_text().splitlines():
            rel, label = line.split()
            assert rel.split("/")[0] == classes[int(label)]
            assert rel not in listed
            listed[rel] = int(label)
    on_disk = {str(p.relative_to(synth)) for p in synth.glob("*/*.mp4")}
    assert set(listed) == on_disk
    val_labels = {int(line.split()[1]) for line in (synth / "val.txt").read_text().splitlines()}
    assert val_labels == set(range(len(CLASSES)))  # stratified: every class in val
    # Both readers agree on every (video, label).
    folders = load_class_folders(synth)
    lists = [resolve_split(synth, split) for split in ("train", "val")]
    assert {(s.path, s.label) for s in folders.samples} == {
        (s.path, s.label) for sl in lists for s in sl.samples
    }
    assert folders.classes == lists[0].classes == classes


@pytest.mark.parametrize("first, second", ORDER_PAIRS)
def test_order_pair_is_time_reversed(first: str, second: str) -> None:
    for video in range(3):
        a, meta_a = render_clip(first, clip_rng(7, 0, video), SIZE, FRAMES)
        b, meta_b = render_clip(second, clip_rng(7, 0, video), SIZE, FRAMES)
        # Same frames in opposite order: any frame-averaging statistic is identical ...
        assert np.array_equal(b, a[::-1])
        assert np.array_equal(a.mean(0), b.mean(0))
        assert np.array_equal(np.sort(a.reshape(FRAMES, -1), 0), np.sort(b.reshape(FRAMES, -1), 0))
        # ... while the direction of change is opposite.
        for field in ("angle", "radius", "alpha"):
            assert np.array_equal(getattr(meta_b, field), getattr(meta_a, field)[::-1])
        assert np.array_equal(meta_b.centre, meta_a.centre[::-1])


def _change(meta) -> dict[str, float]:
    """Net change over the clip of each ground-truth quantity."""
    return {
        "x": meta.centre[-1, 0] - meta.centre[0, 0],
        "y": meta.centre[-1, 1] - meta.centre[0, 1],
        "angle": meta.angle[-1] - meta.angle[0],
        "radius": meta.radius[-1] - meta.radius[0],
        "alpha": meta.alpha[-1] - meta.alpha[0],
    }


def test_each_class_moves_as_named() -> None:
    expected = {
        "moving_left": ("x", -1),
        "moving_right": ("x", 1),
        "moving_up": ("y", -1),
        "moving_down": ("y", 1),
        "rotating_cw": ("angle", 1),
        "rotating_ccw": ("angle", -1),
        "growing": ("radius", 1),
        "shrinking": ("radius", -1),
        "appearing": ("alpha", 1),
        "disappearing": ("alpha", -1),
    }
    for c, name in enumerate(CLASSES):
        for video in range(4):
            clip, meta = render_clip(name, clip_rng(3, c, video), SIZE, FRAMES)
            change = _change(meta)
            travel = float(np.hypot(change["x"], change["y"]))
            assert np.all((meta.centre > 0) & (meta.centre < SIZE)), name
            if name == "static":
                assert travel < 0.07 * SIZE and change["angle"] == change["radius"] == change["alpha"] == 0
                continue
            key, sign = expected[name]
            assert np.sign(change[key]) == sign, (name, change)
            if key in ("x", "y"):
                assert abs(change[key]) > 0.25 * SIZE
            else:
                assert travel < 0.07 * SIZE, name  # only the moving classes travel far


# ---------------------------------------------------------------- sampling


def test_segment_indices() -> None:
    assert segment_indices(16, 8).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_indices(8, 8).tolist() == list(range(8))
    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = segment_indices(20, 4, train=True, rng=rng)
        assert np.all((idx >= [0, 5, 10, 15]) & (idx < [5, 10, 15, 20]))  # one frame per segment
    short = segment_indices(3, 8, train=True, rng=rng)
    assert len(short) == 8 and np.all(np.diff(short) >= 0) and short.max() <= 2
    with pytest.raises(ValueError):
        segment_indices(0, 8)


def test_dense_indices() -> None:
    assert dense_indices(16, 4, stride=2).tolist() == [4, 6, 8, 10]  # centred: span 7 in 16
    assert dense_indices(5, 4, stride=2).tolist() == [0, 2, 4, 4]  # too short: pad with the last frame
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = dense_indices(16, 4, stride=2, train=True, rng=rng)
        assert np.all(np.diff(idx) == 2) and idx[0] >= 0 and idx[-1] <= 15
        starts.add(int(idx[0]))
    assert starts == set(range(10))
    with pytest.raises(ValueError):
        dense_indices(16, 4, stride=0)


def test_clip_sampler() -> None:
    assert ClipSampler(8)(16).tolist() == segment_indices(16, 8).tolist()
    assert ClipSampler(4, "dense", 2)(16).tolist() == [4, 6, 8, 10]
    with pytest.raises(ValueError, match="mode"):
        ClipSampler(8, "random")


# ---------------------------------------------------------------- datasets


def test_numpy_dataset_iterates_raw_clips(synth: Path) -> None:
    ds = open_dataset(synth, "val", ClipSampler(4))
    assert ds.classes == list(CLASSES) and not ds.skipped
    clips = list(ds)
    assert len(clips) == len(ds) == len(CLASSES)
    frames, label = clips[0]
    assert frames.shape == (4, SIZE, SIZE, 3) and frames.dtype == np.uint8 and label == 0
    assert np.array_equal(frames, read_frames(ds.samples[0].path)[segment_indices(FRAMES, 4)])


def test_torch_dataset_uses_runtime_preprocessing(synth: Path) -> None:
    torch = pytest.importorskip("torch")
    from edgevid.data.torch_dataset import TorchVideoDataset
    from edgevid.manifest import Preprocess
    from edgevid.runtime.preprocess import preprocess_clip

    spec = Preprocess(resize=56, crop=48)
    test = TorchVideoDataset(open_dataset(synth, "val", ClipSampler(4)), spec)
    clip, label = test[1]
    assert clip.dtype == torch.float32 and tuple(clip.shape) == (4, 3, 48, 48)
    frames, same_label = test.clips.load(1)
    assert label == same_label and np.array_equal(clip.numpy(), preprocess_clip(frames, spec))

    train = TorchVideoDataset(open_dataset(synth, "train", ClipSampler(4), train=True), spec)
    torch.manual_seed(0)
    first = train[0][0]
    torch.manual_seed(0)
    assert tuple(first.shape) == (4, 3, 48, 48) and torch.equal(first, train[0][0])


# ---------------------------------------------------------------- bad inputs


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no videos found"):
        load_class_folders(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="no videos found"):
        resolve_split(tmp_path, "train")


def test_only_one_class(synth: Path, tmp_path: Path) -> None:
    shutil.copytree(synth / "static", tmp_path / "static")
    with pytest.raises(DatasetError, match="only one class"):
        load_class_folders(tmp_path)


def test_list_with_missing_files(synth: Path, tmp_path: Path) -> None:
    root = _copy(synth, tmp_path)
    lines = (root / "train.txt").read_text().splitlines()
    (root / "train.txt").write_text("\n".join([*lines, "nowhere/a.mp4 0", "nowhere/b.mp4 1"]) + "\n")
    with pytest.raises(DatasetError, match=r"2 missing file\(s\).*nowhere/a.mp4"):
        resolve_split(root, "train")


def test_label_out_of_range(synth: Path, tmp_path: Path) -> None:
    root = _copy(synth, tmp_path)
    first = (root / "train.txt").read_text().split()[0]
    (root / "train.txt").write_text(f"{first} 0\n{first} {len(CLASSES)}\n")
    with pytest.raises(DatasetError, match=r"train.txt:2: label 11 is out of range for 11 classes"):
        resolve_split(root, "train")


def test_three_column_list_and_inferred_classes(synth: Path, tmp_path: Path) -> None:
    root = _copy(synth, tmp_path)
    (root / "classes.txt").unlink()
    rows = [line.split() for line in (root / "val.txt").read_text().splitlines()]
    (root / "val.txt").write_text("".join(f"{rel} {FRAMES} {label}\n" for rel, label in rows))
    samples = load_annotation_list(root / "val.txt")
    assert samples.classes == list(CLASSES)  # from the folder names, which agree with the labels
    assert [s.label for s in samples.samples] == [int(label) for _, label in rows]


def _corrupt(root: Path) -> Path:
    victim = sorted((root / "moving_up").glob("*.mp4"))[0]
    victim.write_bytes(np.random.default_rng(0).bytes(4000))
    return victim


def test_corrupt_video_raises_naming_it(synth: Path, tmp_path: Path) -> None:
    root = _copy(synth, tmp_path)
    victim = _corrupt(root)
    with pytest.raises(VideoDecodeError, match=victim.name):
        read_frames(victim)
    with pytest.raises(EdgevidError, match=f"{victim.name}.*on_error='skip'"):
        VideoClipDataset(load_class_folders(root), ClipSampler(4), on_error="raise")


def test_corrupt_video_skipped_and_counted(synth: Path, tmp_path: Path) -> None:
    root = _copy(synth, tmp_path)
    victim = _corrupt(root)
    ds = VideoClipDataset(load_class_folders(root), ClipSampler(4), on_error="skip")
    assert ds.skipped == [victim] and len(ds) == len(CLASSES) * PER_CLASS - 1
    assert "skipped 1 unreadable video(s) of 33" in ds.skip_report() and victim.name in ds.skip_report()
    # Skipping drops the (video, label) pair together: every label still matches its folder.
    assert all(CLASSES[s.label] == s.path.parent.name for s in ds.samples)


def test_all_videos_corrupt(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.mp4").write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="none of the 2 videos"):
        VideoClipDataset(load_class_folders(tmp_path), ClipSampler(4), on_error="skip")


# ---------------------------------------------------------------- CLI


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["data", "synth", "-o", str(out), "--videos-per-class", "2", "--frames", "6", "--size", "32"]
    assert main(argv) == 0
    assert "wrote 22 videos of 11 classes" in capsys.readouterr().out
    assert len((out / "val.txt").read_text().splitlines()) == 11
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "edgevid data: error:" in err and "not empty" in err and "--force" in err
    assert main([*argv, "--seed", "5", "--force"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp or old folders left
    assert main(["data", "synth", "-o", str(tmp_path / "bad"), "--size", "33"]) == 2
    assert main(["data"]) == 2
