"""Frame-delta gating of streams and salient-window sampling, on the built-in set with still stretches.

The shipped TSM (stream, ONNX Runtime) on synthetic actions embedded in 48 still frames before
and 4 after, with camera noise (``edgevid data synth --still 48:4 --noise 2``), measured in one
run: the gated stream runs at most 40% of the network steps at the ungated stream's
final-label accuracy (within 1 point); the salient sampler at K = 2 reaches the accuracy of
running every window (within 2 points), with the wall-time ratio printed. A still stretch
followed by an abrupt action is caught on its first frame.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edgevid.errors import EdgevidError

STILL = (48, 4)


@pytest.fixture(scope="module")
def still_set(tmp_path_factory) -> list[tuple[Path, str]]:
    from edgevid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("still") / "set"
    generate_dataset(root, seed=2, videos_per_class=4, frames=16, size=112, val_fraction=0.5, still=STILL, noise=2.0,
                     progress=False)
    return [(p, p.parent.name) for p in sorted(root.glob("*/*.mp4"))]


@pytest.fixture(scope="module")
def stream_runner(tmp_path_factory):
    from edgevid import runtime
    from edgevid.export.api import export_model

    out = tmp_path_factory.mktemp("gating") / "tsm-stream"
    export_model("tsm", out, checkpoint="default", mode="stream", validate=False, progress=False)
    runner = runtime.load(out, "onnxruntime")
    yield runner
    runner.close()


def _final(runner, path: Path, gate=None) -> tuple[str, int, int]:
    """(final label, steps run, steps due) of one video through a stream session."""
    from edgevid import runtime

    session = runtime.open_session(runner, gate=gate)
    for frame in runtime.open_source(str(path)):
        session.push(frame)
    label = session.last.label
    session.close()
    due = gate.steps_due if gate else None
    return label, (gate.steps_run if gate else due), due


def test_gated_stream_runs_under_40_percent_of_the_steps_at_the_ungated_accuracy(still_set, stream_runner):
    from edgevid.runtime.gating import DeltaGate

    results = {}
    for name, make in (("ungated", lambda: None), ("defer", lambda: DeltaGate(policy="defer")),
                       ("repeat", lambda: DeltaGate(policy="repeat"))):
        t0 = time.perf_counter()
        hits = run = due = 0
        for path, label in still_set:
            gate = make()
            got, steps_run, steps_due = _final(stream_runner, path, gate)
            hits += got == label
            run += steps_run or 0
            due += steps_due or 0
        results[name] = (hits / len(still_set), run / due if due else 1.0, time.perf_counter() - t0)
    print({k: (round(a, 3), round(f, 3), round(s, 2)) for k, (a, f, s) in results.items()})
    acc, _, seconds = results["ungated"]
    defer_acc, defer_fraction, defer_seconds = results["defer"]
    assert defer_fraction <= 0.40 and defer_acc >= acc - 0.01, results
    assert results["repeat"][1] > defer_fraction  # one extra step per still stretch
    assert acc > 0.5  # the measurement means something: the model recognises these actions
    assert defer_seconds < seconds  # skipped steps cost no network time (and no preprocessing)


def test_salient_windows_at_k2_match_every_window(still_set, stream_runner):
    from edgevid.runtime.salient import run_salient

    hits = {2: 0, None: 0}
    seconds = {2: 0.0, None: 0.0}
    calls = {2: 0, None: 0}
    for path, label in still_set:
        for k in hits:
            result = run_salient(stream_runner, path, k)
            hits[k] += result.label == label
            seconds[k] += result.seconds
            calls[k] += result.network_calls
    n = len(still_set)
    print(f"salient K=2: top-1 {hits[2] / n:.3f}, {calls[2]} stream steps, {seconds[2]:.2f} s; every window: "
          f"{hits[None] / n:.3f}, {calls[None]} steps, {seconds[None]:.2f} s; wall time ratio "
          f"{seconds[None] / seconds[2]:.2f}x")
    assert hits[2] / n >= hits[None] / n - 0.02
    assert calls[2] < calls[None] / 2


def test_an_abrupt_action_after_a_still_stretch_is_caught_on_its_first_frame(stream_runner):
    """A still scene (one clip's first frame, with noise) for 60 frames, then an action starts abruptly."""
    from edgevid import runtime
    from edgevid.data.synth import CLASSES, clip_rng, render_clip
    from edgevid.runtime.gating import DeltaGate

    rng = np.random.default_rng(0)
    still, _ = render_clip("static", clip_rng(9, CLASSES.index("static"), 0), 112, 16)
    action, _ = render_clip("moving_right", clip_rng(9, CLASSES.index("moving_right"), 1), 112, 16)
    noisy = [np.clip(still[0] + rng.normal(0, 2, still[0].shape), 0, 255).astype(np.uint8) for _ in range(60)]
    frames = noisy + list(action)
    onset = len(noisy)
    outputs = {}
    for name, gate in (("ungated", None), ("gated", DeltaGate())):
        session = runtime.open_session(stream_runner, gate=gate)
        ran = []
        for i, frame in enumerate(frames):
            pred = session.push(frame)
            if pred is not None:
                ran.append(i)
        outputs[name] = (session.last.label, ran, gate)
        session.close()
    label, ran, gate = outputs["gated"]
    assert onset in ran  # the first changed frame is stepped (stride 2: the onset frame is a due step)
    assert not [i for i in ran if 2 <= i < onset]  # the still stretch is not (bar the first frame)
    assert label == outputs["ungated"][0] == "moving_right"  # within the model's window after the onset
    assert gate.steps_run == len(ran)


def test_a_long_still_stretch_resets_the_stream_on_the_next_change(stream_runner):
    from edgevid import runtime
    from edgevid.runtime.gating import DeltaGate

    gate = DeltaGate(max_gap=3)
    session = runtime.open_session(stream_runner, gate=gate)
    a = np.full((112, 112, 3), 40, np.uint8)
    b = np.full((112, 112, 3), 200, np.uint8)
    first = session.push(a)
    for _ in range(11):  # frames 1..11: due steps 2, 4, ..., 10 skipped (stride 2), more than max_gap
        session.push(a)
    after = session.push(b)  # frame 12: due, and changed
    assert first.warmup and after.warmup and gate.resets == 1
    assert session._steps == 1  # the stream started over at the change
    session.close()


@pytest.mark.parametrize(("text", "message"), [
    ("delta:0", "the gate threshold is in grey levels, (0, 255]"),
    ("delta:300", "the gate threshold is in grey levels"),
    ("delta:x", "must be a number of grey levels"),
    ("motion", "--gate takes delta[:THRESHOLD[:defer|repeat]]"),
    ("delta:1:never", "unknown gate policy 'never'"),
])
def test_bad_gates_are_one_line(text, message):
    from edgevid.runtime.gating import parse_gate

    with pytest.raises(EdgevidError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_gate(text)


def test_salient_k_larger_than_the_windows_and_gating_a_clip_artifact_are_refused(stream_runner, runtime_clip_artifact,
                                                                                  runtime_video):
    from edgevid import runtime
    from edgevid.runtime.gating import DeltaGate
    from edgevid.runtime.salient import run_salient

    with pytest.raises(EdgevidError, match=r"--salient 9 is more than the \d+ windows of this video"):
        run_salient(stream_runner, runtime_video, 9)
    with runtime.load(runtime_clip_artifact, "onnxruntime") as clip_runner:
        with pytest.raises(EdgevidError, match="clip-mode artifact: frame-delta gating skips stream steps"):
            runtime.open_session(clip_runner, gate=DeltaGate())
