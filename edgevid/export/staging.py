"""Atomic artifact directories: build in a hidden temp dir next to the destination, rename at the end.

A failed or interrupted export leaves nothing behind (not even parent folders it created).
Replacing an existing directory needs ``force``, and even then only an earlier edgevid export
(a folder with ``manifest.json``) or an empty folder is replaced, so ``-o ~ --force`` cannot
delete a home directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgevid.errors import EdgevidError
from edgevid.manifest import MANIFEST_NAME


def check_destination(out_dir: str | os.PathLike, force: bool) -> Path:
    """Refuse a destination that exists (without ``force``) or is not ours to replace."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() or out.is_symlink():
        if not force:
            raise EdgevidError(f"{out} already exists; pass --force to replace it")
        if not out.is_dir() or out.is_symlink():
            raise EdgevidError(f"{out} exists and is not a directory; refusing to replace it")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise EdgevidError(f"{out} is not an edgevid export (no {MANIFEST_NAME}); refusing to replace it")
    return out


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp dir to fill; on success it becomes ``out_dir``, on failure it vanishes."""
    out = check_destination(out_dir, force)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield work
        _replace(work, out, force)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for parent in created:  # innermost first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def _publish_permissions(work: Path) -> None:
    # mkdtemp/mkstemp create 0700/0600 entries; an artifact is meant to be copied and served,
    # so give it the permissions a normal mkdir/open would have under the current umask.
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)
    for path in work.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace(work: Path, out: Path, force: bool) -> None:
    _publish_permissions(work)
    check_destination(out, force)  # again: something may have appeared while we exported
    if not out.exists():
        os.rename(work, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rename(out, old / out.name)
    try:
        os.rename(work, out)
    except BaseException:
        os.rename(old / out.name, out)  # put the previous export back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
