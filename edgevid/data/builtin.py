"""The built-in synthetic sets, generated into the cache on first use (a few seconds each).

They live here, below both ``compress`` (INT8 calibration reads the held-out set's ``train``
split) and ``report`` (which scores its ``val`` split and times gating on the still set), so
neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from edgevid.cache import cache_dir, ensure_dir
from edgevid.errors import EdgevidError

# Its own seed, so it shares no video with a model trained on `edgevid data synth` (seed 0)
# data. 24 videos per class with a quarter held out: 198 train videos to calibrate on, 66 val
# videos (6 per class) for INT8-vs-FP32 and `edgevid report`.
HELD_OUT_SEED, HELD_OUT_PER_CLASS = 1, 24
# Actions inside 48 still frames before and 4 after, with camera noise of 2 grey levels
# (`edgevid data synth --seed 2 --still 48:4 --noise 2`): where frame-delta gating pays.
STILL, STILL_NOISE, STILL_SEED, STILL_PER_CLASS = (48, 4), 2.0, 2, 6


def _generate(root: Path, what: str, progress: bool, **options: object) -> Path:
    from edgevid.data.synth import generate_dataset

    if not (root / "val.txt").is_file():
        ensure_dir(cache_dir(), "the edgevid cache")
        try:
            generate_dataset(root, force=True, progress=progress, **options)
        except OSError as exc:
            raise EdgevidError(f"cannot write {what} to {root}: {exc}; set EDGEVID_CACHE to a writable "
                               "folder") from exc
    return root


def held_out_set(progress: bool = False) -> Path:
    """The default INT8 calibration set (``train``) and the report's held-out videos (``val``)."""
    from edgevid.data.synth import GENERATOR_VERSION

    root = cache_dir() / f"calib-synth-v{GENERATOR_VERSION}-seed{HELD_OUT_SEED}-n{HELD_OUT_PER_CLASS}"
    return _generate(root, "the built-in held-out set", progress, seed=HELD_OUT_SEED,
                     videos_per_class=HELD_OUT_PER_CLASS, val_fraction=0.25)


def still_set(progress: bool = False) -> Path:
    """The built-in set with still stretches, for the report's gating and salient-window rows."""
    from edgevid.data.synth import GENERATOR_VERSION

    root = cache_dir() / f"still-synth-v{GENERATOR_VERSION}-seed{STILL_SEED}-n{STILL_PER_CLASS}-{STILL[0]}x{STILL[1]}"
    return _generate(root, "the built-in set with still stretches", progress, seed=STILL_SEED,
                     videos_per_class=STILL_PER_CLASS, frames=16, size=112, val_fraction=0.5, still=STILL,
                     noise=STILL_NOISE)
