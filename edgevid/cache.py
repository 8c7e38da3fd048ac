"""Where edgevid keeps what it generates and reuses: ``$EDGEVID_CACHE`` or ``~/.cache/edgevid``.

Torch-free (the runtime keeps its TensorRT engines here). Subfolders: ``calib-synth-*`` (the
built-in calibration / held-out videos), ``report-artifacts`` (the exports of ``edgevid
report``), ``tensorrt`` (engines built on first load, and the timing cache).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$EDGEVID_CACHE`` if set, else ``~/.cache/edgevid`` (not created here)."""
    return Path(os.environ.get("EDGEVID_CACHE") or Path.home() / ".cache" / "edgevid")
