"""Issue 26: flow and RGB-difference models exported, validated on real motion stacks, INT8-calibrated on
them, run by `edgevid run` (too-short videos refused), timed by `edgevid report` with the flow's own cost.

Small everywhere: 64 px exports of the shipped weights (width 0.5), short synthetic videos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.probe import check_one_line, edgevid

SIZE = 64


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A small synthetic dataset (train/val) with 16-frame videos at 64 px."""
    from edgevid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("motion-data") / "d"
    generate_dataset(root, seed=4, videos_per_class=2, frames=16, size=SIZE, val_fraction=0.5, progress=False)
    return root


@pytest.fixture(scope="module")
def flow_stream(tmp_path_factory):
    """tsn-flow-mobilenetv2, stream mode, ONNX Runtime + OpenVINO (the openvino target validates both)."""
    from edgevid.pipeline import export

    out = tmp_path_factory.mktemp("flow") / "stream"
    manifest = export("tsn-flow-mobilenetv2", out, mode="stream", target="openvino", size=SIZE, width_mult=0.5,
                      progress=False)
    return out, manifest


def test_a_flow_export_carries_its_motion_and_validates_on_real_flow_stacks(flow_stream):
    out, manifest = flow_stream
    assert manifest.motion is not None and manifest.motion.kind == "flow"
    c = manifest.motion.channels
    assert manifest.inputs[0].shape[1:] == [c, SIZE, SIZE]
    assert all(v["passed"] for v in manifest.validation.values()), manifest.validation
    assert set(manifest.validation) == {"onnxruntime", "openvino"}
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["motion"]["algorithm"] == manifest.motion.algorithm and saved["motion"]["length"] == 5


def test_the_runtime_stream_equals_torch_on_the_same_flow_stacks(flow_stream, videos):
    """A video through `edgevid.runtime` (flow computed by the session) gives the logits of the torch model
    on motion_inputs of the same sampled frames: one code path for both."""
    import torch

    from edgevid import runtime
    from edgevid.models import build_model
    from edgevid.runtime.motion import motion_inputs

    out, manifest = flow_stream
    video = sorted(videos.rglob("*.mp4"))[0]
    frames = list(runtime.open_source(str(video)))
    got = []
    with runtime.load(out, "onnxruntime") as runner:
        session = runtime.open_session(runner)
        for frame in frames:
            pred = session.push(frame)
            if pred is not None:
                got.append(pred.logits)
                assert "motion" in pred.latency_ms
    stride = manifest.sampling.stride
    stacks = motion_inputs(frames[::stride], manifest.motion, manifest.preprocess)
    assert len(got) == len(stacks) == len(frames[::stride]) - manifest.motion.length
    net = build_model("tsn-flow-mobilenetv2", checkpoint="default").eval()  # what the export took: the shipped weights
    with torch.no_grad():
        want = net(torch.from_numpy(stacks)[:, None]).numpy()
    assert np.abs(np.stack(got) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_run_refuses_a_video_shorter_than_the_flow_needs(flow_stream, tmp_path):
    """Must show: a video shorter than L + 1 frames is one clear line, not a run without predictions."""
    from edgevid.data.video_io import write_video

    out, manifest = flow_stream
    short = tmp_path / "short.mp4"
    rng = np.random.default_rng(0)
    write_video(short, [rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8) for _ in range(manifest.motion.length)], 25.0)
    proc = edgevid(["run", str(out), "--video", str(short), "--backend", "onnxruntime"], tmp_path)
    check_one_line(proc, f"its flow input needs {manifest.motion.length + 1} sampled frames")


def test_int8_flow_export_is_calibrated_on_real_flow_stacks(videos, tmp_path):
    from edgevid.pipeline import export

    manifest = export("tsn-flow-mobilenetv2", tmp_path / "int8", mode="stream", target="onnxruntime", size=SIZE,
                      width_mult=0.5, precision="int8", calib=videos, calib_size=4, progress=False)
    int8 = manifest.build["int8"]
    assert int8["int8_layers"] > 0
    assert int8["calibration"]["samples"] == 4 * manifest.sampling.frames  # T stacks per clip, all real flow
    assert all(v["passed"] for v in manifest.validation.values())


def test_a_flow_model_is_refused_by_triton_and_uint8_input(flow_stream, tmp_path):
    out, _ = flow_stream
    proc = edgevid(["triton", "write", str(out), "-o", str(tmp_path / "repo")], tmp_path)
    check_one_line(proc, "flow input computed from consecutive frames")
    proc = edgevid(["export", "--model", "tsn-flow-mobilenetv2", "--uint8-input", "-o", str(tmp_path / "u8")],
                   tmp_path)
    check_one_line(proc, "takes a flow stack the runtime computes")


def test_run_prints_the_flow_time_apart_from_the_network(flow_stream, videos, tmp_path):
    out, _ = flow_stream
    video = sorted(videos.rglob("*.mp4"))[0]
    proc = edgevid(["run", str(out), "--video", str(video), "--backend", "onnxruntime", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    stages = [line.split()[0] for line in proc.stderr.splitlines() if line.startswith("  ")]
    assert {"decode", "preprocess", "motion", "infer"} <= set(stages), proc.stderr


def test_a_two_stream_model_exports_as_one_graph_on_rgb_and_flow(videos, tmp_path):
    """two-stream: one input (the RGB frame, then the flow stack), the fused scores' log out; the runtime's
    scores are TSN's weighted average of both streams' softmaxes."""
    import torch

    from edgevid import runtime
    from edgevid.models import build_model
    from edgevid.pipeline import export

    manifest = export("two-stream-mobilenetv2", tmp_path / "two", mode="stream", target="onnxruntime", size=SIZE,
                      width_mult=0.5, progress=False)
    assert manifest.motion.rgb and manifest.inputs[0].shape[1] == 3 + 2 * manifest.motion.length
    assert all(v["passed"] for v in manifest.validation.values())
    video = sorted(videos.rglob("*.mp4"))[1]
    with runtime.load(tmp_path / "two", "onnxruntime") as runner:
        session = runtime.open_session(runner, smooth=1)
        preds = [p for p in (session.push(f) for f in runtime.open_source(str(video))) if p is not None]
    net = build_model("two-stream-mobilenetv2", checkpoint="default").eval()  # the shipped weights, as exported
    from edgevid.runtime.motion import motion_inputs

    frames = list(runtime.open_source(str(video)))
    x = torch.from_numpy(motion_inputs(frames, manifest.motion, manifest.preprocess))
    with torch.no_grad():
        rgb, flow = net.rgb.forward_step(x[:, :3]).softmax(-1), net.flow.forward_step(x[:, 3:]).softmax(-1)
    fused = ((net.fusion["rgb"] * rgb + net.fusion["flow"] * flow) / sum(net.fusion.values())).numpy()
    assert len(preds) == len(fused)
    np.testing.assert_allclose(np.stack([p.scores for p in preds]), fused, atol=1e-5)


def test_the_report_times_every_flow_algorithm_apart_from_the_network(videos, tmp_path, report_cache):
    """Must show: flow ms per frame (DIS ultrafast / fast, Farneback, ...) against the network's ms per step."""
    out = tmp_path / "report"
    proc = edgevid(["report", "--model", "tsn-flow-mobilenetv2", "--backends", "onnxruntime", "--precisions", "fp32",
                    "--modes", "stream", "--size", str(SIZE), "--data", str(videos), "--videos", "3", "--rounds", "2",
                    "--block", "3", "--cache", str(report_cache), "-o", str(out), "-q"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    motion = {m["method"]: m for m in report["motion"]}
    assert {"DIS ultrafast", "DIS fast", "DIS medium", "Farneback"} <= set(motion)
    assert [m["method"] for m in report["motion"] if m["artifact"]] == ["DIS fast"]  # the entry's own algorithm
    assert all(m["frames"] > 0 and m["ms_per_frame_p50"] > 0 for m in motion.values())
    md = (out / "report.md").read_text()
    assert "## Motion input per frame" in md and "| DIS fast |" in md
    step = next(r for r in report["rows"] if r["variant"] == "onnxruntime/stream/fp32")["latency_ms"]["p50"]
    if not report["noise"]["noisy"]:
        assert any(s.startswith("Motion input: DIS fast (this model's)") and f"{step:.2f} ms" in s
                   for s in report["findings"]), report["findings"]


def test_bench_times_the_flow_apart_from_the_call(flow_stream, tmp_path):
    from edgevid.report.schema import validate

    out, _ = flow_stream
    proc = edgevid(["bench", str(out), "--backend", "onnxruntime", "--iterations", "20", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    validate(result, "bench")
    assert result["motion"]["method"] == "DIS fast" and result["motion"]["ms_per_frame_p50"] > 0
    text = edgevid(["bench", str(out), "--backend", "onnxruntime", "--iterations", "20"], tmp_path).stdout
    assert "motion input DIS fast:" in text and "not part of the timed call" in text


def test_the_reports_torch_reference_counts_a_video_too_short_for_the_flow_as_missing(flow_stream):
    """As the session does: fewer than L + 1 sampled frames give no stack and no prediction, not an error."""
    from edgevid.models import build_model
    from edgevid.models.streaming import to_streaming
    from edgevid.report.accuracy import HeldOut, torch_reference

    _, manifest = flow_stream
    rng = np.random.default_rng(0)
    short = [rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8) for _ in range(manifest.motion.length)]
    long = [rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8) for _ in range(manifest.motion.length + 4)]
    held_out = HeldOut([short, long], np.array([0, 1]), list(manifest.labels), "test", ["short", "long"])
    net = build_model("tsn-flow-mobilenetv2", checkpoint="default").eval()
    out = torch_reference(net, to_streaming(net), manifest, held_out)
    assert out.missing == 1 and [len(s) for s in out.steps] == [0, 4]
