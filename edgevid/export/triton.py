"""A Triton Inference Server model repository for a streaming artifact (``edgevid triton``).

Two flavours, both served by Triton's sequence batcher (one correlation id per camera):

- ``production`` (GPU servers, NVIDIA's Triton container): the ``onnxruntime`` backend
  (optionally with its TensorRT execution provider) or the ``tensorrt`` backend, with
  *implicit state*: every ``state_in.X`` / ``state_out.X`` pair of the manifest becomes a
  ``sequence_batching.state`` entry with the manifest's initial state (``zero_data``, or for
  a non-zero one, such as the integer states of an INT8 ONNX Runtime export whose zero is
  the zero point, a ``data_file`` under ``initial_state/``), so Triton keeps each
  sequence's temporal state itself and resets it on the sequence's START. The model also
  takes START / READY / CORRID as control inputs; the ONNX backend requires every control
  to be a graph input, so the repository's ONNX gets them as (unused) inputs of shape [N, 1].
- ``portable`` (any machine, CPU included): Triton's Python backend running
  ``edgevid.runtime`` (ONNX Runtime or OpenVINO) with one backend stream per correlation id,
  reset on START and released on END or after ``max_idle_s`` without requests.

Both take a preprocessed frame ``frame`` [1, 3, H, W] per request (the client runs the
host preprocessing, as ``edgevid run`` does) and return the step's raw ``logits`` [1, K];
the client steps every ``sampling.stride``-th frame and smooths, like a local StreamSession.
The manifest travels in the config as the ``edgevid_manifest`` parameter, so a client needs
only the server's URL and the model's name (``edgevid run --triton URL --model NAME``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError
from edgevid.manifest import MANIFEST_NAME, Manifest

FLAVOURS = ("portable", "production")
MARKER = "edgevid-triton.json"  # in every model folder this writer made: --force replaces only those
CONTROLS = (("START", "CONTROL_SEQUENCE_START"), ("READY", "CONTROL_SEQUENCE_READY"))
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
                 "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}


def _dims(shape: list[Any]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in shape) + " ]"


def _tensor(name: str, dtype: str, dims: list[Any]) -> str:
    return f'{{ name: "{name}" data_type: {_TRITON_TYPES[dtype]} dims: {_dims(dims)} }}'


def _parameter(key: str, value: str) -> str:
    return f"parameters {{ key: {json.dumps(key)} value: {{ string_value: {json.dumps(value)} }} }}"


def config_pbtxt(manifest: Manifest, name: str, flavour: str, backend: str, *, max_batch: int = 8,
                 instances: int = 1, max_idle_s: float = 60.0, tensorrt_ep: bool = False) -> str:
    """The ``config.pbtxt`` text of one model (checked with Triton's own protobuf in the tests)."""
    frame, logits = manifest.inputs[0], manifest.outputs[0]
    lines = [f'name: "{name}"']
    if flavour == "portable":
        lines.append('backend: "python"')
    elif backend == "tensorrt":
        lines += ['backend: "tensorrt"', 'default_model_filename: "model.plan"']
    else:
        lines += ['backend: "onnxruntime"', 'default_model_filename: "model.onnx"']
    lines += [f"max_batch_size: {int(max_batch)}",
              f"input [ {_tensor(frame.name, frame.dtype, list(frame.shape[1:]))} ]",
              f"output [ {_tensor(logits.name, logits.dtype, list(logits.shape[1:]))} ]"]
    seq = [f"  max_sequence_idle_microseconds: {int(max_idle_s * 1e6)}"]
    if flavour == "production":
        controls = [f'    {{ name: "{n}" control [ {{ kind: {kind} fp32_false_true: [ 0, 1 ] }} ] }}' for n, kind in CONTROLS]
        controls.append('    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }')
        seq += ["  control_input [", ",\n".join(controls), "  ]", "  state ["]
        states = []
        for i, s in enumerate(manifest.states):
            dims = _dims(s.shape[1:])
            data = 'zero_data: true name: "zeros"' if s.init == 0 else \
                f'data_file: "{initial_state_file(i)}" name: "initial"'
            states.append(f'    {{ input_name: "{s.input}" output_name: "{s.output}" data_type: {_TRITON_TYPES[s.dtype]} '
                          f"dims: {dims} initial_state: {{ data_type: {_TRITON_TYPES[s.dtype]} dims: {dims} {data} }} }}")
        seq += [",\n".join(states), "  ]"]
    lines += ["sequence_batching {", *seq, "}"]
    kind = "KIND_CPU" if flavour == "portable" else "KIND_GPU"
    lines.append(f"instance_group [ {{ count: {int(instances)} kind: {kind} }} ]")
    if tensorrt_ep:
        lines.append('optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" '
                     'parameters { key: "precision_mode" value: "FP16" } } ] } }')
    lines.append(_parameter("edgevid_manifest", json.dumps(manifest.to_dict(), separators=(",", ":"))))
    if flavour == "portable":
        lines.append(_parameter("edgevid_backend", backend))
    return "\n".join(lines) + "\n"


INITIAL_STATE_DIR = "initial_state"  # Triton reads an initial state's data_file from this folder of the model


def initial_state_file(index: int) -> str:
    """The file of the ``index``-th state's non-zero initial value under the model's ``initial_state/``.

    Named by position, not by the state's module path: a name taken from a manifest never
    becomes a path.
    """
    return f"state{index}.bin"


def _write_initial_states(manifest: Manifest, model_dir: Path) -> None:
    """Each non-zero initial state as raw row-major bytes of one sequence's tensor (no batch)."""
    import numpy as np

    from edgevid.runtime.backends.base import initial_state

    nonzero = [(i, s) for i, s in enumerate(manifest.states) if s.init != 0]
    if nonzero:
        (model_dir / INITIAL_STATE_DIR).mkdir()
    for i, pair in nonzero:
        data = np.ascontiguousarray(initial_state(pair)[0])
        (model_dir / INITIAL_STATE_DIR / initial_state_file(i)).write_bytes(data.tobytes())


def _with_controls(onnx_path: Path, out: Path) -> None:
    """The ONNX plus START / READY (fp32) and CORRID (uint64) inputs of shape [N, 1], which it ignores."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(onnx_path))
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    first = batch.dim_param or batch.dim_value
    for name, elem in (("START", TensorProto.FLOAT), ("READY", TensorProto.FLOAT), ("CORRID", TensorProto.UINT64)):
        proto.graph.input.append(helper.make_tensor_value_info(name, elem, [first, 1]))
    onnx.save_model(proto, str(out))


def write_repository(artifact: str | os.PathLike, repository: str | os.PathLike, *, flavour: str = "portable",
                     backend: str | None = None, name: str | None = None, max_batch: int = 8, instances: int = 1,
                     max_idle_s: float = 60.0, tensorrt_ep: bool = False, force: bool = False) -> dict[str, Any]:
    """Write one model for ``artifact`` into the Triton repository folder ``repository``; returns what it wrote."""
    from edgevid.export.staging import staged_directory
    from edgevid.runtime import open_artifact

    if flavour not in FLAVOURS:
        raise EdgevidError(f"unknown flavour {flavour!r}; choose {' or '.join(FLAVOURS)}")
    art = open_artifact(artifact)
    m = art.manifest
    if m.mode != "stream":
        raise EdgevidError(f"{artifact} is a {m.mode}-mode artifact: a Triton sequence model needs a stream export "
                           "(edgevid export --mode stream)")
    backends = ("onnxruntime", "openvino") if flavour == "portable" else ("onnxruntime", "tensorrt")
    backend = backend or "onnxruntime"
    if backend not in backends:
        raise EdgevidError(f"the {flavour} flavour runs {' or '.join(backends)}, not {backend}")
    if backend == "openvino" and not art.has_file("openvino_xml"):
        raise EdgevidError(f"{artifact} has no OpenVINO IR: export it with --target openvino")
    if tensorrt_ep and not (flavour == "production" and backend == "onnxruntime"):
        raise EdgevidError("the TensorRT execution provider applies to the production onnxruntime backend only")
    for what, value in (("max batch", max_batch), ("instances", instances)):
        if int(value) < 1:
            raise EdgevidError(f"{what} must be >= 1, got {value}")
    if not max_idle_s > 0:
        raise EdgevidError(f"the max idle time must be > 0 s, got {max_idle_s}")
    if flavour == "production":
        if m.inputs[0].shape[0] != "N":
            raise EdgevidError(f"{artifact} has a fixed batch {m.inputs[0].shape[0]}: Triton batches sequences, "
                               "export with a dynamic batch (--target onnxruntime or openvino)")
    name = name or m.model
    if not name or name != Path(name).name or name.startswith("."):
        raise EdgevidError(f"model name {name!r} must be a plain folder name")
    repo = Path(repository)
    if repo.exists() and not repo.is_dir():
        raise EdgevidError(f"{repo} exists and is not a folder")
    target = repo / name
    if target.exists() and not force:
        raise EdgevidError(f"the repository {repo} already has a model {name!r}; choose another --name, or pass "
                           "--force to replace it")
    repo.mkdir(parents=True, exist_ok=True)
    text = config_pbtxt(m, name, flavour, backend, max_batch=max_batch, instances=instances, max_idle_s=max_idle_s,
                        tensorrt_ep=tensorrt_ep)
    with staged_directory(target, force, marker=MARKER) as work:
        version = work / "1"
        version.mkdir()
        if flavour == "portable":
            shutil.copytree(art.directory, version / "artifact")
            shutil.copyfile(Path(__file__).with_name("triton_model.py"), version / "model.py")
        elif backend == "onnxruntime":
            _with_controls(art.verified_file("onnx"), version / "model.onnx")
        else:  # tensorrt: Triton needs a plan built on the server's GPU, from this ONNX
            _with_controls(art.verified_file("onnx"), work / "model.onnx")
        (work / "config.pbtxt").write_text(text)
        if flavour == "production":
            _write_initial_states(m, work)
        shutil.copyfile(art.directory / MANIFEST_NAME, work / MANIFEST_NAME)
        info = {"model": name, "flavour": flavour, "backend": backend, "artifact": str(art.directory),
                "max_batch": max_batch, "instances": instances, "max_idle_s": max_idle_s}
        (work / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    (repo / "README.md").write_text(repository_readme(repo, name, m, flavour, backend))
    return info


def repository_readme(repo: Path, name: str, manifest: Manifest, flavour: str, backend: str) -> str:
    """How to serve the repository and stream many cameras into it."""
    frame = manifest.inputs[0]
    lines = [f"# Triton model repository: {name}", "",
             f"`{name}` serves `{manifest.model}` ({flavour} flavour, {backend}): one sequence per camera, its temporal "
             f"state kept by {'Triton (implicit state)' if flavour == 'production' else 'the Python model'}.", "",
             "## Serve", "", "```bash"]
    if flavour == "production":
        lines += [f"docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/{repo.name}:/models "
                  "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models"]
        if backend == "tensorrt":
            lines += [f"# first, on the server's GPU: trtexec --onnx={name}/model.onnx --saveEngine={name}/1/model.plan "
                      "--fp16 --minShapes=... (batch 1..max_batch_size)"]
    else:
        lines += ["# any machine: Triton's Python backend runs edgevid.runtime (pip install edgevid in its Python);",
                  "# for a local CPU server: pip install --no-deps nvidia-pytriton && edgevid triton serve "
                  f"{repo.name}"]
    lines += ["```", "", "## Stream cameras", "",
              f"Each camera is one sequence: a correlation id of its own, `sequence_start=True` on its first frame "
              f"(and after a scene cut or reconnect), `sequence_end=True` on its last. Send every "
              f"{manifest.sampling.stride}th frame, preprocessed as `manifest.json` says ({frame.name} "
              f"{frame.shape}); the server returns that step's logits.", "", "```bash",
              f"edgevid run --triton localhost:8001 --model {name} --video camera1.mp4   # one camera, as a local run",
              "```", "", "```python", "import tritonclient.grpc as grpcclient",
              "client = grpcclient.InferenceServerClient('localhost:8001')",
              f"x = grpcclient.InferInput('{frame.name}', [1, 3, {frame.shape[2]}, {frame.shape[3]}], 'FP32')",
              "x.set_data_from_numpy(frame_chw[None])  # edgevid.runtime.preprocess.preprocess_frame(bgr, preprocess)",
              f"r = client.infer('{name}', [x], sequence_id=camera_id, sequence_start=first, sequence_end=last)",
              "logits = r.as_numpy('logits')[0]", "```", ""]
    return "\n".join(lines)
