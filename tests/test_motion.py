"""Issue 26, host-side motion: the motion spec, OpenCV's optical flow and RGB differences, and the
sessions that feed motion stacks to a motion artifact.

Everything runs for real: OpenCV's own flow on frames the test draws (a smooth random texture moved
by known pixels), and a tiny ONNX graph made with ``onnx.helper`` (a global average pool and a
MatMul to K logits) loaded through ``edgevid.runtime.load`` on ONNX Runtime.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from probe import check_one_line, edgevid

from edgevid.errors import EdgevidError
from edgevid.manifest import Manifest, ManifestError, Motion, Preprocess, sha256_file
from edgevid.runtime import load, open_session
from edgevid.runtime.motion import (
    DIS_PRESETS,
    MotionState,
    flow_field,
    flow_to_input,
    motion_inputs,
    quantize_flow,
)
from edgevid.runtime.preprocess import preprocess_frame, resize_crop

FLOW = Motion("flow", 3, "dis", "ultrafast", 20.0)
RGBDIFF = Motion("rgbdiff", 3)
GEOMETRY = Preprocess(resize=64, crop=56)  # frames of 128x96 are resized to 85x64 and cropped
CLASSES = 4


# --- frames ------------------------------------------------------------------------------------------------------


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random grey texture (blurred noise, full 0-255 range): every patch has gradients in both
    directions, so flow is well defined everywhere (no aperture problem, no flat area)."""
    noise = np.random.default_rng(seed).random((h, w)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def _moving(shifts: list[tuple[int, int]], size: tuple[int, int] = (128, 96), seed: int = 0) -> list[np.ndarray]:
    """BGR frames of a texture that moves by ``shifts[t]`` = (dx, dy) px from frame t to t + 1: frame t is a
    window of a larger canvas, moved against the content (the content moves right when the window moves left)."""
    w, h = size
    margin = 8 + sum(max(abs(dx), abs(dy)) for dx, dy in shifts)
    canvas = _texture(h + 2 * margin, w + 2 * margin, seed)
    colour = np.stack([canvas, np.roll(canvas, 5, axis=1), 255 - canvas], axis=-1)
    x, y, frames = margin, margin, []
    for dx, dy in [(0, 0), *shifts]:
        x, y = x - dx, y - dy
        frames.append(np.ascontiguousarray(colour[y : y + h, x : x + w]))
    return frames


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


# --- the motion spec ---------------------------------------------------------------------------------------------


def test_motion_channels_and_round_trip():
    assert (FLOW.channels, RGBDIFF.channels, Motion("flow", 5, "farneback").channels) == (6, 9, 10)
    assert Motion.from_dict({"kind": "flow", "length": 5, "algorithm": "dis", "preset": "fast", "bound": 20}) \
        == Motion("flow", 5, "dis", "fast", 20.0)
    assert Motion.from_dict({"kind": "rgbdiff"}) == Motion("rgbdiff", 5)


@pytest.mark.parametrize("data, message", [
    ({"kind": "optical"}, 'motion.kind must be one of flow, rgbdiff, got "optical"'),
    ({"kind": "flow", "algorithm": "lk"}, 'motion.algorithm must be one of dis, farneback, tvl1, got "lk"'),
    ({"kind": "flow", "algorithm": "dis"}, 'motion.preset must be one of ultrafast, fast, medium, got ""'),
    ({"kind": "flow", "algorithm": "dis", "preset": "slow"}, "motion.preset must be one of ultrafast"),
    ({"kind": "flow", "algorithm": "farneback", "preset": "fast"}, "motion.preset is for dis only"),
    ({"kind": "flow", "algorithm": "farneback", "bound": 0}, "motion.bound must be > 0 px, got 0"),
    ({"kind": "flow", "algorithm": "farneback", "bound": "20"}, 'motion.bound must be a finite number, got "20"'),
    ({"kind": "flow", "algorithm": "farneback", "length": 0}, "motion.length must be between 1 and 64, got 0"),
    ({"kind": "flow", "algorithm": "farneback", "length": 5.0}, "motion.length must be an integer, got 5.0"),
    ({"kind": "rgbdiff", "algorithm": "dis"}, "motion.algorithm is for flow only"),
    ({"kind": "rgbdiff", "fps": 8}, "motion has unknown fields ['fps']"),
    ({"length": 5}, "motion.kind is missing"),
])
def test_bad_motion_is_one_error_naming_the_field(data, message):
    with pytest.raises(ManifestError) as err:
        Motion.from_dict(data)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_bad_motion_made_in_code_fails_when_made():
    with pytest.raises(ManifestError, match='motion.preset must be one of ultrafast, fast, medium, got "quick"'):
        Motion("flow", 5, "dis", "quick")


def _manifest_dict(motion: Motion | None, mode: str = "stream", frames: int = 8, stride: int = 1,
                   channels: int | None = None) -> dict:
    """A valid manifest dict for the tiny graph (the shape of what `edgevid export` writes)."""
    c = channels or (motion.channels if motion else 3)
    crop = GEOMETRY.crop
    shape = ["N", c, crop, crop] if mode == "stream" else ["N", frames, c, crop, crop]
    data = {
        "schema_version": 1, "edgevid_version": "0.1.0", "model": "tsn-flow-test", "family": "tsn", "mode": mode,
        "inputs": [{"name": "frame" if mode == "stream" else "frames", "shape": shape, "dtype": "float32",
                    "layout": "NCHW" if mode == "stream" else "NTCHW"}],
        "outputs": [{"name": "logits", "shape": ["N", CLASSES], "dtype": "float32", "layout": "NC"}],
        "preprocess": {"resize": GEOMETRY.resize, "crop": crop},
        "sampling": {"frames": frames, "stride": stride},
        "labels": [f"class{i}" for i in range(CLASSES)],
        "files": {"onnx": "model.onnx"}, "provenance": {"onnx_sha256": "0" * 64},
    }
    if motion is not None:
        data["motion"] = {"kind": motion.kind, "length": motion.length, "algorithm": motion.algorithm,
                          "preset": motion.preset, "bound": motion.bound}
    return data


def test_manifest_motion_field():
    old = _manifest_dict(None)
    manifest = Manifest.from_dict(copy.deepcopy(old))
    assert manifest.motion is None and "motion" not in manifest.to_dict()  # an RGB manifest reads and writes as before
    manifest = Manifest.from_dict(_manifest_dict(FLOW))
    assert manifest.motion == FLOW
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))).motion == FLOW


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["inputs"][0]["shape"].__setitem__(1, 3), "inputs[0].shape must end in [6, 56, 56]"),
    (lambda d: d["preprocess"].__setitem__("uint8_input", True), "preprocess.uint8_input must be false"),
    (lambda d: d["motion"].__setitem__("preset", "turbo"), 'motion.preset must be one of ultrafast, fast, medium'),
])
def test_manifest_refuses_motion_that_does_not_fit_its_graph(edit, message):
    data = _manifest_dict(FLOW)
    edit(data)
    with pytest.raises(ManifestError) as err:
        Manifest.from_dict(data)
    assert str(err.value).startswith("manifest.json: ") and message in str(err.value), err.value


# --- optical flow ------------------------------------------------------------------------------------------------

# DIS and Farneback recover a smooth texture's whole-frame translation of a few pixels to a small
# fraction of a pixel on average (measured here: under 0.05 px off for 3 px). 0.25 px is loose enough for
# other OpenCV builds and tight enough that a swapped u/v (dx 3, dy -2), a flipped sign or a flow scaled
# by a pyramid factor fails by far.
TOLERANCE_PX = 0.25
ALGORITHMS = [("dis", p) for p in DIS_PRESETS] + [("farneback", "")]


def _mean_flow(flow: np.ndarray) -> tuple[float, float]:
    inner = flow[8:-8, 8:-8]  # the borders see content that entered or left the frame
    return float(inner[..., 0].mean()), float(inner[..., 1].mean())


@pytest.mark.parametrize("algorithm, preset", ALGORITHMS)
def test_flow_recovers_a_known_translation(algorithm, preset):
    motion = Motion("flow", 5, algorithm, preset)
    first, second = (_grey(f) for f in _moving([(3, -2)]))
    flow = flow_field(first, second, motion)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    u, v = _mean_flow(flow)
    assert abs(u - 3) < TOLERANCE_PX and abs(v + 2) < TOLERANCE_PX, (u, v)
    u, v = _mean_flow(flow_field(second, first, motion))  # backwards: the sign flips
    assert abs(u + 3) < TOLERANCE_PX and abs(v - 2) < TOLERANCE_PX, (u, v)


def test_tvl1_works_or_names_the_fix():
    motion = Motion("flow", 5, "tvl1")
    first, second = (_grey(f) for f in _moving([(3, -2)]))
    if hasattr(cv2, "optflow"):
        u, v = _mean_flow(flow_field(first, second, motion))
        assert abs(u - 3) < TOLERANCE_PX and abs(v + 2) < TOLERANCE_PX, (u, v)
        return
    with pytest.raises(EdgevidError) as err:
        flow_field(first, second, motion)
    message = str(err.value)
    assert "\n" not in message and "cv2.optflow is missing" in message
    assert "pip install opencv-contrib-python-headless" in message
    with pytest.raises(EdgevidError, match="opencv-contrib"):  # a stream fails when made, not at its 2nd frame
        MotionState(motion, GEOMETRY)


def test_quantize_flow_maps_the_bound_to_the_uint8_range():
    for bound in (20.0, 7.0, 0.1, 33.3):
        values = np.array([-2 * bound, -bound, 0.0, bound, 3 * bound], np.float32)
        q = quantize_flow(np.stack([values, -values], axis=-1)[None], bound)
        assert q.dtype == np.uint8 and q.shape == (1, 5, 2)
        assert q[0, :, 0].tolist() == [0, 0, 128, 255, 255], bound  # clipped; 0 px is 127.5, rounded half to even
        assert q[0, :, 1].tolist() == [255, 255, 128, 0, 0], bound
    flow = np.random.default_rng(0).uniform(-30, 30, (32, 32, 2)).astype(np.float32)
    q = quantize_flow(flow, 20.0)
    assert np.array_equal(q, np.rint((np.clip(flow, -20, 20) + 20) * 255 / 40).astype(np.uint8))
    # Round trip through the network's input: within half a quantisation step of the clipped flow.
    back = (flow_to_input(q) * 128 + 128 - 127.5) * (40 / 255)
    assert np.abs(back - np.clip(flow, -20, 20)).max() <= 20 / 255 + 1e-5


def test_flow_to_input_is_mmaction_normalisation():
    x = flow_to_input(np.array([0, 128, 255], np.uint8))
    assert x.dtype == np.float32 and x.tolist() == [-1.0, 0.0, 127 / 128]


# --- MotionState -------------------------------------------------------------------------------------------------

SHIFTS = [(1, 0), (0, 2), (-3, 1), (2, -2), (4, 3), (-1, -4)]  # every step moves differently: order shows


def _expected_field(prev: np.ndarray, frame: np.ndarray, motion: Motion) -> np.ndarray:
    """One field by hand, from the public pieces: geometry, grey, flow_field, quantize, normalise."""
    a, b = (_grey(np.ascontiguousarray(resize_crop(f, GEOMETRY.resize, GEOMETRY.crop))) for f in (prev, frame))
    return np.moveaxis(flow_to_input(quantize_flow(flow_field(a, b, motion), motion.bound)), -1, 0)


@pytest.mark.parametrize("algorithm, preset", [("dis", "ultrafast"), ("farneback", "")])
def test_motion_state_stacks_the_last_fields_oldest_first(algorithm, preset):
    motion = Motion("flow", 3, algorithm, preset)
    frames = _moving(SHIFTS)
    state = MotionState(motion, GEOMETRY)
    stacks = [state.push(f) for f in frames]
    assert stacks[:3] == [None] * 3  # L pushes of warm-up
    assert all(s.shape == (6, 56, 56) and s.dtype == np.float32 for s in stacks[3:])
    fields = [_expected_field(a, b, motion) for a, b in zip(frames, frames[1:])]
    assert all(not np.array_equal(a, b) for a, b in zip(fields, fields[1:]))  # distinct: the order is tested
    for n in range(3, len(frames)):  # the stack at frame n holds fields n-3..n-1 (frames n-3 -> n), oldest first
        np.testing.assert_array_equal(stacks[n], np.concatenate(fields[n - 3 : n]))
    # The newest field, dequantised, is u then v of the last shift at the crop's scale (96 -> 64 px: 2/3).
    u, v = ((stacks[-1][c, 8:-8, 8:-8] * 128 + 0.5).mean() * 40 / 255 for c in (-2, -1))
    dx, dy = SHIFTS[-1]
    assert abs(u - dx * 2 / 3) < 0.3 and abs(v - dy * 2 / 3) < 0.3, (u, v)


def test_motion_state_reset_and_a_new_size():
    frames = _moving(SHIFTS)
    state = MotionState(FLOW, GEOMETRY)
    for f in frames[:5]:
        state.push(f)
    state.reset()
    assert [state.push(f) for f in frames[2:5]] == [None] * 3  # the warm-up starts again
    fresh = MotionState(FLOW, GEOMETRY)
    for f in frames[2:5]:
        fresh.push(f)
    np.testing.assert_array_equal(state.push(frames[5]), fresh.push(frames[5]))
    small = cv2.resize(frames[6], (80, 60))
    with pytest.raises(EdgevidError) as err:
        state.push(small)
    assert str(err.value) == "frame 4 is 80x60, the stream started at 128x96: reset the session for a new video"
    np.testing.assert_array_equal(state.push(frames[6]), fresh.push(frames[6]))  # the refused frame left no trace
    state.reset()
    assert state.push(small) is None  # after a reset another size is a new video


def test_rgbdiff_stacks_differences_of_preprocessed_frames():
    frames = _moving(SHIFTS)
    x = [preprocess_frame(f, GEOMETRY) for f in frames]
    state = MotionState(RGBDIFF, GEOMETRY)
    stacks = [state.push(f) for f in frames]
    assert stacks[:3] == [None] * 3
    for n in range(3, len(frames)):
        want = np.concatenate([x[k] - x[k - 1] for k in range(n - 2, n + 1)])
        assert stacks[n].shape == (9, 56, 56)
        np.testing.assert_array_equal(stacks[n], want)


@pytest.mark.parametrize("motion", [FLOW, RGBDIFF], ids=["flow", "rgbdiff"])
def test_motion_inputs_is_pushing_the_frames_one_by_one(motion):
    frames = _moving(SHIFTS)
    state = MotionState(motion, GEOMETRY)
    pushed = [s for s in (state.push(f) for f in frames) if s is not None]
    stacks = motion_inputs(frames, motion, GEOMETRY)
    assert stacks.shape == (len(frames) - 3, motion.channels, 56, 56) and stacks.dtype == np.float32
    np.testing.assert_array_equal(stacks, np.stack(pushed))
    with pytest.raises(EdgevidError, match="got 3 frames, fewer than the 4 that one"):
        motion_inputs(frames[:3], motion, GEOMETRY)


# --- sessions on a motion artifact -------------------------------------------------------------------------------


def _graph(mode: str, channels: int, frames: int, seed: int = 0):
    """(1, [T,] C, crop, crop) -> mean over space (and time) -> MatMul -> (1, K) logits."""
    from onnx import TensorProto, helper, numpy_helper

    crop = GEOMETRY.crop
    weight = np.random.default_rng(seed).normal(size=(channels, CLASSES)).astype(np.float32) * 4
    name, shape, axes = (("frame", ["N", channels, crop, crop], [2, 3]) if mode == "stream"
                         else ("frames", ["N", frames, channels, crop, crop], [1, 3, 4]))
    nodes = [helper.make_node("ReduceMean", [name], ["pooled"], axes=axes, keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "motion", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
                              [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _artifact(folder: Path, motion: Motion, mode: str = "stream", frames: int = 3, stride: int = 1) -> Path:
    import onnx

    folder.mkdir(parents=True)
    onnx.save(_graph(mode, motion.channels, frames), folder / "model.onnx")
    data = _manifest_dict(motion, mode, frames, stride)
    data["provenance"]["onnx_sha256"] = sha256_file(folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def _graph_logits(artifact: Path, x: np.ndarray) -> np.ndarray:
    """The graph run directly on ONNX Runtime, one call per row of ``x`` (batch 1 each)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: row[None]})[0] for row in x])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("motion", [FLOW, RGBDIFF], ids=["flow", "rgbdiff"])
def test_stream_session_steps_on_motion_stacks(tmp_path, motion, stride):
    artifact = _artifact(tmp_path / "a", motion, stride=stride)
    frames = _moving(SHIFTS * 2)
    sampled = frames[::stride]
    want = _graph_logits(artifact, motion_inputs(sampled, motion, GEOMETRY))
    with load(artifact, "onnxruntime") as runner, open_session(runner, topk=2) as session:
        preds = [session.push(f) for f in frames]
        due = [i for i, p in enumerate(preds) if p is not None]
        assert due[0] == 3 * stride  # the first at the (L+1)-th sampled frame
        assert due == list(range(3 * stride, len(frames), stride))
        got = np.stack([preds[i].logits for i in due])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert len({round(float(v), 4) for v in got[:, 0]}) > 3  # the stacks differ, and so do the logits
        latency = preds[due[0]].latency_ms
        assert set(latency) == {"preprocess", "infer", "motion"} and latency["motion"] > 0
        assert all(v >= 0 for v in latency.values())

        session.reset()  # the warm-up starts again
        again = [session.push(f) for f in frames[: 3 * stride + 1]]
        assert [p is None for p in again] == [True] * (3 * stride) + [False]
        np.testing.assert_allclose(again[-1].logits, want[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("motion", [FLOW, RGBDIFF], ids=["flow", "rgbdiff"])
def test_clip_session_rings_motion_stacks(tmp_path, motion):
    artifact = _artifact(tmp_path / "a", motion, mode="clip", frames=3)
    frames = _moving(SHIFTS * 2)
    stacks = motion_inputs(frames, motion, GEOMETRY)
    want = _graph_logits(artifact, np.stack([stacks[i : i + 3] for i in range(len(stacks) - 2)]))
    with load(artifact, "onnxruntime") as runner, open_session(runner) as session:
        preds = [session.push(f) for f in frames]
        due = [i for i, p in enumerate(preds) if p is not None]
        assert due == list(range(3 + 3 - 1, len(frames)))  # L frames of warm-up, then T stacks fill the ring
        np.testing.assert_allclose(np.stack([preds[i].logits for i in due]), want, rtol=1e-5, atol=1e-5)
        assert "motion" in preds[due[0]].latency_ms
        session.reset()
        again = [session.push(f) for f in frames[:6]]
        assert [p is None for p in again] == [True] * 5 + [False]
        np.testing.assert_allclose(again[-1].logits, want[0], rtol=1e-5, atol=1e-5)


def test_a_frame_of_another_size_mid_stream_is_refused(tmp_path):
    artifact = _artifact(tmp_path / "a", FLOW)
    frames = _moving(SHIFTS)
    with load(artifact, "onnxruntime") as runner, open_session(runner) as session:
        for f in frames[:5]:
            session.push(f)
        with pytest.raises(EdgevidError) as err:
            session.push(cv2.resize(frames[5], (64, 48)))
        assert str(err.value) == "frame 5 is 64x48, the stream started at 128x96: reset the session for a new video"
        assert session.push(frames[5]).frame == 5  # the refused frame did not count


def test_run_on_frames_of_two_sizes_is_one_line(tmp_path):
    """`edgevid run` on an image folder whose 4th image is smaller: one error line, no traceback."""
    artifact = _artifact(tmp_path / "a", FLOW)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(_moving(SHIFTS)):
        cv2.imwrite(str(folder / f"f_{i}.png"), frame if i != 3 else cv2.resize(frame, (80, 60)))
    proc = edgevid(["run", artifact, "--video", folder, "--backend", "onnxruntime"], cwd=tmp_path)
    check_one_line(proc, "frame 3 is 80x60, the stream started at 128x96: reset the session for a new video")


def test_bench_flow_runs_tiny_with_an_export(tmp_path):
    """benchmarks/bench_flow.py --tiny (its figures mean nothing here, only that it works): every flow variant
    timed on decoded synthetic frames, and the ratio lines against a motion artifact's network step."""
    import subprocess
    import sys

    artifact = _artifact(tmp_path / "a", FLOW)
    out = tmp_path / "flow.json"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_flow.py"
    proc = subprocess.run([sys.executable, str(script), "--tiny", "--export", str(artifact), "--backend",
                           "onnxruntime", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "CPU: " in proc.stdout
    figures = json.loads(out.read_text())
    names = {f"{algo} @ {size} px" for algo in ("DIS ultrafast", "DIS fast", "DIS medium", "Farneback")
             for size in (32, 48, 56)}  # 56: the artifact's crop joins the sizes
    assert names <= set(figures["ms"]) and all(figures["ms"][n]["median"] > 0 for n in names)
    assert figures["network"]["crop"] == 56 and figures["network"]["motion"] == "flow"
    assert set(figures["ratios_vs_network"]) == {n for n in names if n.endswith("@ 56 px")}
    assert ("TV-L1 @ 32 px" in figures["ms"]) == hasattr(cv2, "optflow")
