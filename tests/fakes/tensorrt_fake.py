"""Fake ``tensorrt`` and ``cuda.bindings.runtime`` modules for the TensorRT tests on a machine without a GPU.

They record every call and enforce the version rules edgevid must get right (read from the
TensorRT 8.5 / 8.6 / 10.3 / 11 sources and docs):

- 8.x: ONNX parsing needs an ``EXPLICIT_BATCH`` network; a network with Q/DQ layers builds
  only with ``BuilderFlag.INT8`` (else the build returns None, as 8.x does).
- 10.x: ``STRONGLY_TYPED`` networks refuse the ``FP16`` / ``INT8`` flags; ``EXPLICIT_BATCH`` is
  ignored. 11.x: no ``EXPLICIT_BATCH``, ``FP16`` or ``INT8`` at all.
- Dynamic shapes need an optimization profile; on 8.x each execution context in concurrent
  use needs its own (the first context gets profile 0 implicitly, the others none until
  ``set_optimization_profile_async``, and a profile held by a live context is refused);
  10.x shares profile 0.
- 8.5.x's ``nptype`` fails as it does with numpy 1.24-1.26 (``np.bool``).
- An engine serialized by another version does not deserialize (None).
- The ONNX parser's types are onnx-tensorrt's ``convertDtype``: no UINT64 (nor UINT16/32,
  INT16, STRING) on any version; 8.x makes INT64 inputs and outputs INT32 (the engine's I/O
  is INT32 and it reads/writes int32 there), 10.x keeps INT64.
- Weakly typed networks (8.x; 10.x without ``STRONGLY_TYPED``) run fp32 kernels unless
  ``BuilderFlag.FP16`` is set, whatever fp16 types the ONNX has (NVIDIA/TensorRT#3057);
  strongly typed ones run the ONNX's types. The engine records which (``kernels``).
- ``IRuntime.DLA_core`` defaults to -1; a DLA engine runs on that core (core 0 when unset).
- cuda-python's two layouts: ``cuda.bindings.runtime`` (>= 12.6.1) or only ``cuda.cudart``
  (12.2 to 12.6.0); the machine's libcudart version is separate from cuda-python's.

Device memory is host memory here (ctypes buffers), so an engine really runs: its
``execute_async_v3`` reads the inputs at the bound addresses, runs the ONNX with ONNX
Runtime, and writes the outputs to the bound addresses. State double-buffering, resets and
two interleaved streams are therefore checked on real numbers.
"""

from __future__ import annotations

import base64
import ctypes
import enum
import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Recorder:
    """What the fakes were asked to do."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    builds: int = 0
    deserialized: int = 0
    device: dict[int, Any] = field(default_factory=dict)  # address -> ctypes buffer (cudaMalloc)
    host: dict[int, Any] = field(default_factory=dict)  # cudaMallocHost
    streams: set[int] = field(default_factory=set)
    corrupt: float = 1.0  # multiply every output: a wrong engine, for the validation test

    def names(self, prefix: str) -> list[Any]:
        return [args for name, args in self.calls if name == prefix]


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


@dataclass
class Props:
    name: bytes = b"Orin"
    major: int = 8
    minor: int = 7
    multiProcessorCount: int = 8


def make_cudart(rec: Recorder, *, device_count: int = 1, count_error: int = 0, props: Props | None = None,
                runtime_version: int = 12060, driver_version: int = 12060) -> types.ModuleType:
    """A fake ``cuda.bindings.runtime`` whose device memory is host memory."""
    m = types.ModuleType("cuda.bindings.runtime")
    ok = CudaError.cudaSuccess
    m.cudaError_t = CudaError
    m.cudaMemcpyKind = MemcpyKind
    props = props or Props()

    def alloc(table: dict[int, Any], n: int) -> tuple[Any, int]:
        buf = (ctypes.c_char * int(n))()
        table[ctypes.addressof(buf)] = buf
        return ok, ctypes.addressof(buf)

    def owner(ptr: int, n: int) -> bool:
        return any(a <= ptr and ptr + n <= a + ctypes.sizeof(b) for a, b in rec.device.items())

    def memcpy(dst: int, src: int, n: int, kind: Any, stream: int) -> tuple[Any]:
        rec.calls.append(("cudaMemcpyAsync", (int(kind), n)))
        assert int(stream) in rec.streams, "copy on a destroyed or unknown stream"
        device_side = dst if int(kind) == MemcpyKind.cudaMemcpyHostToDevice else src
        assert owner(int(device_side), n), "copy touches memory that is not a live device allocation"
        ctypes.memmove(int(dst), int(src), int(n))
        return (ok,)

    def memset(ptr: int, value: int, n: int, stream: int) -> tuple[Any]:
        assert owner(int(ptr), n)
        ctypes.memset(int(ptr), int(value), int(n))
        return (ok,)

    def free(table: dict[int, Any], ptr: int) -> tuple[Any]:
        assert int(ptr) in table, "free of an address that is not allocated (double free?)"
        del table[int(ptr)]
        return (ok,)

    def stream_create() -> tuple[Any, int]:
        handle = 0x1000 + len(rec.streams) + len(rec.calls)
        rec.streams.add(handle)
        return ok, handle

    def stream_destroy(handle: int) -> tuple[Any]:
        rec.streams.discard(int(handle))
        return (ok,)

    m.cudaGetDeviceCount = lambda: (CudaError(count_error), device_count if not count_error else 0)
    m.cudaGetDeviceProperties = lambda i: (ok, props)
    m.cudaRuntimeGetVersion = lambda: (ok, runtime_version)
    m.cudaDriverGetVersion = lambda: (ok, driver_version)
    m.cudaGetErrorName = lambda err: (ok, CudaError(int(err)).name.encode())
    m.cudaMalloc = lambda n: alloc(rec.device, n)
    m.cudaMallocHost = lambda n: alloc(rec.host, n)
    m.cudaFree = lambda p: free(rec.device, p)
    m.cudaFreeHost = lambda p: free(rec.host, p)
    m.cudaMemcpyAsync = memcpy
    m.cudaMemsetAsync = memset
    m.cudaStreamCreate = stream_create
    m.cudaStreamDestroy = stream_destroy
    m.cudaStreamSynchronize = lambda s: (ok,)
    return m


_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8", 11: "FLOAT"}
_ONNX_NAMES = {4: "UINT16", 5: "INT16", 8: "STRING", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128"}


def make_tensorrt(version: str, rec: Recorder, *, dla_cores: int = 0,
                  dla_cannot: tuple[str, ...] = ("Concat", "Slice"), builder_fails: bool = False) -> types.ModuleType:
    """A fake ``tensorrt`` of ``version`` (8.5.x, 8.6.x, 10.x, 11.x behaviours)."""
    major = int(version.split(".")[0])
    m = types.ModuleType("tensorrt")
    m.__version__ = version
    net_flags = {}
    if major < 11:
        net_flags["EXPLICIT_BATCH"] = 0
    if major >= 10:
        net_flags["STRONGLY_TYPED"] = 1
    m.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_flags)
    builder_flags = ["TF32", "GPU_FALLBACK"] + (["FP16", "INT8"] if major < 11 else [])
    m.BuilderFlag = enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(builder_flags)})
    m.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    m.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    m.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    minor = int(version.split(".")[1])
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"] + (["FP8"] if (major, minor) >= (8, 6) else []) \
        + (["BF16", "INT64", "INT4"] if major >= 10 else [])
    m.DataType = enum.IntEnum("DataType", {n: i for i, n in enumerate(dtypes)})

    def nptype(dt: Any) -> Any:
        if version.startswith("8.5"):
            raise AttributeError("module 'numpy' has no attribute 'bool'")  # 8.5.2 with numpy 1.24-1.26
        return np.dtype({"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "BOOL": "bool",
                         "UINT8": "uint8", "INT64": "int64"}[dt.name]).type

    m.nptype = nptype

    class Logger:
        VERBOSE, INFO, WARNING, ERROR = 4, 3, 2, 1

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    m.Logger = Logger

    def log(text: str) -> None:
        rec.logs.append(text)

    @dataclass
    class Tensor:
        name: str
        shape: tuple[int, ...]

    @dataclass
    class Layer:
        name: str
        type: str

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.layers: list[Layer] = []
            self.onnx = ""
            self.qdq = False
            self.fp16 = False  # fp16 types in the ONNX (hints only, on a weakly typed network)

        def strongly_typed(self) -> bool:
            return major >= 11 or (major >= 10 and bool(self.flags & (1 << 1)))

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, i: int) -> Layer:
            return self.layers[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        def parse_from_file(self, path: str) -> bool:
            import onnx

            if major < 10 and not self.network.flags & (1 << 0):
                self.errors.append("Network must have explicit batch (EXPLICIT_BATCH)")
                return False
            proto = onnx.load(path)
            inits = {i.name for i in proto.graph.initializer}
            typed = [(v.name, v.type.tensor_type.elem_type) for v in [*proto.graph.input, *proto.graph.output]]
            typed += [(i.name, i.data_type) for i in proto.graph.initializer]
            for name, elem in typed:
                if elem not in _ONNX_TO_TRT:  # onnx-tensorrt convertDtype: "Unsupported ONNX data type"
                    self.errors.append(f"Unsupported ONNX data type: {_ONNX_NAMES.get(elem, elem)} ({elem}) "
                                       f"of tensor {name!r}")
                    return False
            for value in proto.graph.input:
                if value.name in inits:
                    continue
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(value.name, dims))
            self.network.layers = [Layer(n.name or f"{n.op_type}_{i}", n.op_type) for i, n in enumerate(proto.graph.node)]
            self.network.qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)
            self.network.fp16 = any(elem == 10 for _, elem in typed) or any(
                a.name == "to" and a.i == 10 for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute)
            self.network.onnx = str(path)
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    m.OnnxParser = OnnxParser

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob) or b"fake-timing-cache"

        def serialize(self) -> bytes:
            return self.blob + b"+"

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.profiles: list[Profile] = []
            self.default_device_type = m.DeviceType.GPU
            self.DLA_core = -1
            self.timing: TimingCache | None = None

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            rec.calls.append(("set_memory_pool_limit", size))

        def set_flag(self, flag: Any) -> None:
            rec.calls.append(("set_flag", flag.name))
            self.flags.add(flag.name)

        def clear_flag(self, flag: Any) -> None:
            rec.calls.append(("clear_flag", flag.name))
            self.flags.discard(flag.name)

        def get_flag(self, flag: Any) -> bool:
            return flag.name in self.flags

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def can_run_on_DLA(self, layer: Layer) -> bool:  # noqa: N802 - TensorRT's name
            return layer.type not in dla_cannot

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            rec.calls.append(("create_timing_cache", bytes(blob)))
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.timing

    class Builder:
        def __init__(self, logger: Logger) -> None:
            if builder_fails:
                raise TypeError("pybind11::init(): factory function returned nullptr")
            self.num_DLA_cores = dla_cores

        def create_network(self, flags: int = 0) -> Network:
            rec.calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            rec.builds += 1
            rec.calls.append(("build", {"network_flags": network.flags, "flags": sorted(config.flags),
                                        "profiles": len(config.profiles), "dla": config.DLA_core,
                                        "device": int(config.default_device_type)}))
            typed = network.strongly_typed()
            if typed and config.flags & {"FP16", "INT8"}:
                log("Error Code 3: API Usage Error (strongly typed networks refuse the FP16/INT8 builder flags)")
                return None
            if network.qdq and not typed and "INT8" not in config.flags:
                log("Error Code 4: Internal Error (Int8 precision has been set for a layer or layer output, "
                    "but int8 is not configured in the builder)")
                return None
            if any(-1 in t.shape for t in network.inputs) and not config.profiles:
                log("Error Code 4: Network has dynamic or shape inputs, but no optimization profile has been defined.")
                return None
            if int(config.default_device_type) == int(m.DeviceType.DLA):
                if not config.flags & {"FP16", "INT8"} or not 0 <= config.DLA_core < dla_cores:
                    log("Error Code 2: DLA needs FP16 or INT8 and an existing DLA core")
                    return None
            if typed:  # the ONNX's own types
                kernels = "int8" if network.qdq else "fp16" if network.fp16 else "fp32"
            else:  # weakly typed: fp16 types are hints; only the builder flags allow lower precision
                kernels = "int8" if network.qdq and "INT8" in config.flags else \
                    "fp16" if "FP16" in config.flags else "fp32"
            # Like a real engine, it carries the network (here: the ONNX bytes), not a path to it.
            blob = {"fake_tensorrt": version, "onnx": base64.b64encode(Path(network.onnx).read_bytes()).decode(),
                    "profiles": len(config.profiles), "flags": sorted(config.flags), "dla": config.DLA_core,
                    "kernels": kernels, "profile_shapes": [p.shapes for p in config.profiles]}
            rec.calls.append(("kernels", kernels))
            return json.dumps(blob).encode()

    m.Builder = Builder

    class Engine:
        def __init__(self, blob: dict[str, Any]) -> None:
            import onnx
            import onnxruntime as ort

            self.blob = blob
            data = base64.b64decode(blob["onnx"])
            proto = onnx.load_from_string(data)
            inits = {i.name for i in proto.graph.initializer}
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.io: list[tuple[str, tuple[int, ...], str, int]] = []
            self.onnx_types: dict[str, Any] = {}  # what ONNX Runtime feeds and returns
            self.dla_core: int | None = None  # the DLA core it runs on (set by the runtime)
            for kind, values in ((m.TensorIOMode.INPUT, proto.graph.input), (m.TensorIOMode.OUTPUT, proto.graph.output)):
                for v in values:
                    if v.name in inits:
                        continue
                    t = v.type.tensor_type
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
                    trt_type = _ONNX_TO_TRT[t.elem_type]
                    if trt_type == "INT64" and major < 10:
                        trt_type = "INT32"  # 8.x convertDtype: INT64 -> kINT32
                    self.io.append((v.name, dims, trt_type, kind))
                    self.onnx_types[v.name] = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
            self.num_optimization_profiles = blob["profiles"]
            # name -> (min, opt, max) per profile: set_input_shape refuses a shape outside them
            self.profile_shapes = [{k: tuple(map(tuple, v)) for k, v in p.items()} for p in blob.get("profile_shapes", [])]
            self.dynamic = any(-1 in dims for _, dims, _, _ in self.io)
            self.held: dict[int, int] = {}  # profile -> id of the context holding it
            self.created = 0

        @property
        def num_io_tensors(self) -> int:
            return len(self.io)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def _find(self, name: str) -> tuple:
            return next(t for t in self.io if t[0] == name)

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._find(name)[1]

        def get_tensor_dtype(self, name: str) -> Any:
            return m.DataType[self._find(name)[2]]

        def get_tensor_mode(self, name: str) -> Any:
            return self._find(name)[3]

        def create_execution_context(self) -> Context:
            self.created += 1
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.profile = -1
            if not engine.dynamic or major >= 10:
                self.profile = 0
            elif 0 not in engine.held and engine.created == 1:  # the first context gets profile 0
                self._take(0)

        def _take(self, index: int) -> None:
            self.engine.held = {p: c for p, c in self.engine.held.items() if c != id(self)}
            self.engine.held[index] = id(self)
            self.profile = index

        def __del__(self) -> None:
            held = getattr(self.engine, "held", {})
            for p in [p for p, c in held.items() if c == id(self)]:
                del held[p]

        @property
        def active_optimization_profile(self) -> int:
            return self.profile

        def set_optimization_profile_async(self, index: int, stream: int) -> bool:
            rec.calls.append(("set_optimization_profile_async", index))
            if not 0 <= index < max(1, self.engine.num_optimization_profiles):
                log(f"profile {index} does not exist")
                return False
            if major < 10 and self.engine.held.get(index, id(self)) != id(self):
                log(f"profile {index} is in use by another execution context")
                return False
            if major < 10:
                self._take(index)
            else:
                self.profile = index
            return True

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(d) for d in shape)
            if self.engine.dynamic and self.engine.profile_shapes:
                low, _, high = self.engine.profile_shapes[max(self.profile, 0)].get(name, (shape, shape, shape))
                if not all(a <= d <= b for a, d, b in zip(low, shape, high)):
                    log(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check failed, "
                        f"condition: {name} dimensions within the profile's [{low}, {high}])")
                    return False
            self.shapes[name] = shape
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            dims = self.engine.get_tensor_shape(name)
            batch = next((s[0] for s in self.shapes.values() if s), 1)
            return self.shapes.get(name) or tuple(batch if d < 0 else d for d in dims)

        def execute_async_v3(self, stream: int) -> bool:
            rec.calls.append(("execute", self.profile))
            if self.engine.dynamic and self.profile < 0:
                log("Error Code 3: API Usage Error (the context has no optimization profile)")
                return False
            feeds = {}
            for name, _, trt_type, kind in self.engine.io:
                if kind != m.TensorIOMode.INPUT:
                    continue
                shape = self.get_tensor_shape(name)
                dtype = np.dtype(nptype_safe(trt_type))
                nbytes = int(np.prod(shape)) * dtype.itemsize
                raw = ctypes.string_at(self.addresses[name], nbytes)
                feeds[name] = np.frombuffer(raw, dtype).reshape(shape).astype(self.engine.onnx_types[name])
            names = [o.name for o in self.engine.session.get_outputs()]
            kinds = {n: t for n, _, t, _ in self.engine.io}
            for name, value in zip(names, self.engine.session.run(names, feeds)):
                value = value * rec.corrupt if rec.corrupt != 1.0 else value
                value = np.ascontiguousarray(value, dtype=nptype_safe(kinds[name]))  # the engine's output type
                ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
            return True

    def nptype_safe(name: str) -> Any:
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                "BOOL": np.bool_, "UINT8": np.uint8}[name]

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.DLA_core = -1  # IRuntime's default  # noqa: N815 - TensorRT's name

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            rec.deserialized += 1
            try:
                blob = json.loads(bytes(data))
            except (ValueError, UnicodeDecodeError):
                log("Error Code 1: Serialization (not an engine)")
                return None
            if blob.get("fake_tensorrt") != version:
                log(f"Error Code 1: Serialization (engine built by TensorRT {blob.get('fake_tensorrt')}, "
                    f"this is {version})")
                return None
            engine = Engine(blob)
            if blob.get("dla", -1) >= 0:  # a DLA engine runs on the runtime's core (0 when unset)
                engine.dla_core = max(0, int(self.DLA_core))
            rec.calls.append(("deserialize", {"runtime_dla_core": int(self.DLA_core), "dla_core": engine.dla_core}))
            return engine

    m.Runtime = Runtime
    return m


def install(monkeypatch: Any, version: str = "10.3.0", *, cuda_layout: str = "bindings",
            libcudart: int | None = 12060, **options: Any) -> Recorder:
    """Put a fake ``tensorrt`` (``version``) and cuda-python into ``sys.modules``.

    ``cuda_layout``: ``"bindings"`` (cuda-python >= 12.6.1: ``cuda.bindings.runtime``, and the
    deprecated ``cuda.cudart`` alias) or ``"legacy"`` (12.2 to 12.6.0: ``cuda.cudart`` only).
    ``libcudart``: the machine's CUDA runtime (its libcudart.so; None: none found), which
    cuda-python's ``runtime_version`` is not. ``options``: ``device_count``, ``count_error``,
    ``props``, ``runtime_version``, ``driver_version`` go to the CUDA fake, the rest to the
    TensorRT fake.
    """
    from edgevid.runtime.backends import tensorrt_engine

    rec = Recorder()
    cuda_keys = {"device_count", "count_error", "props", "runtime_version", "driver_version"}
    trt = make_tensorrt(version, rec, **{k: v for k, v in options.items() if k not in cuda_keys})
    cudart = make_cudart(rec, **{k: v for k, v in options.items() if k in cuda_keys})
    cuda = types.ModuleType("cuda")
    cuda.__path__ = []  # a package, so `from cuda import cudart` looks for the submodule
    cuda.cudart = cudart
    modules = [("tensorrt", trt), ("cuda", cuda), ("cuda.cudart", cudart)]
    if cuda_layout == "bindings":
        bindings = types.ModuleType("cuda.bindings")
        bindings.__path__ = []
        bindings.runtime = cudart
        cuda.bindings = bindings
        modules += [("cuda.bindings", bindings), ("cuda.bindings.runtime", cudart)]
    else:
        assert cuda_layout == "legacy", cuda_layout
        modules += [("cuda.bindings", None), ("cuda.bindings.runtime", None)]  # None: ImportError
    for name, module in modules:
        if module is not None:
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(tensorrt_engine, "_libcudart_version", lambda: libcudart, raising=False)
    return rec


def engine_blob(path: str | Path) -> dict[str, Any]:
    """What a fake engine file records (version, flags, profiles)."""
    return json.loads(Path(path).read_bytes())
