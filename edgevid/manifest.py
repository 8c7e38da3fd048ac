"""The artifact contract: `manifest.json` next to `model.onnx` (torch-free).

An exported model is a directory. The runtime trusts nothing but this manifest, and checks
it against the model file before running (see `edgevid.runtime.load`).

Schema (version 1), every field JSON-serialisable:

- ``schema_version``, ``edgevid_version``, ``model`` (zoo name), ``family``, ``mode``
  (``clip`` | ``stream``)
- ``inputs`` / ``outputs``: the graph's non-state tensors as ``TensorSpec`` (name, shape with
  ``"N"`` for a dynamic batch, dtype, layout)
- ``states``: for stream mode, the ordered ``StatePair`` list (``state_in.<path>`` /
  ``state_out.<path>``, shape for batch 1, dtype, initial value)
- ``preprocess``: resize (shorter side), centre crop, mean/std (0-1 scale, RGB order), the
  channel order the graph expects, and whether the graph takes raw uint8 frames
- ``sampling``: frames per clip and the frame stride
- ``labels``, ``precision``, ``target`` backend, ``device`` profile
- ``files``: role -> file name (``onnx``, ``openvino_xml``, ``openvino_bin``, ``engine``)
- ``provenance``: checkpoint sha256, onnx sha256, tool versions
- ``validation``: measured difference against the torch reference at export time
- ``build``: how the artifact was made and what a backend must honour to load it: ``opset``,
  ``ir_version``, ``batch`` (``"dynamic"`` or the fixed size), ``static_shapes``, and
  per-target facts, e.g. ``openvino.inference_precision`` (the CPU hint the validation used;
  f32 for fp32 exports, since the CPU plugin defaults to bf16 on some CPUs) and
  ``tensorrt.engine`` (``"built"``: ``files.engine`` is ready; ``"on_first_load"``: build
  the engine on the device from ``model.onnx``)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevid import __version__
from edgevid.errors import EdgevidError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODES = ("clip", "stream")
STATE_IN_PREFIX = "state_in."
STATE_OUT_PREFIX = "state_out."


class ManifestError(EdgevidError):
    """The manifest is missing, malformed, or does not match the model file."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``shape`` uses the string ``"N"`` for a dynamic batch."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"
    layout: str = ""


@dataclass(frozen=True)
class StatePair:
    """A temporal state carried from one step to the next (batch-1 shape)."""

    path: str  # module path inside the model, e.g. "backbone.features.3.conv.0"
    shape: list[int]
    dtype: str = "float32"
    init: float = 0.0

    @property
    def input(self) -> str:
        """Graph input name of this state."""
        return STATE_IN_PREFIX + self.path

    @property
    def output(self) -> str:
        """Graph output name of this state."""
        return STATE_OUT_PREFIX + self.path


@dataclass(frozen=True)
class Preprocess:
    """Host-side (or in-graph, with ``uint8_input``) preprocessing of a BGR uint8 frame."""

    resize: int  # shorter side after resize
    crop: int  # centre crop size (square)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    channel_order: str = "RGB"
    uint8_input: bool = False  # graph takes uint8 NHWC RGB crops and normalises inside


@dataclass(frozen=True)
class Sampling:
    """How frames are taken from a video: ``frames`` per clip, every ``stride``-th frame."""

    frames: int
    stride: int = 1


@dataclass
class Manifest:
    """Everything the runtime needs to run an exported model."""

    model: str
    family: str
    mode: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocess: Preprocess
    sampling: Sampling
    labels: list[str]
    states: list[StatePair] = field(default_factory=list)
    precision: str = "fp32"
    target: str = "onnxruntime"
    device: str = "generic"
    files: dict[str, str] = field(default_factory=lambda: {"onnx": "model.onnx"})
    provenance: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    edgevid_version: str = __version__

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ManifestError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "clip" and self.states:
            raise ManifestError("a clip-mode manifest cannot list states")

    @property
    def num_classes(self) -> int:
        """Number of classes of the logits output."""
        return len(self.labels)

    @property
    def state_input_names(self) -> list[str]:
        """State input names in manifest order."""
        return [s.input for s in self.states]

    @property
    def state_output_names(self) -> list[str]:
        """State output names in manifest order."""
        return [s.output for s in self.states]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse a dict, refusing unknown schema versions and missing fields."""
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest schema version {version!r} is not supported by this edgevid "
                f"(supports {SCHEMA_VERSION}); re-export the model with this version"
            )
        try:
            kwargs = dict(data)
            kwargs["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
            kwargs["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
            kwargs["states"] = [StatePair(**s) for s in data.get("states", [])]
            kwargs["preprocess"] = Preprocess(**data["preprocess"])
            kwargs["sampling"] = Sampling(**data["sampling"])
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = set(kwargs) - known
            if unknown:
                raise ManifestError(f"manifest has unknown fields: {sorted(unknown)}")
            return cls(**kwargs)
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"manifest is malformed: {exc}") from exc

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``manifest.json`` atomically into ``directory``."""
        path = Path(directory) / MANIFEST_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        """Read ``manifest.json`` from an artifact directory."""
        path = Path(directory) / MANIFEST_NAME
        if not Path(directory).is_dir():
            raise ManifestError(f"{directory} is not an artifact directory (expected a folder with {MANIFEST_NAME})")
        if not path.is_file():
            raise ManifestError(f"{path} not found: is {directory} an edgevid export?")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temp file in the same folder and a rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file via a temp file in the same folder and a rename: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
