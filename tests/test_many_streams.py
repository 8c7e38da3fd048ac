"""Many cameras on one model (issue 29): sources stepped together, one batched call per tick.

Every check compares a source's predictions inside the batch with the same frames run through a
``StreamSession`` of its own, on the real backends (ONNX Runtime, OpenVINO both ways, INT8 with
uint8 states), with sources of different lengths and frame rates, sources coming and going,
a reset, a gate, and a source killed mid-run.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgevid.errors import EdgevidError
from edgevid.runtime import MultiStreamSession, StreamSession, load
from edgevid.runtime.backends.batch import StreamsOneByOne

TOL = 1e-5


def _videos(lengths=(12, 7, 10), seed=0):
    rng = np.random.default_rng(seed)
    # Smooth frames (a moving bright box on noise) so the logits depend on the states.
    out = {}
    for k, n in enumerate(lengths):
        base = rng.integers(0, 80, (72, 88, 3), dtype=np.uint8)
        frames = []
        for t in range(n):
            f = base.copy()
            x = (5 * t + 9 * k) % 60
            f[10:40, x : x + 20] = 255 - 20 * k
            frames.append(f)
        out[f"cam{k}"] = frames
    return out


def _alone(runner, frames, **options):
    with StreamSession(runner, smooth=1, every=1, **options) as session:
        return [p.logits for p in map(session.push, frames) if p is not None]


def _relative(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def _schedule(videos, slow="cam1"):
    """Ticks of (frames by source): ``slow`` at half the rate of the others, each source to its end."""
    ticks, t = [], 0
    while True:
        tick = {}
        for name, frames in videos.items():
            i = t // 2 if name == slow else t
            if (name != slow or t % 2 == 0) and i < len(frames):
                tick[name] = frames[i]
        if not any((t // 2 if n == slow else t) < len(f) for n, f in videos.items()):
            return ticks
        ticks.append(tick)
        t += 1


def _batched(runner, videos, **session_options):
    """Each source's logits from one MultiStreamSession; a source is removed right after its last frame."""
    got = {name: [] for name in videos}
    with MultiStreamSession(runner, smooth=1, every=1, **session_options) as multi:
        for name in videos:
            multi.add(name)
        sent = {name: 0 for name in videos}
        for tick in _schedule(videos):
            for name, pred in multi.push(tick).items():
                got[name].append(pred.logits)
            for name in tick:
                sent[name] += 1
                if sent[name] == len(videos[name]):
                    multi.remove(name)
        assert len(multi) == 0
        calls = multi.calls
    return got, calls


@pytest.fixture(scope="module")
def videos():
    return _videos()


@pytest.mark.parametrize("backend,options", [
    ("onnxruntime", {}),
    ("openvino", {"batching": "batch"}),
    ("openvino", {"batching": "requests"}),
], ids=["ort", "ov-batch", "ov-requests"])
def test_each_source_equals_its_video_run_alone(runtime_stream_artifact, videos, backend, options):
    with load(runtime_stream_artifact, backend, **options) as runner:
        want = {name: _alone(runner, frames) for name, frames in videos.items()}
        got, calls = _batched(runner, videos)
    for name in videos:
        assert len(got[name]) == len(videos[name])
        assert _relative(want[name], got[name]) <= TOL, name
    # Batched: fewer calls than source steps (sources shared calls), and at least one per tick.
    steps = sum(len(f) for f in videos.values())
    assert max(len(f) for f in videos.values()) <= calls < steps


def test_int8_uint8_states_step_batched(runtime_model, tmp_path_factory, videos):
    from edgevid.data.synth import generate_dataset
    from edgevid.manifest import Manifest
    from edgevid.pipeline import export

    work = tmp_path_factory.mktemp("many_int8")
    data = work / "synth"
    generate_dataset(data, seed=3, videos_per_class=2, frames=8, size=64, val_fraction=0.5, progress=False)
    out = work / "int8"
    export("tsm-mobilenetv2-online", out, checkpoint=runtime_model[1], size=64, num_classes=5, width_mult=0.5,
           target="onnxruntime", precision="int8", calib=data, calib_size=2, validate=False, progress=False)
    assert {s.dtype for s in Manifest.load(out).states} == {"uint8"}
    with load(out, "onnxruntime") as runner:
        want = {name: _alone(runner, frames) for name, frames in videos.items()}
        got, _ = _batched(runner, videos)
    for name in videos:
        assert _relative(want[name], got[name]) <= TOL, name


@pytest.fixture(scope="module")
def ort_runner(runtime_stream_artifact):
    with load(runtime_stream_artifact, "onnxruntime") as runner:
        yield runner


def test_reset_and_gating_are_per_source(ort_runner, videos):
    """A reset restarts one source alone; a gated source keeps its state and sits out the call."""
    from edgevid.runtime.gating import DeltaGate

    a, b = videos["cam0"], videos["cam2"]
    still = [b[0]] * 4 + b  # four identical frames first: the gate skips three of them
    with MultiStreamSession(ort_runner, smooth=1, every=1) as multi:
        multi.add("a")
        multi.add("b", gate=DeltaGate(1.0))
        got_a, got_b, batch_sizes = [], [], []
        for t in range(len(still)):
            if t == 6:
                multi.reset("a")
            frames = {"b": still[t]} | ({"a": a[t]} if t < len(a) else {})
            preds = multi.push(frames)
            batch_sizes.append(multi.last_batch)
            if "a" in preds:
                got_a.append(preds["a"].logits)
            if "b" in preds:
                got_b.append(preds["b"].logits)
    assert batch_sizes[1:4] == [1, 1, 1]  # b gated on its repeated frames: a stepped alone
    want_a = _alone(ort_runner, a[:6]) + _alone(ort_runner, a[6:])
    assert _relative(want_a, got_a) <= TOL
    assert _relative(_alone(ort_runner, still, gate=DeltaGate(1.0)), got_b) <= TOL


def test_the_batch_shrinks_and_grows_and_keeps_every_state(ort_runner, videos):
    """Sources removed from the middle and added past the first allocation keep exact states."""
    from edgevid.runtime.preprocess import preprocess_frame

    frames = videos["cam0"]
    batch = ort_runner.open_batch()
    x = np.stack([preprocess_frame(f, ort_runner.manifest.preprocess) for f in frames])
    handles = [batch.open() for _ in range(6)]  # past the first capacity of 4
    # stream k starts at frame k: all rows differ
    for t in range(6):
        live = handles[: t + 1]
        batch.step(live, np.stack([x[t - k] for k in range(len(live))]))
    batch.close_stream(handles[1])  # the last row moves into row 1
    rest = [h for h in handles if h != handles[1]]
    got = batch.step(rest, np.stack([x[6 - k] for k in (0, 2, 3, 4, 5)]))
    new = batch.open()
    assert len(batch) == 6
    for k, row in zip((0, 2, 3, 4, 5), got):
        with StreamSession(ort_runner, smooth=1, every=1) as alone:
            for f in frames[: 7 - k]:
                last = alone.push(f)
        assert _relative(last.logits, row) <= TOL, k
    first = batch.step([new], x[:1])
    with StreamSession(ort_runner, smooth=1, every=1) as alone:
        assert _relative(alone.push(frames[0]).logits, first[0]) <= TOL
    batch.close()


def test_one_source_at_a_time_is_the_naive_baseline(ort_runner, videos):
    with MultiStreamSession(ort_runner, smooth=1, every=1, batched=False) as multi:
        assert isinstance(multi.batch, StreamsOneByOne)
        multi.add("a")
        multi.add("b")
        preds = [multi.push({"a": videos["cam0"][t], "b": videos["cam1"][t]}) for t in range(5)]
    assert _relative(_alone(ort_runner, videos["cam0"][:5]), [p["a"].logits for p in preds]) <= TOL


def test_misuse_is_one_clear_error(ort_runner, runtime_clip_artifact, videos):
    with MultiStreamSession(ort_runner) as multi:
        multi.add("a")
        with pytest.raises(EdgevidError, match="already in this session"):
            multi.add("a")
        with pytest.raises(EdgevidError, match="no source 'b'"):
            multi.push({"b": videos["cam0"][0]})
        with pytest.raises(EdgevidError, match="unknown source option"):
            multi.add("c", colour="red")
        multi.add("b")
        with pytest.raises(EdgevidError):  # a bad frame for b: a counted none of the tick
            multi.push({"a": videos["cam0"][0], "b": np.zeros((0, 0, 3), np.uint8)})
        nan = np.full(multi._lanes["a"]._x_shape, np.nan, np.float32)
        with pytest.raises(EdgevidError, match="non-finite"):
            multi.push_inputs({"a": nan * 0 + 1, "b": nan})
        assert multi._lanes["a"]._pushed == 0 and multi._lanes["b"]._pushed == 0
    with pytest.raises(EdgevidError, match="closed"):
        multi.add("d")
    with load(runtime_clip_artifact, "onnxruntime") as clip, pytest.raises(EdgevidError, match="stream mode"):
        MultiStreamSession(clip)


# -- edgevid run with several sources ------------------------------------------------------------------


def _edgevid(*argv):
    return subprocess.run([sys.executable, "-m", "edgevid.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300)


def _write(path, frames, fps):
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def test_run_several_sources_survives_one_that_dies(runtime_stream_artifact, tmp_path):
    """Three files, one truncated mid-way (a decode error at frame 30): the others run to their end."""
    vids = _videos((40, 24, 60), seed=2)
    a = _write(tmp_path / "a.avi", vids["cam0"], 25.0)
    b = _write(tmp_path / "b.avi", vids["cam1"], 10.0)
    c = _write(tmp_path / "c.avi", vids["cam2"], 25.0)
    data = c.read_bytes()
    cut = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"][30]
    c.write_bytes(data[:cut])
    listed = tmp_path / "sources.txt"
    listed.write_text(f"# two cameras' recordings\n{b}\n\n{c}\n")
    proc = _edgevid("run", runtime_stream_artifact, "--video", a, "--sources", listed, "--json", "--every", "1")
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    results = {r["result"]["source"]: r["result"] for r in lines if "result" in r}
    assert results[str(a)]["frames"] == 40 and results[str(a)]["end"] == "ended"
    assert results[str(b)]["frames"] == 24 and results[str(b)]["end"] == "ended"
    assert results[str(c)]["end"] == "failed" and results[str(c)]["frames"] < 60
    errors = [r for r in lines if "error" in r]
    assert [e["source"] for e in errors] == [str(c)]
    assert f"edgevid: error: [{c}]" in proc.stderr and "Traceback" not in proc.stderr
    preds = [r for r in lines if "label" in r and "result" not in r]
    assert {p["source"] for p in preds} == {str(a), str(b), str(c)}
    assert max(p["batch"] for p in preds) == 3
    # b runs at 10 fps against 25: it sits out most ticks, and still ends with all its frames
    assert sum(p["source"] == str(b) for p in preds) == 24
    # the same predictions as the file run alone
    alone = _edgevid("run", runtime_stream_artifact, "--video", a, "--json", "--every", "1")
    want = [json.loads(line) for line in alone.stdout.splitlines() if '"result"' not in line]
    mine = [p for p in preds if p["source"] == str(a)]
    assert [p["label"] for p in mine] == [p["label"] for p in want]
    np.testing.assert_allclose([p["score"] for p in mine], [p["score"] for p in want], atol=1e-5)


def test_run_several_sources_text_output_names_each(runtime_stream_artifact, runtime_video, tmp_path):
    proc = _edgevid("run", runtime_stream_artifact, "--video", runtime_video, "--video", runtime_video)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert any(line.startswith(f"[{runtime_video}] frame") for line in out)
    assert any(line.startswith(f"[{runtime_video} #2] frame") for line in out)
    assert sum(line.startswith("result [") for line in out) == 2
    assert "2 sources, 48 frames" in proc.stderr and "sources a call" in proc.stderr


@pytest.mark.parametrize("argv,message", [
    (["--video", "{v}", "--video", "{v}", "--output", "{tmp}/o.mp4"], "take one source"),
    (["--sources", "{tmp}/empty.txt"], "names no source"),
    (["--sources", "{tmp}/missing.txt"], "cannot read --sources"),
    ([], "give a source"),
    (["--video", "{v}", "--video", "{tmp}/nope.mp4"], "does not exist"),
])
def test_run_several_sources_bad_input(runtime_stream_artifact, runtime_video, tmp_path, argv, message):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    argv = [a.format(v=runtime_video, tmp=tmp_path) for a in argv]
    proc = _edgevid("run", runtime_stream_artifact, *argv)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_run_several_sources_refuses_a_clip_artifact(runtime_clip_artifact, runtime_video):
    proc = _edgevid("run", runtime_clip_artifact, "--video", runtime_video, "--video", runtime_video)
    assert proc.returncode == 2 and "stream mode only" in proc.stderr, proc.stderr


def test_openvino_batch_leaves_no_memory_behind_for_the_next_request(runtime_stream_artifact, videos):
    """A closed OpenVINO batch, then the runner's own infer calls and a new batch: before the inputs were
    copied in, the plugin kept writing into the freed state rows of the first batch (heap corruption)."""
    from edgevid.runtime.backends.base import initial_state
    from edgevid.runtime.preprocess import preprocess_frame

    with load(runtime_stream_artifact, "openvino") as runner:
        m = runner.manifest
        x = np.stack([preprocess_frame(f, m.preprocess) for f in videos["cam0"][:8]])
        first = runner.open_batch("batch")
        handles = [first.open() for _ in range(8)]
        for _ in range(3):
            first.step(handles, x)
        first.close()
        del first
        feeds = {m.inputs[0].name: x, **{p.input: np.repeat(initial_state(p), 8, axis=0) for p in m.states}}
        plain = [runner.infer(feeds)[m.outputs[0].name] for _ in range(5)]
        second = runner.open_batch("batch")
        handles = [second.open() for _ in range(8)]
        got = second.step(handles, x)
        second.close()
    assert all(_relative(plain[0], p) == 0 for p in plain)
    assert _relative(plain[0], got) <= TOL  # a fresh batch's first step is the stateless call from initial states


@pytest.mark.parametrize("backend,ways", [("onnxruntime", ["independent", "batched"]),
                                          ("openvino", ["independent", "batched", "requests"])])
def test_bench_streams_times_every_way_interleaved(runtime_stream_artifact, backend, ways):
    proc = _edgevid("bench", runtime_stream_artifact, "--backend", backend, "--streams", "3", "--iterations", "20",
                    "--warmup", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["schema"] == "edgevid.bench_streams" and result["streams"] == 3
    assert list(result["ways"]) == ways and result["ticks_per_way"] == 20
    for way in result["ways"].values():
        assert way["tick_ms"]["count"] == 20
        assert way["frames_per_s"] == pytest.approx(3000.0 / way["tick_ms"]["mean"], rel=1e-3)
    assert result["fastest"] in ways and result["input_shape"][0] == 3
    text = _edgevid("bench", runtime_stream_artifact, "--backend", backend, "--streams", "2", "--iterations", "10")
    assert text.returncode == 0 and "batched (one call, batch N)" in text.stdout, text.stderr


@pytest.mark.parametrize("argv,message", [
    (["--streams", "2", "--layers"], "not with --streams"),
    (["--streams", "0"], "--streams"),
])
def test_bench_streams_bad_input(runtime_stream_artifact, argv, message):
    proc = _edgevid("bench", runtime_stream_artifact, *argv)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_bench_streams_refuses_a_clip_artifact(runtime_clip_artifact):
    proc = _edgevid("bench", runtime_clip_artifact, "--streams", "2")
    assert proc.returncode == 2 and "clip mode" in proc.stderr, proc.stderr


def test_recorded_sources_keep_their_frame_rates_and_live_ones_their_newest_frame(tmp_path):
    from edgevid.runtime import open_source
    from edgevid.runtime.cameras import SourceSet

    vids = _videos((10, 4, 6), seed=3)
    a = _write(tmp_path / "a.avi", vids["cam0"], 25.0)
    b = _write(tmp_path / "b.avi", vids["cam1"], 10.0)
    c = _write(tmp_path / "c.avi", vids["cam2"], 25.0)
    sources = SourceSet({"a": open_source(a), "b": open_source(b)})
    ticks = list(sources.ticks())
    sources.close()
    # a at 0, 40, 80 ... 360 ms, b at 0, 100, 200, 300 ms: 12 ticks with frames, both only at 0 and
    # 200 ms; at 400 ms both find their end
    assert len(ticks) == 13 and not ticks[-1].frames and sorted(ticks[-1].ended) == ["a", "b"]
    assert [sorted(t.frames) for t in ticks if len(t.frames) == 2] == [["a", "b"], ["a", "b"]]
    assert sum("a" in t.frames for t in ticks) == 10 and sum("b" in t.frames for t in ticks) == 4
    assert sorted(n for t in ticks for n in t.ended) == ["a", "b"] and not any(t.failed for t in ticks)
    # A live source (a file read as a camera): a thread hands out its newest frame; when it stops
    # delivering it is reported failed, not ended.
    live = SourceSet({"cam": open_source(c, live=True)})
    got = list(live.ticks())
    live.close()
    assert 1 <= sum(len(t.frames) for t in got) <= 6
    failed = [t.failed["cam"] for t in got if t.failed]
    assert len(failed) == 1 and "stopped delivering frames" in failed[0]
