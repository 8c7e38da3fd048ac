"""Atomic artifact directories: build in a hidden temp dir next to the destination, rename at the end.

A failed or interrupted export (Ctrl-C, SIGTERM) leaves nothing behind (not even parent
folders it created). A process killed outright (SIGKILL, power loss) cannot clean up, so
each temp dir records its creator's pid and host, and the next export to the same place
removes the temp dirs whose creator is gone. Replacing an existing directory needs
``force``, and even then only an earlier edgevid export (a folder with ``manifest.json``)
or an empty folder is replaced, so ``-o ~ --force`` cannot delete a home directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from edgevid.errors import EdgevidError
from edgevid.manifest import MANIFEST_NAME, check_writable, file_mode, write_error

# Inside every temp dir: who made it ({"pid", "host"}), so a later run can tell a stale one.
OWNER_FILE = ".edgevid-staging"
# errno values of a failed write (as opposed to, say, a missing input file).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                 errno.ENOTDIR}


def check_destination(out_dir: str | os.PathLike, force: bool, marker: str = MANIFEST_NAME) -> Path:
    """Refuse a destination that exists (without ``force``), is not ours to replace, or cannot be written.

    ``marker``: the file that makes a folder one edgevid wrote (an export's manifest.json, a
    bundle's bundle.json); only such a folder, or an empty one, is replaced.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() or out.is_symlink():
        if not force:
            raise EdgevidError(f"{out} already exists; pass --force to replace it")
        if not out.is_dir() or out.is_symlink():
            raise EdgevidError(f"{out} exists and is not a directory; refusing to replace it")
        if any(out.iterdir()) and not (out / marker).is_file():
            what = "export" if marker == MANIFEST_NAME else "output"
            raise EdgevidError(f"{out} is not an edgevid {what} (no {marker}); refusing to replace it")
    check_writable(out)  # before the export runs, not at its end
    return out


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike, force: bool = False, marker: str = MANIFEST_NAME) -> Iterator[Path]:
    """Yield a temp dir to fill; on success it becomes ``out_dir``, on failure it vanishes.

    SIGTERM meanwhile removes the temp dir and created parents and exits with 143 at once.
    An ``OSError`` of a failed write (full disk, read-only) becomes a one-line ``EdgevidError``.
    """
    out = check_destination(out_dir, force, marker)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    pending: list[Path] = []  # the temp dir, once made: what SIGTERM removes
    with _terminate_cleanly(lambda: ([shutil.rmtree(w, ignore_errors=True) for w in pending], _remove_created(created))):
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(out)
            work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
            pending.append(work)
        except OSError as exc:
            _remove_created(created)
            raise write_error(out, exc) from exc
        try:
            _mark_owner(work)
            yield work
            _replace(work, out, force, marker)
        except BaseException as exc:
            shutil.rmtree(work, ignore_errors=True)
            _remove_created(created)
            if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                raise write_error(out, exc) from exc
            raise


def remove_stale(out: Path) -> list[Path]:
    """Remove the temp dirs of earlier exports to ``out`` whose process is gone; returns them.

    Only dirs named like ours (``.<name>.*.partial`` / ``.old``) that hold our owner file
    naming this host and a pid that no longer runs are touched.
    """
    removed = []
    prefix = f".{out.name}."
    with contextlib.suppress(OSError):
        for entry in out.parent.iterdir():
            if not (entry.name.startswith(prefix) and entry.name.endswith((".partial", ".old"))):
                continue
            if entry.is_symlink() or not entry.is_dir() or _owner_alive(entry / OWNER_FILE):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _owner_alive(marker: Path) -> bool:
    """True unless ``marker`` names a process of this host that has exited (unknown: alive)."""
    try:
        owner = json.loads(marker.read_text())
        pid, host = int(owner["pid"]), owner["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return True  # not ours, or unreadable: leave it
    if host != socket.gethostname() or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def _mark_owner(folder: Path) -> None:
    (folder / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def _remove_created(created: list[Path]) -> None:
    for parent in created:  # innermost first
        with contextlib.suppress(OSError):
            parent.rmdir()


@contextlib.contextmanager
def _terminate_cleanly(cleanup: Callable[[], object]) -> Iterator[None]:
    """While inside, SIGTERM runs ``cleanup`` and exits with 128 + 15 at once.

    The handler does not raise into the interrupted code: an exception unwinding out of the
    middle of torch's exporter or a backend's native call crashed the process now and then
    (SIGSEGV under load) instead of cleaning up. Installed only from the main thread and only
    over the default handler (a program with its own SIGTERM handling keeps it, and a nested
    staging leaves it to the outer one, whose temp dir holds its own); restored on the way out.
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        try:
            cleanup()
        finally:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _publish_permissions(work: Path) -> None:
    # mkdtemp/mkstemp create 0700/0600 entries; an artifact is meant to be copied and served,
    # so give it the permissions a normal mkdir/open would have under the current umask.
    work.chmod(file_mode(directory=True))
    for path in work.rglob("*"):
        path.chmod(file_mode(directory=path.is_dir()))


def _replace(work: Path, out: Path, force: bool, marker: str) -> None:
    (work / OWNER_FILE).unlink(missing_ok=True)  # the artifact itself carries no staging marker
    _publish_permissions(work)
    check_destination(out, force, marker)  # again: something may have appeared while we exported
    if not out.exists():
        os.rename(work, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    _mark_owner(old)
    os.rename(out, old / out.name)
    try:
        os.rename(work, out)
    except BaseException:
        os.rename(old / out.name, out)  # put the previous export back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
