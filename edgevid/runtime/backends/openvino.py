"""OpenVINO backend: state pairs become internal variables (make-stateful transformation).

On the first stream, the model is reshaped to batch 1 and ``make_stateful`` (the stock
make-stateful transformation, with initialised variables) replaces every ``state_in.X`` parameter /
``state_out.X`` result pair by a ReadValue/Assign variable, so a step feeds only the frame
and the states never leave the plugin. Each stream is one infer request (variables are per
request); ``reset()`` calls ``reset_state()``.

``stateful=False`` keeps the states as explicit I/O instead (for comparison, or for plugins
without variable support): two infer requests per stream whose state tensors are set once,
crosswise, so the outputs of one step are the inputs of the next with no copies.

Many streams at once (``open_batch``): one stateful request each, all in flight together on a
THROUGHPUT-compiled model (``OvRequestQueue``, the default), or one call of the dynamic-batch model
with every stream's states as rows of explicit inputs (``OvStreamBatch``).

Models compile with the inference precision the export validated with
(``build.openvino.inference_precision``; f32 for fp32 artifacts that do not say): the CPU
plugin otherwise runs in bf16 on CPUs that have it, and the outputs drift from the export.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import require
from edgevid.manifest import TensorSpec
from edgevid.runtime.backends.base import BackendError, BackendStream, Runner, batch1_shape, initial_state
from edgevid.runtime.backends.batch import NumpyStreamBatch, StreamBatch, StreamsOneByOne


def _spec(port: Any) -> TensorSpec:
    shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
    return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name)


def _ov_reason(exc: Exception) -> str:
    """The line of an OpenVINO exception that says what is wrong, not where in its sources."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    reason = (said or lines or [type(exc).__name__])[-1]
    return reason if len(reason) <= 200 else reason[:197] + "..."


class OpenVinoRunner(Runner):
    """OpenVINO on the artifact's IR (``model.xml``), or on ``model.onnx`` when there is none.

    Options: ``device`` (default ``"CPU"``), ``stateful`` (default True), ``source``
    (``"auto"`` | ``"ir"`` | ``"onnx"``), ``threads`` (``INFERENCE_NUM_THREADS``),
    ``inference_precision`` (``"f32"``, ``"bf16"``, ``"f16"`` or ``"default"``).
    """

    name = "openvino"
    extra = "openvino"

    def _load(self) -> None:
        self._ov = require("openvino", self.extra)
        source = self.options.get("source", "auto")
        if source not in ("auto", "ir", "onnx"):
            raise BackendError(f"openvino source must be auto, ir or onnx, got {source!r}")
        weights = None
        if source == "ir" or (source == "auto" and self.artifact.has_file("openvino_xml")):
            path = self.artifact.verified_file("openvino_xml")
            # The weights are checked too and passed explicitly: by default OpenVINO reads
            # "<xml stem>.bin", which the manifest's hash may not cover.
            weights = str(self.artifact.verified_file("openvino_bin"))
        else:
            path = self.artifact.verified_file("onnx")
        self._path = Path(path)
        self._core = self._ov.Core()
        self._model = self._read(path, weights)
        self._inputs = [_spec(p) for p in self._model.inputs]
        self._outputs = [_spec(p) for p in self._model.outputs]
        self.device = self.options.get("device", "CPU")
        self.stateful = bool(self.options.get("stateful", True))
        self._config: dict[str, str] = {"PERFORMANCE_HINT": "LATENCY"}
        # The precision the export validated with (manifest build facts), else f32 for fp32.
        # Option ``inference_precision`` overrides it ("default": leave it to the plugin).
        hint = self.options.get("inference_precision") or \
            self.manifest.build.get("openvino", {}).get("inference_precision")
        if hint != "default" and (hint or self.manifest.precision == "fp32"):
            self._config["INFERENCE_PRECISION_HINT"] = hint or "f32"
        if self.options.get("threads"):
            self._config["INFERENCE_NUM_THREADS"] = str(int(self.options["threads"]))
        if self.options.get("perf_count"):  # edgevid bench --layers: per-layer PERF_COUNT
            self._config["PERF_COUNT"] = "YES"
        self._last_request: Any = None  # the request of the last call, for last_profiling_info()
        self._compiled: Any = None  # the model as read, for infer()
        self._request: Any = None
        self._compiled_stream: Any = None  # batch 1, stateful or explicit, shared by streams

    def _read(self, path: Path, weights: str | None) -> Any:
        """``read_model``, its failure as one line naming the files.

        The hashes only prove the files are the ones the manifest names: a truncated ``.bin``
        with a recomputed hash (a bad copy, or an edited artifact) passes them, and OpenVINO's
        own message is its source location ("Exception from src/inference/src/cpp/core.cpp:84").
        """
        try:
            return self._core.read_model(str(path), weights)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            files = f"{path.name} with weights {Path(weights).name}" if weights else path.name
            raise BackendError(f"OpenVINO could not read {self.artifact.directory}/{files} ({_ov_reason(exc)}): "
                               "the files are corrupt or truncated; re-export the model") from exc

    @property
    def model_path(self) -> Path:
        """The file OpenVINO read: the IR's .xml, or the ONNX model."""
        return self._path

    @property
    def model_label(self) -> str:
        """The file OpenVINO reads (IR or ONNX)."""
        return f"{self.artifact.directory.name}/{self._path.name}"

    def compile_config(self) -> dict[str, str]:
        """The properties models are compiled with."""
        return dict(self._config)

    def compiled_properties(self) -> dict[str, str]:
        """What the plugin really compiled with, read back (precision, threads); {} before compiling."""
        compiled = self._compiled_stream if self._compiled_stream is not None else self._compiled
        found: dict[str, str] = {}
        for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "EXECUTION_DEVICES"):
            try:
                value = compiled.get_property(key) if compiled is not None else None
            except Exception:  # noqa: BLE001 - a plugin that does not report this property
                continue
            if value is not None:
                name = getattr(value, "get_type_name", None)  # ov.Type -> "f32"
                found[key] = name() if name else ",".join(value) if isinstance(value, list) else str(value)
        return found

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One stateless call on the model as read (states, if any, fed explicitly)."""
        self._require_loaded()
        self._compiled_model()
        self._last_request = self._request
        result = self._request.infer(dict(feeds))  # returns copies (share_outputs=False)
        return {port.get_any_name(): result[port] for port in self._compiled.outputs}

    def open_stream(self) -> BackendStream:
        """A new infer request (stateful) or request pair (explicit) on the batch-1 model."""
        self._require_stream_mode()
        if self._compiled_stream is None:
            self._compiled_stream = self._core.compile_model(self._stream_model(), self.device, self._config)
        if self.stateful:
            return OvStatefulStream(self, self._compiled_stream)
        return OvExplicitStream(self, self._compiled_stream)

    def open_batch(self, how: str | None = None) -> StreamBatch:
        """Many streams stepped together (``edgevid.runtime.backends.batch``).

        ``how`` (default: the ``batching`` option, else ``"requests"``): ``"requests"`` keeps one
        stateful infer request per stream and runs them concurrently (THROUGHPUT streams);
        ``"batch"`` steps them in one call of the dynamic-batch model with explicit states. The
        default is the faster of the two as measured (benchmarks/bench_many_streams.py: 8 streams
        of the shipped TSM on 2 cores, requests 1.89x the frames/s of 8 sessions at 112 px and 1.21x
        at 224 px, one batched call 0.99x and 0.82x: the CPU plugin runs the dynamic-batch model
        slower than its static batch-1 stateful one).
        """
        self._require_stream_mode()
        how = how or self.options.get("batching") or "requests"
        if how == "batch":
            return OvStreamBatch(self)
        if how == "requests":
            return OvRequestQueue(self)
        raise BackendError(f"openvino batching must be batch or requests, got {how!r}")

    def _compiled_model(self) -> Any:
        """The model as read (dynamic batch, explicit states), compiled once."""
        if self._compiled is None:
            self._compiled = self._core.compile_model(self._model, self.device, self._config)
            self._request = self._compiled.create_infer_request()
        return self._compiled

    def _stream_model(self) -> Any:
        return self._stream_model_for(self.stateful)

    def _stream_model_for(self, stateful: bool) -> Any:
        model = self._model.clone()
        # Fix the batch to 1: variables need a static shape, and a stream is one video.
        shapes = {}
        for port in model.inputs:
            dims = list(port.get_partial_shape())
            if dims and not dims[0].is_static:
                shapes[port.get_any_name()] = self._ov.PartialShape([1, *dims[1:]])
        if shapes:
            model.reshape(shapes)
        if stateful:
            make_stateful(self._ov, model, self.manifest.states)
        return model

    def last_profiling_info(self) -> Any:
        """OpenVINO's per-layer profiling of the last call (load with ``perf_count=True``)."""
        if self._last_request is None:
            raise BackendError("no call has run yet")
        return self._last_request.profiling_info

    def close(self) -> None:
        """Drop the compiled models."""
        self._compiled = self._request = self._compiled_stream = self._last_request = None
        super().close()


def make_stateful(ov: Any, model: Any, states: Any) -> None:
    """Replace each ``state_in``/``state_out`` pair by a ReadValue/Assign variable, in place.

    What ``apply_make_stateful_transformation`` does (same variable ids, "<in><out>"), except
    that every ReadValue gets its initial value as a Constant input: OpenVINO 2026.4's
    low-precision pass (``AssignAndReadValueTransformation``, run when compiling INT8
    models) reads that input unconditionally and crashes on the input-less ReadValue the
    stock transformation creates.
    """
    from openvino.op.util import Variable, VariableInfo

    params = {p.get_any_name(): p.get_node() for p in model.inputs}
    results = {r.get_any_name(): r.get_node() for r in model.outputs}
    for pair in states:
        param, result = params[pair.input], results[pair.output]
        info = VariableInfo()
        info.data_shape, info.data_type, info.variable_id = param.get_partial_shape(), param.get_element_type(), \
            pair.input + pair.output
        variable = Variable(info)
        init = np.full([d.get_length() for d in param.get_partial_shape()], pair.init,
                       dtype=param.get_element_type().to_dtype())
        read = ov.op.read_value(ov.op.Constant(init), variable)
        for target in list(param.output(0).get_target_inputs()):
            target.replace_source_output(read.output(0))
        source = result.input_value(0)
        node = source.get_node()
        if node.get_output_size() != 1:  # Assign's binding takes a node: give it a single-output one
            node = ov.opset13.convert(source, param.get_element_type())
        model.add_sinks([ov.op.assign(node, variable)])
        model.remove_result(result)
        model.remove_parameter(param)
    model.validate_nodes_and_infer_types()


class _OvStreamBase(BackendStream):
    def __init__(self, runner: OpenVinoRunner) -> None:
        super().__init__(runner)
        frame = runner.frame_input
        self._frame_name = frame.name
        self._logits_name = runner.logits_output.name
        # The requests read the frame straight from this array (a shared-memory tensor).
        self._frame = np.zeros(batch1_shape(frame), np.dtype(frame.dtype))
        self._frame_tensor = runner._ov.Tensor(self._frame, shared_memory=True)

    def _put(self, frame: np.ndarray) -> None:
        if frame.shape != self._frame.shape:
            raise BackendError(f"step expects a frame of shape {self._frame.shape}, got {frame.shape}")
        self._frame[...] = frame


class OvStatefulStream(_OvStreamBase):
    """One infer request whose variables hold this stream's states."""

    def __init__(self, runner: OpenVinoRunner, compiled: Any) -> None:
        super().__init__(runner)
        self._request = compiled.create_infer_request()
        self._request.set_tensor(self._frame_name, self._frame_tensor)
        self._init = [(s.input + s.output, initial_state(s)) for s in runner.manifest.states if s.init != 0]
        self.reset()

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Feed the frame, run; the variables carry the states to the next step."""
        self._put(frame)
        self.runner._last_request = self._request
        self._request.infer()
        return self._request.get_tensor(self._logits_name).data.copy()

    def reset(self) -> None:
        """``reset_state()`` zeroes the variables; non-zero initial values are then written."""
        self._request.reset_state()
        if self._init:
            # The transformation names each variable "<state_in name><state_out name>".
            states = {v.name: v for v in self._request.query_state()}
            for variable_id, value in self._init:
                if variable_id not in states:
                    raise BackendError(f"openvino variable {variable_id!r} not found; load with stateful=False")
                states[variable_id].state = self.runner._ov.Tensor(value)

    def close(self) -> None:
        """Drop the infer request."""
        self._request = None


class OvExplicitStream(_OvStreamBase):
    """Two infer requests with crosswise state tensors: outputs of step t are inputs of t+1."""

    def __init__(self, runner: OpenVinoRunner, compiled: Any) -> None:
        super().__init__(runner)
        ov, states = runner._ov, runner.manifest.states
        self._init = [initial_state(s) for s in states]
        self._buffers = [(ov.Tensor(v.copy()), ov.Tensor(v.copy())) for v in self._init]
        self._requests = []
        for parity in (0, 1):
            request = compiled.create_infer_request()
            request.set_tensor(self._frame_name, self._frame_tensor)
            for pair, bufs in zip(states, self._buffers):
                request.set_tensor(pair.input, bufs[parity])
                request.set_tensor(pair.output, bufs[1 - parity])
            self._requests.append(request)
        self._parity = 0

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Feed the frame, run the request of the current parity, flip the parity."""
        self._put(frame)
        request = self._requests[self._parity]
        self.runner._last_request = request
        request.infer()
        self._parity ^= 1
        return request.get_tensor(self._logits_name).data.copy()

    def reset(self) -> None:
        """Write the initial values into the tensors the next step reads."""
        for init, bufs in zip(self._init, self._buffers):
            bufs[self._parity].data[...] = init

    def close(self) -> None:
        """Drop the requests and tensors."""
        self._requests = []
        self._buffers = []


class OvStreamBatch(NumpyStreamBatch):
    """Batched explicit states on the dynamic-batch model: the state rows are fed to its own infer
    request and its outputs copied back into them."""

    def __init__(self, runner: OpenVinoRunner) -> None:
        super().__init__(runner)
        compiled = runner._compiled_model()
        self._batch_request = compiled.create_infer_request()
        self._ports = {port.get_any_name(): port for port in compiled.outputs}

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Inputs are copied in, not shared: the CPU plugin binds a shared input into the graph's own
        # memory, and the next request of the compiled model (``infer``, another batch) then wrote into
        # state rows freed meanwhile (heap corruption, seen with 2026.4). Outputs are read at once.
        result = self._batch_request.infer(feeds, share_inputs=False, share_outputs=True)
        return {name: result[port] for name, port in self._ports.items()}

    def close(self) -> None:
        self._batch_request = None
        super().close()


class OvRequestQueue(StreamsOneByOne):
    """One stateful infer request per stream, all started before any is waited for.

    Compiled with ``PERFORMANCE_HINT=THROUGHPUT``, so the plugin runs several requests at once
    (its own CPU streams) instead of one after another.
    """

    def __init__(self, runner: OpenVinoRunner) -> None:
        super().__init__(runner)
        config = runner.compile_config() | {"PERFORMANCE_HINT": "THROUGHPUT"}
        self._compiled = runner._core.compile_model(runner._stream_model_for(True), runner.device, config)

    def _grow(self, rows: int) -> None:
        while len(self._streams) < rows:
            self._streams.append(OvStatefulStream(self.runner, self._compiled))

    def _step(self, rows: list[int], frames: np.ndarray, packed: bool) -> np.ndarray:
        streams = [self._streams[r] for r in rows]
        for i, stream in enumerate(streams):
            stream._put(frames[i : i + 1])
            stream._request.start_async()
        for stream in streams:
            stream._request.wait()
        return np.concatenate([s._request.get_tensor(s._logits_name).data for s in streams])
