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

The config is built with Triton's own protobuf (``model_config_pb2``, from tritonclient: the
``triton`` extra) and printed by protobuf's text format, so no name from a manifest or the
command line can change its structure. The portable model gets only the files its manifest
lists for its backend, each copied as a regular file and checked against the manifest's
sha256 as it is copied (never a link, never anything else in the artifact folder); an ONNX
that keeps tensors in external files is refused (never read outside the artifact).

Write policy: the model folder ``REPO/<name>`` is staged and renamed into place, and replaced
only with ``force`` and only if this writer made it (it holds ``edgevid-triton.json``). The
repository's ``README.md`` (an index of the models this writer made there) is written only if
there is none, or replaced if it is one of ours (its first line says so): a user's own
README is never touched. Each model folder has its own ``README.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from edgevid.errors import EdgevidError, require
from edgevid.manifest import Manifest, atomic_write_text, file_mode
from edgevid.wording import every_nth

FLAVOURS = ("portable", "production")
MARKER = "edgevid-triton.json"  # in every model folder this writer made: --force replaces only those
README = "README.md"
README_MARK = "<!-- edgevid triton write: this file lists the models it wrote here, and is rewritten with them -->"
CONTROLS = (("START", "CONTROL_SEQUENCE_START"), ("READY", "CONTROL_SEQUENCE_READY"))
# Every manifest dtype (edgevid.manifest.DTYPES) has its Triton type.
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
                 "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
                 "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
# A model name Triton serves from a folder and in its URLs (/v2/models/<name>) without escaping.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_RESERVED = (README.lower(),)  # the repository's own files
BACKEND_FILES = {"onnxruntime": ("onnx",), "openvino": ("openvino_xml", "openvino_bin")}  # what the portable model runs
MAX_BATCH = 65536  # sequence-batcher slots: far above any real server, far below Triton's int32
MAX_INSTANCES = 1024
MAX_IDLE_S = 7 * 24 * 3600.0  # a week (edgevid.commands.argtypes.MAX_SECONDS)
_ONNX_TYPES = {"FLOAT": "float32", "DOUBLE": "float64"}  # ONNX type names that differ from numpy's


def _protobuf() -> tuple[Any, Any]:
    """Triton's model-config protobuf and protobuf's text format (both come with the ``triton`` extra)."""
    model_config_pb2 = require("tritonclient.grpc.model_config_pb2", "triton")
    text_format = require("google.protobuf.text_format", "triton")
    return model_config_pb2, text_format


def check_model_name(name: str, *, given: bool = True) -> str:
    """``name`` if Triton can serve a model of that name from a folder of this repository, else one line."""
    if _MODEL_NAME.fullmatch(name or "") and name.lower() not in _RESERVED:
        return name
    hint = "" if given else " (the artifact's model name; choose one with --name)"
    if name.lower() in _RESERVED:
        raise EdgevidError(f"model name {name!r} is reserved{hint}: the repository's {README} has that name")
    raise EdgevidError(f"model name {name!r} is not one Triton serves{hint}: use 1 to 128 letters, digits, "
                       "'_', '-' or '.' (not first)")


def _dims(shape: list[Any]) -> list[int]:
    """Triton dims: a dynamic dim (a name in the manifest) is -1."""
    return [d if isinstance(d, int) else -1 for d in shape]


def model_config(manifest: Manifest, name: str, flavour: str, backend: str, *, max_batch: int = 8,
                 instances: int = 1, max_idle_s: float = 60.0, tensorrt_ep: bool = False) -> Any:
    """The ``ModelConfig`` protobuf message of one model."""
    pb, _ = _protobuf()
    frame, logits = manifest.inputs[0], manifest.outputs[0]
    config = pb.ModelConfig(name=name, max_batch_size=int(max_batch))
    if flavour == "portable":
        config.backend = "python"
    elif backend == "tensorrt":
        config.backend, config.default_model_filename = "tensorrt", "model.plan"
    else:
        config.backend, config.default_model_filename = "onnxruntime", "model.onnx"
    config.input.add(name=frame.name, data_type=pb.DataType.Value(_TRITON_TYPES[frame.dtype]),
                     dims=_dims(frame.shape[1:]))
    config.output.add(name=logits.name, data_type=pb.DataType.Value(_TRITON_TYPES[logits.dtype]),
                      dims=_dims(logits.shape[1:]))
    batching = config.sequence_batching
    batching.max_sequence_idle_microseconds = int(max_idle_s * 1e6)
    if flavour == "production":
        _implicit_state(pb, manifest, batching, backend)
    kind = "KIND_CPU" if flavour == "portable" else "KIND_GPU"
    config.instance_group.add(count=int(instances), kind=pb.ModelInstanceGroup.Kind.Value(kind))
    if tensorrt_ep:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = "FP16"
    config.parameters["edgevid_manifest"].string_value = json.dumps(manifest.to_dict(), separators=(",", ":"))
    if flavour == "portable":
        config.parameters["edgevid_backend"].string_value = backend
    return config


def _corrid_type(backend: str) -> str:
    """CORRID's type: UINT64, but INT32 for the tensorrt backend, which binds it as an engine input of that
    type: TensorRT's ONNX parser has no UINT64 (onnx-tensorrt convertDtype, 8.6 and 10.x) and INT32 parses on
    every version. Triton then passes the low 32 bits of the correlation id (its CORRID rules)."""
    return "INT32" if backend == "tensorrt" else "UINT64"


def _implicit_state(pb: Any, manifest: Manifest, batching: Any, backend: str) -> None:
    """START / READY / CORRID controls and one implicit state per manifest state pair."""
    kinds = pb.ModelSequenceBatching.Control.Kind
    for control, kind in CONTROLS:
        batching.control_input.add(name=control).control.add(kind=kinds.Value(kind), fp32_false_true=[0, 1])
    batching.control_input.add(name="CORRID").control.add(kind=kinds.Value("CONTROL_SEQUENCE_CORRID"),
                                                          data_type=pb.DataType.Value("TYPE_" + _corrid_type(backend)))
    for i, pair in enumerate(manifest.states):
        dtype, dims = pb.DataType.Value(_TRITON_TYPES[pair.dtype]), list(pair.shape[1:])
        state = batching.state.add(input_name=pair.input, output_name=pair.output, data_type=dtype, dims=dims)
        initial = state.initial_state.add(data_type=dtype, dims=dims)
        if pair.init == 0:
            initial.zero_data, initial.name = True, "zeros"
        else:
            initial.data_file, initial.name = initial_state_file(i), "initial"


def config_pbtxt(manifest: Manifest, name: str, flavour: str, backend: str, **options: Any) -> str:
    """The ``config.pbtxt`` text of one model: ``model_config`` in protobuf's text format."""
    _, text_format = _protobuf()
    return text_format.MessageToString(model_config(manifest, name, flavour, backend, **options))


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


def _read_verified(art: Any, role: str) -> bytes:
    """The bytes of the artifact's ``role`` file, checked against the manifest's sha256 (read once: what is
    checked is what is used)."""
    path, expected = _hashed_file(art, role)
    with _open_regular(path) as fh:
        data = fh.read()
    _check_digest(path, hashlib.sha256(data).hexdigest(), expected)
    return data


def _hashed_file(art: Any, role: str) -> tuple[Path, str]:
    """The ``role`` file (a plain name inside the artifact) and its sha256 from the manifest (mandatory)."""
    from edgevid.runtime.artifact import ArtifactError

    path = art.file(role)
    expected = art.manifest.provenance.get(f"{role}_sha256")
    if not expected:
        raise ArtifactError(f"{art.directory}/manifest.json records no provenance.{role}_sha256, so {path.name} "
                            "cannot be checked; re-export the model")
    return path, str(expected)


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[Any]:
    """``path`` opened for reading if it is a regular file (a FIFO or device is refused, never waited on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EdgevidError(f"{path} is not a regular file; refusing to read it")
    with os.fdopen(fd, "rb") as fh:
        yield fh


def _check_digest(path: Path, actual: str, expected: str) -> None:
    from edgevid.runtime.artifact import ArtifactError

    if actual != expected:
        raise ArtifactError(f"{path} does not match manifest.json (sha256 {actual[:12]}... != {expected[:12]}...): "
                            "the file was changed or corrupted after export; re-export the model")


def _copy_verified(art: Any, role: str, folder: Path) -> None:
    """Copy the ``role`` file into ``folder`` as a new regular file, hashing what is copied."""
    path, expected = _hashed_file(art, role)
    digest = hashlib.sha256()
    with _open_regular(path) as src, open(folder / path.name, "xb") as dst:
        while block := src.read(1 << 20):
            digest.update(block)
            dst.write(block)
    _check_digest(path, digest.hexdigest(), expected)


def _load_onnx(art: Any) -> Any:
    """The artifact's ONNX as a proto: hash-checked, no external data, its I/O the manifest's."""
    onnx = require("onnx", "export")
    path, _ = _hashed_file(art, "onnx")
    data = _read_verified(art, "onnx")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and kin: a corrupt file
        raise EdgevidError(f"{path} is not a readable ONNX model ({type(exc).__name__}); re-export the model") \
            from exc
    _refuse_external_data(onnx, proto, path)
    _check_graph_io(onnx, art.manifest, proto, path)
    return proto


def _refuse_external_data(onnx: Any, proto: Any, path: Path) -> None:
    """Refuse an ONNX whose tensors live in external files: the manifest neither lists nor hashes them, and
    their location may point anywhere (they are never read)."""
    for tensor in _all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        parts = PurePosixPath(location.replace("\\", "/")).parts
        outside = not location or PurePosixPath(location).is_absolute() or ".." in parts or ":" in location
        where = "outside the artifact folder" if outside else "which manifest.json neither lists nor hashes"
        raise EdgevidError(f"{path} keeps tensor {tensor.name!r} in the external file {location!r}, {where}; "
                           "refusing to read it (re-export the model: edgevid exports keep every weight in the ONNX)")


def _all_tensors(proto: Any) -> Iterator[Any]:
    """Every tensor of a model: initializers and node attributes, in subgraphs and functions too."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
        for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            yield from _graph_tensors(graph)


def _check_graph_io(onnx: Any, manifest: Manifest, proto: Any, path: Path) -> None:
    """Refuse an ONNX whose inputs / outputs are not the manifest's (names, dtypes, shapes), as the runtime does."""
    from edgevid.manifest import TensorSpec
    from edgevid.runtime.artifact import check_io

    def spec(value: Any) -> TensorSpec:
        kind = value.type.tensor_type
        name = onnx.TensorProto.DataType.Name(kind.elem_type)
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in kind.shape.dim]
        return TensorSpec(value.name, dims, _ONNX_TYPES.get(name, name.lower()))

    weights = {t.name for t in proto.graph.initializer}
    inputs = [spec(v) for v in proto.graph.input if v.name not in weights]
    check_io(manifest, inputs, [spec(v) for v in proto.graph.output], str(path))


def _with_controls(proto: Any, out: Path, backend: str) -> None:
    """The ONNX plus START / READY (fp32) and CORRID (``_corrid_type``) inputs of shape [N, 1], which it ignores."""
    import onnx
    from onnx import TensorProto, helper

    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    first = batch.dim_param or batch.dim_value
    corrid = TensorProto.DataType.Value(_corrid_type(backend))
    for name, elem in (("START", TensorProto.FLOAT), ("READY", TensorProto.FLOAT), ("CORRID", corrid)):
        proto.graph.input.append(helper.make_tensor_value_info(name, elem, [first, 1]))
    onnx.save_model(proto, str(out))


def _check_options(flavour: str, backend: str, max_batch: int, instances: int, max_idle_s: float,
                   tensorrt_ep: bool) -> None:
    if flavour not in FLAVOURS:
        raise EdgevidError(f"unknown flavour {flavour!r}; choose {' or '.join(FLAVOURS)}")
    backends = ("onnxruntime", "openvino") if flavour == "portable" else ("onnxruntime", "tensorrt")
    if backend not in backends:
        raise EdgevidError(f"the {flavour} flavour runs {' or '.join(backends)}, not {backend}")
    if tensorrt_ep and not (flavour == "production" and backend == "onnxruntime"):
        raise EdgevidError("the TensorRT execution provider applies to the production onnxruntime backend only")
    for what, value, top in (("max batch", max_batch, MAX_BATCH), ("instances", instances, MAX_INSTANCES)):
        if not 1 <= int(value) <= top:
            raise EdgevidError(f"{what} must be between 1 and {top}, got {value}")
    if not (math.isfinite(max_idle_s) and 0 < max_idle_s <= MAX_IDLE_S):
        raise EdgevidError(f"the max idle time must be in (0, {MAX_IDLE_S:g}] s, got {max_idle_s}")


def _open(artifact: str | os.PathLike) -> Any:
    """The artifact, or one line when it cannot be read at all."""
    from edgevid.runtime import open_artifact

    try:
        return open_artifact(artifact)
    except PermissionError as exc:
        raise EdgevidError(f"cannot read the artifact {artifact}: {exc.strerror} ({exc.filename})") from exc


def write_repository(artifact: str | os.PathLike, repository: str | os.PathLike, *, flavour: str = "portable",
                     backend: str | None = None, name: str | None = None, max_batch: int = 8, instances: int = 1,
                     max_idle_s: float = 60.0, tensorrt_ep: bool = False, force: bool = False) -> dict[str, Any]:
    """Write one model for ``artifact`` into the Triton repository folder ``repository``; returns what it wrote.

    Everything is checked (options, artifact, name, the ONNX) and the config generated before
    anything is written; the model folder is staged and renamed into place.
    """
    from edgevid.staging import staged_directory

    backend = backend or "onnxruntime"
    _check_options(flavour, backend, max_batch, instances, max_idle_s, tensorrt_ep)
    art = _open(artifact)
    m = art.manifest
    if m.mode != "stream":
        raise EdgevidError(f"{artifact} is a {m.mode}-mode artifact: a Triton sequence model needs a stream export "
                           "(edgevid export --mode stream)")
    if m.motion is not None:
        # The motion input (flow fields of consecutive frames) is host state a sequence model would
        # have to keep per correlation ID on the client: not built; edgevid run computes it locally.
        raise EdgevidError(f"{artifact} takes a {m.motion.kind} input computed from consecutive frames, which a "
                           "Triton repository does not compute yet: run it with edgevid run (local runtime)")
    if backend == "openvino" and not art.has_file("openvino_xml"):
        raise EdgevidError(f"{artifact} has no OpenVINO IR: export it with --target openvino")
    if flavour == "production" and m.inputs[0].shape[0] != "N":
        raise EdgevidError(f"{artifact} has a fixed batch {m.inputs[0].shape[0]}: Triton batches sequences, "
                           "export with a dynamic batch (--target onnxruntime or openvino)")
    name = check_model_name(name if name is not None else m.model, given=name is not None)
    repo = Path(repository)
    if repo.exists() and not repo.is_dir():
        raise EdgevidError(f"{repo} exists and is not a folder")
    target = repo / name
    if (target.exists() or target.is_symlink()) and not force:
        raise EdgevidError(f"the repository {repo} already has a model {name!r}; choose another --name, or pass "
                           "--force to replace it")
    text = config_pbtxt(m, name, flavour, backend, max_batch=max_batch, instances=instances, max_idle_s=max_idle_s,
                        tensorrt_ep=tensorrt_ep)
    proto = _load_onnx(art) if flavour == "production" or backend == "onnxruntime" else None
    info = {"model": name, "flavour": flavour, "backend": backend, "artifact": str(art.directory),
            "max_batch": max_batch, "instances": instances, "max_idle_s": max_idle_s}
    with staged_directory(target, force, marker=MARKER) as work:
        version = work / "1"
        version.mkdir()
        if flavour == "portable":
            _portable_files(art, backend, version)
        else:  # tensorrt: Triton needs a plan built on the server's GPU, from this ONNX next to the config
            _with_controls(proto, (version if backend == "onnxruntime" else work) / "model.onnx", backend)
            _write_initial_states(m, work)
        (work / "config.pbtxt").write_text(text)
        m.save(work)
        (work / README).write_text(model_readme(repo, name, m, flavour, backend))
        (work / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    try:
        index = _write_index(repo)
    except (OSError, EdgevidError):  # the model is in place; the index is a convenience
        index = None
    info["readme"] = str(index or target / README)
    return info


def _portable_files(art: Any, backend: str, version: Path) -> None:
    """``1/model.py`` and ``1/artifact/``: the manifest and the files it lists for ``backend``, nothing else."""
    folder = version / "artifact"
    folder.mkdir()
    for role in BACKEND_FILES[backend]:
        _copy_verified(art, role, folder)
    art.manifest.save(folder)
    (version / "model.py").write_bytes(Path(__file__).with_name("triton_model.py").read_bytes())


def _write_index(repo: Path) -> Path | None:
    """The repository's README.md listing the models this writer made there; None where a user's README is.

    A README is replaced only if it is one of ours (its first line is ``README_MARK``), and
    created without ever replacing a file that appeared meanwhile.
    """
    path = repo / README
    text = repository_index(repo)
    if os.path.lexists(path):
        if path.is_symlink() or not path.is_file() or not _is_our_readme(path):
            return None
        atomic_write_text(path, text)
        return path
    fd, tmp = tempfile.mkstemp(dir=repo, prefix=f".{README}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, file_mode())
        os.link(tmp, path)  # fails if a README appeared since: it is not ours to replace
    except FileExistsError:
        return None
    finally:
        os.unlink(tmp)
    return path


def _is_our_readme(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(README_MARK.encode()) + 1).decode(errors="replace").rstrip("\n") == README_MARK


def repository_index(repo: Path) -> str:
    """The repository README: each model this writer made there, with its own README."""
    lines = [README_MARK, "# Triton model repository", "",
             "Models written by `edgevid triton write`; each folder's README.md says how to serve it and stream "
             "cameras into it (one sequence per camera).", ""]
    for folder in sorted(repo.iterdir()):
        info = _model_info(folder)
        if info is not None:
            lines.append(f"- [`{folder.name}`]({folder.name}/{README}): {info.get('flavour')} flavour, "
                         f"{info.get('backend')}")
    lines += ["", "A local CPU server for portable models: `edgevid triton serve <this folder>`; GPU servers: "
              "NVIDIA's Triton container (`tritonserver --model-repository=<this folder>`).", ""]
    return "\n".join(lines)


def _model_info(folder: Path) -> dict[str, Any] | None:
    """What this writer recorded in ``folder`` (None: not a model folder it made)."""
    if folder.is_symlink() or not _MODEL_NAME.fullmatch(folder.name) or not (folder / MARKER).is_file():
        return None
    try:
        info = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def model_readme(repo: Path, name: str, manifest: Manifest, flavour: str, backend: str) -> str:
    """How to serve the model and stream many cameras into it (the model folder's README.md)."""
    frame, logits = manifest.inputs[0], manifest.outputs[0]
    wire = _TRITON_TYPES[frame.dtype].removeprefix("TYPE_")
    lines = [f"# Triton model: {name}", "",
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
              f"(and after a scene cut or reconnect), `sequence_end=True` on its last. Send "
              f"{every_nth(manifest.sampling.stride)}, preprocessed as `manifest.json` says ({frame.name} "
              f"{frame.shape}); the server returns that step's logits.", "", "```bash",
              f"edgevid run --triton localhost:8001 --model {name} --video camera1.mp4   # one camera, as a local run",
              "```", "", "```python", "import tritonclient.grpc as grpcclient",
              "client = grpcclient.InferenceServerClient('localhost:8001')",
              f"x = grpcclient.InferInput({frame.name!r}, {[1, *frame.shape[1:]]}, {wire!r})",
              "x.set_data_from_numpy(frame_chw[None])  # edgevid.runtime.preprocess.preprocess_frame(bgr, preprocess)",
              f"r = client.infer({name!r}, [x], sequence_id=camera_id, sequence_start=first, sequence_end=last)",
              f"logits = r.as_numpy({logits.name!r})[0]", "```", ""]
    return "\n".join(lines)
