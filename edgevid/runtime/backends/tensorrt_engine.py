"""TensorRT engines for the tensorrt backend: which flags a TensorRT version needs, building, caching.

Builder flags differ by TensorRT version, and getting them wrong fails the build or
silently changes precision (TensorRT 8.5 / 8.6 / 10.3 / 11 sources and docs):

- 8.x: networks need ``EXPLICIT_BATCH``; a Q/DQ (INT8) network builds only with
  ``BuilderFlag.INT8`` set, else the build fails ("int8 is not configured in the builder").
  Networks are weakly typed: the fp16 types of a ``--precision fp16`` ONNX are only hints,
  and without ``BuilderFlag.FP16`` the engine runs fp32 kernels (NVIDIA/TensorRT#3057), so
  an fp16 artifact sets it. The parser turns INT64 inputs and outputs into INT32; the
  backend casts at the boundary (``narrow_int64``).
- 10.x: ``EXPLICIT_BATCH`` is ignored; ``STRONGLY_TYPED`` networks keep the ONNX's types
  (Q/DQ included) and refuse the FP16 / INT8 flags; fp16 kernels for an fp32 ONNX need a
  weakly typed network with ``FP16`` (and ``INT8`` for its Q/DQ layers).
- 11.x: every network is strongly typed; there is no ``EXPLICIT_BATCH``, ``FP16`` or
  ``INT8`` flag: the engine runs the ONNX's own types (export ``--precision fp16`` for fp16).
- Dynamic shapes: on 8.x each execution context in concurrent use needs its own
  optimization profile, so an engine for ``profiles`` concurrent streams gets that many
  identical profiles; 10.x shares profile 0 between contexts.
- DLA (Jetson Xavier / Orin NX / AGX Orin): ``default_device_type = DLA``, ``DLA_core``,
  ``GPU_FALLBACK``, fp16 or int8 only (DLA has no fp32); layers DLA cannot run are named.

Engines built on first load go to the user cache (``edgevid.cache``: ``tensorrt/``), keyed by
everything that makes an engine valid: the ONNX's sha256, the TensorRT version, the GPU
(name, compute capability, SM count), the CUDA runtime and driver versions, and the build
options. The CUDA runtime is the machine's (its ``libcudart``), not cuda-python's: since CUDA
12, ``cudaRuntimeGetVersion`` is a compile-time constant, so cuda-python's names the CUDA that
cuda-python was built with, whatever the device has. A ``meta.json`` next to each engine (written atomically, like the engine) records
that key and the engine's sha256; anything different means a rebuild. The builder's timing
cache persists per GPU and TensorRT version, so a rebuild skips the kernel timing it did
before. A shipped engine (built by ``edgevid export --target tensorrt`` on the device) is used
only when the TensorRT version and GPU it records are this one's (deserializing an engine of
another TensorRT version is refused by TensorRT or, on some versions, crashes) and the build
options it records are the ones asked for now (``options_differ``): else a DLA core, fp16
kernels or more streams asked for would silently not be what runs.

The cache is a trust boundary: an engine is code the GPU runs, and a ``meta.json`` (sha256
included) proves nothing if someone else could write both. So, as ssh does with ``~/.ssh``,
the cache root ``tensorrt/``, each entry folder and each file in it must be a real folder or
file (never a link), owned by this user and not writable by group or others. Folders are
opened without following links and files are read and written relative to those open
folders (temp file + rename inside the entry, mode 0600; folders made 0700), so a link or a
folder swapped in between the check and the use is never followed. A cache that fails the
check is not used: one warning names the path and the fix, and the engine is built for this
run only (in memory).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import secrets
import stat
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgevid.cache import cache_dir
from edgevid.errors import EdgevidError, EdgevidWarning

# TensorRT DataType member -> numpy dtype name. Our own map, not trt.nptype: TensorRT 8.5.2's
# nptype uses np.bool, which numpy 1.24-1.26 (the numpy of JetPack 5's Python 3.8) lacks.
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
              "BOOL": "bool", "UINT8": "uint8"}
DEFAULT_PROFILES = 4  # concurrent streams of a dynamic-shape engine on TensorRT 8.x
ENGINE_NAME, META_NAME = "model.engine", "meta.json"
_FOLDER_MODE, _FILE_MODE = 0o700, 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_WARNED: set[str] = set()  # cache warnings already given in this process (one each)


class EngineError(EdgevidError):
    """A TensorRT engine cannot be built or used as asked."""


class UnsafeCacheError(EngineError):
    """A cache folder or file that someone else could have written (a link, another owner, group/other-writable)."""


def version_tuple(text: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``."""
    return tuple(int(p) for p in str(text).split(".")[:3] if p.isdigit())


def numpy_dtype(trt_dtype: Any, tensor: str) -> str:
    """The numpy dtype name of a TensorRT tensor type, or a clear error for one we cannot feed."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in TRT_DTYPES:
        raise EngineError(f"tensor {tensor!r} has TensorRT type {name}, which the runtime cannot feed or read "
                          "from numpy; export the model with fp32/fp16/int8 inputs and outputs")
    return TRT_DTYPES[name]


@dataclass(frozen=True)
class DeviceFacts:
    """What makes an engine valid on this machine (besides its ONNX and build options)."""

    tensorrt: str
    gpu: str
    compute_capability: str  # "8.7"
    sm_count: int
    cuda_runtime: int  # the machine's libcudart: 12060 = 12.6; 0 = none found
    cuda_driver: int


@dataclass(frozen=True)
class BuildOptions:
    """How an engine is built (recorded in its cache key)."""

    precision: str  # the artifact's: fp32 | fp16 (fp16 in the ONNX) | int8 (Q/DQ in the ONNX)
    fp16_kernels: bool = False  # let a weakly typed build pick fp16 kernels (TensorRT < 11)
    dla_core: int | None = None
    profiles: int = 1  # optimization profiles for dynamic inputs (ignored for static graphs)
    workspace_mib: int = 1024
    # The largest batch its profiles take (dynamic batch only): N streams stepped in one call
    # (edgevid.runtime.backends.batch); the profile's opt shape is this batch, its min 1.
    max_batch: int = 1


@dataclass(frozen=True)
class FlagPlan:
    """The network creation flags, builder flags to set and to clear, and notes for the user."""

    network: tuple[str, ...]
    set: tuple[str, ...]
    clear: tuple[str, ...]
    notes: tuple[str, ...] = ()


def plan_flags(version: tuple[int, ...], opts: BuildOptions) -> FlagPlan:
    """The flags TensorRT ``version`` needs to build ``opts`` (see the module docstring)."""
    major = version[0] if version else 0
    int8 = opts.precision == "int8"
    dla = opts.dla_core is not None
    if major >= 11:
        if dla:
            raise EngineError("DLA needs the TensorRT 10.x of JetPack 6 (TensorRT 11 has no DLA builds); "
                              "drop the DLA core option or use JetPack's TensorRT")
        notes = ()
        if opts.fp16_kernels and opts.precision == "fp32":
            notes = ("TensorRT 11 builds strongly typed networks only: this fp32 ONNX runs in fp32; "
                     "export with --precision fp16 for fp16 kernels",)
        return FlagPlan(network=("STRONGLY_TYPED",), set=(), clear=(), notes=notes)
    weak = opts.fp16_kernels or dla  # DLA runs fp16/int8 only: it needs the builder's precision flags
    if major >= 10 and not weak:
        # Strongly typed: the ONNX's types, Q/DQ included; FP16/INT8 flags are refused here.
        return FlagPlan(network=("STRONGLY_TYPED",), set=(), clear=("TF32",))
    network = ("EXPLICIT_BATCH",) if major < 10 else ()
    flags = []
    # 8.x is weakly typed even for an fp16 ONNX: its fp16 types need FP16 to be more than hints.
    if opts.fp16_kernels or dla or opts.precision == "fp16":
        flags.append("FP16")
    if int8:
        flags.append("INT8")  # 8.x refuses a Q/DQ network without it (weakly typed 10.x too)
    if dla:
        flags.append("GPU_FALLBACK")
    clear = () if "FP16" in flags else ("TF32",)  # without fp16 kernels, fp32 stays fp32 (no TF32)
    return FlagPlan(network=network, set=tuple(flags), clear=clear)


_CUDART_NAMES = ("libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0",
                 "/usr/local/cuda/lib64/libcudart.so")


@functools.lru_cache(maxsize=1)
def _libcudart_version() -> int | None:
    """``cudaRuntimeGetVersion`` of this machine's libcudart (JetPack's CUDA on a Jetson), or None."""
    for name in _CUDART_NAMES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if lib.cudaRuntimeGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return int(version.value)
    return None


def device_facts(trt: Any, cudart: Any, check: Any) -> DeviceFacts:
    """The facts of GPU 0 and this TensorRT (``check`` unpacks cuda-python results).

    The CUDA runtime is the machine's libcudart's, never cuda-python's (see the module docstring).
    """
    prop = check(cudart.cudaGetDeviceProperties(0))
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return DeviceFacts(tensorrt=str(trt.__version__), gpu=name.rstrip("\x00"),
                       compute_capability=f"{int(prop.major)}.{int(prop.minor)}",
                       sm_count=int(prop.multiProcessorCount),
                       cuda_runtime=_libcudart_version() or 0,
                       cuda_driver=int(check(cudart.cudaDriverGetVersion())))


def options_differ(recorded: Any, opts: BuildOptions, *, dynamic: bool) -> list[str]:
    """How the build options a shipped engine records differ from ``opts`` (``[]``: none).

    The profile count and batch matter only for a dynamic-shape engine (a static one has no
    profile); an engine recorded before ``max_batch`` existed was built for batch 1.
    """
    if not isinstance(recorded, dict):
        return ["no build options recorded"]
    mine = asdict(opts)
    keys = [k for k in mine if dynamic or k not in _PROFILE_OPTIONS]
    before = {"max_batch": 1}
    return [f"{k} {recorded.get(k, before.get(k))!r} (now {mine[k]!r})" for k in keys
            if recorded.get(k, before.get(k)) != mine[k]]


_PROFILE_OPTIONS = ("profiles", "max_batch")


def narrow_int64(array: Any, tensor: str) -> Any:
    """``array`` (int64) as int32 for a TensorRT 8.x engine, whose parser made the tensor INT32."""
    import numpy as np

    info = np.iinfo(np.int32)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise EngineError(f"tensor {tensor!r} holds int64 values outside int32, which TensorRT 8.x engines use "
                          "for int64 tensors; use TensorRT 10 (JetPack 6.1) or --backend onnxruntime")
    return np.ascontiguousarray(array, dtype=np.int32)


def _key(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def engine_key(onnx_sha256: str, facts: DeviceFacts, opts: BuildOptions) -> dict[str, Any]:
    """Everything a cached engine must have been built from (the meta file holds it)."""
    return {"onnx_sha256": onnx_sha256, "device": asdict(facts), "build": asdict(opts)}


def cache_folder(model: str, key: dict[str, Any]) -> Path:
    """``<cache>/tensorrt/<model>-<key hash>``: one folder per distinct engine."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)[:48]
    return cache_dir() / "tensorrt" / f"{safe}-{_key(key)[:20]}"


def timing_cache_path(facts: DeviceFacts) -> Path:
    """The builder's timing cache for this GPU and TensorRT version."""
    return cache_dir() / "tensorrt" / "timing" / f"{_key(asdict(facts))[:20]}.cache"


def _check_private(st: os.stat_result, path: Path, kind: str) -> None:
    """Refuse a cache folder or file that is not a plain one of ours, closed to group and others."""
    plain = stat.S_ISDIR(st.st_mode) if kind == "folder" else stat.S_ISREG(st.st_mode)
    if not plain:
        raise UnsafeCacheError(f"{path} is not a plain {kind}: remove it (rm -r {path})")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeCacheError(f"{path} belongs to user id {st.st_uid}, not to this user ({uid}): "
                               f"remove it (rm -r {path})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCacheError(f"{path} is writable by group or others: chmod go-w {path}")


def _open_folder(name: str | Path, shown: Path, *, dir_fd: int | None = None, create: bool = False) -> int:
    """An open descriptor of the cache folder ``name`` (relative to ``dir_fd``), never through a link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW
    try:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, _FOLDER_MODE, dir_fd=dir_fd)
            fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW on a link; O_DIRECTORY on a file
            raise UnsafeCacheError(f"{shown} is a link or not a folder: remove it (rm {shown})") from None
        raise
    try:
        _check_private(os.fstat(fd), shown, "folder")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _cache_folder_fd(folder: Path, *, create: bool) -> Iterator[int]:
    """The open entry ``folder`` of the cache root ``folder.parent``, both checked private."""
    if not {os.open, os.mkdir, os.rename, os.unlink} <= os.supports_dir_fd or not hasattr(os, "O_DIRECTORY"):
        raise UnsafeCacheError("this system cannot open folders without following links (no dir_fd support)")
    if create:
        folder.parent.parent.mkdir(parents=True, exist_ok=True)  # $EDGEVID_CACHE itself: the user's choice
    root = _open_folder(folder.parent, folder.parent, create=create)
    try:
        fd = _open_folder(folder.name, folder, dir_fd=root, create=create)
    finally:
        os.close(root)
    try:
        yield fd
    finally:
        os.close(fd)


def _read_private(dir_fd: int, name: str, shown: Path) -> bytes:
    """A file of an open cache folder, checked private (O_NONBLOCK: a planted FIFO never blocks)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeCacheError(f"{shown} is a link: remove it (rm {shown})") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        _check_private(os.fstat(fh.fileno()), shown, "file")
        return fh.read()


def _write_private(dir_fd: int, name: str, data: bytes) -> None:
    """Write ``name`` in an open cache folder: a fresh temp file (0600) renamed over it, never half-written.

    ``edgevid.manifest.atomic_writer`` takes a path, which is looked up again at the write;
    here both the temp file and the rename are relative to the folder checked at open.
    """
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, _FILE_MODE, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _warn_once(text: str) -> None:
    if text not in _WARNED:
        _WARNED.add(text)
        warnings.warn(text, EdgevidWarning, stacklevel=4)


def _not_using(exc: UnsafeCacheError) -> None:
    _warn_once(f"not using the TensorRT engine cache: {exc}; the engine is built for this run only")


def load_cached(folder: Path, key: dict[str, Any]) -> bytes | None:
    """The cached engine in ``folder`` if the cache is private, its meta records exactly ``key`` and
    its bytes are the ones the build recorded; else None (a warning if the cache is not private)."""
    try:
        with _cache_folder_fd(folder, create=False) as fd:
            meta = json.loads(_read_private(fd, META_NAME, folder / META_NAME))
            data = _read_private(fd, ENGINE_NAME, folder / ENGINE_NAME)
    except UnsafeCacheError as exc:
        _not_using(exc)
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or {k: meta.get(k) for k in key} != key:
        return None
    if meta.get("engine_sha256") != hashlib.sha256(data).hexdigest():
        return None  # a torn or edited engine file: rebuild
    return data


def save_cached(folder: Path, key: dict[str, Any], data: bytes, extra: dict[str, Any]) -> Path | None:
    """Write engine + meta into the private ``folder`` (atomically); None, with a warning, if it cannot."""
    meta = {**key, "engine_sha256": hashlib.sha256(data).hexdigest(), **extra}
    try:
        with _cache_folder_fd(folder, create=True) as fd:
            _write_private(fd, ENGINE_NAME, data)
            _write_private(fd, META_NAME, (json.dumps(meta, indent=2) + "\n").encode())
    except UnsafeCacheError as exc:
        _not_using(exc)
        return None
    except OSError as exc:
        _warn_once(f"cannot cache the TensorRT engine in {folder} ({exc.strerror or exc}); it is rebuilt on the "
                   "next load (set EDGEVID_CACHE to a writable folder)")
        return None
    return folder / ENGINE_NAME


def read_timing_cache(path: Path) -> bytes:
    """The builder's timing cache at ``path`` if the cache is private (else empty: a slower build)."""
    try:
        with _cache_folder_fd(path.parent, create=False) as fd:
            return _read_private(fd, path.name, path)
    except UnsafeCacheError as exc:
        _not_using(exc)
    except OSError:
        pass
    return b""


def write_timing_cache(path: Path, blob: bytes) -> None:
    """Keep the builder's timing cache for the next build (only a speed-up: failures are silent)."""
    with contextlib.suppress(UnsafeCacheError, OSError):
        with _cache_folder_fd(path.parent, create=True) as fd:
            _write_private(fd, path.name, blob)


def _flag(trt: Any, enum: str, name: str) -> Any:
    try:
        return getattr(getattr(trt, enum), name)
    except AttributeError:
        raise EngineError(f"TensorRT {trt.__version__} has no {enum}.{name}; this edgevid does not know this "
                          "TensorRT version's flags") from None


def _create(what: str, factory: Any, *args: Any) -> Any:
    """A TensorRT object, or one line on why not (pybind's "factory function returned nullptr")."""
    try:
        made = factory(*args)
    except (TypeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineError(f"TensorRT could not create its {what} ({first}): is the NVIDIA driver loaded and the "
                          "GPU visible (nvidia-smi, or tegrastats on a Jetson)?") from exc
    if made is None:
        raise EngineError(f"TensorRT could not create its {what}: is the NVIDIA driver loaded and the GPU visible?")
    return made


def build_engine(trt: Any, onnx_path: str | Path, opts: BuildOptions, *, timing_cache: Path | None = None) -> bytes:
    """Build a serialized engine from ``onnx_path`` with the flags of this TensorRT (``plan_flags``).

    Dynamic input dims get ``opts.profiles`` identical profiles: the batch dim from 1 to
    ``opts.max_batch`` (tuned for the largest), any other dynamic dim 1. ``timing_cache`` is read if present and written back after
    the build.
    """
    version = version_tuple(trt.__version__)
    plan = plan_flags(version, opts)
    for note in plan.notes:
        warnings.warn(note, EdgevidWarning, stacklevel=3)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = _create("builder", trt.Builder, logger)
    flags = 0
    for name in plan.network:
        flags |= 1 << int(_flag(trt, "NetworkDefinitionCreationFlag", name))
    network = _create("network", builder.create_network, flags)
    parser = _create("ONNX parser", trt.OnnxParser, network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {Path(onnx_path).name}: {errors[0] if errors else 'unknown error'}")
    config = _create("builder config", builder.create_builder_config)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mib) << 20)
    for name in plan.set:
        config.set_flag(_flag(trt, "BuilderFlag", name))
    for name in plan.clear:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    if opts.dla_core is not None:
        _use_dla(trt, builder, network, config, opts.dla_core)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in inputs if any(d < 0 for d in tuple(t.shape))]
    for _ in range(max(1, opts.profiles) if dynamic else 0):
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            dims = tuple(tensor.shape)
            low = tuple(1 if d < 0 else d for d in dims)
            high = tuple(int(opts.max_batch) if i == 0 and d < 0 else low[i] for i, d in enumerate(dims))
            profile.set_shape(tensor.name, low, high, high)
        config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        cache = config.create_timing_cache(read_timing_cache(timing_cache))
        config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT {trt.__version__} failed to build an engine from {Path(onnx_path).name} "
                          "(its log above says why)")
    if timing_cache is not None:
        write_timing_cache(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))  # IHostMemory is a buffer


def _use_dla(trt: Any, builder: Any, network: Any, config: Any, core: int) -> None:
    """Put the network on DLA ``core`` with GPU fallback; warn with the layers DLA cannot run."""
    cores = int(getattr(builder, "num_DLA_cores", 0))
    if not 0 <= core < cores:
        raise EngineError(f"DLA core {core} does not exist: this device has {cores} DLA core(s)"
                          + ("" if cores else " (use the GPU: drop the DLA core option)"))
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(core)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    fallback = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
    if fallback:
        shown = ", ".join(fallback[:6]) + (f", ... ({len(fallback) - 6} more)" if len(fallback) > 6 else "")
        warnings.warn(f"{len(fallback)} of {len(layers)} layers cannot run on DLA core {core} and fall back to the "
                      f"GPU: {shown}", EdgevidWarning, stacklevel=4)


def say(text: str) -> None:
    """One status line on stderr (building an engine takes minutes: the user must know why)."""
    print(f"edgevid: {text}", file=sys.stderr, flush=True)
