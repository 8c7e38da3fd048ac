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


def ensure_dir(path: Path, what: str) -> Path:
    """Create the cache folder ``path`` if missing; one clear error if that cannot work.

    ``$EDGEVID_CACHE`` naming a file, a read-only cache, a path under a file: each is a
    one-line error naming the folder and the way out, never a traceback at the first write.
    """
    from edgevid.errors import EdgevidError

    hint = "set EDGEVID_CACHE to a writable folder"
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise EdgevidError(f"{what} {path} cannot be created: {parent} is not a folder; {hint}")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgevidError(f"{what} {path} cannot be created ({exc.strerror or exc}); {hint}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise EdgevidError(f"{what} {path} is not writable; {hint}")
    return path
