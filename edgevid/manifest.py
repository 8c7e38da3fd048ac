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
- ``motion`` (optional): for a motion model (TSN's temporal stream) the ``Motion`` the host
  computes from consecutive sampled frames (optical flow or RGB differences); the graph's
  frame input is then the motion stack, not a frame
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

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

from edgevid import __version__
from edgevid.errors import EdgevidError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODES = ("clip", "stream")
STATE_IN_PREFIX = "state_in."
STATE_OUT_PREFIX = "state_out."
DTYPES = ("float32", "float16", "bfloat16", "float64", "uint8", "int8", "int16", "int32", "int64", "bool")
CHANNEL_ORDERS = ("RGB", "BGR")
# Bounds on what a manifest may make the runtime allocate: far above any real model, far
# below what would exhaust a device (a corrupt `frames: 1e9` must not become a 41 GiB buffer).
MAX_FRAMES = 1024
MAX_STRIDE = 64
MAX_CROP = 4096
MAX_RESIZE = 8192
MAX_ELEMENTS = 1 << 26  # per tensor or state: 64M elements (256 MiB of float32)
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few KiB; read no more than this
MAX_NORM = 1e6  # |mean| and std of preprocessing (0-1 scale): far from overflowing float32
MIN_STD = 1e-6
OPENVINO_PRECISIONS = ("f32", "f16", "bf16", "default")  # build.openvino.inference_precision
MOTION_KINDS = ("flow", "rgbdiff")
FLOW_ALGORITHMS = ("dis", "farneback", "tvl1")
DIS_PRESETS = ("ultrafast", "fast", "medium")
MAX_MOTION_LENGTH = 64  # L: TSN stacks 5 fields; 64 bounds the host ring (2L or 3L channels)
MAX_FLOW_BOUND = float(MAX_RESIZE)  # px: no displacement exceeds the frame the flow is computed on
# The values a state's initial value may take in its dtype (float64: any finite number):
# an init past its dtype overflows when the runtime fills the state, and numpy warns.
_F32_MAX = 3.4028234663852886e38
_DTYPE_RANGE: dict[str, tuple[float, float]] = {
    "float16": (-65504.0, 65504.0), "float32": (-_F32_MAX, _F32_MAX), "bfloat16": (-3.3895313892515355e38,
                                                                                 3.3895313892515355e38),
    "uint8": (0, 255), "int8": (-128, 127), "int16": (-(2**15), 2**15 - 1), "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1), "bool": (0, 1)}


class ManifestError(EdgevidError):
    """The manifest is missing, malformed, or does not match the model file."""


class _Invalid(ManifestError):
    """One bad manifest value: ``field`` (a path such as ``preprocess.std[1]``) and what is wrong."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where or 'the manifest'} {what}")


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"),
                       (list, "a list"), (dict, "an object"), (type(None), "null")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(where, f"must be an object, got {_kind(value)}")
    return value


def _list(value: Any, where: str, *, length: int | None = None, nonempty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(where, f"must be a list, got {_kind(value)}")
    if length is not None and len(value) != length:
        raise _Invalid(where, f"must have {length} elements, got {len(value)}")
    if nonempty and not value:
        raise _Invalid(where, "must not be empty")
    return value


def _str(value: Any, where: str, *, choices: tuple[str, ...] | None = None, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise _Invalid(where, f"must be a string, got {_kind(value)}")
    _text(value, where)
    if choices is not None and value not in choices:
        raise _Invalid(where, f"must be one of {', '.join(choices)}, got {_show(value)}")
    if nonempty and not value:
        raise _Invalid(where, "must not be empty")
    return value


def _text(value: str, where: str) -> str:
    """``value`` if it is valid Unicode (JSON's ``\\ud800`` escapes give lone surrogates, which no
    terminal or file encoding can print: the first print of a label would raise)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(where, f"is not valid Unicode text (it holds a lone surrogate): {_show(value)}") from None
    return value


def _check_text(data: Any, where: str) -> None:
    """Every string of ``data``, keys included, must be valid Unicode (free-form sections too: bench,
    report and export summaries print them). Iterative: nesting depth is the JSON parser's business."""
    stack = [(data, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            _text(item, at)
        elif isinstance(item, list):
            stack += [(v, _at(at, i)) for i, v in enumerate(item)]
        elif isinstance(item, dict):
            for key, value in item.items():
                stack.append((value, _at(at, _text(key, f"a key in {at}"))))


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    # bool is an int in Python and 8.0 is a float in JSON: neither is a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(where, f"must be an integer, got {_show(value)}")
    if not lo <= value <= hi:
        raise _Invalid(where, f"must be between {lo} and {hi}, got {value}")
    return value


def _num(value: Any, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number (a JSON int too, however long) within ``[lo, hi]``."""
    try:
        number = float(value) if not isinstance(value, bool) and isinstance(value, (int, float)) else math.nan
    except OverflowError:  # an int of hundreds of digits
        number = math.nan
    if not math.isfinite(number):
        raise _Invalid(where, f"must be a finite number, got {_show(value)}")
    if not lo <= number <= hi:
        raise _Invalid(where, f"must be within [{lo:g}, {hi:g}], got {_show(value)}")
    return number


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(where, f"must be true or false, got {_show(value)}")
    return value


def _fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` as an object with no unknown keys and every field without a default."""
    data = _obj(data, where)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise _Invalid(where, f"has unknown fields {unknown}")
    for name, f in known.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Invalid(_at(where, name), "is missing")
    return data


def _shape(value: Any, where: str, *, dynamic: bool) -> list[int | str]:
    """A list of positive ints (strings too for dynamic dims when ``dynamic``), bounded in size."""
    dims = _list(value, where)
    total = 1
    for i, dim in enumerate(dims):
        if dynamic and isinstance(dim, str):
            _str(dim, _at(where, i), nonempty=True)
            continue
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            allowed = "positive integers or names of dynamic dims" if dynamic else "positive integers"
            raise _Invalid(_at(where, i), f"must be one of {allowed}, got {_show(dim)}")
        total *= dim
        if total > MAX_ELEMENTS:
            raise _Invalid(where, f"has more than {MAX_ELEMENTS} elements: {_show(dims)}")
    return list(dims)


def check_file_name(name: Any, where: str = "files") -> str:
    """``name`` if it is a plain file name (no folder, no ``..``, not absolute), else ManifestError.

    Every file a manifest names lives directly in the artifact folder; anything else could
    make the runtime read (or the TensorRT cache write) a file outside it.
    """
    try:
        _file_name(name, where)
    except _Invalid as exc:
        raise ManifestError(f"{MANIFEST_NAME}: {exc}") from None
    return name


def _file_name(name: Any, where: str) -> str:
    name = _str(name, where, nonempty=True)
    plain = (name not in (".", "..") and "\x00" not in name and PurePosixPath(name).name == name
             and PureWindowsPath(name).name == name)
    if not plain:
        raise _Invalid(where, f"must be a plain file name inside the artifact folder (no folder, no '..', "
                              f"not absolute), got {_show(name)}")
    return name


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``shape`` uses the string ``"N"`` for a dynamic batch."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"
    layout: str = ""

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TensorSpec:
        """Parse and check one manifest tensor (``where``: its field path, for messages)."""
        d = _fields(cls, data, where)
        return cls(name=_str(d["name"], _at(where, "name"), nonempty=True),
                   shape=_shape(d["shape"], _at(where, "shape"), dynamic=True),
                   dtype=_str(d.get("dtype", "float32"), _at(where, "dtype"), choices=DTYPES),
                   layout=_str(d.get("layout", ""), _at(where, "layout")))


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

    @classmethod
    def from_dict(cls, data: Any, where: str) -> StatePair:
        """Parse and check one manifest state (static shape, bounded size, finite init)."""
        d = _fields(cls, data, where)
        dtype = _str(d.get("dtype", "float32"), _at(where, "dtype"), choices=DTYPES)
        return cls(path=_str(d["path"], _at(where, "path"), nonempty=True),
                   shape=_shape(d["shape"], _at(where, "shape"), dynamic=False),  # type: ignore[arg-type]
                   dtype=dtype, init=_init(d.get("init", 0.0), _at(where, "init"), dtype))


def _init(value: Any, where: str, dtype: str) -> float:
    """A state's initial value, which its dtype must hold (an integer for integer dtypes)."""
    lo, hi = _DTYPE_RANGE.get(dtype, (-math.inf, math.inf))
    init = _num(value, where, lo, hi)
    if dtype in ("uint8", "int8", "int16", "int32", "int64", "bool") and not init.is_integer():
        raise _Invalid(where, f"must be an integer for a {dtype} state, got {_show(value)}")
    return init


@dataclass(frozen=True)
class Preprocess:
    """Host-side (or in-graph, with ``uint8_input``) preprocessing of a BGR uint8 frame."""

    resize: int  # shorter side after resize
    crop: int  # centre crop size (square)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    channel_order: str = "RGB"
    uint8_input: bool = False  # graph takes uint8 NHWC RGB crops and normalises inside

    @classmethod
    def from_dict(cls, data: Any, where: str = "preprocess") -> Preprocess:
        """Parse and check manifest preprocessing: sizes bounded, resize >= crop, std > 0."""
        d = _fields(cls, data, where)
        crop = _int(d["crop"], _at(where, "crop"), 1, MAX_CROP)
        resize = _int(d["resize"], _at(where, "resize"), 1, MAX_RESIZE)
        if resize < crop:
            raise _Invalid(_at(where, "resize"), f"must be >= crop ({crop}), got {resize}")
        mean = [_num(v, _at(_at(where, "mean"), i), -MAX_NORM, MAX_NORM)
                for i, v in enumerate(_list(d.get("mean", [0.485, 0.456, 0.406]), _at(where, "mean"), length=3))]
        std = [_num(v, _at(_at(where, "std"), i))
               for i, v in enumerate(_list(d.get("std", [0.229, 0.224, 0.225]), _at(where, "std"), length=3))]
        for i, v in enumerate(std):
            if v <= 0:
                raise _Invalid(_at(_at(where, "std"), i), f"must be > 0, got {_show(d['std'][i])}")
            _num(v, _at(_at(where, "std"), i), MIN_STD, MAX_NORM)  # dividing by 1e-320 overflows float32
        return cls(resize=resize, crop=crop, mean=mean, std=std,
                   channel_order=_str(d.get("channel_order", "RGB"), _at(where, "channel_order"),
                                      choices=CHANNEL_ORDERS),
                   uint8_input=_bool(d.get("uint8_input", False), _at(where, "uint8_input")))


@dataclass(frozen=True)
class Sampling:
    """How frames are taken from a video: ``frames`` per clip, every ``stride``-th frame.

    ``smooth``: how many stream predictions a session averages by default; 0 means ``frames``
    (TSM scores frames and the clip consensus is their average), 1 for models that pool over
    their own window (causal 3D CNNs, LRCN).
    """

    frames: int
    stride: int = 1
    smooth: int = 0
    # A stream of a time-strided network makes a new output every ``output_every`` steps, the first
    # at step ``first_output`` (1-based); in between it holds its last one. 1, 1: every step.
    output_every: int = 1
    first_output: int = 1

    @classmethod
    def from_dict(cls, data: Any, where: str = "sampling") -> Sampling:
        """Parse and check manifest sampling (``frames`` 1..1024, ``stride`` 1..64, ``smooth`` 0..1024,
        ``output_every`` and ``first_output`` 1..1024)."""
        d = _fields(cls, data, where)
        return cls(frames=_int(d["frames"], _at(where, "frames"), 1, MAX_FRAMES),
                   stride=_int(d.get("stride", 1), _at(where, "stride"), 1, MAX_STRIDE),
                   smooth=_int(d.get("smooth", 0), _at(where, "smooth"), 0, MAX_FRAMES),
                   output_every=_int(d.get("output_every", 1), _at(where, "output_every"), 1, MAX_FRAMES),
                   first_output=_int(d.get("first_output", 1), _at(where, "first_output"), 1, MAX_FRAMES))


@dataclass(frozen=True)
class Motion:
    """A motion input the host computes from consecutive sampled frames (TSN's temporal stream).

    ``kind`` ``"flow"``: L optical-flow fields, 2L channels (u1, v1, ..., uL, vL, oldest first),
    computed with ``algorithm`` (``preset`` for DIS) and quantised to uint8 with ``bound`` px as
    TSN stores flow images; ``"rgbdiff"``: L differences of normalised RGB frames, 3L channels.
    Checked when made, so a typo in a zoo entry fails at import, not in a deployed runtime.
    """

    kind: str  # "flow" | "rgbdiff"
    length: int = 5  # L
    algorithm: str = ""  # flow only: "dis" | "farneback" | "tvl1"
    preset: str = ""  # dis only: "ultrafast" | "fast" | "medium"
    bound: float = 20.0  # flow only: px; |u|, |v| clipped to it, mapped linearly to uint8 0..255
    # A two-stream model's input: the current frame's normalised RGB (3 channels) first, then the
    # stack, so both streams run as one graph on one input (its output: the fused scores' log).
    rgb: bool = False

    def __post_init__(self) -> None:
        _check_motion(self.kind, self.length, self.algorithm, self.preset, self.bound, "motion")
        _bool(self.rgb, "motion.rgb")
        object.__setattr__(self, "bound", float(self.bound))  # frozen; a JSON 20 reads as 20.0

    @property
    def channels(self) -> int:
        """Channels of one motion stack: 2L (flow: u, v per field) or 3L (rgbdiff: RGB per difference),
        plus 3 in front with ``rgb``."""
        return (2 if self.kind == "flow" else 3) * self.length + (3 if self.rgb else 0)

    @classmethod
    def from_dict(cls, data: Any, where: str = "motion") -> Motion:
        """Parse and check a manifest's motion object (one ManifestError naming the field)."""
        d = _fields(cls, data, where)
        values = (d["kind"], d.get("length", 5), d.get("algorithm", ""), d.get("preset", ""), d.get("bound", 20.0))
        _check_motion(*values, where)
        return cls(*values, rgb=_bool(d.get("rgb", False), _at(where, "rgb")))


def _check_motion(kind: Any, length: Any, algorithm: Any, preset: Any, bound: Any, where: str) -> None:
    """The rules a ``Motion`` obeys, whether made in code or read from a manifest (``where``: its field path)."""
    kind = _str(kind, _at(where, "kind"), choices=MOTION_KINDS)
    _int(length, _at(where, "length"), 1, MAX_MOTION_LENGTH)
    algorithm = _str(algorithm, _at(where, "algorithm"))
    preset = _str(preset, _at(where, "preset"))
    if kind == "flow":
        _str(algorithm, _at(where, "algorithm"), choices=FLOW_ALGORITHMS)
        if algorithm == "dis":
            _str(preset, _at(where, "preset"), choices=DIS_PRESETS)
        elif preset:
            raise _Invalid(_at(where, "preset"), f"is for dis only, got {_show(preset)} with {algorithm}")
        if not _num(bound, _at(where, "bound"), 0.0, MAX_FLOW_BOUND) > 0:
            raise _Invalid(_at(where, "bound"), f"must be > 0 px, got {_show(bound)}")
    else:
        for name, value in (("algorithm", algorithm), ("preset", preset)):
            if value:
                raise _Invalid(_at(where, name), f"is for flow only, got {_show(value)} with rgbdiff")
        _num(bound, _at(where, "bound"))


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
    motion: Motion | None = None  # set: the frame input is the motion stack the host computes
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
        """JSON-ready dict: no ``motion`` key for an RGB model, no output timing for a stream that answers
        every step (such manifests read as before, older runtimes included)."""
        data = asdict(self)
        if data["motion"] is None:
            del data["motion"]
        if (self.sampling.output_every, self.sampling.first_output) == (1, 1):
            del data["sampling"]["output_every"], data["sampling"]["first_output"]
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        """Parse and check a manifest dict; any bad value is one ManifestError naming its field.

        ``source`` names the manifest in messages (``<source>: preprocess.std[1] must be > 0, got 0``).
        """
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: the manifest must be a JSON object")
        version = data.get("schema_version")
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest schema version {version!r} is not supported by this edgevid "
                f"(supports {SCHEMA_VERSION}); re-export the model with this version"
            )
        try:
            return cls(**_manifest_fields(cls, data))
        except _Invalid as exc:
            raise ManifestError(f"{source}: {exc}") from None

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
        return cls.from_dict(_read_json(path), source=str(path))


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, read only up to ``MAX_MANIFEST_BYTES`` (a 300 MB file is refused, not parsed)."""
    too_big = ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not an edgevid manifest "
                            "(a real one is a few KiB); re-export the model")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise too_big
        with open(path, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)  # the file may have grown since the stat
        if len(raw) > MAX_MANIFEST_BYTES:
            raise too_big
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestError(f"{path} is not valid JSON: {str(exc)[:200]}") from exc
    except OSError as exc:
        raise ManifestError(f"{path} cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:  # an int of more than 4300 digits (Python's int parsing limit)
        raise ManifestError(f"{path} is not a valid manifest: it holds a number too long to read "
                            f"({str(exc).split(';')[0]})") from exc


def _manifest_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The checked constructor arguments of ``Manifest`` from its JSON dict."""
    d = _fields(cls, data, "")
    out = dict(d)
    for key in ("model", "family"):
        out[key] = _str(d[key], key, nonempty=True)
    for key in ("precision", "target", "device", "edgevid_version"):
        if key in d:
            out[key] = _str(d[key], key)
    out["mode"] = _str(d["mode"], "mode", choices=MODES)
    for key in ("inputs", "outputs"):
        out[key] = [TensorSpec.from_dict(t, _at(key, i)) for i, t in enumerate(_list(d[key], key, nonempty=True))]
    out["states"] = [StatePair.from_dict(s, _at("states", i)) for i, s in enumerate(_list(d.get("states", []), "states"))]
    if out["mode"] == "clip" and out["states"]:
        raise _Invalid("states", "must be empty in a clip-mode manifest")
    out["preprocess"] = Preprocess.from_dict(d["preprocess"])
    out["sampling"] = Sampling.from_dict(d["sampling"])
    out["labels"] = [_str(v, _at("labels", i)) for i, v in enumerate(_list(d["labels"], "labels", nonempty=True))]
    if "files" in d:
        out["files"] = {role: _file_name(name, _at("files", role)) for role, name in _obj(d["files"], "files").items()}
    for key in ("provenance", "validation", "build"):
        out[key] = _obj(d.get(key, {}), key)
    for key, value in out["provenance"].items():
        if key.endswith("_sha256") and value is not None:
            _str(value, _at("provenance", key))
    for target in ("openvino", "tensorrt"):
        if target in out["build"]:
            facts = _obj(out["build"][target], _at("build", target))
            if "inference_precision" in facts:
                # OpenVINO's hint is passed to the plugin as is: "f64" must be refused here, not crash there.
                _str(facts["inference_precision"], _at(_at("build", target), "inference_precision"),
                     choices=OPENVINO_PRECISIONS if target == "openvino" else None)
    for key in ("provenance", "validation", "build"):
        _check_text(out[key], key)
    if d.get("motion") is not None:
        out["motion"] = _motion_for(Motion.from_dict(d["motion"]), out)
    return out


def _motion_for(motion: Motion, fields: dict[str, Any]) -> Motion:
    """``motion`` if the frame input holds its stacks: (N, [T,] channels, crop, crop) float."""
    frame, crop = fields["inputs"][0], fields["preprocess"].crop
    if fields["preprocess"].uint8_input:
        raise _Invalid("preprocess.uint8_input", "must be false for a motion model (it takes float motion stacks)")
    want = [motion.channels, crop, crop]
    got = frame.shape[-3:]
    if len(frame.shape) < 4 or any(isinstance(g, int) and g != w for g, w in zip(got, want)):
        raise _Invalid("inputs[0].shape", f"must end in {want} (motion {motion.kind} of length {motion.length} "
                                          f"at crop {crop}), got {_show(frame.shape)}")
    return motion


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
    with atomic_writer(path) as fh:
        fh.write(data)


def write_error(path: str | os.PathLike, exc: OSError) -> EdgevidError:
    """The one-line error for a failed write (read-only folder, full disk, not a folder)."""
    return EdgevidError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a binary file to fill; on success it replaces ``path``, on any failure it vanishes.

    The temp file is made with ``mkstemp`` in ``path``'s folder (a fresh, unguessable name:
    a symlink planted next to the target is never followed) and renamed over ``path`` at the
    end, so ``path`` is never half-written. It gets the permissions a plain ``open`` would
    give. An ``OSError`` (read-only folder, full disk) becomes an ``EdgevidError`` naming
    ``path``: the error a user sees is one line, not a traceback.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.chmod(tmp, file_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_in(exc)
        if cause is not None:
            raise write_error(path, cause) from exc
        raise


def _os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind a failed write: ``exc`` itself, or what it was raised while handling
    (``torch.save`` turns a failed write into a ``RuntimeError`` raised during the ``OSError``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and isinstance(exc, Exception):
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def check_writable(path: str | os.PathLike) -> None:
    """Fail now, with one line, if ``path`` (a file or folder to create) cannot be written.

    Creates and deletes a temp file in the nearest existing folder above ``path``, so a long
    run (training, an export) does not find out at its very end. Creates no folders.
    """
    path = Path(path).absolute()
    folder = path.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise EdgevidError(f"cannot write {path}: {folder} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".edgevid-write-check.", suffix=".tmp")
    except OSError as exc:
        raise EdgevidError(f"cannot write {path}: {folder} does not accept new files "
                           f"({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(tmp)


def file_mode(directory: bool = False) -> int:
    """The mode a plain ``open`` (or ``mkdir``) gives under the current umask: for files made with
    mkstemp/mkdtemp (0600/0700) that are meant to be ordinary outputs."""
    mask = os.umask(0)  # the only way to read it
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask
