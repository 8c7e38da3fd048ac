"""Device profiles as data (``profiles.json``): what each edge target can run, and the defaults.

A profile tells export which target, precision and opset suit a device, and refuses what the
device cannot run; ``supported: false`` profiles (JetPack 4 and 5 boards) carry the reason.
Torch-free: the runtime reads the profile named in a manifest (``device``) to pick defaults,
e.g. fp16 kernels for TensorRT engines built on a Jetson.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from edgevid.errors import EdgevidError

KINDS = ("jetson", "cpu", "gpu")
BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Module:
    """One module (SKU) of a device family, as /proc/device-tree/compatible names it (``part``)."""

    part: str
    name: str
    memory_gb: int
    cuda_cores: int
    dla_cores: int


@dataclass(frozen=True)
class DeviceProfile:
    """What a device family runs (see ``profiles.json`` for every fact's source)."""

    name: str
    description: str
    kind: str
    supported: bool
    unsupported_reason: str
    modules: tuple[Module, ...]
    gpu_arch: str
    compute_capability: str
    jetpack: tuple[str, ...]
    l4t: tuple[str, ...]
    tensorrt: tuple[str, ...]
    cuda: tuple[str, ...]
    python: str
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    default_backend: str
    default_precision: str
    fp16_kernels: bool  # TensorRT engines of an fp32 ONNX use fp16 kernels by default
    max_opset: int
    model_names: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def jetson(self) -> bool:
        """A Jetson board (JetPack, TensorRT from apt)."""
        return self.kind == "jetson"

    @property
    def dla_cores(self) -> int:
        """DLA cores every module of the family has (the smallest count)."""
        return min((m.dla_cores for m in self.modules), default=0)

    def module(self, part: str) -> Module | None:
        """The module whose part number (e.g. ``p3767-0005``) is ``part``."""
        return next((m for m in self.modules if m.part == part), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        from dataclasses import asdict

        return asdict(self) | {"dla_cores": self.dla_cores}


def _check(raw: dict[str, Any]) -> DeviceProfile:
    """One profile from its JSON, with the invariants the rest of edgevid relies on."""
    name = raw.get("name", "?")

    def bad(what: str) -> EdgevidError:
        return EdgevidError(f"device profile {name!r} in profiles.json: {what}")

    try:
        modules = tuple(Module(**m) for m in raw["modules"])
        tuples = {k: tuple(raw[k]) for k in ("jetpack", "l4t", "tensorrt", "cuda", "backends", "precisions",
                                              "model_names")}
        profile = DeviceProfile(**{**raw, **tuples, "modules": modules})
    except (KeyError, TypeError) as exc:
        raise bad(f"malformed ({exc})") from exc
    if profile.kind not in KINDS:
        raise bad(f"kind must be one of {KINDS}")
    if not set(profile.backends) <= set(BACKENDS) or profile.default_backend not in profile.backends:
        raise bad("backends must be known and include default_backend")
    if not set(profile.precisions) <= set(PRECISIONS) or profile.default_precision not in profile.precisions:
        raise bad("precisions must be known and include default_precision")
    if profile.supported == bool(profile.unsupported_reason):
        raise bad("an unsupported profile needs its reason, a supported one none")
    if profile.jetson and not (profile.modules and profile.jetpack and profile.tensorrt and profile.compute_capability):
        raise bad("a Jetson profile needs modules, JetPack, TensorRT and compute capability")
    if not profile.sources:
        raise bad("no sources: every profile names where its facts come from")
    return profile


@functools.lru_cache(maxsize=1)
def load_profiles() -> tuple[DeviceProfile, ...]:
    """Every profile in ``profiles.json``, checked."""
    text = resources.files("edgevid.devices").joinpath("profiles.json").read_text(encoding="utf-8")
    data = json.loads(text)
    profiles = tuple(_check(p) for p in data["profiles"])
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise EdgevidError("profiles.json names a profile twice")
    return profiles


def profile_names() -> list[str]:
    """Every profile name, in file order."""
    return [p.name for p in load_profiles()]


def find_profile(name: str | None) -> DeviceProfile | None:
    """The profile called ``name``, or None (``"generic"``, unknown or no name)."""
    return next((p for p in load_profiles() if p.name == name), None) if name else None


def get_profile(name: str) -> DeviceProfile:
    """The profile called ``name``; an unknown name is a one-line error listing the known ones."""
    profile = find_profile(name)
    if profile is None:
        raise EdgevidError(f"unknown device {name!r}; known devices: {', '.join(profile_names())} "
                           "(edgevid devices list)")
    return profile


def require_supported(profile: DeviceProfile) -> DeviceProfile:
    """``profile`` if edgevid deploys to it, else a one-line error with the reason."""
    if not profile.supported:
        raise EdgevidError(f"{profile.name} ({profile.description}) is not supported: {profile.unsupported_reason}")
    return profile
