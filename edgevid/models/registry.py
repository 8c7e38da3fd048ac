"""Model zoo registry: a name maps to a small builder plus a frozen config.

The registry itself is plain data; the family modules (``tsm.py``, ``tsn.py``) register their
entries when they are imported, which happens on the first lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError
from edgevid.manifest import Motion

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The classes of the built-in synthetic set (edgevid.data.synth.CLASSES), which the shipped
# checkpoints are trained on; repeated here so the registry needs no data module.
SYNTH_LABELS = ("moving_left", "moving_right", "moving_up", "moving_down", "rotating_cw", "rotating_ccw",
                "growing", "shrinking", "appearing", "disappearing", "static")


@dataclass(frozen=True)
class WeightsSpec:
    """A known checkpoint for a zoo entry, with everything needed to use it.

    Two kinds: shipped with the package (``file`` under edgevid/weights/, full ``sha256``,
    ``metrics`` measured by us), and public (``url`` of the source's own release, fetched on
    demand into the user cache; ``sha256`` is the full hash where the source publishes it,
    else ``hash_prefix`` the hex prefix the source puts in the file name (torchvision,
    MMAction2); ``published`` is the source's accuracy, a citation, not our measurement).
    """

    name: str  # short tag, e.g. "synth", "kinetics400"
    file: str  # file name: under edgevid/weights/ (shipped), or in the cache (public)
    sha256: str  # full hex sha256; "" where the source publishes only a prefix, or nothing
    num_classes: int
    labels: tuple[str, ...] = ()
    input_size: int = 112
    frames: int = 8
    width_mult: float = 1.0
    dataset: str = ""
    metrics: tuple[tuple[str, float], ...] = ()  # (name, value) measured on `dataset`
    command: str = ""  # the exact command that reproduces the checkpoint
    url: str = ""  # public download URL; "" for shipped weights
    source: str = ""  # who publishes it: "torchvision" | "pytorchvideo" | "mmaction2" | "tsm" ("" = edgevid)
    hash_prefix: str = ""  # hex prefix of the sha256 the source publishes (file-name suffix)
    published: tuple[tuple[str, Any], ...] = ()  # the source's own figures: ("top1", 71.3), ("views", "10x3")...
    labels_name: str = ""  # label list shipped as data (edgevid/weights/labels/<name>.txt) when not in `labels`

    @property
    def path(self) -> Path:
        """Location of a shipped checkpoint."""
        return WEIGHTS_DIR / self.file


@dataclass(frozen=True)
class ModelConfig:
    """Frozen description of a zoo entry (timm/torchvision style)."""

    name: str
    family: str  # "tsm" | "tsn" | ...
    backbone: str  # "resnet50" | "mobilenetv2" | ...
    builder: str  # "module:function" building an nn.Module from this config
    frames: int = 8
    min_frames: int = 1  # the fewest frames per clip the network's temporal downsampling allows
    max_frames: int | None = None  # the most (a fixed-size classifier input: C3D's fc6)
    crop_range: tuple[int, int] | None = None  # (smallest, largest) crop size the network takes, if limited
    frame_stride: int = 1  # gap between the frames the model was trained on (sets the runtime's step)
    sampling: str = "segment"  # how its clips were sampled: "segment" (TSN) or "dense" (consecutive frames)
    input_size: int = 224
    resize: int = 256  # shorter side before the centre crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 400
    shift: str = "none"  # "none" | "bidirectional" | "causal"
    shift_div: int = 8
    width_mult: float = 1.0
    can_stream: bool = False
    stream_smooth: int = 0  # predictions a stream averages by default (0: the clip length; 1: the model pools itself)
    # The stream's receptive field outgrows the clip (stacked causal convs, an LSTM): `edgevid train`
    # trains it in the stream regime by default (edgevid.train.regime).
    stream_training: bool = False
    motion: Motion | None = None  # a motion input the host computes (TSN's temporal stream); None: RGB frames
    description: str = ""
    weights: tuple[WeightsSpec, ...] = ()

    def check_input(self, frames: int, size: int) -> None:
        """Refuse a clip length or crop size the network cannot take (one line, before any export)."""
        if frames < self.min_frames or (self.max_frames is not None and frames > self.max_frames):
            span = f"{self.min_frames}-{self.max_frames}" if self.max_frames else f"at least {self.min_frames}"
            raise EdgevidError(f"{self.name} takes {span} frames per clip (its temporal downsampling), not {frames}")
        if self.crop_range is not None and not self.crop_range[0] <= size <= self.crop_range[1]:
            lo, hi = self.crop_range
            raise EdgevidError(f"{self.name} takes {lo}-{hi} px crops (its classifier's input is fixed), not {size}")

    @property
    def default_weights(self) -> WeightsSpec | None:
        """The first known checkpoint that ships with the package, if any."""
        for w in self.weights:
            if w.path.is_file():
                return w
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for ``edgevid zoo list --json``)."""
        data = asdict(self)
        data["weights"] = [
            {k: v for k, v in asdict(w).items() if k != "labels"} | {"shipped": w.path.is_file()}
            for w in self.weights
        ]
        return data


_REGISTRY: dict[str, ModelConfig] = {}
_ALIASES: dict[str, str] = {}
# A model family is one file (blocks, model class, registered builders); importing it
# registers its entries. A new family adds one line here.
_FAMILY_MODULES = ("edgevid.models.tsm", "edgevid.models.tsn", "edgevid.models.two_stream", "edgevid.models.video3d",
                   "edgevid.models.c3d", "edgevid.models.i3d", "edgevid.models.x3d", "edgevid.models.slowfast",
                   "edgevid.models.mmaction_zoo", "edgevid.models.t3d", "edgevid.models.online3d", "edgevid.models.lrcn")


def register(config: ModelConfig, aliases: tuple[str, ...] = ()) -> ModelConfig:
    """Add a config to the zoo (names are unique)."""
    if config.name in _REGISTRY or config.name in _ALIASES:
        raise ValueError(f"model {config.name!r} is registered twice")
    _REGISTRY[config.name] = config
    for alias in aliases:
        _ALIASES[alias] = config.name
    return config


def _ensure_loaded() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def list_models() -> list[ModelConfig]:
    """All registered configs, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY.values())


def aliases() -> dict[str, str]:
    """alias -> canonical name."""
    _ensure_loaded()
    return dict(_ALIASES)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """Config of a zoo entry (or alias); unknown names list the known ones."""
    _ensure_loaded()
    canonical = _ALIASES.get(name, name)
    if canonical not in _REGISTRY:
        known = ", ".join(sorted(list(_REGISTRY) + list(_ALIASES)))
        raise EdgevidError(f"unknown model {name!r}; known models: {known}")
    config = _REGISTRY[canonical]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **overrides) if overrides else config


def resolve_builder(config: ModelConfig) -> Callable[[ModelConfig], Any]:
    """Import the builder function named by ``config.builder``."""
    module_name, func = config.builder.split(":")
    return getattr(importlib.import_module(module_name), func)
