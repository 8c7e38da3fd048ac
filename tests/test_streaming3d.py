"""Streaming 3D CNNs and LRCN: frame by frame with explicit state, equal to the causal clip model.

For every streaming 3D entry (``<clip entry>-online``, ``edgevid.models.continual``) and LRCN:
stepping T frames from the zero state gives, at every step, the causal clip model's output
on the frames so far, in torch and (exported in stream mode) in ONNX Runtime and OpenVINO;
dropping one state is caught. One temporal convolution equals continual-inference's own
``co.Conv3d.forward_step``. The strided / big networks are ``slow`` here (their torch check
takes 5-15 s, an export 15-40 s); the default run covers a stride-free 3D net (mc3-18, X3D),
a strided one with non-local blocks (NL-I3D: MMAction2's I3D strides, a time-strided pool of
kernel 1, causal attention with its keys and values as state) and LRCN.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevid.models import build_model, get_config, list_models

STREAMING_3D = [c.name for c in list_models() if c.name.endswith("-online") and c.family not in ("tsm", "tsn")]
ALL = STREAMING_3D + ["lrcn-mobilenetv2"]
TORCH_DEFAULT = {"mc3-18-online", "x3d-xs-online", "i3d-nl-resnet50-online", "lrcn-mobilenetv2"}
EXPORT_DEFAULT = {"mc3-18-online", "lrcn-mobilenetv2"}


def _params(names, default):
    return [pytest.param(n) if n in default else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _model(name: str, classes: int = 5):
    """A random model with BatchNorm statistics of random clips, its stream length and size."""
    from edgevid.models.batchnorm import recalibrate_batchnorm

    torch.manual_seed(0)
    model = build_model(name, num_classes=classes, global_rng=True)  # the seed above draws it
    hold = getattr(model, "hold", None)
    period, offset = (hold.period, hold.offset) if hold else (1, 0)
    c = get_config(name)
    size = c.crop_range[0] if c.crop_range else 64
    frames = max(2 * period + 2, 6, c.min_frames)
    with torch.no_grad():  # random BatchNorm affines: PyTorchVideo zero-inits some, which would hide branches
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    with torch.no_grad():  # non-local attention softened as in test_mmaction_3d._soften_attention (why: there);
        for m in model.modules():  # this network's features are larger still (states up to ~1e4): 1/100
            if type(m).__name__ == "CoNonLocal3d" and hasattr(m, "theta"):
                m.theta.conv.weight.mul_(0.01)
    recalibrate_batchnorm(model, [torch.randn(2, max(frames, c.min_frames), 3, size, size)])
    return model.eval(), frames, size, offset


def _step(streaming, clip: torch.Tensor, drop: int | None = None) -> list[torch.Tensor]:
    """Every step's logits; ``drop``: that state is fed as zeros every step (a lost state)."""
    states, outs = None, []
    with torch.no_grad():
        for t in range(clip.shape[1]):
            if states is not None and drop is not None:
                states[drop] = torch.zeros_like(states[drop])
            logits, *states = streaming(clip[:, t]) if states is None else streaming(clip[:, t], *states)
            outs.append(logits)
    return outs


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("name", _params(ALL, TORCH_DEFAULT))
def test_stepping_equals_the_causal_clip_model_frame_by_frame(name):
    from edgevid.models.streaming import to_streaming

    model, frames, size, first = _model(name)
    clip = torch.randn(1, frames, 3, size, size, generator=torch.Generator().manual_seed(1))
    streaming = to_streaming(model).eval()
    outs = _step(streaming, clip)
    steps = range(first, frames)  # before `first` the causal clip model has no output yet (the stream's is zero)
    with torch.no_grad():
        clips = {t: model(clip[:, : t + 1]) for t in steps}
    worst = max(_rel(outs[t], clips[t]) for t in steps)
    assert worst < 1e-4, worst
    assert _rel(clips[steps[-1]], clips[steps[0]]) > 1e-3, "the outputs must change along the stream"
    # Dropping any one state is seen in the outputs (at most 8 of them, spread over the network: T3D has 72 and a
    # re-stepped stream per state took more than 10 minutes).
    count = len(streaming.state_paths)
    for drop in sorted({round(i * (count - 1) / 7) for i in range(8)} if count > 8 else range(count)):
        lost = _step(streaming, clip, drop=drop)
        assert max(_rel(lost[t], clips[t]) for t in steps) > 1e-4, streaming.state_paths[drop]


@pytest.mark.parametrize("name", _params(ALL, EXPORT_DEFAULT))
def test_stream_export_in_onnxruntime_and_openvino_equals_the_causal_clip_model(name, tmp_path):
    from edgevid.export.api import export_model
    from edgevid.export.openvino import openvino_runner
    from edgevid.models.weights import save_checkpoint
    from edgevid.runtime.crosscheck import onnxruntime_runner, run_stream

    model, frames, size, first = _model(name, classes=6)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, name, [f"c{i}" for i in range(6)], {"num_classes": 6})
    manifest = export_model(name, tmp_path / "art", checkpoint=ckpt, mode="stream", target="openvino", size=size,
                            frames=frames, progress=False)
    assert manifest.mode == "stream" and manifest.sampling.smooth == 1 and manifest.states
    assert all(v["passed"] for v in manifest.validation.values())
    clip = torch.randn(1, frames, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = {t: model(clip[:, : t + 1]).numpy() for t in range(first, frames)}
    for run in (onnxruntime_runner(tmp_path / "art" / "model.onnx"), openvino_runner(tmp_path / "art" / "model.xml")):
        steps = run_stream(run, manifest.states, clip.numpy(), batch=None)
        assert max(_rel(steps[t]["logits"], want[t]) for t in want) < 1e-4
    # A state that is lost between steps (here: the last one, fed as zeros) shows in the exported graph too.
    ort = onnxruntime_runner(tmp_path / "art" / "model.onnx")
    pairs = manifest.states
    state = {s.input: np.zeros((1, *s.shape[1:]), np.float32) for s in pairs}
    lost = []
    for t in range(frames):
        state[pairs[-1].input] = np.zeros_like(state[pairs[-1].input])
        out = ort({"frame": clip[:, t].numpy(), **state})
        state = {s.input: out[s.output] for s in pairs}
        lost.append(out["logits"])
    assert max(_rel(lost[t], want[t]) for t in want) > 1e-4


@pytest.mark.slow  # 17 s
def test_the_causal_clip_model_of_a_streaming_entry_exports_too(tmp_path):
    """`edgevid report` compares the stream with the clip re-run: the -online entry's clip export must work.

    Its causal zero padding once went through F.pad, exported as Pad-18, which ONNX's version
    converter cannot lower to opset 17: the export failed.
    """
    from edgevid.export.api import export_model
    from edgevid.models.weights import save_checkpoint

    model, frames, size, _ = _model("x3d-xs-online", classes=3)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, "x3d-xs-online", ["a", "b", "c"], {"num_classes": 3})
    manifest = export_model("x3d-xs-online", tmp_path / "art", checkpoint=ckpt, mode="clip", target="openvino",
                            size=size, frames=frames, progress=False)
    assert manifest.mode == "clip" and not manifest.states
    assert manifest.validation and all(v["passed"] for v in manifest.validation.values())


@pytest.mark.slow  # 35 s: NNCF on a 3D stream
def test_int8_stream_export_of_a_3d_entry_calibrates_on_recorded_states(tmp_path):
    """INT8 for the 3D streams too: NNCF calibrated on the FP32 model's real states, run in ONNX Runtime."""
    from edgevid.data.synth import CLASSES
    from edgevid.models.weights import save_checkpoint
    from edgevid.pipeline import export
    from edgevid.runtime.crosscheck import onnxruntime_runner, run_stream

    model, frames, size, first = _model("x3d-xs-online", classes=len(CLASSES))
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, "x3d-xs-online", list(CLASSES), {"num_classes": len(CLASSES)})
    manifest = export("x3d-xs-online", tmp_path / "int8", checkpoint=ckpt, mode="stream", target="onnxruntime",
                      precision="int8", frames=frames, size=size, calib_size=4, progress=False)
    int8 = manifest.build["int8"]
    assert int8["calibration"]["states"] == "recorded" and int8["int8_layers"] > 0
    assert 0.0 <= int8["accuracy"]["frame_top1_agreement"] <= 1.0
    clip = torch.randn(1, frames, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(clip).numpy()
    steps = run_stream(onnxruntime_runner(tmp_path / "int8" / "model.onnx"), manifest.states, clip.numpy(), batch=None)
    got = steps[-1]["logits"]
    # INT8 of random weights: close to FP32 relative to the logits' spread, not equal.
    assert np.isfinite(got).all() and _rel(got, want) < 0.5


def test_a_temporal_conv_equals_continual_inferences_forward_step():
    """One causal 3x3x3 convolution against continual-inference's co.Conv3d on the same weights."""
    co = pytest.importorskip("continual", reason="continual-inference is a test-only dependency (edgevid[dev])")
    from edgevid.models.continual import CoConv3d

    torch.manual_seed(3)
    theirs = co.Conv3d(4, 6, kernel_size=(3, 3, 3), padding=(0, 1, 1))
    ours = CoConv3d.of(torch.nn.Conv3d(4, 6, (3, 3, 3), padding=(1, 1, 1)))
    with torch.no_grad():
        ours.weight.copy_(theirs.weight)
        ours.bias.copy_(theirs.bias)
    ours.streaming = True
    x = torch.randn(1, 4, 7, 8, 8)
    state = None
    with torch.no_grad():
        for t in range(7):
            ours.state_in = state
            mine = ours(x[:, :, t : t + 1])[:, :, 0]
            state = ours.state_out
            ref = theirs.forward_step(x[:, :, t])
            if t >= 2:  # continual-inference emits once its K - 1 = 2 frames of history are in
                assert torch.allclose(mine, ref, atol=1e-6), t
            else:
                assert ref is None


def test_the_causal_model_differs_from_the_symmetric_clip_model_by_a_measured_amount():
    """Same weights, causal vs the original symmetric temporal padding: recorded, and not zero."""
    clip_model = build_model("mc3-18", num_classes=5)
    causal = build_model("mc3-18-online", num_classes=5)
    causal.load_state_dict(clip_model.state_dict(), strict=False)
    from edgevid.models.batchnorm import recalibrate_batchnorm

    torch.manual_seed(4)
    clips = [torch.randn(2, 16, 3, 64, 64)]
    recalibrate_batchnorm(clip_model, clips).eval()
    causal.load_state_dict(clip_model.state_dict(), strict=False)
    causal.eval()
    x = torch.randn(2, 16, 3, 64, 64)
    with torch.no_grad():
        diff = _rel(causal(x), clip_model(x))
    print(f"mc3-18: causal vs symmetric clip logits, max relative difference {diff:.3f}")
    assert diff > 1e-3


def test_streaming_entries_cost_less_per_frame_than_a_clip():
    from edgevid.models.cost import measure

    for name in ("x3d-xs-online", "mc3-18-online", "lrcn-mobilenetv2"):
        cost = measure(name)
        frames = get_config(name).frames
        assert 0 < cost["gmacs_per_frame"] < cost["gmacs_per_clip"] / frames * 1.5, (name, cost)


# A 3D stream model that learned order. X3D-XS from scratch needs ~13 epochs before it leaves
# chance on one order pair here (measured, 64 px, 4 frames: 0.50-0.56 up to epoch 12, then 0.63,
# 0.66, 0.73, 0.83, 0.84, 0.81, 0.88, 0.80); 32 px never left chance in 20 epochs. 5 minutes on 2
# cores, so `slow`.
ORDER_3D = {"epochs": 20, "batch_size": 8, "lr": 2e-3, "seed": 0}


@pytest.mark.slow
def test_a_3d_stream_model_trained_briefly_beats_chance_on_an_order_pair(tmp_path):
    from test_train import (
        ORDER_FRAMES,
        ORDER_PAIR,
        ORDER_SIZE,
        ORDER_TRAIN,
        ORDER_VAL,
        write_order_pair_dataset,
    )

    from edgevid.data.sampling import ClipSampler
    from edgevid.data.torch_dataset import make_torch_dataset
    from edgevid.models.streaming import to_streaming
    from edgevid.train.trainer import TrainConfig, train

    data = write_order_pair_dataset(tmp_path / "data", ORDER_PAIR, ORDER_TRAIN, ORDER_VAL, ORDER_SIZE, ORDER_FRAMES)
    cfg = TrainConfig(model="x3d-xs-online", data=str(data), out=str(tmp_path / "x3d.pt"), size=ORDER_SIZE,
                      resize=ORDER_SIZE, frames=ORDER_FRAMES, workers=0, progress=False, regime="clip", **ORDER_3D)
    history = train(cfg)
    pairs = [round(h.val_pair, 3) for h in history]
    print(f"x3d-xs-online: val order-pair per epoch {pairs}")
    assert history[-1].val_pair >= 0.7, pairs  # the last epoch: no selection in its favour

    # The kept checkpoint, streamed frame by frame, decides as the trainer's clip evaluation did.
    model = build_model("x3d-xs-online", checkpoint=cfg.out).eval()
    streaming = to_streaming(model).eval()
    val = make_torch_dataset(data, "val", cfg.preprocess, ClipSampler(ORDER_FRAMES), train=False)
    correct = 0
    for i in range(len(val)):
        clip, label = val[i]
        correct += int(_step(streaming, clip[None])[-1].argmax(1).item() == label)
    assert correct / len(val) == pytest.approx(max(h.val_pair for h in history)), (correct, len(val), pairs)


def test_int8_finds_a_strided_streams_step_counter_arithmetic():
    """In the exported stream graph of a time-strided causal net, the nodes computed from the step counter alone
    (its +1 mod period, each gate's compare) are what INT8 leaves in float; no conv, no activation among them."""
    from edgevid.compress.schedule import counter_nodes
    from edgevid.export.onnx import export_onnx
    from edgevid.models.clip3d import Clip3DClassifier
    from edgevid.models.continual import to_continual
    from edgevid.models.streaming import to_streaming

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, stride=(2, 1, 1), padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    model = to_continual(Clip3DClassifier(net, "4", name="tiny"), frames=4, size=16).eval()
    streaming = to_streaming(model)
    assert "step_counter" in streaming.state_paths
    states = streaming.initial_states(16)
    proto = export_onnx(streaming, (torch.zeros(1, 3, 16, 16), *states),
                        ["frame", *(f"state_in.{p}" for p in streaming.state_paths)],
                        ["logits", *(f"state_out.{p}" for p in streaming.state_paths)], opset=17, dynamic_batch=False)
    found = set(counter_nodes(proto))
    kinds = {n.op_type for n in proto.graph.node if n.name in found}
    assert found and not kinds & {"Conv", "Relu", "Gemm", "MatMul", "ReduceMean", "Concat"}
    # the counter's own update reaches state_out.step_counter through these nodes only
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert producer["state_out.step_counter"].name in found
    # every gate (an Equal on the counter) is among them
    gates = {n.name for n in proto.graph.node if n.op_type == "Equal"}
    assert gates and gates <= found


@pytest.mark.slow  # 2 minutes: NNCF on NL-I3D's stream
def test_int8_stream_of_a_strided_entry_with_non_local_blocks_passes_its_validation(tmp_path):
    """NL-I3D online in INT8 (ONNX Runtime): its step counter and gates stay exact (they were quantized and the
    validation failed on state_out.step_counter), the attention placed as the recipe says."""
    from edgevid.models.batchnorm import recalibrate_batchnorm
    from edgevid.models.weights import save_checkpoint
    from edgevid.pipeline import export

    # Not _model's network: its randomized BatchNorm grows the residual stream to ~1e4, beyond what any INT8
    # scale of a state holds. Seeded init, active non-local blocks, statistics of random clips (as a report runs).
    model = build_model("i3d-nl-resnet50-online", num_classes=6)
    with torch.no_grad():
        for m in model.modules():
            if type(m).__name__ == "CoNonLocal3d":
                m.conv_out.bn.weight.fill_(1.0)
    size = 64
    recalibrate_batchnorm(model, [torch.randn(2, 16, 3, size, size, generator=torch.Generator().manual_seed(0))])
    model.eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, "i3d-nl-resnet50-online", [f"c{i}" for i in range(6)], {"num_classes": 6})
    manifest = export("i3d-nl-resnet50-online", tmp_path / "int8", checkpoint=ckpt, mode="stream",
                      target="onnxruntime", precision="int8", frames=16, size=size, calib_size=4, progress=False)
    assert manifest.validation["onnxruntime"]["passed"]
    assert manifest.build["int8"]["attention"]["blocks"] == 5


@pytest.mark.parametrize("entry,builder", [("mc3-18-online", "mc3_18"), ("r2plus1d-18-online", "r2plus1d_18")])
def test_online_3d_resnets_start_from_torchvision_checkpoints(entry, builder, tmp_path):
    """The way to train them past memorising synthetic videos (README): Kinetics weights in torchvision's
    layout, as `edgevid zoo fetch mc3-18 --weights kinetics400` writes them, load into the -online entry
    tensor for tensor (here a seeded torchvision model of that layout: no downloads)."""
    import torchvision

    from edgevid.models import build_model

    torch.manual_seed(0)
    reference = getattr(torchvision.models.video, builder)().state_dict()
    path = tmp_path / f"{builder}.pth"
    torch.save(reference, path)
    loaded = build_model(entry, checkpoint=str(path)).state_dict()
    assert len(loaded) == len(reference) and loaded["net.fc.weight"].shape[0] == 400
    for key, value in reference.items():
        assert torch.equal(loaded[f"net.{key}"], value), key
