"""Backend registry: a backend is one module here; adding one is that file plus one line below.

Entries are import paths, so a backend's module (and its heavy library) is imported only when
that backend is asked for.
"""

from __future__ import annotations

import importlib

from edgevid.errors import EdgevidError

# name -> "module:RunnerClass"
_BACKENDS: dict[str, str] = {
    "onnxruntime": "edgevid.runtime.backends.onnxruntime:OrtRunner",
    "openvino": "edgevid.runtime.backends.openvino:OpenVinoRunner",
    "tensorrt": "edgevid.runtime.backends.tensorrt:TensorRTRunner",
}
_ALIASES: dict[str, str] = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}


def backend_names() -> list[str]:
    """Registered backend names (installed or not)."""
    return list(_BACKENDS)


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases (``ort``, ``ov``, ``trt``)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BACKENDS:
        known = ", ".join(list(_BACKENDS) + list(_ALIASES))
        raise EdgevidError(f"unknown backend {name!r}; known backends: {known}")
    return key


def get_runner_class(name: str) -> type:
    """The runner class of a backend (imports its module, not its heavy library)."""
    module_name, cls = _BACKENDS[canonical_name(name)].split(":")
    return getattr(importlib.import_module(module_name), cls)
