"""The variants a report compares, and their artifacts, built once and reused from a cache.

A variant is (backend, mode, precision). Its artifact is exported with
``edgevid.pipeline.export`` into ``CACHE/<model>-<mode>-<precision>-<target>-<key>``, where
``key`` is the sha256 of everything the export depends on (model, checkpoint hash, mode,
precision, target, size, frames, calibration options, edgevid version): a second report with
the same inputs reuses the artifact, any change builds a new one.

FP32 artifacts are exported for the OpenVINO target, which writes ``model.onnx`` (what ONNX
Runtime runs: the same graph as an ONNX Runtime export) and the IR, so both backends measure
one export. FP16 and INT8 differ per target (fp16 in-graph vs compressed IR weights; NNCF's
per-target INT8 recipes), so each backend gets its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
MODES = ("stream", "clip")
BACKEND_LABELS = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT", "torch": "torch eager"}


@dataclass(frozen=True)
class Variant:
    """One row of the report: a backend running an artifact of one mode and precision."""

    backend: str
    mode: str
    precision: str
    # OpenVINO's INFERENCE_PRECISION_HINT: None = the plugin's default (what an OpenVINO user
    # gets: bf16 on CPUs with AVX512-BF16 or AMX), "f32" = strict f32, its own row where they differ.
    hint: str | None = None
    # The precision the plugin picks by default, when it is not the variant's own (label only).
    runs: str | None = None

    @property
    def name(self) -> str:
        """Stable id, e.g. ``openvino/stream/int8``, ``openvino/stream/fp32-strict``."""
        return f"{self.backend}/{self.mode}/{self.precision}" + ("-strict" if self.hint else "")

    @property
    def label(self) -> str:
        """For people, e.g. ``OpenVINO stream INT8``, ``OpenVINO stream FP32 (runs bf16)``."""
        extra = f" strict {self.hint}" if self.hint else f" (runs {self.runs})" if self.runs else ""
        return f"{BACKEND_LABELS.get(self.backend, self.backend)} {self.mode} {self.precision.upper()}{extra}"

    @property
    def target(self) -> str:
        """The export target whose artifact this variant runs."""
        if self.precision == "fp32" and self.backend in ("onnxruntime", "openvino"):
            return "openvino"
        return self.backend


@dataclass(frozen=True)
class BuildSpec:
    """Everything an artifact depends on; its hash keys the cache."""

    model: str
    checkpoint: str  # "default" or a path
    checkpoint_sha256: str
    mode: str
    precision: str
    target: str
    size: int | None
    frames: int | None
    calib: str | None
    calib_size: int | None
    edgevid_version: str

    def key(self) -> str:
        """sha256 of the spec's canonical JSON (the checkpoint by content, not by path)."""
        data = asdict(self)
        data.pop("checkpoint")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def parse_list(text: str, known: tuple[str, ...], what: str, aliases: dict[str, str] | None = None) -> list[str]:
    """A comma-separated choice list, checked and de-duplicated in order."""
    out: list[str] = []
    for item in (t.strip().lower() for t in text.split(",")):
        if not item:
            continue
        item = (aliases or {}).get(item, item)
        if item not in known:
            raise EdgevidError(f"unknown {what} {item!r}; choose from {', '.join(known)}")
        if item not in out:
            out.append(item)
    if not out:
        raise EdgevidError(f"no {what} given; choose from {', '.join(known)}")
    return out


def checkpoint_sha256(model: str, checkpoint: str) -> str:
    """The content hash of the checkpoint a report exports (the shipped one's is recorded)."""
    from edgevid.manifest import sha256_file
    from edgevid.models import DEFAULT_CHECKPOINT, get_config

    if checkpoint == DEFAULT_CHECKPOINT:
        spec = get_config(model).default_weights
        if spec is None:
            raise EdgevidError(f"{model} ships no checkpoint; pass --checkpoint PATH")
        return spec.sha256
    path = Path(checkpoint)
    if not path.is_file():
        raise EdgevidError(f"checkpoint {checkpoint} does not exist")
    return sha256_file(path)


def default_cache() -> Path:
    """``$EDGEVID_CACHE/report-artifacts`` (default ``~/.cache/edgevid/report-artifacts``)."""
    from edgevid.cache import cache_dir

    return cache_dir() / "report-artifacts"


def artifact_dir(cache: Path, spec: BuildSpec) -> Path:
    """Where the artifact of ``spec`` lives in the cache."""
    short = spec.model.replace("/", "_")
    return cache / f"{short}-{spec.mode}-{spec.precision}-{spec.target}-{spec.key()[:16]}"


def ensure_artifact(spec: BuildSpec, cache: Path, *, progress: bool = False) -> tuple[Path, bool, float]:
    """(artifact dir, reused?, seconds spent building) for ``spec``; exports it if not cached.

    The export is atomic (staged then renamed), so an interrupted build leaves no entry.
    """
    from edgevid.cache import ensure_dir

    out = artifact_dir(cache, spec)
    if _reusable(out, spec):
        return out, True, 0.0
    from edgevid.pipeline import export

    ensure_dir(cache, "the report's artifact cache")
    t0 = time.perf_counter()
    options: dict[str, Any] = {}
    if spec.precision == "int8":
        options = {"calib": spec.calib, "calib_size": spec.calib_size}
    export(spec.model, out, checkpoint=spec.checkpoint, mode=spec.mode, target=spec.target,
           precision=spec.precision, size=spec.size, frames=spec.frames, validate=True, progress=progress,
           force=True, **options)
    return out, False, time.perf_counter() - t0


def _reusable(out: Path, spec: BuildSpec) -> bool:
    """True if the cache entry ``out`` is intact and was built from ``spec``; else it is rebuilt.

    Every file is checked against the hash its manifest records (a flipped byte would otherwise
    fail every later report until the user deleted the entry by hand), and the manifest against
    the spec: an entry replaced by an export of another checkpoint, mode or precision is not reused.
    """
    from edgevid.runtime import open_artifact

    if not (out / "manifest.json").is_file():
        return False
    try:
        artifact = open_artifact(out)
        for role in artifact.manifest.files:
            artifact.verified_file(role)
    except EdgevidError:
        return False  # ArtifactError, ManifestError: a damaged entry
    m = artifact.manifest
    return (m.provenance.get("checkpoint_sha256") == spec.checkpoint_sha256 and m.mode == spec.mode
            and m.precision == spec.precision and m.target == spec.target)


def build_spec(model: str, checkpoint: str, variant: Variant, *, size: int | None, frames: int | None,
               calib: str | os.PathLike | None, calib_size: int | None, ckpt_hash: str) -> BuildSpec:
    """The BuildSpec of a variant's artifact."""
    from edgevid import __version__

    int8 = variant.precision == "int8"
    return BuildSpec(model=model, checkpoint=str(checkpoint), checkpoint_sha256=ckpt_hash, mode=variant.mode,
                     precision=variant.precision, target=variant.target, size=size, frames=frames,
                     calib=str(Path(calib).resolve()) if (int8 and calib) else None,
                     calib_size=calib_size if int8 else None, edgevid_version=__version__)


def random_checkpoint(model: str, cache: Path) -> Path:
    """A checkpoint of seeded random weights for a model that ships none (a latency-only report).

    Written once into the cache as an edgevid checkpoint with the built-in set's classes, so
    every variant and the torch reference load the same network and the held-out videos can
    be scored (at chance). Its name carries the versions the weights depend on.
    """
    import torch

    from edgevid import __version__
    from edgevid.cache import ensure_dir
    from edgevid.data.synth import CLASSES
    from edgevid.models import build_model, init_seed
    from edgevid.models.weights import save_checkpoint

    folder = cache / "random-weights"
    path = folder / f"{model}-seed{init_seed(model)}-torch{torch.__version__}-edgevid{__version__}.pt"
    if not path.is_file():
        ensure_dir(folder, "the report's artifact cache")
        net = build_model(model, num_classes=len(CLASSES))
        save_checkpoint(path, net, net.config.name, list(CLASSES), {"num_classes": len(CLASSES)},
                        random_init=True)
    return path
