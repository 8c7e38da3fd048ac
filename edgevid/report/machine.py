"""The machine a report was measured on: CPU model and flags, cores, memory, GPU, library versions.

Torch-free: reads /proc/cpuinfo (Linux), ``os``, ``platform`` and installed package versions.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# CPU flags that decide which kernels the backends pick (VNNI/AMX for INT8, bf16 for OpenVINO).
INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                     "amx_bf16", "asimd", "asimddp")
LIBRARIES = ("edgevid", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "nncf", "tensorrt")


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; ('', {}) where there is none."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def gpu_info() -> dict[str, Any]:
    """GPU and TensorRT as seen from here: ``{"available": bool, "reason"|"name"|"tensorrt": ...}``.

    Checked without torch and without starting CUDA: the TensorRT package, and the NVIDIA
    driver's device files (``edgevid.devices.detect``: /dev/nvidia0, or a Jetson's L4T).
    """
    from edgevid.devices.detect import detect

    info: dict[str, Any] = {"available": False}
    try:
        has_trt = importlib.util.find_spec("tensorrt") is not None
    except ValueError:  # imported already, without a spec
        has_trt = True
    found = detect()
    if not has_trt:
        info["reason"] = ("tensorrt is not installed here (on a Jetson: sudo apt install python3-libnvinfer)"
                          if found.l4t else "tensorrt is not installed here (pip install 'edgevid[tensorrt]' on a "
                          "machine with a GPU)")
    elif not (found.nvidia_gpu or found.l4t):
        info["reason"] = "no NVIDIA GPU here"
    else:
        info["available"] = True
        info["tensorrt"] = _versions().get("tensorrt", "")
    try:
        with open("/proc/driver/nvidia/gpus/" + os.listdir("/proc/driver/nvidia/gpus")[0] + "/information") as f:
            for line in f:
                if line.startswith("Model:"):
                    info["name"] = line.split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    return info


def openvino_default_precision(device: str = "CPU") -> str | None:
    """The inference precision OpenVINO's plugin picks when told nothing (bf16 on CPUs with
    AVX512-BF16 or AMX, f32 elsewhere); None without OpenVINO."""
    try:
        import openvino as ov

        value = ov.Core().get_property(device, "INFERENCE_PRECISION_HINT")
    except Exception:  # noqa: BLE001 - not installed, or a plugin without the property
        return None
    name = getattr(value, "get_type_name", None)
    return name() if name else str(value)


def describe_machine() -> dict[str, Any]:
    """JSON-ready description of this machine (see the report schema's ``machine``)."""
    model, flags = _cpuinfo()
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = logical
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cpu_flags": [f for f in INTERESTING_FLAGS if f in flags],
        "cores_physical": int(physical),
        "cores_logical": int(logical),
        "cores_usable": int(usable),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpu": gpu_info(),
        "openvino_default_precision": openvino_default_precision(),
        "versions": _versions(),
    }
