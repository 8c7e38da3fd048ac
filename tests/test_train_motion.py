"""Training and torch evaluation of the motion models (issue 26, design section 5).

- A flow model (tsn-flow-mobilenetv2) trains end to end through `edgevid train`, its checkpoint
  loads with its 2L-channel first conv, and `edgevid eval` reproduces the val numbers training
  recorded (the same sampling and motion code in both).
- The dataset's motion clips are ``motion_inputs`` of the same T + L consecutive frames, in
  test mode and in train mode (a random start), for flow and RGB differences.
- Motion augmentation is one translation for every channel and step, and nothing else.
- A two-stream clip pairs each motion stack with the RGB frame it ends at; `edgevid eval` of a
  two-stream model gives the numbers an independent computation from the frames gives (fused
  with weights rgb 1 : flow 1.5, and each stream alone).
- Bad combinations are one-line errors.

Small and fast: 32 px crops, 4 stacks, 3 videos per class, one epoch, one torch thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevid.data.datasets import open_dataset
from edgevid.data.sampling import dense_indices
from edgevid.data.synth import CLASSES, ORDER_PAIRS, generate_dataset
from edgevid.data.torch_dataset import TorchVideoDataset, TwoStreamDataset, augment_motion, clip_sampler
from edgevid.data.video_io import read_frames
from edgevid.manifest import Preprocess
from edgevid.models import build_model, get_config
from edgevid.models.weights import save_checkpoint
from edgevid.runtime.motion import motion_inputs
from edgevid.runtime.preprocess import preprocess_clip
from tests.probe import check_one_line, edgevid

FLOW, RGBDIFF, TWO_STREAM = "tsn-flow-mobilenetv2", "tsn-rgbdiff-mobilenetv2", "two-stream-mobilenetv2"
SIZE, RESIZE, T = 32, 37, 4  # --size 32 gives resize round(32 * 256 / 224) = 37
ENV = {"OMP_NUM_THREADS": "1"}
TRAIN_ARGS = ["--size", str(SIZE), "--frames", str(T), "--width", "0.25", "--batch-size", "8",
              "--epochs", "1", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Train on one torch thread (conftest's one_torch_thread)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 11 classes, 3 videos each (2 train, 1 val), 12 frames of 48 px: T + L = 9 fit with slack."""
    root = tmp_path_factory.mktemp("motion") / "ds"
    generate_dataset(root, seed=3, videos_per_class=3, frames=12, size=48, val_fraction=0.34, progress=False)
    return root


@pytest.fixture(scope="module")
def flow_run(data: Path) -> Path:
    """tsn-flow-mobilenetv2 trained one epoch through the CLI; its checkpoint."""
    out = data.parent / "flow.pt"
    proc = edgevid(["train", "--model", FLOW, "--data", data, "-o", out, *TRAIN_ARGS], cwd=data.parent, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _spec(name: str = FLOW) -> Preprocess:
    """The preprocessing the runs here train ``name`` with."""
    config = get_config(name)
    return Preprocess(resize=RESIZE, crop=SIZE, mean=list(config.mean), std=list(config.std))


def test_flow_model_trains_through_the_cli_and_its_checkpoint_loads(flow_run: Path, data: Path) -> None:
    motion = get_config(FLOW).motion
    ckpt = torch.load(flow_run, map_location="cpu", weights_only=True)
    assert ckpt["train_config"]["sampling"] == "dense"  # filled in for a motion model
    model = build_model(FLOW, checkpoint=flow_run)
    assert model.labels == list(CLASSES)
    assert (model.config.frames, model.config.input_size, model.config.resize) == (T, SIZE, RESIZE)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == motion.channels == 2 * motion.length
    for key, value in ckpt["state_dict"].items():  # the weights trained are the weights loaded
        assert torch.equal(model.state_dict()[key], value), key
    # `edgevid eval` reproduces what training measured on val: the same clips, stacks and network.
    proc = edgevid(["eval", "--model", FLOW, "--data", data, "--checkpoint", flow_run, "--json", "-q"],
                   cwd=data.parent, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["clips"] == len(CLASSES)
    assert result["top1"] == pytest.approx(ckpt["metrics"]["val_top1"], abs=1e-6)
    assert result["order_pair"] == pytest.approx(ckpt["metrics"]["val_order_pair"], abs=1e-6)


@pytest.mark.parametrize("name", [FLOW, RGBDIFF])
def test_dataset_motion_clips_are_motion_inputs_of_the_same_frames(data: Path, name: str) -> None:
    config = get_config(name)
    motion, spec = config.motion, _spec(name)
    sampler = clip_sampler(T, "segment", motion, config.frame_stride)  # segment asked: dense all the same
    assert (sampler.frames, sampler.mode) == (T + motion.length, "dense")
    test = TorchVideoDataset(open_dataset(data, "val", sampler), spec, augment=True, motion=motion)
    train = TorchVideoDataset(open_dataset(data, "train", sampler, train=True), spec, augment=False, motion=motion)
    for dataset in (test, train):
        for index in (0, len(dataset) - 1):
            clip, label = dataset[index]
            sample = dataset.clips.samples[index]
            video = read_frames(sample.path)
            assert clip.shape == (T, motion.channels, SIZE, SIZE) and label == sample.label
            if dataset is test:  # the centred window, and no augmentation outside training
                starts = [int(dense_indices(len(video), T + motion.length)[0])]
            else:  # a random window: it must be one of the windows of consecutive frames
                starts = list(range(len(video) - (T + motion.length) + 1))
            matches = [s for s in starts
                       if np.array_equal(clip.numpy(), motion_inputs(list(video[s : s + T + motion.length]),
                                                                     motion, spec))]
            assert len(matches) == 1, f"{name} clip {index} is no window's motion_inputs"


def test_two_stream_clips_pair_each_stack_with_the_frame_it_ends_at(data: Path) -> None:
    motion, spec, rgb_spec = get_config(FLOW).motion, _spec(), _spec("tsn-mobilenetv2")
    clips = open_dataset(data, "val", clip_sampler(T, motion=motion))
    dataset = TwoStreamDataset(clips, rgb_spec, spec, motion)
    (rgb, flow), label = dataset[2]
    video = read_frames(clips.samples[2].path)
    frames = video[dense_indices(len(video), T + motion.length)]
    assert label == clips.samples[2].label and rgb.shape == (T, 3, SIZE, SIZE)
    assert np.array_equal(flow.numpy(), motion_inputs(list(frames), motion, spec))
    # stack k is complete at frame k + L: the RGB stream sees frames L .. L + T - 1, not the first T
    assert np.array_equal(rgb.numpy(), preprocess_clip(frames[motion.length :], rgb_spec))
    assert not np.array_equal(rgb.numpy(), preprocess_clip(frames[:T], rgb_spec))


def test_motion_augmentation_is_one_translation_and_nothing_else() -> None:
    clip = torch.randn(T, 10, 20, 20)  # distinct values: a match below is no coincidence
    shift = 2  # round(0.1 * 20)
    padded = torch.nn.functional.pad(clip, (shift,) * 4, mode="replicate")
    seen = set()
    for seed in range(12):
        out = augment_motion(clip, np.random.default_rng(seed))
        offsets = [(dy, dx) for dy in range(2 * shift + 1) for dx in range(2 * shift + 1)
                   if torch.equal(out, padded[:, :, dy : dy + 20, dx : dx + 20])]
        assert len(offsets) == 1, "not one translation of every channel and step (jitter, flip, or per-channel)"
        seen.add(offsets[0])
    assert len(seen) > 1  # random


@pytest.fixture(scope="module")
def rgb_checkpoint(data: Path) -> Path:
    """A TSN RGB checkpoint at the flow run's width, size and classes (random weights: fusion is what is tested)."""
    out = data.parent / "rgb.pt"
    model = build_model("tsn-mobilenetv2", width_mult=0.25, num_classes=len(CLASSES))
    save_checkpoint(out, model, "tsn-mobilenetv2", list(CLASSES),
                    {"width_mult": 0.25, "num_classes": len(CLASSES), "frames": T, "frame_stride": 1,
                     "input_size": SIZE, "resize": RESIZE})
    return out


def test_two_stream_eval_fuses_both_streams_on_the_same_clips(data: Path, flow_run: Path,
                                                             rgb_checkpoint: Path) -> None:
    proc = edgevid(["eval", "--model", TWO_STREAM, "--data", data, "--rgb-checkpoint", rgb_checkpoint,
                    "--flow-checkpoint", flow_run, "--json", "-q"], cwd=data.parent, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    # The same numbers computed here from the frames, without the dataset classes or the TwoStream module.
    rgb, flow = build_model("tsn-mobilenetv2", checkpoint=rgb_checkpoint), build_model(FLOW, checkpoint=flow_run)
    motion, spec, rgb_spec = flow.config.motion, _spec(), _spec("tsn-mobilenetv2")
    fused, streams, labels = [], {"rgb": [], "flow": []}, []
    with torch.no_grad():
        for sample in open_dataset(data, "val", clip_sampler(T)).samples:
            video = read_frames(sample.path)
            frames = video[dense_indices(len(video), T + motion.length)]
            r = rgb.eval()(torch.from_numpy(preprocess_clip(frames[motion.length :], rgb_spec))[None])
            f = flow.eval()(torch.from_numpy(motion_inputs(list(frames), motion, spec))[None])
            fused.append(((1.0 * r.softmax(1) + 1.5 * f.softmax(1)) / 2.5)[0].numpy())
            streams["rgb"].append(r[0].numpy())
            streams["flow"].append(f[0].numpy())
            labels.append(sample.label)
    labels = np.array(labels)

    def pair(scores: list[np.ndarray]) -> float:
        partner = {CLASSES.index(a): CLASSES.index(b) for a, b in ORDER_PAIRS}
        partner |= {b: a for a, b in partner.items()}
        return float(np.mean([s[y] > s[partner[y]] for s, y in zip(scores, labels) if y in partner]))

    assert result["clips"] == len(labels) == len(CLASSES)
    assert result["top1"] == pytest.approx(float((np.argmax(fused, 1) == labels).mean()))
    assert result["order_pair"] == pytest.approx(pair(fused))
    for name, scores in streams.items():
        assert result["streams"][name]["top1"] == pytest.approx(float((np.argmax(scores, 1) == labels).mean()))
        assert result["streams"][name]["order_pair"] == pytest.approx(pair(scores))


@pytest.mark.parametrize("argv, expected", [
    (["train", "--model", FLOW, "--sampling", "segment", "-o", "x.pt"], "--sampling segment does not apply"),
    (["eval", "--model", "tsn-mobilenetv2", "--rgb-checkpoint", "x.pt"], "apply to two-stream"),
])
def test_bad_motion_options_are_one_line_errors(data: Path, argv: list, expected: str) -> None:
    proc = edgevid([*argv, "--data", data], cwd=data.parent, env=ENV)
    check_one_line(proc, expected)
    assert not (data.parent / "x.pt").exists()
