"""ONNX Runtime backend: states stay in bound OrtValues, ping-ponged between two IOBindings.

Each stream owns two buffers per state and two ``IOBinding`` objects prepared once: binding
0 reads states from buffer A and writes the next states into buffer B, binding 1 the other
way round. A step copies the frame into its fixed input OrtValue, runs the binding of the
current parity and flips it, so states never make a numpy round-trip and nothing is
re-bound per step. With the CUDA execution provider the buffers live on the GPU.

Many streams at once (``open_batch``, ``OrtStreamBatch``): the same ping-pong over batched host
buffers, one row per stream, one call per tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgevid.errors import MissingExtraError
from edgevid.manifest import TensorSpec
from edgevid.runtime.backends.base import BackendError, BackendStream, Runner, batch1_shape, initial_state
from edgevid.runtime.backends.batch import NumpyStreamBatch

# ONNX Runtime type strings -> numpy dtype names (as the manifest writes them).
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _spec(arg: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) else (d or "?") for d in arg.shape]
    return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, arg.type))


class OrtRunner(Runner):
    """ONNX Runtime on the artifact's ``model.onnx``.

    Options: ``providers`` (list, default CUDA if available, else CPU), ``threads``
    (intra-op threads, default ONNX Runtime's choice: one per physical core).
    """

    name = "onnxruntime"
    extra = "onnxruntime"

    def _load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # a core dependency, so no extra to name
            raise MissingExtraError(
                f"onnxruntime is not installed ({exc}); install it with: pip install onnxruntime "
                "(or onnxruntime-gpu for CUDA)"
            ) from exc
        path = self.artifact.verified_file("onnx")
        available = ort.get_available_providers()
        providers = self.options.get("providers") or [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
        ]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Fatal only: INT8 graphs otherwise print a "Removing initializer" warning per unused
        # constant on every load, and a failed call prints its error (in colour) before the
        # exception that edgevid turns into its own one-line error.
        opts.log_severity_level = 4
        if self.options.get("threads"):
            opts.intra_op_num_threads = int(self.options["threads"])
        if self.options.get("profile_prefix"):  # edgevid bench --layers: ORT's profiling JSON
            opts.enable_profiling = True
            opts.profile_file_prefix = str(self.options["profile_prefix"])
        self._ort = ort
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        # OrtValues of a stream live where the first provider computes.
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._inputs = [_spec(a) for a in self.session.get_inputs()]
        self._outputs = [_spec(a) for a in self.session.get_outputs()]



    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One ``InferenceSession.run`` with every input given explicitly."""
        self._require_loaded()
        names = [o.name for o in self._outputs]
        return dict(zip(names, self.session.run(names, dict(feeds))))

    def open_stream(self) -> OrtStream:
        """A new stream with its own state buffers and bindings."""
        self._require_stream_mode()
        return OrtStream(self)

    def open_batch(self) -> OrtStreamBatch:
        """Many streams stepped in one call, their states rows of IOBinding-bound buffers."""
        return OrtStreamBatch(self)

    def close(self) -> None:
        """Drop the session."""
        self.session = None
        super().close()


class OrtStream(BackendStream):
    """Per-stream OrtValues and two prepared IOBindings (see the module docstring)."""

    def __init__(self, runner: OrtRunner) -> None:
        super().__init__(runner)
        ort, dev, m = runner._ort, runner.device, runner.manifest

        def value(shape: list[int], dtype: str) -> Any:
            return ort.OrtValue.ortvalue_from_shape_and_type(shape, np.dtype(dtype), dev, 0)

        frame, logits = runner.frame_input, runner.logits_output
        self._frame_shape = tuple(batch1_shape(frame))
        self._frame_dtype = np.dtype(frame.dtype)
        self._frame = value(list(self._frame_shape), frame.dtype)
        self._logits = value(batch1_shape(logits), logits.dtype)
        self._init = [initial_state(p) for p in m.states]
        self._buffers = [(value(p.shape, p.dtype), value(p.shape, p.dtype)) for p in m.states]
        self._bindings = []
        for parity in (0, 1):
            binding = runner.session.io_binding()
            binding.bind_ortvalue_input(frame.name, self._frame)
            binding.bind_ortvalue_output(logits.name, self._logits)
            for pair, bufs in zip(m.states, self._buffers):
                binding.bind_ortvalue_input(pair.input, bufs[parity])
                binding.bind_ortvalue_output(pair.output, bufs[1 - parity])
            self._bindings.append(binding)
        self._parity = 0
        self.reset()

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Copy the frame in, run the current binding, flip the parity, return the logits."""
        if frame.shape != self._frame_shape:
            raise BackendError(f"step expects a frame of shape {self._frame_shape}, got {frame.shape}")
        # update_inplace copies raw bytes: it must get exactly the bound dtype and layout.
        self._frame.update_inplace(np.ascontiguousarray(frame, dtype=self._frame_dtype))
        self.runner.session.run_with_iobinding(self._bindings[self._parity])
        self._parity ^= 1
        return self._logits.numpy().copy()  # numpy() is a view of the bound buffer

    def reset(self) -> None:
        """Write the initial values into the buffers the next step reads."""
        for init, bufs in zip(self._init, self._buffers):
            bufs[self._parity].update_inplace(init)

    def close(self) -> None:
        """Drop the bindings and buffers."""
        self._bindings = []
        self._buffers = []


class OrtStreamBatch(NumpyStreamBatch):
    """Batched states bound in place (``edgevid.runtime.backends.batch``).

    Two sets of state buffers ping-pong as a single stream's do: a step of every open stream
    reads rows ``0..n-1`` of one set and writes the next states into the other, and the sets
    swap. A step of some streams gathers their rows into scratch buffers, binds those and
    writes the results back. Bindings are prepared once per (batch size, set) and reused;
    they point at numpy memory, so they are dropped whenever the buffers grow.
    """

    def __init__(self, runner: OrtRunner) -> None:
        super().__init__(runner)
        self._classes = int(runner.logits_output.shape[-1])
        self._bindings: dict[tuple[Any, ...], Any] = {}

    def _grown(self, capacity: int) -> None:
        self._spare = [np.empty_like(s) for s in self._states]
        self._scratch_in = [np.empty_like(s) for s in self._states]
        self._scratch_out = [np.empty_like(s) for s in self._states]
        self._frames = np.empty((capacity, *self._frame_shape), self._frame_dtype)
        self._logits = np.empty((capacity, self._classes), np.float32)
        self._bindings.clear()

    def _binding(self, key: tuple[Any, ...], n: int, ins: list[np.ndarray], outs: list[np.ndarray]) -> Any:
        binding = self._bindings.get(key)
        if binding is None:
            binding = self.runner.session.io_binding()
            _bind(binding.bind_input, self._frame_name, self._frames, n)
            _bind(binding.bind_output, self._logits_name, self._logits, n)
            for pair, src, dst in zip(self._pairs, ins, outs):
                _bind(binding.bind_input, pair.input, src, n)
                _bind(binding.bind_output, pair.output, dst, n)
            self._bindings[key] = binding
        return binding

    def _step(self, rows: list[int], frames: np.ndarray, packed: bool) -> np.ndarray:
        n = len(rows)
        self._frames[:n] = self._check_frames(frames)
        if packed:  # read one set, write the other, swap: no state copies
            binding = self._binding(("packed", n, id(self._states)), n, self._states, self._spare)
            self.runner.session.run_with_iobinding(binding)
            self._states, self._spare = self._spare, self._states
        else:
            for state, scratch in zip(self._states, self._scratch_in):
                np.take(state, rows, axis=0, out=scratch[:n])
            binding = self._binding(("gathered", n), n, self._scratch_in, self._scratch_out)
            self.runner.session.run_with_iobinding(binding)
            for state, scratch in zip(self._states, self._scratch_out):
                state[rows] = scratch[:n]
        return self._logits[:n].copy()

    def close(self) -> None:
        self._bindings.clear()
        super().close()


def _bind(bind: Any, name: str, array: np.ndarray, n: int) -> None:
    """Bind the first ``n`` rows of a C-contiguous host array by pointer (no copy)."""
    bind(name, "cpu", 0, array.dtype, [n, *array.shape[1:]], array.ctypes.data)
