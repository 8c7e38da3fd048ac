"""Streaming models trained and scored in the regime they stream in (edgevid.train.regime, stream_eval),
what a stream step emits and when (emission timing, warm-up), and clip lengths the networks really take.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgevid.cli import main
from edgevid.data.synth import generate_dataset
from edgevid.models import build_model, get_config, list_models


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 11 classes, 2 videos each (1 train, 1 val), 32 px, 12 frames: streams 3x an X3D-XS clip."""
    root = tmp_path_factory.mktemp("streams") / "ds"
    generate_dataset(root, seed=3, videos_per_class=2, frames=12, size=32, val_fraction=0.5, progress=False)
    return root


def test_the_stream_regime_is_the_default_of_the_entries_whose_stream_outgrows_their_clip():
    from edgevid.train.trainer import TrainConfig, resolve_sampling

    def resolved(model: str, **kw):
        cfg = resolve_sampling(TrainConfig(model=model, data="d", out="o.pt", **kw))
        return cfg.regime, cfg.sampling, cfg.stream_frames

    assert resolved("x3d-xs-online", frames=4) == ("stream", "dense", 16)
    assert resolved("r2plus1d-18-online", frames=16) == ("stream", "dense", 32)
    assert resolved("lrcn-mobilenetv2", frames=8, stream_frames=24) == ("stream", "dense", 24)
    assert resolved("x3d-xs-online", regime="clip") == ("clip", "segment", None)
    assert resolved("tsm") == ("clip", "segment", None)
    assert resolved("tsn-flow-mobilenetv2") == ("clip", "dense", None)
    assert {c.name for c in list_models() if c.stream_training} == \
        {c.name for c in list_models() if c.name.endswith("-online") and c.family not in ("tsm",)} | {"lrcn-mobilenetv2"}


class _Windows(torch.nn.Module):
    """A clip classifier that records which frames it is given (frame t's pixels are all t; mean pixel per class)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 5)
        self.seen: list[tuple[int, int]] = []  # (first frame, length)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        self.seen.append((int(clip[0, 0, 0, 0, 0]), clip.shape[1]))
        return self.fc(clip.mean(dim=(1, 3, 4)))


def test_the_stream_loss_of_a_3d_net_is_on_streams_from_the_warm_up_to_the_whole_window():
    from edgevid.train.regime import stream_loss

    model, labels = _Windows(), torch.tensor([1, 3])
    clip = torch.arange(9.0).view(1, 9, 1, 1, 1).expand(2, 9, 3, 4, 4).contiguous()
    torch.manual_seed(0)
    for _ in range(400):
        loss = stream_loss(model, clip, labels, warmup=4)
    # every stream of 4..9 consecutive frames inside the window, beginning anywhere, and nothing else
    assert set(model.seen) == {(a, n) for n in range(4, 10) for a in range(0, 10 - n)}
    a, n = model.seen[-1]
    want = torch.nn.functional.cross_entropy(model(clip[:, a:a + n]), labels)
    assert loss.item() == pytest.approx(want.item())


def test_the_stream_loss_of_lrcn_is_on_every_output_after_the_warm_up():
    from edgevid.train.regime import stream_loss

    torch.manual_seed(0)
    model = build_model("lrcn-mobilenetv2", num_classes=5, width_mult=0.25, global_rng=True).eval()
    clip, labels = torch.randn(2, 6, 3, 32, 32), torch.tensor([1, 3])
    # Streams beginning at frame 0, 1 or 2 of the 6: the loss on each one's outputs from its 4th frame on.
    wants = set()
    for start in range(3):
        out = model.forward_frames(clip[:, start:])[:, 3:]
        wants.add(round(torch.nn.functional.cross_entropy(out.reshape(-1, 5), labels.repeat_interleave(
            out.shape[1])).item(), 5))
    got = {round(stream_loss(model, clip, labels, warmup=4).item(), 5) for _ in range(40)}
    assert got == wants and len(wants) == 3
    # A warm-up of the whole window: the last output alone, as the clip regime's loss.
    last = torch.nn.functional.cross_entropy(model.forward_frames(clip)[:, -1], labels)
    assert stream_loss(model, clip, labels, warmup=6).item() == pytest.approx(last.item(), rel=1e-6)


def test_training_builds_the_network_for_its_own_clip_length(tmp_path: Path):
    """The window averages of a causal 3D net span the clip it trains on, as eval and export rebuild it from the
    checkpoint (they once kept the zoo's clip: X3D-XS trained on 8 frames averaged its head over 4)."""
    from edgevid.models.continual import CoWindowPool
    from edgevid.models.weights import save_checkpoint
    from edgevid.train.trainer import TrainConfig, build_for

    def head_window(model) -> int:
        return next(m.window for m in model.modules() if isinstance(m, CoWindowPool) and m.last_only)

    cfg = TrainConfig(model="x3d-xs-online", data="d", out="o.pt", frames=8, size=32)
    assert head_window(build_model("x3d-xs-online")) == 4 and head_window(build_for(cfg)) == 8
    # From our own 4-frame checkpoint, an 8-frame run: rebuilt for 8, its weights kept.
    four = build_model("x3d-xs-online", num_classes=3)
    save_checkpoint(tmp_path / "four.pt", four, "x3d-xs-online", ["a", "b", "c"], {"num_classes": 3, "frames": 4})
    eight = build_for(TrainConfig(model="x3d-xs-online", data="d", out="o.pt", frames=8, size=32,
                                  checkpoint=str(tmp_path / "four.pt")))
    assert head_window(eight) == 8 and eight.config.frames == 8
    assert all(torch.equal(a, b) for a, b in zip(four.state_dict().values(), eight.state_dict().values()))


def test_a_stream_trained_checkpoint_is_dense_and_eval_streams_every_video_to_its_end(streams: Path, tmp_path: Path,
                                                                                      capsys: pytest.CaptureFixture):
    import json

    from edgevid.data.sources import resolve_split
    from edgevid.runtime import open_source
    from edgevid.train.evaluate import _spec
    from edgevid.train.stream_eval import streamed_logits

    out = tmp_path / "x3d.pt"
    # 6 frames, not the zoo's 4: the trained network's window averages must span the trained clip (they once
    # kept the zoo's, and eval rebuilt another network from the checkpoint).
    assert main(["train", "--model", "x3d-xs-online", "--data", str(streams), "-o", str(out), "--size", "32",
                 "--frames", "6", "--stream-frames", "12", "--epochs", "2", "--workers", "0", "-q", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["best"]["val_stream_top1"] is not None
    saved = torch.load(out, weights_only=True)
    assert saved["config"]["sampling"] == "dense" and saved["config"]["frame_stride"] == 1
    assert saved["train_config"]["regime"] == "stream" and saved["train_config"]["stream_frames"] == 12
    assert "val_stream_top1" in saved["metrics"]
    from edgevid.train.evaluate import evaluate_checkpoint

    again = evaluate_checkpoint("x3d-xs-online", str(streams), str(out), workers=0, progress=False)
    # eval reproduces what the trainer measured on val, the clip and the 12-frame stream
    assert (again.top1, again.stream_top1) == (saved["metrics"]["val_top1"], saved["metrics"]["val_stream_top1"])

    model = build_model("x3d-xs-online", checkpoint=out).eval()
    assert model.config.sampling == "dense"
    logits, labels, skipped = streamed_logits(model, str(streams), "val", _spec(model.config), 1)
    assert skipped == 0 and len(labels) == 11
    # The stepped stream's final output is the causal clip model on the whole video (12 frames, 2x its clip); the
    # videos are one length, so they come out in the split's order.
    from edgevid.runtime.preprocess import preprocess_frame

    whole, last = [], []
    for sample in resolve_split(str(streams), "val").samples:
        source = open_source(str(sample.path))
        video = torch.from_numpy(np.stack([preprocess_frame(f, _spec(model.config)) for f in source]))[None]
        source.close()
        assert video.shape[1] == 12
        with torch.no_grad():
            whole.append(model(video).numpy()[0])
            last.append(model(video[:, -6:]).numpy()[0])
    whole, last = np.stack(whole), np.stack(last)
    assert np.max(np.abs(logits - whole)) < 1e-4 * max(1.0, float(np.max(np.abs(whole))))
    assert np.max(np.abs(whole - last)) > 1e-3  # the stream's answer is not the last clip's: why the regime matters

    assert main(["eval", "--model", "x3d-xs-online", "--checkpoint", str(out), "--data", str(streams), "-q"]) == 0
    text = capsys.readouterr().out
    assert "streamed, each video from its first frame to its last, final output: top-1" in text


# ---------------------------------------------------------------- clip lengths

# Entries whose min_frames is stricter than the network on purpose: MMAction2 SlowFast needs one Slow
# frame (tau frames), T3D 16 so its clip and stream forms agree (edgevid.models.t3d).
_STRICTER = {"slowfast-r50-4x16-mmaction2", "slowfast-r50-8x8-mmaction2", "t3d-densenet121"}
_CLIP_NETS = [c.name for c in list_models() if c.family not in ("tsm", "tsn", "two-stream") and c.motion is None]


def _runs(model: torch.nn.Module, frames: int, size: int) -> bool:
    try:
        with torch.no_grad():
            model(torch.empty(1, frames, 3, size, size, device="meta"))
    except (RuntimeError, ValueError, IndexError):
        return False
    return True


@pytest.mark.parametrize("name", _CLIP_NETS)
def test_min_frames_is_the_fewest_frames_the_network_takes(name):
    """On the meta device (shapes only): the network runs at min_frames and not one frame below, unless stricter
    on purpose. (Meta and real tensors were compared for every entry at 64 px: the same thresholds.)"""
    config = get_config(name)
    size = config.crop_range[0] if config.crop_range else 64
    with torch.device("meta"):
        model = build_model(name, global_rng=True).eval()
    assert _runs(model, config.min_frames, size), f"{name} fails at its min_frames {config.min_frames}"
    if config.min_frames > 1 and name not in _STRICTER:
        assert not _runs(model, config.min_frames - 1, size), f"{name} runs at {config.min_frames - 1} frames too"
    if config.stream_training:  # its stream too, built for clips of min_frames (a head window of one frame)
        from edgevid.models.streaming import to_streaming

        with torch.device("meta"):
            shortest = build_model(name, frames=config.min_frames, global_rng=True).eval()
        assert to_streaming(shortest).state_specs(size)


def test_a_clip_shorter_than_the_architecture_takes_is_one_line_before_any_export(tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture):
    out = tmp_path / "art"
    assert main(["export", "--model", "r2plus1d-18-online", "--mode", "clip", "--frames", "4", "--size", "32",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "torch.onnx" not in err, err
    assert err.splitlines()[-1] == ("edgevid export: error: r2plus1d-18-online takes at least 8 frames per clip (its "
                                    "temporal downsampling), not 4"), err
    assert not out.exists()


# ---------------------------------------------------------------- emission timing

def test_a_time_strided_stream_says_when_it_answers_in_the_zoo_and_the_manifest(capsys: pytest.CaptureFixture):
    import json

    from edgevid.export.write import _sampling
    from edgevid.models.continual import emission

    with torch.device("meta"):
        r2 = build_model("r2plus1d-18-online", global_rng=True)
        x3d = build_model("x3d-xs-online", global_rng=True)
    assert emission(r2) == (8, 8) and emission(x3d) == (1, 1)
    sampling = _sampling("stream", r2, 16)
    assert (sampling.output_every, sampling.first_output) == (8, 8)
    assert _sampling("clip", r2, 16).output_every == 1
    from edgevid.manifest import Sampling

    assert Sampling.from_dict({"frames": 16, "output_every": 8, "first_output": 8}) == sampling.__class__(
        frames=16, output_every=8, first_output=8)

    assert main(["zoo", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "every 8 from 8" in rows["r2plus1d-18-online"] and "every step" in rows["x3d-xs-online"]
    assert main(["zoo", "list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["r2plus1d-18-online"]["stream_output"] == {"every": 8, "first": 8}
    assert entries["mc3-18-online"]["stream_output"] == {"every": 1, "first": 1}
    assert entries["r2plus1d-18"]["stream_output"] is None


@pytest.fixture(scope="module")
def strided(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(artifact, data): R(2+1)D-18-online (total temporal stride 8) exported in stream mode at 32 px, 8 frames, seeded
    random weights, the synthetic classes (25 s); and 11 synthetic 24-frame videos (stride 2: 12 steps each)."""
    from edgevid.data.synth import CLASSES
    from edgevid.models.weights import save_checkpoint

    root = tmp_path_factory.mktemp("strided")
    net = build_model("r2plus1d-18-online", num_classes=len(CLASSES), frames=8)
    save_checkpoint(root / "r2.pt", net, net.config.name, list(CLASSES),
                    {"num_classes": len(CLASSES), "frames": 8, "frame_stride": 2, "input_size": 32, "resize": 32})
    assert main(["export", "--model", "r2plus1d-18-online", "--checkpoint", str(root / "r2.pt"), "--mode", "stream",
                 "-o", str(root / "art"), "-q"]) == 0
    generate_dataset(root / "data", seed=5, videos_per_class=2, frames=24, size=32, val_fraction=0.5, progress=False)
    return root / "art", root / "data"


def test_a_strided_stream_predicts_nothing_before_its_first_output_then_what_torch_steps(strided):
    from edgevid import runtime
    from edgevid.models.streaming import to_streaming
    from edgevid.report import accuracy as acc

    art, data = strided
    with runtime.load(art, backend="onnxruntime") as runner:
        sampling = runner.manifest.sampling
        assert (sampling.output_every, sampling.first_output, sampling.stride) == (8, 8, 2)
        session = runtime.open_session(runner)
        preds = []
        for frame in runtime.open_source(str(next((data / "moving_left").glob("*.mp4")))):
            preds.append(session.push(frame))
        steps = [p for i, p in enumerate(preds) if i % 2 == 0]  # the stream steps every 2nd frame
        assert len(steps) == 12 and all(p is None for p in steps[:7])  # no zeros passed off as predictions
        first = steps[7]
        assert first is not None and not first.warmup and np.abs(first.logits).max() > 0
        assert all(np.array_equal(p.logits, first.logits) for p in steps[8:])  # held until step 16

        # The report's torch reference drops the same steps, so its predictions pair with the session's.
        held_out = acc.load_held_out(data, runner.manifest.labels, limit=4)
        got = acc.run_variant(runner, held_out)
    model = build_model("r2plus1d-18-online", checkpoint=str(art.parent / "r2.pt")).eval()
    want = acc.torch_reference(model, to_streaming(model).eval(), runner.manifest, held_out)
    agree = acc.agreement(got, want)
    assert agree["predictions"] == 4 * 5 and agree["prediction_top1"] == 1.0, agree
    assert agree["max_abs_logit_diff"] < 1e-4, agree

    # The report's clip row for the same weights: the causal clip model on each video's last 8 sampled frames.
    clip = acc.torch_reference(model, None, acc.clip_of(runner.manifest), held_out)
    assert [len(s) for s in clip.steps] == [12 - 8 + 1] * 4
    from edgevid.runtime.preprocess import preprocess_frame

    spec = runner.manifest.preprocess
    last = np.stack([preprocess_frame(f, spec) for f in held_out.frames[0][::2][-8:]])
    with torch.no_grad():
        want_last = model(torch.from_numpy(last)[None]).numpy()[0]
    assert np.max(np.abs(clip.steps[0][-1] - want_last)) < 1e-4


def test_a_report_finding_sets_the_streamed_top1_against_the_clips():
    from edgevid.report.findings import findings

    def ref(mode: str, top1: float) -> dict:
        return {"variant": f"torch/{mode}/fp32", "label": f"torch eager {mode} FP32 (reference)", "backend": "torch",
                "mode": mode, "precision": "fp32", "reference": True, "latency_ms": None,
                "accuracy": {"top1": top1, "videos": 66}}

    text = findings({"complete": True, "rows": [ref("stream", 0.803), ref("clip", 0.818)], "skipped": []})
    assert ("Streamed against clip (torch FP32, same weights): each video streamed from its first frame gives a final "
            "top-1 of 80.3%, the clip model on its last frames 81.8% (1.5 points lower top-1).") in text
    assert not any(s.startswith("Streamed against clip") for s in
                   findings({"complete": True, "rows": [ref("stream", 0.8)], "skipped": []}))
