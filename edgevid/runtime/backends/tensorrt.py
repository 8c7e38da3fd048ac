"""TensorRT backend (NVIDIA GPUs and Jetson): an engine from the artifact, states on the device.

Versions: TensorRT >= 8.5.1 (the name-based tensor API and ``execute_async_v3``), 10.x and
11.x; older TensorRT is refused with a message. On a Jetson that means JetPack 6 (TensorRT 8.6
or 10.3): JetPack 5.1 has TensorRT 8.5, but its Python bindings exist for Python 3.8 only, and
edgevid needs 3.10. CUDA calls go through cuda-python 12.x: ``cuda.bindings.runtime`` (from
12.6.1) or ``cuda.cudart`` (12.2 to 12.6.0, what NVIDIA pins for JetPack 6: its TensorRT 10.3
samples use 12.2.0). cuda-python 13 needs a CUDA 13 driver, which JetPack 6 does not have, so
the ``tensorrt`` extra and the bundles pin ``>=12.2,<13``.

The engine: the artifact's own (``files.engine``, built by ``edgevid export --target
tensorrt`` on the device, hash-checked) when the TensorRT version and GPU it records are
this one's and so are the build options it records (DLA core, fp16 kernels, profiles);
otherwise one built from the checked ``model.onnx`` on first load, checked
against ONNX Runtime on the same inputs, and kept in the user cache for the next load
(``tensorrt_engine``: flags per TensorRT version, cache keys, timing cache, DLA).

Each stream has its own execution context, CUDA stream, and two device buffers per state:
step t reads states from one and writes into the other, step t+1 the other way round (only
the tensor addresses change), so states never leave the GPU. On TensorRT 8.x a context of a
dynamic-shape engine needs an optimization profile of its own; the runner hands them out.
TensorRT 8.x engines have no INT64 tensors (the parser makes them INT32): the runner feeds and
returns the manifest's int64 and casts at the boundary, so states stay int32 on the device.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import MissingExtraError, require
from edgevid.manifest import TensorSpec, sha256_file
from edgevid.runtime.backends import tensorrt_engine as te
from edgevid.runtime.backends.base import BackendError, BackendStream, Runner, batch1_shape, initial_state

MIN_TENSORRT = (8, 5, 1)
# Why a CUDA call failed, in words, for the errors a deployment meets.
_CUDA_HINTS = {
    35: "the NVIDIA driver is older than the CUDA runtime of the installed cuda-python (cuda-python 13 needs a "
        "CUDA 13 driver; with a CUDA 12 driver: pip install 'cuda-python>=12.2,<13', and on JetPack 6.0 "
        "(CUDA 12.2): pip install 'cuda-python==12.2.*')",
    100: "no CUDA GPU is visible (check nvidia-smi, the container's --gpus / --runtime nvidia)",
    2: "the GPU is out of memory",
    999: "the CUDA driver is in an unknown error state (a reboot usually clears it)",
}


def _on_jetson() -> bool:
    from edgevid.devices.detect import is_jetson

    return is_jetson()


def _tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        if _on_jetson():
            raise MissingExtraError(
                f"tensorrt is not importable ({exc}): on a Jetson, TensorRT's Python bindings come with JetPack, not "
                "pip: sudo apt install python3-libnvinfer, and create the venv with --system-site-packages"
            ) from exc
        trt = require("tensorrt", "tensorrt")
    if te.version_tuple(trt.__version__) < MIN_TENSORRT:
        raise MissingExtraError(
            f"TensorRT {trt.__version__} is too old: edgevid needs >= 8.5.1 for the tensor-name API (on a "
            "Jetson: JetPack 6); upgrade TensorRT or JetPack, or use --backend onnxruntime"
        )
    return trt


def _cudart() -> Any:
    """cuda-python's CUDA runtime module: ``cuda.bindings.runtime`` (>= 12.6.1) or ``cuda.cudart`` (12.2-12.6.0)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # the layout before cuda-python 12.6.1 (same API)
        except ImportError as exc:
            raise MissingExtraError(
                f"cuda-python 12.x is not installed ({exc}); install it with: pip install 'edgevid[tensorrt]' "
                "(or pip install 'cuda-python>=12.2,<13')"
            ) from exc
    return cudart


def cuda_error_text(cudart: Any, err: Any) -> str:
    """``cudaErrorInsufficientDriver (35): <why>`` for a cuda-python error code."""
    code = int(err)
    try:
        name = cudart.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - naming the error must not hide it
        name = "CUDA error"
    hint = _CUDA_HINTS.get(code)
    return f"{name} ({code})" + (f": {hint}" if hint else "")


def _check(result: Any) -> Any:
    """Unpack a cuda-python call result ``(err, *values)``, raising on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call failed: {cuda_error_text(_cudart(), err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _require_finite(got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]]) -> None:
    """Refuse NaN / inf in the check of a new engine (a max over NaN differences can read as 0)."""
    for who, runs in (("ONNX Runtime", want), ("the new TensorRT engine", got)):
        for step in runs:
            for name, value in step.items():
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    raise te.EngineError(f"validation failed on tensorrt: {who} gives NaN or inf in output {name!r} "
                                         "on the check inputs (are the model's weights finite?)")


class TensorRTRunner(Runner):
    """TensorRT on the artifact's engine, or one built (and cached) on first load.

    Options: ``rebuild`` (bool: build even if a cached or shipped engine fits), ``fp16``
    (bool: fp16 kernels for an fp32 ONNX; default on for artifacts exported for a Jetson
    profile), ``dla_core`` (int: build for that DLA core, GPU fallback), ``max_streams``
    (int: concurrent streams of a dynamic-shape engine on TensorRT 8.x, default 4), ``max_batch``
    (int: the largest batch of a dynamic-batch engine's profile, default 1: ``open_batch`` steps
    that many streams in one call),
    ``validate`` (bool, default True: check a freshly built engine against ONNX Runtime).
    """

    name = "tensorrt"
    extra = "tensorrt"

    def _onnx_fallback(self) -> str:
        """The way on without TensorRT, for its missing-install errors: the artifact's ONNX runs on ONNX Runtime.

        A bundle for a Jetson tried on a PC, or an artifact copied to a machine without a GPU,
        still runs on the CPU (the engine is built from that same ONNX, which export validated).
        """
        if not self.artifact.has_file("onnx"):
            return ""
        return (f"; or run its {self.artifact.manifest.files['onnx']} without TensorRT (CPU, ONNX Runtime): "
                "--backend onnxruntime")

    def _load(self) -> None:
        try:
            self._trt, self._cudart = _tensorrt(), _cudart()
        except MissingExtraError as exc:
            if "--backend onnxruntime" in str(exc):  # the too-old message says it already
                raise
            raise MissingExtraError(f"{exc}{self._onnx_fallback()}") from exc
        err, count = self._cudart.cudaGetDeviceCount()
        if int(err) != 0:
            raise BackendError(f"CUDA cannot see a GPU: {cuda_error_text(self._cudart, err)}; use --backend "
                               "onnxruntime or openvino meanwhile")
        if count == 0:
            raise BackendError("no CUDA GPU is visible: the tensorrt backend needs an NVIDIA GPU; "
                               "use --backend onnxruntime or openvino")
        trt = self._trt
        self.facts = te.device_facts(trt, self._cudart, _check)
        self.build_options = self._build_options()
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = te._create("runtime", trt.Runtime, logger)
        if self.build_options.dla_core is not None:
            # IRuntime defaults to DLA core -1: without this, an engine built for core 1 may run on core 0.
            self._runtime.DLA_core = int(self.build_options.dla_core)
        self.engine_source = ""  # "shipped" | "cache" | "built", for bench/report
        self.engine_path: Path | None = None
        self._pending: tuple[Path, dict[str, Any], bytes] | None = None  # a new engine, cached after its check
        data = self._engine_bytes()
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"TensorRT {trt.__version__} cannot deserialize the {self.engine_source} engine "
                               f"of {self.artifact.directory.name} (its log above says why); load with rebuild=True")
        self._inputs, self._outputs, dynamic = [], [], False
        self._device_dtypes: dict[str, str] = {}  # tensor -> its dtype in the engine (device buffers)
        boundary = self._boundary_dtypes()
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dims = list(self.engine.get_tensor_shape(name))
            dynamic |= any(d < 0 for d in dims)
            self._device_dtypes[name] = dtype = te.numpy_dtype(self.engine.get_tensor_dtype(name), name)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(
                TensorSpec(name, [d if d >= 0 else "?" for d in dims], boundary.get((name, dtype), dtype)))
        # TensorRT 8.x: one optimization profile per context in concurrent use (10.x shares).
        shared = te.version_tuple(trt.__version__) >= (10,)
        profiles = int(getattr(self.engine, "num_optimization_profiles", 1))
        self._free_profiles: list[int] | None = None if (shared or not dynamic) else list(range(profiles))
        self._call: dict[str, Any] | None = None  # context, stream and buffers of infer()

    def _boundary_dtypes(self) -> dict[tuple[str, str], str]:
        """``{(tensor, "int32"): "int64"}`` for the manifest's int64 tensors on TensorRT 8.x, whose parser makes
        them INT32: the runner feeds and returns int64 and casts at the boundary."""
        if te.version_tuple(self._trt.__version__) >= (10,):
            return {}
        from edgevid.runtime.artifact import expected_io

        inputs, outputs = expected_io(self.manifest)
        return {(t.name, "int32"): "int64" for t in [*inputs, *outputs] if t.dtype == "int64"}

    def device_dtype(self, name: str) -> str:
        """The dtype of tensor ``name`` in the engine (its device buffers), which may differ from the manifest's."""
        return self._device_dtypes[name]

    def to_device(self, name: str, array: np.ndarray) -> np.ndarray:
        """``array`` in the engine's dtype for tensor ``name`` (int64 -> int32 on TensorRT 8.x, range-checked)."""
        dtype = self._device_dtypes[name]
        if dtype == "int32" and np.asarray(array).dtype == np.int64:
            return te.narrow_int64(np.asarray(array), name)
        return np.ascontiguousarray(array, dtype=dtype)

    def load(self) -> TensorRTRunner:
        """Load; a freshly built engine is checked against ONNX Runtime, then cached."""
        if self.is_loaded:
            return self
        super().load()
        if self._pending is not None:
            folder, key, data = self._pending
            self._pending = None
            check = None
            try:
                if self.options.get("validate", True):
                    check = self._check_against_onnxruntime()
            except BaseException:
                self.close()
                raise
            self.engine_path = te.save_cached(folder, key, data, {"check_against_onnxruntime": check})
        return self

    def _build_options(self) -> te.BuildOptions:
        m = self.manifest
        fp16 = self.options.get("fp16")
        if fp16 is None:  # Jetson profiles: fp16 kernels by default (2x the fp32 throughput there)
            from edgevid.devices.profiles import find_profile

            profile = find_profile(m.device)
            fp16 = bool(profile is not None and profile.jetson and m.precision == "fp32")
        dla = self.options.get("dla_core")
        streams = int(self.options.get("max_streams", te.DEFAULT_PROFILES))
        if streams < 1:
            raise BackendError(f"max_streams must be >= 1, got {streams}")
        shared = te.version_tuple(self._trt.__version__) >= (10,)  # contexts share profile 0 from 10.0
        batch = int(self.options.get("max_batch", 1))
        if not 1 <= batch <= 1024:
            raise BackendError(f"max_batch must be between 1 and 1024, got {batch}")
        return te.BuildOptions(precision=m.precision, fp16_kernels=bool(fp16) and m.precision == "fp32",
                               dla_core=None if dla is None else int(dla), profiles=1 if shared else streams,
                               max_batch=batch)

    def _engine_bytes(self) -> bytes:
        """The serialized engine: shipped if it fits, else cached, else built now (see the module docstring)."""
        onnx = self.artifact.verified_file("onnx")
        rebuild = bool(self.options.get("rebuild"))
        shipped = self._shipped_engine()
        if shipped is not None and not rebuild:
            self.engine_source, self.engine_path = "shipped", shipped
            return shipped.read_bytes()
        key = te.engine_key(sha256_file(onnx), self.facts, self.build_options)
        folder = te.cache_folder(self.manifest.model, key)
        cached = None if rebuild else te.load_cached(folder, key)
        if cached is not None:
            self.engine_source, self.engine_path = "cache", folder / te.ENGINE_NAME
            return cached
        opts = self.build_options
        what = "fp16 kernels" if opts.fp16_kernels else self.manifest.precision
        te.say(f"building a TensorRT {self._trt.__version__} engine from {self.artifact.directory.name}/{onnx.name} "
               f"for {self.facts.gpu} ({what}{f', DLA core {opts.dla_core}' if opts.dla_core is not None else ''}); "
               f"the first load takes a while, later loads reuse it from {folder}")
        data = te.build_engine(self._trt, onnx, opts, timing_cache=te.timing_cache_path(self.facts))
        self.engine_source = "built"
        self._pending = (folder, key, data)
        return data

    def _shipped_engine(self) -> Path | None:
        """The artifact's engine if it was built by this TensorRT for this GPU (never deserialize another's)
        with the build options asked for now (a DLA core, fp16 kernels, streams: else it is not what was asked)."""
        if not self.manifest.files.get("engine"):
            return None
        built = self.manifest.build.get("tensorrt", {})
        recorded = built.get("device") if isinstance(built, dict) else None
        mine = {"tensorrt": self.facts.tensorrt, "gpu": self.facts.gpu,
                "compute_capability": self.facts.compute_capability, "sm_count": self.facts.sm_count}
        where = self.artifact.directory.name
        if not isinstance(recorded, dict) or {k: recorded.get(k) for k in mine} != mine:
            theirs = (f"TensorRT {recorded.get('tensorrt')} on {recorded.get('gpu')}" if isinstance(recorded, dict)
                      else "an unrecorded TensorRT and GPU")
            te.say(f"the engine in {where} was built by {theirs}; this is TensorRT "
                   f"{self.facts.tensorrt} on {self.facts.gpu}: using an engine built from model.onnx instead")
            return None
        differ = te.options_differ(built.get("options"), self.build_options, dynamic=self._dynamic_shapes())
        if differ:
            te.say(f"the engine in {where} was built with other options ({'; '.join(differ)}): using an engine "
                   "built from model.onnx with the options asked for instead")
            return None
        return self.artifact.verified_file("engine")

    def _dynamic_shapes(self) -> bool:
        """True if an input or state of the manifest has a dynamic dim (its engine has optimization profiles)."""
        shapes = [t.shape for t in self.manifest.inputs] + [s.shape for s in self.manifest.states]
        return any(not isinstance(d, int) for shape in shapes for d in shape)

    def _check_against_onnxruntime(self) -> dict[str, Any]:
        """The new engine and ONNX Runtime (CPU) on the same deterministic inputs; raises past the tolerance."""
        from edgevid.runtime import crosscheck
        from edgevid.runtime.preprocess import preprocess_frame

        m = self.manifest
        rng = np.random.default_rng(0)
        steps = max(2, m.sampling.frames)
        images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(steps)]
        if m.motion is not None:  # a flow / RGB-difference model takes the stacks the host makes
            from edgevid.runtime.motion import motion_inputs

            images += [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(m.motion.length)]
            frames = motion_inputs(images, m.motion, m.preprocess)[None]
        else:
            frames = np.stack([preprocess_frame(image, m.preprocess) for image in images])[None]
        ort = crosscheck.onnxruntime_runner(self.artifact.verified_file("onnx"))
        try:
            if m.mode == "clip":
                got, want = [crosscheck.run_clip(self.infer, frames, 1)], [crosscheck.run_clip(ort, frames, 1)]
            else:
                got = crosscheck.run_stream(self.infer, m.states, frames, 1)
                want = crosscheck.run_stream(ort, m.states, frames, 1)
        finally:
            self._release_call()
        key = "int8" if m.precision == "int8" else "fp16" if (m.precision == "fp16" or self.build_options.fp16_kernels) \
            else "fp32"
        _require_finite(got, want)
        return crosscheck.compare("tensorrt", got, want, crosscheck.DEFAULT_TOLERANCE[key], reference="ONNX Runtime")

    @property
    def model_label(self) -> str:
        """The engine file."""
        where = self.engine_path.name if self.engine_path else "engine"
        return f"{self.artifact.directory.name}/{where}"

    # -- contexts ----------------------------------------------------------------------------

    def _context(self, stream: Any) -> tuple[Any, int | None]:
        """A new execution context on ``stream`` and the optimization profile it holds (None: shared)."""
        context = te._create("execution context", self.engine.create_execution_context)
        if self._free_profiles is None:
            return context, None
        if not self._free_profiles:
            raise BackendError(
                f"TensorRT {self._trt.__version__} needs one optimization profile per concurrent stream of a "
                f"dynamic-shape engine, and all {self.engine.num_optimization_profiles} are in use: close a stream, "
                "load with max_streams=N, or export with --target tensorrt (static shapes have no such limit)")
        index = self._free_profiles.pop(0)
        if not context.set_optimization_profile_async(index, int(stream)):
            self._free_profiles.insert(0, index)
            raise BackendError(f"TensorRT refused optimization profile {index} for a new context")
        return context, index

    def _release_profile(self, index: int | None) -> None:
        if index is not None and self._free_profiles is not None:
            self._free_profiles.append(index)
            self._free_profiles.sort()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One synchronous call with every input explicit (not thread-safe: one context, reused).

        Creating an execution context allocates its activation memory, so the context, its
        CUDA stream and the device buffers are made once and grown when a call needs more.
        """
        self._require_loaded()
        cuda = self._cudart
        if self._call is None:
            stream = _check(cuda.cudaStreamCreate())
            try:
                context, profile = self._context(stream)
            except BaseException:
                cuda.cudaStreamDestroy(stream)
                raise
            self._call = {"context": context, "profile": profile, "stream": stream, "buffers": {}}
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
            array = self.to_device(spec.name, np.asarray(feeds[spec.name], dtype=spec.dtype))
            if not context.set_input_shape(spec.name, array.shape):
                raise BackendError(
                    f"TensorRT refused {spec.name} of shape {list(array.shape)}: outside the engine's optimization "
                    f"profile (built for batch 1 to {self.build_options.max_batch}); load with max_batch=N for N "
                    "streams in one call")
            _check(cuda.cudaMemcpyAsync(device(spec.name, array.nbytes), array.ctypes.data, array.nbytes,
                                        cuda.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        hosts = {}
        for spec in self._outputs:
            hosts[spec.name] = np.empty(tuple(context.get_tensor_shape(spec.name)), self._device_dtypes[spec.name])
            device(spec.name, hosts[spec.name].nbytes)
        if not context.execute_async_v3(int(stream)):
            raise BackendError("TensorRT execution failed (its log above says why)")
        for name, host in hosts.items():
            _check(cuda.cudaMemcpyAsync(host.ctypes.data, buffers[name][0], host.nbytes,
                                        cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        _check(cuda.cudaStreamSynchronize(stream))
        specs = {spec.name: spec.dtype for spec in self._outputs}
        return {name: host.astype(specs[name], copy=False) for name, host in hosts.items()}

    def _release_call(self) -> None:
        """Free the context, buffers and CUDA stream of ``infer``."""
        if getattr(self, "_call", None) is None:
            return
        call, self._call = self._call, None
        for ptr, _ in call["buffers"].values():
            self._cudart.cudaFree(ptr)
        call["context"] = None
        self._release_profile(call["profile"])
        self._cudart.cudaStreamDestroy(call["stream"])

    def open_stream(self) -> TrtStream:
        """A new execution context with its own device state buffers."""
        self._require_stream_mode()
        return TrtStream(self)

    def open_batch(self) -> Any:
        """Streams stepped together through ``infer``, their states rows of host buffers; the engine's
        profile takes up to ``max_batch`` of them in one call (a dynamic-batch artifact, see
        ``edgevid.runtime.backends.batch``)."""
        from edgevid.runtime.backends.batch import NumpyStreamBatch

        return NumpyStreamBatch(self, max_rows=self.build_options.max_batch)

    def close(self) -> None:
        """Free the buffers of ``infer`` and drop the engine."""
        self._release_call()
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
        self._device: list[int] = []
        self._stream = _check(cuda.cudaStreamCreate())
        self._profile: int | None = None
        try:
            self._context, self._profile = runner._context(self._stream)
        except BaseException:
            cuda.cudaStreamDestroy(self._stream)
            raise
        frame, logits = runner.frame_input, runner.logits_output
        frame_shape = batch1_shape(frame)
        # Pinned and device buffers hold the engine's dtypes (int32 for an int64 tensor on TensorRT 8.x).
        self._frame = _Pinned(cuda, frame_shape, runner.device_dtype(frame.name))
        self._logits = _Pinned(cuda, batch1_shape(logits), runner.device_dtype(logits.name))
        self._frame_name, self._logits_dtype = frame.name, logits.dtype
        self._frame_dev = self._alloc(self._frame.nbytes)
        self._logits_dev = self._alloc(self._logits.nbytes)
        self._context.set_input_shape(frame.name, frame_shape)
        self._context.set_tensor_address(frame.name, self._frame_dev)
        self._context.set_tensor_address(logits.name, self._logits_dev)
        self._states = m.states
        self._init = [runner.to_device(s.input, initial_state(s)) for s in m.states]
        self._buffers = [(self._alloc(v.nbytes), self._alloc(v.nbytes)) for v in self._init]
        for s in m.states:
            self._context.set_input_shape(s.input, s.shape)
        bound = {frame.name, logits.name, *m.state_input_names, *m.state_output_names}
        for spec in runner.output_specs():  # outputs the session does not read still need memory
            if spec.name not in bound:
                shape = tuple(self._context.get_tensor_shape(spec.name))
                size = int(np.prod(shape)) * np.dtype(runner.device_dtype(spec.name)).itemsize
                self._context.set_tensor_address(spec.name, self._alloc(size))
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
        self._frame.array[...] = self.runner.to_device(self._frame_name, frame)
        for s, bufs in zip(self._states, self._buffers):
            ctx.set_tensor_address(s.input, bufs[p])
            ctx.set_tensor_address(s.output, bufs[1 - p])
        _check(cuda.cudaMemcpyAsync(self._frame_dev, self._frame.ptr, self._frame.nbytes,
                                    cuda.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        if not ctx.execute_async_v3(int(self._stream)):
            raise BackendError("TensorRT execution failed (its log above says why)")
        _check(cuda.cudaMemcpyAsync(self._logits.ptr, self._logits_dev, self._logits.nbytes,
                                    cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        _check(cuda.cudaStreamSynchronize(self._stream))
        self._parity ^= 1
        return self._logits.array.astype(self._logits_dtype)  # a copy: the caller owns it

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
        """Free the device buffers, pinned buffers, CUDA stream and context; give back its profile."""
        if self._stream is None:
            return
        for ptr in self._device:
            self._cuda.cudaFree(ptr)
        self._device = []
        self._frame.free()
        self._logits.free()
        self._context = None
        self.runner._release_profile(self._profile)
        self._profile = None
        self._cuda.cudaStreamDestroy(self._stream)
        self._stream = None

