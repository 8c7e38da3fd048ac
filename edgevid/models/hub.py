"""Public weights by name: resolve, download once into the user cache, verify, recognise, label.

A zoo entry's public checkpoints are ``WeightsSpec``s with a ``url`` (the source's own release:
torchvision, PyTorchVideo, MMAction2, the TSM authors). ``fetch`` downloads one into
``$EDGEVID_CACHE/weights/<source>/<file>`` (default ``~/.cache/edgevid/weights``) with a
progress bar, through a temp file in that folder renamed into place only once the whole file is
there and verified, so a failure of any kind (404, timeout, refused connection, a body shorter
than announced, redirects that never end, a web page instead of a checkpoint, a hash mismatch,
Ctrl-C / SIGTERM, a full disk) leaves nothing in the cache. The next call reuses the file
(checked again, no request).

Verification is what the source publishes: the full sha256, or the prefix of it that torchvision
and MMAction2 put in their file names. PyTorchVideo and the TSM authors publish no hash: their
files are pinned instead (the sha256 of the first download is kept beside the file as
``<file>.sha256``, in ``sha256sum`` format, and every later download or use must match it); the
manifest and ``edgevid zoo list`` say so rather than calling them verified.

``EDGEVID_WEIGHTS_MIRROR`` (an ``http://``, ``https://`` or ``file://`` base) replaces the
sources' hosts: a URL ``https://HOST/PATH`` is fetched from ``MIRROR/HOST/PATH`` (the layout
``wget -x`` writes), for a local mirror or a machine without internet. The hashes checked are
still the sources'.

Torch-free and dependency-light (urllib, tqdm); the zoo's family modules, which register the
entries it is given, are what need torch.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError, EdgevidWarning
from edgevid.models.registry import WEIGHTS_DIR, ModelConfig, WeightsSpec

MIRROR_ENV = "EDGEVID_WEIGHTS_MIRROR"
DEFAULT_TIMEOUT = 30.0  # seconds without a byte from the server (connect, or any read)
MAX_REDIRECTS = 5  # GitHub release assets take 1; more is a misconfigured mirror or a loop
MAX_BYTES = 8 << 30  # no video checkpoint comes near this: past it the server is sending something else
LABELS_DIR = WEIGHTS_DIR / "labels"
_CHUNK = 1 << 20
# What a torch.save file starts with: a zip archive (torch >= 1.6), or a pickle (protocol >= 2).
_CHECKPOINT_MAGICS = (b"PK\x03\x04", b"\x80")


class DownloadError(EdgevidError):
    """A public checkpoint could not be downloaded, or is not what its source published."""


@dataclass(frozen=True)
class Verified:
    """A checkpoint file whose content was checked: its sha256 and how it was checked."""

    path: Path
    sha256: str
    check: str  # a sentence for the manifest: what the hash was compared with


# --- which weights --------------------------------------------------------------------------------------------


def public_weights(config: ModelConfig) -> list[WeightsSpec]:
    """The entry's checkpoints that are downloaded from their source (not shipped)."""
    return [w for w in config.weights if w.url]


def find_weights(config: ModelConfig, name: str, note: str = "") -> WeightsSpec:
    """The entry's weights called ``name`` (public or shipped); one line listing the names otherwise."""
    for w in config.weights:
        if w.name == name:
            return w
    known = ", ".join(f"{w.name} ({w.source or 'shipped'})" for w in config.weights)
    raise EdgevidError(f"{config.name} has no weights named {name!r}{note}; "
                       + (f"its weights: {known}" if known else "it has no named weights (see `edgevid zoo list`)"))


def identify(config: ModelConfig, path: str | os.PathLike) -> WeightsSpec | None:
    """The public weights of ``config`` that ``path`` is, recognised by the source's file name.

    A copy keeps its name (``edgevid zoo fetch -o DIR`` writes ``DIR/<the source's name>``), so a
    file downloaded elsewhere is recognised too; its content is then checked by ``verify``.
    """
    name = Path(path).name
    return next((w for w in public_weights(config) if w.file == name), None)


# --- where ---------------------------------------------------------------------------------------------------


def weights_cache() -> Path:
    """``$EDGEVID_CACHE/weights`` (default ``~/.cache/edgevid/weights``); not created here."""
    from edgevid.cache import cache_dir

    return cache_dir() / "weights"


def cached_path(spec: WeightsSpec) -> Path:
    """Where ``fetch`` keeps ``spec``: ``<weights cache>/<source>/<file>``."""
    for part in (spec.source, spec.file):  # registry data, but a path component all the same
        if not part or part in (".", "..") or "/" in part or "\\" in part:
            raise EdgevidError(f"weights {spec.name!r}: {part!r} is not a plain file or folder name")
    return weights_cache() / spec.source / spec.file


def pin_path(path: Path) -> Path:
    """The sha256 pinned for an unhashed source's file: ``<file>.sha256`` beside it in the cache."""
    return path.with_name(path.name + ".sha256")


def download_url(spec: WeightsSpec) -> str:
    """``spec.url``, or its place under ``$EDGEVID_WEIGHTS_MIRROR`` (``MIRROR/HOST/PATH``)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return spec.url
    if urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        raise EdgevidError(f"{MIRROR_ENV}={mirror!r} is not an http://, https:// or file:// URL")
    parts = urllib.parse.urlsplit(spec.url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


# --- what it should be -----------------------------------------------------------------------------------------


def published_hash(spec: WeightsSpec) -> str:
    """The hex sha256 (or prefix) the source publishes; "" when it publishes none."""
    return (spec.sha256 or spec.hash_prefix).lower()


def hash_policy(spec: WeightsSpec) -> str:
    """How ``spec``'s content is checked, in words (``edgevid zoo list``, the manifest)."""
    if spec.sha256:
        return f"sha256 published by {spec.source}"
    if spec.hash_prefix:
        return f"sha256 prefix {spec.hash_prefix} published by {spec.source} (in its file name)"
    return f"{spec.source} publishes no hash: not verified at the source; sha256 pinned at the first download"


def _read_pin(pin: Path) -> str | None:
    try:
        text = pin.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None
    value = text[0].lower() if text else ""
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None


def _expected(spec: WeightsSpec) -> tuple[str, str]:
    """(hex sha256 or prefix the content must start with, where it comes from); ("", "") if nothing yet."""
    if published_hash(spec):
        return published_hash(spec), f"the {'sha256' if spec.sha256 else 'sha256 prefix'} {spec.source} publishes"
    pin = pin_path(cached_path(spec))
    pinned = _read_pin(pin)
    if pinned:
        return pinned, f"the sha256 pinned at its first download ({pin})"
    return "", ""


def _mismatch(spec: WeightsSpec, what: str, digest: str) -> str | None:
    """Why ``digest`` is not ``spec``'s content, or None if it is (or nothing is known to compare with)."""
    expected, origin = _expected(spec)
    if expected and not digest.startswith(expected):
        shown = expected[:16] + ("..." if len(expected) > 16 else "")
        hint = "" if published_hash(spec) else " (if the source replaced the file on purpose, delete that pin)"
        return f"{what} has sha256 {digest[:16]}..., not {origin}: {shown}{hint}"
    return None


@lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int, inode: int) -> str:
    from edgevid.manifest import sha256_file

    return sha256_file(path)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of ``path``, hashed once per process for an unchanged file (a checkpoint is
    verified, recognised and recorded: three reads of 100+ MB otherwise)."""
    st = os.stat(path)
    return _sha256_of(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def verify(spec: WeightsSpec, path: str | os.PathLike) -> Verified:
    """Check ``path``'s content against what ``spec``'s source published (or its pin); one line if not."""
    path = Path(path)
    digest = sha256_of(path)
    problem = _mismatch(spec, str(path), digest)
    if problem:
        raise DownloadError(f"{problem}; it is not {spec.source}'s {spec.name} checkpoint (damaged or replaced)")
    if published_hash(spec):
        check = f"matches {_expected(spec)[1]}"
    else:  # said as it is: a pin proves the file did not change since, not that it is the source's
        pinned = _read_pin(pin_path(cached_path(spec))) is not None
        check = f"{spec.source} publishes no hash: not verified at the source; " + \
            ("matches the sha256 pinned at its first download here" if pinned else "no pin on this machine")
    return Verified(path, digest, check)


# --- labels and provenance -------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _label_file(name: str) -> tuple[str, ...]:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise EdgevidError(f"label list name {name!r} is not a plain name")
    path = LABELS_DIR / f"{name}.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EdgevidError(f"label list {path} cannot be read ({exc.strerror or exc}); reinstall edgevid") from exc
    return tuple(line.strip() for line in lines if line.strip())


def labels_of(spec: WeightsSpec) -> list[str]:
    """The class names of ``spec``'s classifier, in its output order (``labels``, else the shipped list)."""
    if spec.labels:
        return list(spec.labels)
    return list(_label_file(spec.labels_name)) if spec.labels_name else []


def provenance(spec: WeightsSpec, verified: Verified) -> dict[str, Any]:
    """What the manifest records about public weights: source, URL, hash, and the source's figures."""
    return {
        "weights": f"public:{spec.name}", "source": spec.source, "url": spec.url, "file": spec.file,
        "checkpoint_sha256": verified.sha256, "hash_published": published_hash(spec) or None,
        "hash_check": verified.check, "dataset": spec.dataset,
        # a citation of the source, not edgevid's measurement
        "published": dict(spec.published) | {"note": f"as published by {spec.source}, not measured by edgevid"},
    }


# --- fetching --------------------------------------------------------------------------------------------------


def fetch(spec: WeightsSpec, *, progress: bool = True, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """The verified local file of ``spec``: from the cache, else downloaded into it once.

    A cached file that no longer matches is removed (with a warning) and downloaded again. One
    ``EdgevidError`` line for every failure, and nothing left in the cache by a failed download.
    """
    if not spec.url:
        raise EdgevidError(f"weights {spec.name!r} have no public URL (they ship with edgevid)")
    if not timeout > 0:
        raise EdgevidError(f"the download timeout must be a positive number of seconds, got {timeout}")
    path = cached_path(spec)
    if path.is_file():
        problem = _mismatch(spec, str(path), sha256_of(path))
        if problem is None:
            _pin(spec, path)  # a file put into the cache by hand: pinned from now on
            return path
        if not os.access(path.parent, os.W_OK):
            raise DownloadError(f"{problem}; delete it or set EDGEVID_CACHE to a writable folder")
        warnings.warn(EdgevidWarning(f"{problem}: removed, downloading it again"), stacklevel=2)
        path.unlink()
    from edgevid.cache import ensure_dir

    ensure_dir(path.parent, "weights cache")  # a read-only cache fails here, before any request
    _download(spec, download_url(spec), path, progress, timeout)
    _pin(spec, path)
    return path


def _pin(spec: WeightsSpec, path: Path) -> None:
    """Keep the sha256 of an unhashed source's file beside it, once (a read-only cache keeps none)."""
    pin = pin_path(path)
    if published_hash(spec) or _read_pin(pin) is not None:
        return
    from edgevid.manifest import atomic_write_text

    try:
        atomic_write_text(pin, f"{sha256_of(path)}  {path.name}\n")
    except EdgevidError:
        if os.access(path.parent, os.W_OK):
            raise


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc or parts.path


def _open(url: str, timeout: float) -> Any:
    """The server's response for ``url``; every network failure as one ``DownloadError`` line."""
    from edgevid import __version__

    opener = urllib.request.build_opener(_Redirects())
    request = urllib.request.Request(url, headers={"User-Agent": f"edgevid/{__version__}"})
    problem = ""
    try:
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            problem = (f"{url}: redirects that do not end at a file (more than {MAX_REDIRECTS}, a loop, or to "
                       f"another scheme; HTTP {exc.code})")
        else:
            problem = f"{url}: HTTP {exc.code} {exc.reason}" + (" (no such file there)" if exc.code == 404 else "")
    except urllib.error.URLError as exc:
        problem = _network_problem(url, exc.reason, timeout)
    except (OSError, http.client.HTTPException) as exc:
        problem = _network_problem(url, exc, timeout)
    raise DownloadError(problem)  # outside the handlers: no network exception chained to it


def _network_problem(url: str, reason: Any, timeout: float) -> str:
    host = _host(url)
    if isinstance(reason, TimeoutError):
        return f"no answer from {host} within {timeout:g} s ({url}); check the network, or give it longer (--timeout)"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection ({url})"
    if isinstance(reason, socket.gaierror):
        return (f"cannot resolve {host} (no internet here?): run `edgevid zoo fetch` on a machine with internet and "
                f"copy the file, or set {MIRROR_ENV}")
    text = str(getattr(reason, "strerror", None) or reason).strip().splitlines()
    return f"cannot download {url}: {text[0] if text else type(reason).__name__}"


def _read(response: Any, url: str, timeout: float) -> bytes:
    problem = ""
    try:
        return response.read(_CHUNK)
    except TimeoutError:
        problem = f"the download of {url} stalled: no data for {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        problem = f"the download of {url} broke off ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    raise DownloadError(problem)


def _download(spec: WeightsSpec, url: str, path: Path, progress: bool, timeout: float) -> None:
    """Stream ``url`` into a temp file beside ``path``, check it, rename it into place."""
    from tqdm import tqdm

    from edgevid.manifest import atomic_writer
    from edgevid.signals import exit_on

    with exit_on(), _open(url, timeout) as response:  # SIGTERM: unwinds, the temp file is removed
        if response.headers.get_content_type() == "text/html":
            raise DownloadError(f"{url} answered with a web page (text/html), not a checkpoint: a login, error or "
                                "landing page? Check the URL or the mirror")
        announced = _content_length(response)
        if announced is not None:
            _check_room(path.parent, announced)
        digest = hashlib.sha256()
        got, head = 0, b""
        with atomic_writer(path) as fh, tqdm(total=announced, unit="B", unit_scale=True, unit_divisor=1024,
                                             desc=f"{spec.source} {spec.file}", disable=not progress,
                                             file=sys.stderr) as bar:
            while chunk := _read(response, url, timeout):
                if len(head) < 8:
                    head = (head + chunk)[:8]
                    _check_magic(head, url)
                got += len(chunk)
                if got > MAX_BYTES or (announced is not None and got > announced):
                    raise DownloadError(f"{url} sent more than {'announced' if announced else 'any checkpoint'} "
                                        f"({got} bytes): not a checkpoint download")
                fh.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
            if announced is not None and got < announced:
                raise DownloadError(f"the download of {url} ended after {got} of {announced} bytes (the connection "
                                    "closed early); run it again")
            if not head:
                raise DownloadError(f"{url} is empty: not a checkpoint")
            if len(head) < len(_CHECKPOINT_MAGICS[0]) and not head.startswith(b"\x80"):
                raise DownloadError(f"{url} is {got} bytes long: not a checkpoint")
            problem = _mismatch(spec, url, digest.hexdigest())
            if problem:
                raise DownloadError(f"{problem}: refused, nothing kept (a damaged download, or the file changed at the "
                                    "source)")
        if progress:
            print(f"downloaded {spec.source}'s {spec.name} weights ({got / 2**20:.1f} MiB) to {path}", file=sys.stderr)


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    if length is not None and not 0 <= length <= MAX_BYTES:
        raise DownloadError(f"{response.geturl()} announces {length} bytes: not a checkpoint download")
    return length


def _check_room(folder: Path, size: int) -> None:
    free = shutil.disk_usage(folder).free
    if size > free:
        raise DownloadError(f"the weights cache {folder} has {free / 2**20:.0f} MiB free, the download needs "
                            f"{size / 2**20:.0f} MiB; free some space or set EDGEVID_CACHE")


def _check_magic(head: bytes, url: str) -> None:
    """Refuse at the first bytes what cannot be a ``torch.save`` file (an error page sent as 200)."""
    if any(head.startswith(m[:len(head)]) or head.startswith(m) for m in _CHECKPOINT_MAGICS):
        return
    shown = head.decode("ascii", errors="replace").replace("\n", " ").strip()
    raise DownloadError(f"{url} is not a PyTorch checkpoint (it starts with {shown!r}): an error page? Check the URL "
                        "or the mirror")
