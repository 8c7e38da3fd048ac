"""Triton model repositories, checked against Triton's own config protobuf and a real tritonserver.

The server is the CPU ``tritonserver`` of the nvidia-pytriton wheel (``.ci/run`` installs it
with ``--no-deps``), started on loopback ports and stopped by its pid. It serves the portable
repository (Triton's Python backend running edgevid.runtime); the production repository
(onnxruntime backend, implicit state) needs Triton's ONNX Runtime backend, which that wheel
does not ship, so it is checked with Triton's model-config protobuf and by running its ONNX
with the control inputs in ONNX Runtime.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from edgevid.errors import EdgevidError

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'edgevid[triton]')")


def _server_or_skip():
    from edgevid.export.triton_server import pytriton_home

    try:
        pytriton_home()
    except EdgevidError as exc:
        pytest.skip(str(exc))


def _sequences(manifest, count: int, steps: int) -> list[np.ndarray]:
    """``count`` different synthetic videos (one class each), preprocessed: (steps, 3, H, W) each."""
    from edgevid.data.synth import CLASSES, clip_rng, render_clip
    from edgevid.runtime.preprocess import preprocess_frame

    out = []
    for i in range(count):
        clip, _ = render_clip(CLASSES[i % len(CLASSES)], clip_rng(5, i, 0), size=80, frames=steps)
        out.append(np.stack([preprocess_frame(f, manifest.preprocess) for f in clip]))
    return out


def _local_steps(artifact, frames: np.ndarray) -> np.ndarray:
    from edgevid.runtime import load

    with load(artifact, "onnxruntime") as runner, runner.open_stream() as stream:
        return np.concatenate([stream.step(f[None]) for f in frames])


@pytest.fixture(scope="module")
def served(runtime_stream_artifact, tmp_path_factory):
    """(server, model name, artifact): the portable repository of the test stream model, served."""
    _server_or_skip()
    from edgevid.export.triton import write_repository
    from edgevid.export.triton_server import LocalServer

    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(runtime_stream_artifact, repo, flavour="portable", backend="onnxruntime", name="tsm", max_batch=8,
                     max_idle_s=30)
    server = LocalServer(repo, log=repo.parent / "tritonserver.log").start()
    yield server, "tsm", runtime_stream_artifact
    server.stop()


# ------------------------------------------------------------------ the production repository (no server)


def test_production_config_parses_and_its_states_are_the_manifests(runtime_stream_artifact, tmp_path):
    import onnx
    import onnxruntime as ort
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from edgevid.export.triton import write_repository
    from edgevid.runtime import open_artifact

    manifest = open_artifact(runtime_stream_artifact).manifest
    write_repository(runtime_stream_artifact, tmp_path / "repo", flavour="production", name="tsm", max_batch=4)
    model = tmp_path / "repo" / "tsm"
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "onnxruntime" and config.max_batch_size == 4
    states = {s.input_name: s for s in config.sequence_batching.state}
    assert list(states) == [s.input for s in manifest.states]  # name for name, in order
    for pair in manifest.states:
        entry = states[pair.input]
        assert entry.output_name == pair.output
        (initial,) = entry.initial_state  # repeated in the proto, at most one
        assert list(entry.dims) == pair.shape[1:] == list(initial.dims)  # shape for shape, without the batch
        assert initial.zero_data and entry.data_type == model_config_pb2.TYPE_FP32
    kinds = {c.name: c.control[0].kind for c in config.sequence_batching.control_input}
    assert kinds == {"START": model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START,
                     "READY": model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY,
                     "CORRID": model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID}
    assert json.loads(config.parameters["edgevid_manifest"].string_value)["model"] == manifest.model
    # Triton's ONNX backend: graph inputs = config inputs + controls + states, exactly.
    proto = onnx.load(str(model / "1" / "model.onnx"))
    graph_inputs = [i.name for i in proto.graph.input]
    assert sorted(graph_inputs) == sorted([i.name for i in config.input] + list(kinds) + list(states))
    # ... and with the controls fed, it computes what the artifact computes.
    frames = _sequences(manifest, 1, 3)[0]
    session = ort.InferenceSession(str(model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    state = {s.input: np.zeros((1, *s.shape[1:]), np.float32) for s in manifest.states}
    got = []
    for t, frame in enumerate(frames):
        feeds = {"frame": frame[None], "START": np.full((1, 1), float(t == 0), np.float32),
                 "READY": np.ones((1, 1), np.float32), "CORRID": np.full((1, 1), 7, np.uint64), **state}
        outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        state = {s.input: outs[s.output] for s in manifest.states}
        got.append(outs["logits"])
    np.testing.assert_allclose(np.concatenate(got), _local_steps(runtime_stream_artifact, frames), atol=1e-5, rtol=0)


def test_production_non_zero_initial_states_are_data_files(runtime_stream_artifact, tmp_path):
    """An INT8 ONNX Runtime export starts its integer states at the zero point: Triton gets them as files."""
    import shutil
    from dataclasses import replace

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from edgevid.export.triton import INITIAL_STATE_DIR, write_repository
    from edgevid.manifest import Manifest

    artifact = tmp_path / "artifact"
    shutil.copytree(runtime_stream_artifact, artifact)
    manifest = Manifest.load(artifact)
    manifest.states[1] = replace(manifest.states[1], init=0.25)
    manifest.save(artifact)
    write_repository(artifact, tmp_path / "repo", flavour="production", name="tsm")
    model = tmp_path / "repo" / "tsm"
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    initial = [s.initial_state[0] for s in config.sequence_batching.state]
    assert [i.zero_data for i in initial] == [i != 1 for i in range(len(manifest.states))]
    assert initial[1].data_file == "state1.bin" and sorted(p.name for p in (model / INITIAL_STATE_DIR).iterdir()) \
        == ["state1.bin"]
    data = np.frombuffer((model / INITIAL_STATE_DIR / "state1.bin").read_bytes(), np.float32)
    assert data.size == int(np.prod(manifest.states[1].shape[1:])) and np.all(data == 0.25)


def test_repository_bad_input(runtime_stream_artifact, runtime_clip_artifact, tmp_path):
    from edgevid.export.triton import write_repository

    with pytest.raises(EdgevidError, match="clip-mode artifact: a Triton sequence model needs a stream export"):
        write_repository(runtime_clip_artifact, tmp_path / "r")
    write_repository(runtime_stream_artifact, tmp_path / "r", name="cam")
    with pytest.raises(EdgevidError, match="already has a model 'cam'; choose another --name, or pass --force"):
        write_repository(runtime_stream_artifact, tmp_path / "r", name="cam", flavour="production")
    write_repository(runtime_stream_artifact, tmp_path / "r", name="cam", flavour="production", force=True)
    (tmp_path / "r" / "mine").mkdir()
    (tmp_path / "r" / "mine" / "config.pbtxt").write_text("name: 'mine'")
    with pytest.raises(EdgevidError, match="not an edgevid output"):
        write_repository(runtime_stream_artifact, tmp_path / "r", name="mine", force=True)
    assert (tmp_path / "r" / "mine" / "config.pbtxt").read_text() == "name: 'mine'"
    with pytest.raises(EdgevidError, match="the production flavour runs onnxruntime or tensorrt, not openvino"):
        write_repository(runtime_stream_artifact, tmp_path / "r2", flavour="production", backend="openvino")


# ------------------------------------------------------------------ a real server


def _counts(server, name) -> tuple[int, int]:
    """(model executions, inferences) so far: the server's own statistics."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    stats = client.get_inference_statistics(model_name=name).model_stats[0]
    client.close()
    return stats.execution_count, stats.inference_count


def test_interleaved_sequences_match_local_streams(served):
    """8 sequences (different videos) streamed concurrently, each from its own client thread.

    The sequence batcher hands the model several sequences' requests in one execution, and the
    model steps them in one batched call: each sequence's logits still equal its video run alone.
    """
    from edgevid.runtime.remote import connect

    server, name, artifact = served
    executions0, inferences0 = _counts(server, name)
    runner = connect(server.grpc_url, name)
    videos = _sequences(runner.manifest, 8, 6)
    runner.close()
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(videos))

    def stream(i: int) -> None:
        try:
            client = connect(server.grpc_url, name)
            s = client.open_stream()
            barrier.wait(timeout=60)  # all sequences in flight together
            results[i] = np.concatenate([s.step(f[None]) for f in videos[i]])
            s.close()
            client.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(videos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    executions, inferences = (b - a for a, b in zip((executions0, inferences0), _counts(server, name)))
    # 6 steps and the closing END request of each sequence, in fewer executions: batched
    assert inferences == 8 * 7 and executions < inferences, (executions, inferences)
    for i, video in enumerate(videos):
        np.testing.assert_allclose(results[i], _local_steps(artifact, video), atol=1e-5, rtol=0)
    assert not np.allclose(results[0], results[1], atol=1e-3), "different videos must give different logits"


def test_start_restarts_a_sequence_and_an_unknown_one_is_refused(served):
    import tritonclient.grpc as grpcclient

    from edgevid.runtime.remote import connect

    server, name, artifact = served
    runner = connect(server.grpc_url, name)
    frames = _sequences(runner.manifest, 1, 4)[0]
    s = runner.open_stream()
    first = np.concatenate([s.step(f[None]) for f in frames])
    s.reset()  # the next request carries START: fresh states
    again = np.concatenate([s.step(f[None]) for f in frames[:2]])
    s.close()
    runner.close()
    np.testing.assert_allclose(again, first[:2], atol=1e-6, rtol=0)
    assert not np.allclose(first[1], first[0], atol=1e-4), "the states must matter, or this test sees nothing"
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("frame", [1, *frames.shape[1:]], "FP32")
    x.set_data_from_numpy(frames[:1])
    with pytest.raises(Exception, match="must specify the START flag on the first request of the sequence"):
        client.infer(name, [x], sequence_id=987654321, sequence_start=False)
    client.close()


def test_run_triton_prints_what_a_local_run_prints(served, runtime_video, capsys):
    from edgevid.cli import main

    server, name, artifact = served
    assert main(["run", "--triton", server.grpc_url, "--model", name, "--video", str(runtime_video), "--json"]) == 0
    remote = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["run", str(artifact), "--backend", "onnxruntime", "--video", str(runtime_video), "--json"]) == 0
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(remote) == len(local) > 2
    for r, loc in zip(remote, local):
        if "result" in loc:
            assert r["result"]["label"] == loc["result"]["label"]
            continue
        assert (r["frame"], r["label"], r["warmup"]) == (loc["frame"], loc["label"], loc["warmup"])
        assert abs(r["score"] - loc["score"]) <= 1e-5


def test_run_triton_with_several_sources_gives_each_its_sequence(served, runtime_video, capsys):
    """Two sources on the server: each its own sequence, each the predictions of a local run."""
    from edgevid.cli import main

    server, name, artifact = served
    assert main(["run", "--triton", server.grpc_url, "--model", name, "--video", str(runtime_video),
                 "--video", str(runtime_video), "--json"]) == 0
    remote = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["run", str(artifact), "--backend", "onnxruntime", "--video", str(runtime_video), "--json"]) == 0
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"result"' not in line]
    for source in (str(runtime_video), f"{runtime_video} #2"):
        mine = [r for r in remote if r.get("source") == source and "result" not in r]
        assert [(r["frame"], r["label"]) for r in mine] == [(r["frame"], r["label"]) for r in local]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(mine, local)) <= 1e-5


def test_a_server_that_is_down_is_one_line(capsys, runtime_video):
    from edgevid.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    code = main(["run", "--triton", f"127.0.0.1:{port}", "--model", "tsm", "--video", str(runtime_video)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"edgevid run: error: Triton at 127.0.0.1:{port}")


def test_the_triton_benchmark_runs_with_tiny_settings(served, tmp_path):
    import subprocess
    import sys

    server, name, artifact = served
    bench = Path(__file__).parents[1] / "benchmarks" / "bench_triton.py"
    proc = subprocess.run([sys.executable, str(bench), "--artifact", str(artifact), "--streams", "1,2", "--steps", "6",
                           "--work", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(lines) == 4 and "frames/s" in lines[0]
