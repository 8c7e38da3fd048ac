"""TensorRT backend (NVIDIA GPUs and Jetson): an engine from the artifact, states on the device.

Versions: TensorRT >= 8.5.1 (the name-based tensor API and ``execute_async_v3``, which 8.5.1
introduced: JetPack 5.1 and later, JetPack 6.x), 10.x and 11.x. TensorRT 8.4 and older
(JetPack 5.0.x) are refused with a message. CUDA calls go through ``cuda.bindings.runtime``
(cuda-python >= 12.6; the removed ``from cuda import cudart`` layout is not used).

The engine is ``files["engine"]`` of the manifest (default ``model.engine``), a plain file
name inside the artifact folder (``engine_cache_paths``). If it is absent, or was built from
another ONNX or by another TensorRT, it is built from the checked ``model.onnx`` on first
load and cached next to it, with a small ``.meta.json`` (written atomically) recording what
it was built from and the engine's sha256; a shipped engine must match
``provenance.engine_sha256``.

Each stream has its own execution context, CUDA stream, and two device buffers per state:
step t reads states from one and writes into the other, step t+1 the other way round (only
the tensor addresses change), so states never leave the GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import MissingExtraError, require
from edgevid.manifest import MANIFEST_NAME, TensorSpec, atomic_write_bytes, atomic_write_text, sha256_file
from edgevid.runtime.artifact import Artifact
from edgevid.runtime.backends.base import BackendError, BackendStream, Runner, batch1_shape, initial_state

MIN_TENSORRT = (8, 5, 1)
ENGINE_FILE = "model.engine"  # where the engine goes when the manifest names none


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def _tensorrt() -> Any:
    trt = require("tensorrt", "tensorrt")
    if _version(trt.__version__) < MIN_TENSORRT:
        raise MissingExtraError(
            f"TensorRT {trt.__version__} is too old: edgevid needs >= 8.5.1 (JetPack >= 5.1) for the "
            "tensor-name API; upgrade JetPack, or use --backend onnxruntime"
        )
    return trt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise MissingExtraError(
            f"cuda-python >= 12.6 is not installed ({exc}); install it with: pip install 'edgevid[tensorrt]'"
        ) from exc
    return cudart


def _check(result: Any) -> Any:
    """Unpack a cuda-python call result ``(err, *values)``, raising on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        cudart = _cudart()
        name = cudart.cudaGetErrorName(err)[1]
        raise BackendError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def build_engine(onnx_path: str, engine_path: str, *, fp16: bool = False, workspace_mib: int = 1024,
                 profile_shapes: dict | None = None) -> None:
    """Build a serialized TensorRT engine from an ONNX file and write it to ``engine_path``.

    ``profile_shapes``: input name -> (min, opt, max) shapes; inputs with dynamic dims that
    are not listed get min = opt = max with every dynamic dim set to 1 (one stream per
    context). ``fp16``: on TensorRT 8.x/10.x, lets the builder pick fp16 kernels; TensorRT
    11 has no such flag (networks are strongly typed), so there the engine runs in the
    precision of the ONNX itself: export with ``--precision fp16`` to get fp16.
    Without ``fp16``, TF32 is disabled too, so an fp32 engine matches the fp32 export.
    """
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = _version(trt.__version__)[0]
    weak_fp16 = fp16 and hasattr(trt.BuilderFlag, "FP16")  # removed in TensorRT 11
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # implicit batch is 8.x's default
    elif not weak_fp16:
        # Strongly typed: every tensor keeps the ONNX's type (always the case on 11.x).
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    elif not fp16 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile, needed = builder.create_optimization_profile(), False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if profile_shapes and tensor.name in profile_shapes:
            low, opt, high = (tuple(s) for s in profile_shapes[tensor.name])
        elif any(d < 0 for d in shape):
            low = opt = high = tuple(1 if d < 0 else d for d in shape)
        else:
            continue
        profile.set_shape(tensor.name, low, opt, high)
        needed = True
    if needed:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))  # IHostMemory is a buffer




def engine_cache_paths(artifact: Artifact) -> tuple[Path, Path]:
    """(engine, its cache meta file) for an artifact: both inside its folder, neither a model file.

    The engine is ``files.engine`` (default ``model.engine``), a checked plain name that
    resolves inside the folder; the meta file sits next to it. Building writes both, so a
    name that is (or links to) another file of the artifact is refused too.
    """
    engine = artifact.path_of("engine", default=ENGINE_FILE)
    meta = artifact.path_in(engine.name + ".meta.json", "the engine cache file")
    others = {MANIFEST_NAME} | {n for role, n in artifact.manifest.files.items() if role != "engine"}
    taken = {(artifact.directory / n).resolve() for n in others}
    for path in (engine, meta):
        if path.resolve() in taken:
            raise BackendError(f"files.engine {engine.name!r} would overwrite {path.resolve().name} of the "
                               "artifact; name the engine file apart (e.g. model.engine)")
    return engine, meta


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The engine cache meta file, or None when unreadable (then the engine is rebuilt)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class TensorRTRunner(Runner):
    """TensorRT on the artifact's engine (built and cached on first load if needed).

    Options: ``rebuild`` (bool: build the engine even if a cached one fits).
    """

    name = "tensorrt"
    extra = "tensorrt"

    def _load(self) -> None:
        self._trt, self._cudart = _tensorrt(), _cudart()
        result = self._cudart.cudaGetDeviceCount()
        if int(result[0]) != 0 or result[1] == 0:
            raise BackendError("no CUDA GPU is visible: the tensorrt backend needs an NVIDIA GPU; "
                               "use --backend onnxruntime or openvino")
        self.engine_path, self._meta_path = engine_cache_paths(self.artifact)
        self._runtime = self._trt.Runtime(self._trt.Logger(self._trt.Logger.WARNING))
        data, built = self._engine_bytes(rebuild=bool(self.options.get("rebuild")))
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None and not built:  # made by another TensorRT version or for another GPU
            data, built = self._engine_bytes(rebuild=True)
            self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"TensorRT cannot deserialize the engine it built from {self.engine_path.name}")
        self._inputs, self._outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = [d if d >= 0 else "?" for d in self.engine.get_tensor_shape(name)]
            dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name))).name
            is_input = self.engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(TensorSpec(name, shape, dtype))
        self._call: dict[str, Any] | None = None  # context, stream and buffers of infer()

    def _engine_bytes(self, rebuild: bool) -> tuple[bytes, bool]:
        """(serialized engine, whether it was just built): the exported or cached one if it fits."""
        onnx = self.artifact.verified_file("onnx")
        meta_path = self._meta_path
        want = self._build_meta(sha256_file(onnx))
        if self.engine_path.is_file() and not rebuild:
            if meta_path.is_file():  # built here earlier: reuse only if built from this very ONNX, unchanged
                data = self.engine_path.read_bytes()
                if _read_meta(meta_path) == {**want, "engine_sha256": hashlib.sha256(data).hexdigest()}:
                    return data, False
            elif self.manifest.provenance.get("engine_sha256"):  # shipped with the export
                return self.artifact.verified_file("engine").read_bytes(), False
        fp16 = self.manifest.precision == "fp16"
        try:
            build_engine(str(onnx), str(self.engine_path), fp16=fp16)
            data = self.engine_path.read_bytes()
            meta = {**want, "engine_sha256": hashlib.sha256(data).hexdigest()}
            atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
            return data, True
        except OSError as exc:  # read-only artifact: build into a temp dir, keep it in memory
            warnings.warn(f"cannot cache the TensorRT engine in {self.engine_path.parent} ({exc})", stacklevel=2)
            with tempfile.TemporaryDirectory() as tmp:
                build_engine(str(onnx), f"{tmp}/model.engine", fp16=fp16)
                return Path(f"{tmp}/model.engine").read_bytes(), True

    def _build_meta(self, onnx_sha256: str) -> dict[str, Any]:
        prop = _check(self._cudart.cudaGetDeviceProperties(0))
        device = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        return {"onnx_sha256": onnx_sha256, "tensorrt": self._trt.__version__, "device": device,
                "precision": self.manifest.precision}

    @property
    def model_label(self) -> str:
        """The engine file."""
        return f"{self.artifact.directory.name}/{self.engine_path.name}"

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One synchronous call with every input explicit (not thread-safe: one context, reused).

        Creating an execution context allocates its activation memory, so the context, its
        CUDA stream and the device buffers are made once and grown when a call needs more.
        """
        self._require_loaded()
        cuda = self._cudart
        if self._call is None:
            self._call = {"context": self.engine.create_execution_context(),
                          "stream": _check(cuda.cudaStreamCreate()), "buffers": {}}
        context, stream, buffers = self._call["context"], self._call["stream"], self._call["buffers"]

        def device(name: str, nbytes: int) -> int:
            ptr, size = buffers.get(name, (0, 0))
            if size < nbytes:
                if ptr:
                    cuda.cudaFree(ptr)
                ptr, size = _check(cuda.cudaMalloc(max(nbytes, 1))), nbytes
                buffers[name] = (ptr, size)
            context.set_tensor_address(name, ptr)
            return ptr

        for spec in self._inputs:
            array = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
            context.set_input_shape(spec.name, array.shape)
            _check(cuda.cudaMemcpyAsync(device(spec.name, array.nbytes), array.ctypes.data, array.nbytes,
                                        cuda.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        hosts = {}
        for spec in self._outputs:
            hosts[spec.name] = np.empty(tuple(context.get_tensor_shape(spec.name)), spec.dtype)
            device(spec.name, hosts[spec.name].nbytes)
        if not context.execute_async_v3(int(stream)):
            raise BackendError("TensorRT execution failed (see its log above)")
        for name, host in hosts.items():
            _check(cuda.cudaMemcpyAsync(host.ctypes.data, buffers[name][0], host.nbytes,
                                        cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        _check(cuda.cudaStreamSynchronize(stream))
        return hosts

    def open_stream(self) -> TrtStream:
        """A new execution context with its own device state buffers."""
        self._require_stream_mode()
        return TrtStream(self)

    def close(self) -> None:
        """Free the buffers of ``infer`` and drop the engine."""
        if getattr(self, "_call", None) is not None:
            for ptr, _ in self._call["buffers"].values():
                self._cudart.cudaFree(ptr)
            self._cudart.cudaStreamDestroy(self._call["stream"])
            self._call = None
        self.engine = None
        super().close()


class _Pinned:
    """Page-locked host memory seen as a numpy array (fast, truly async copies)."""

    def __init__(self, cudart: Any, shape: list[int], dtype: str) -> None:
        self._cudart = cudart
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.ptr = _check(cudart.cudaMallocHost(self.nbytes))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self._cudart.cudaFreeHost(self.ptr)
            self.ptr = 0


class TrtStream(BackendStream):
    """One execution context, one CUDA stream, two device buffers per state."""

    def __init__(self, runner: TensorRTRunner) -> None:
        super().__init__(runner)
        cuda, m = runner._cudart, runner.manifest
        self._cuda = cuda
        self._context = runner.engine.create_execution_context()
        self._stream = _check(cuda.cudaStreamCreate())
        self._device: list[int] = []
        frame, logits = runner.frame_input, runner.logits_output
        frame_shape = batch1_shape(frame)
        self._frame = _Pinned(cuda, frame_shape, frame.dtype)
        self._logits = _Pinned(cuda, batch1_shape(logits), logits.dtype)
        self._frame_dev = self._alloc(self._frame.nbytes)
        self._logits_dev = self._alloc(self._logits.nbytes)
        self._context.set_input_shape(frame.name, frame_shape)
        self._context.set_tensor_address(frame.name, self._frame_dev)
        self._context.set_tensor_address(logits.name, self._logits_dev)
        self._states = m.states
        self._init = [initial_state(s) for s in m.states]
        self._buffers = [(self._alloc(v.nbytes), self._alloc(v.nbytes)) for v in self._init]
        for s in m.states:
            self._context.set_input_shape(s.input, s.shape)
        bound = {frame.name, logits.name, *m.state_input_names, *m.state_output_names}
        for spec in runner.output_specs():  # outputs the session does not read still need memory
            if spec.name not in bound:
                shape = tuple(self._context.get_tensor_shape(spec.name))
                self._context.set_tensor_address(spec.name, self._alloc(int(np.prod(shape)) * np.dtype(spec.dtype).itemsize))
        self._parity = 0
        self.reset()

    def _alloc(self, nbytes: int) -> int:
        self._device.append(_check(self._cuda.cudaMalloc(max(nbytes, 1))))
        return self._device[-1]

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Copy the frame in, point the states at this parity's buffers, run, flip the parity."""
        cuda, ctx, p = self._cuda, self._context, self._parity
        if frame.shape != self._frame.array.shape:
            raise BackendError(f"step expects a frame of shape {self._frame.array.shape}, got {frame.shape}")
        self._frame.array[...] = frame
        for s, bufs in zip(self._states, self._buffers):
            ctx.set_tensor_address(s.input, bufs[p])
            ctx.set_tensor_address(s.output, bufs[1 - p])
        _check(cuda.cudaMemcpyAsync(self._frame_dev, self._frame.ptr, self._frame.nbytes,
                                    cuda.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        if not ctx.execute_async_v3(int(self._stream)):
            raise BackendError("TensorRT execution failed (see its log above)")
        _check(cuda.cudaMemcpyAsync(self._logits.ptr, self._logits_dev, self._logits.nbytes,
                                    cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        _check(cuda.cudaStreamSynchronize(self._stream))
        self._parity ^= 1
        return self._logits.array.copy()

    def reset(self) -> None:
        """Write the initial values into the buffers the next step reads."""
        cuda = self._cuda
        for init, bufs in zip(self._init, self._buffers):
            dst = bufs[self._parity]
            if not init.any():
                _check(cuda.cudaMemsetAsync(dst, 0, init.nbytes, self._stream))
            else:
                _check(cuda.cudaMemcpyAsync(dst, init.ctypes.data, init.nbytes,
                                            cuda.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        _check(cuda.cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        """Free the device buffers, pinned buffers, CUDA stream and context."""
        for ptr in self._device:
            self._cuda.cudaFree(ptr)
        self._device = []
        self._frame.free()
        self._logits.free()
        if self._stream is not None:
            self._cuda.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = None
