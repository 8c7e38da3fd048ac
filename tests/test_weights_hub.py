"""Weights by name (issue 25): download once, verify, cache, label, record, list.

Nothing here reaches the sources: a loopback HTTP server (127.0.0.1, a thread of this test) serves
real torch checkpoints under the URL paths of the zoo's own entries, through the mirror variable
the real code reads (``EDGEVID_WEIGHTS_MIRROR``: ``MIRROR/<host>/<path>``). Every failure must be
one ``EdgevidError`` line and leave no file in the cache.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from probe import check_one_line, edgevid

from edgevid.errors import EdgevidError
from edgevid.models import hub
from edgevid.models.registry import get_config, list_models

_NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


# --- a loopback server -------------------------------------------------------------------------------------------


class _Server:
    """``routes``: URL path -> what to answer; ``hits``: requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple] = {}
        self.hits: Counter = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = urllib.parse.urlsplit(self.path).path
                server.hits[path] += 1
                kind, *rest = server.routes.get(path, ("status", 404))
                try:
                    getattr(self, f"_{kind}")(*rest)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _file(self, data: bytes, ctype: str = "application/octet-stream", sent: int | None = None,
                      delay: float = 0.0, stall: float = 0.0) -> None:
                time.sleep(delay)  # before the headers: a server that does not answer
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                part = data if sent is None else data[:sent]
                self.wfile.write(part[:16])
                self.wfile.flush()
                time.sleep(stall)  # mid-body: a download that stalls
                self.wfile.write(part[16:])
                self.close_connection = True  # `sent`: the body ends short of Content-Length

            def _status(self, code: int) -> None:
                self.send_error(code)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def route(self, url: str) -> str:
        """The path under which the mirror serves the public ``url``."""
        parts = urllib.parse.urlsplit(url)
        return f"/{parts.netloc}{parts.path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    srv = _Server()
    monkeypatch.setenv("EDGEVID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(hub.MIRROR_ENV, srv.base)
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy in the environment must not take loopback requests
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield srv
    srv.close()


def _checkpoint(**tensors: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    torch.save(tensors or {"w": torch.arange(64, dtype=torch.float32)}, buf)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _spec(model: str = "r3d-18", **changes):
    """The entry's real public weights (its URL), with ``changes`` (the hash of the test's file)."""
    return replace(hub.public_weights(get_config(model))[0], **changes)


def _files(folder: Path) -> list[Path]:
    """Every file left under ``folder`` (empty folders do not count)."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


# --- downloads ---------------------------------------------------------------------------------------------------


def test_download_shows_progress_verifies_and_is_reused_without_a_request(server, tmp_path, capsys):
    data = _checkpoint()
    spec = _spec(hash_prefix=_sha(data)[:8])
    server.routes[server.route(spec.url)] = ("file", data)
    path = hub.fetch(spec)
    assert path == tmp_path / "cache" / "weights" / "torchvision" / "r3d_18-b3b3357e.pth"
    assert path.read_bytes() == data and _files(tmp_path / "cache") == [path]
    err = capsys.readouterr().err
    assert "torchvision r3d_18-b3b3357e.pth" in err and "100%" in err and "downloaded" in err  # the progress bar
    assert hub.fetch(spec, progress=False) == path
    assert server.hits[server.route(spec.url)] == 1  # the second call read the cache
    assert hub.verify(spec, path).check == "matches the sha256 prefix torchvision publishes"


def test_the_real_hash_refuses_a_different_file_and_keeps_nothing(server, tmp_path):
    spec = _spec()  # r3d-18's real spec: the file must start with torchvision's b3b3357e
    server.routes[server.route(spec.url)] = ("file", _checkpoint())
    with pytest.raises(EdgevidError, match="not the sha256 prefix torchvision publishes: b3b3357e") as exc:
        hub.fetch(spec, progress=False)
    assert "\n" not in str(exc.value) and "nothing kept" in str(exc.value)
    assert _files(tmp_path / "cache") == []


@pytest.mark.parametrize("case, route, match", [
    ("404", None, "HTTP 404"),
    ("partial", ("file", "DATA", "application/octet-stream", 100), r"ended after 100 of \d+ bytes"),
    ("web page", ("file", b"<!DOCTYPE html><html>sign in</html>", "text/html"), "answered with a web page"),
    ("not a checkpoint", ("file", b"<!DOCTYPE html><html>sign in</html>"), "is not a PyTorch checkpoint"),
    ("no answer", ("file", "DATA", "application/octet-stream", None, 3.0), r"no answer from 127.0.0.1:\d+ within 0.5 s"),
    ("stall", ("file", "DATA", "application/octet-stream", None, 0.0, 3.0), "stalled: no data for 0.5 s"),
    ("redirect loop", ("redirect", "SELF"), "redirects that do not end at a file"),
    ("endless redirects", ("redirect", "/hop/0"), "redirects that do not end at a file"),
])
def test_a_failed_download_is_one_line_and_leaves_nothing(server, tmp_path, case, route, match):
    data = _checkpoint()
    spec = _spec(hash_prefix=_sha(data)[:8])
    path = server.route(spec.url)
    if route is not None:
        route = tuple(data if v == "DATA" else (server.base + path if v == "SELF" else v) for v in route)
        server.routes[path] = route
    for i in range(20):  # /hop/0 -> /hop/1 -> ...: every URL new, never a file
        server.routes[f"/hop/{i}"] = ("redirect", f"/hop/{i + 1}")
    started = time.monotonic()
    with pytest.raises(EdgevidError, match=match) as exc:
        hub.fetch(spec, progress=False, timeout=0.5)
    assert "\n" not in str(exc.value)
    assert time.monotonic() - started < 10
    assert _files(tmp_path / "cache") == []
    assert sum(server.hits.values()) <= hub.MAX_REDIRECTS + 1  # a loop or an endless chain is cut short


def test_redirects_are_followed(server):
    data = _checkpoint()
    spec = _spec(hash_prefix=_sha(data)[:8])
    server.routes[server.route(spec.url)] = ("redirect", "/release-asset/r3d.pth")  # as GitHub releases do
    server.routes["/release-asset/r3d.pth"] = ("redirect", server.base + "/cdn/r3d.pth")
    server.routes["/cdn/r3d.pth"] = ("file", data)
    assert hub.fetch(spec, progress=False).read_bytes() == data
    assert server.hits["/cdn/r3d.pth"] == 1


def test_a_refused_connection_is_one_line(server, tmp_path, monkeypatch):
    closed = _Server()
    closed.close()  # nothing listens on its port any more
    monkeypatch.setenv(hub.MIRROR_ENV, closed.base)
    with pytest.raises(EdgevidError, match="refused the connection"):
        hub.fetch(_spec(), progress=False)
    assert _files(tmp_path / "cache") == []


def test_a_source_without_hash_is_pinned_at_first_download(server, tmp_path):
    spec = _spec("x3d-s")  # PyTorchVideo publishes no checksum
    assert spec.source == "pytorchvideo" and not hub.published_hash(spec)
    assert "not verified at the source" in hub.hash_policy(spec)
    first = _checkpoint()
    server.routes[server.route(spec.url)] = ("file", first)
    path = hub.fetch(spec, progress=False)
    pin = hub.pin_path(path)
    assert pin.read_text() == f"{_sha(first)}  {path.name}\n"  # sha256sum's format
    assert "pinned at its first download" in hub.verify(spec, path).check
    # The source's file changes: a new download is refused against the pin, nothing replaces the pinned one.
    path.unlink()
    server.routes[server.route(spec.url)] = ("file", _checkpoint(w=torch.ones(3)))
    with pytest.raises(EdgevidError, match="not the sha256 pinned at its first download"):
        hub.fetch(spec, progress=False)
    assert _files(tmp_path / "cache") == [pin]


def test_a_damaged_cached_file_is_downloaded_again(server, tmp_path):
    data = _checkpoint()
    spec = _spec(hash_prefix=_sha(data)[:8])
    server.routes[server.route(spec.url)] = ("file", data)
    path = hub.fetch(spec, progress=False)
    path.write_bytes(data[:-10])  # a disk error, an edit
    with pytest.warns(UserWarning, match="removed, downloading it again"):
        assert hub.fetch(spec, progress=False).read_bytes() == data
    assert server.hits[server.route(spec.url)] == 2


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop root's override")
def test_a_read_only_cache_is_one_line_before_any_request(server, tmp_path):
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    cache.chmod(0o555)
    env = {**os.environ, "EDGEVID_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([*_NO_DAC, sys.executable, "-m", "edgevid.cli", "zoo", "fetch", "r3d-18", "-q"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, timeout=120)
    cache.chmod(0o755)
    check_one_line(proc, "set EDGEVID_CACHE to a writable folder")
    assert not any(cache.iterdir()) and sum(server.hits.values()) == 0


def test_sigterm_during_a_download_removes_the_temp_file(server, tmp_path):
    data = _checkpoint()
    spec = _spec("x3d-s")
    server.routes[server.route(spec.url)] = ("file", data, "application/octet-stream", None, 0.0, 30.0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edgevid.cli", "zoo", "fetch", "x3d-s", "-q"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    folder = tmp_path / "cache" / "weights" / "pytorchvideo"
    deadline = time.monotonic() + 60
    while not _files(folder) and time.monotonic() < deadline:  # the temp file exists: the body is streaming
        time.sleep(0.05)
    assert _files(folder), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert _files(tmp_path / "cache") == []


# --- the zoo's data ------------------------------------------------------------------------------------------------


def test_the_kinetics_labels_are_torchvisions_categories():
    """The shipped list is torchvision's meta["categories"] line for line (MMAction2's label_map_k400.txt
    and torchvision's are the same alphabetical list: compared when the file was made)."""
    from torchvision.models.video import R3D_18_Weights

    labels = (hub.LABELS_DIR / "kinetics400.txt").read_text().splitlines()
    assert labels == R3D_18_Weights.KINETICS400_V1.meta["categories"]
    assert hub.labels_of(_spec("r3d-18")) == labels


_PUBLIC = [(c.name, w.name) for c in list_models() for w in c.weights if w.url]


@pytest.mark.parametrize("model, weights", _PUBLIC, ids=[f"{m}:{w}" for m, w in _PUBLIC])
def test_every_public_checkpoint_is_complete(model, weights):
    """URL, source, a cache place, labels for every class, the source's top-1, a hash or an honest 'none'."""
    config = get_config(model)
    spec = hub.find_weights(config, weights)
    assert spec.url.startswith("https://") and spec.source in ("torchvision", "pytorchvideo", "mmaction2", "tsm")
    assert urllib.parse.urlsplit(spec.url).path.endswith("/" + spec.file)
    assert hub.cached_path(spec).name == spec.file
    labels = hub.labels_of(spec)
    assert len(labels) == spec.num_classes and len(set(labels)) == len(labels)  # sthv2: 174 of an entry's 400
    published = dict(spec.published)
    assert 0 < published["top1"] < 100 and published["dataset"] == spec.dataset and published["views"]
    if spec.source in ("torchvision", "mmaction2"):
        assert spec.hash_prefix and spec.file.removesuffix(".pth").endswith("-" + spec.hash_prefix)
    else:  # PyTorchVideo and the TSM authors publish none: pinned, and said so
        assert not hub.published_hash(spec) and "publishes no hash" in hub.hash_policy(spec)


@pytest.mark.parametrize("model, enum", [("r3d-18", "R3D_18_Weights"), ("mc3-18", "MC3_18_Weights"),
                                         ("r2plus1d-18", "R2Plus1D_18_Weights"), ("s3d", "S3D_Weights")])
def test_torchvision_entries_carry_torchvisions_own_weights(model, enum):
    import torchvision.models.video as tvv

    official = getattr(tvv, enum).KINETICS400_V1
    spec = _spec(model)
    metrics = official.meta["_metrics"]["Kinetics-400"]
    assert spec.url == official.url and spec.name == "kinetics400"
    assert dict(spec.published)["top1"] == metrics["acc@1"] and dict(spec.published)["top5"] == metrics["acc@5"]
    assert hub.labels_of(spec) == official.meta["categories"]


def test_the_hub_imports_no_torch():
    code = "import sys, edgevid.models.hub; print(sorted({'torch', 'torchvision'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_label_lists_have_one_name_per_class():
    assert len((hub.LABELS_DIR / "sthv2.txt").read_text().splitlines()) == 174
    assert len((hub.LABELS_DIR / "ucf101.txt").read_text().splitlines()) == 101


# --- the commands --------------------------------------------------------------------------------------------------


def test_zoo_list_shows_public_weights_source_and_published_accuracy(capsys):
    from edgevid.cli import main

    assert main(["zoo", "list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    r3d = entries["r3d-18"]["weights"][0]
    assert r3d["url"] == "https://download.pytorch.org/models/r3d_18-b3b3357e.pth" and r3d["source"] == "torchvision"
    assert r3d["hash_published"] == "b3b3357e" and r3d["published"]["top1"] == 63.2 and not r3d["shipped"]
    assert "not verified at the source" in entries["x3d-s"]["weights"][0]["hash_check"]
    assert main(["zoo", "list"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.split("public weights", 1)[1].splitlines() if line.startswith("r3d-18 "))
    assert "kinetics400" in row and "torchvision" in row and "63.20" in row and "b3b3357e" in row


def test_weights_and_checkpoint_together_or_an_unknown_name_are_one_line(tmp_path):
    check_one_line(edgevid(["export", "--model", "r3d-18", "--weights", "kinetics400", "--checkpoint", "x.pt", "-q"],
                           cwd=tmp_path), "give --weights or --checkpoint, not both")
    check_one_line(edgevid(["eval", "--model", "r3d-18", "--data", tmp_path, "--weights", "kinetics", "-q"],
                           cwd=tmp_path), "its weights: kinetics400 (torchvision)")


def test_fetch_copies_and_a_copy_is_recognised_by_its_name(server, tmp_path, capsys):
    from edgevid.cli import main
    from edgevid.models import build_model

    state = {k: v.half() for k, v in build_model("r3d-18").net.state_dict().items()}  # torchvision's keys
    data = _checkpoint(**state)
    _patch_hash(data)
    server.routes[server.route(_spec().url)] = ("file", data)
    assert main(["zoo", "fetch", "r3d-18", "-o", str(tmp_path / "usb"), "-q"]) == 0
    copy = Path(capsys.readouterr().out.strip())
    assert copy == (tmp_path / "usb" / "r3d_18-b3b3357e.pth").absolute() and copy.read_bytes() == data
    assert main(["zoo", "fetch", "r3d-18", "-o", str(tmp_path / "usb"), "-q"]) == 0  # the same file: left as it is
    (tmp_path / "usb" / copy.name).write_bytes(b"mine")
    assert main(["zoo", "fetch", "r3d-18", "-o", str(tmp_path / "usb"), "-q"]) == 2
    assert "is not this checkpoint" in capsys.readouterr().err
    copy.write_bytes(data)
    model = build_model("r3d-18", checkpoint=copy)  # as `--weights FILE` on an offline machine
    assert model.labels[:2] == ["abseiling", "air drumming"] and len(model.labels) == 400
    assert model.weights_info["source"] == "torchvision" and "matches" in model.weights_info["hash_check"]


def _patch_hash(data: bytes) -> None:
    """Give r3d-18's spec the hash of the test's file (no test file can have torchvision's)."""
    from edgevid.models import registry

    config = get_config("r3d-18")
    spec = replace(config.weights[0], hash_prefix=_sha(data)[:8])
    registry._REGISTRY["r3d-18"] = replace(config, weights=(spec,))  # `_restore_registry` puts it back


@pytest.fixture(autouse=True)
def _restore_registry():
    from edgevid.models import registry

    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_export_with_weights_by_name_records_provenance_and_labels(server, tmp_path, capsys):
    """`edgevid export --model r3d-18 --weights kinetics400` end to end, through the loopback server."""
    from edgevid.cli import main
    from edgevid.manifest import Manifest
    from edgevid.models import build_model

    state = {k: v.half() for k, v in build_model("r3d-18").net.state_dict().items()}
    data = _checkpoint(**state)
    _patch_hash(data)
    server.routes[server.route(_spec().url)] = ("file", data)
    out = tmp_path / "r3d"
    assert main(["export", "--model", "r3d-18", "--weights", "kinetics400", "--frames", "4", "--size", "64",
                 "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "100%" in captured.err and "weights from torchvision" in captured.out
    manifest = Manifest.load(out)
    prov = manifest.provenance
    assert prov["weights"] == "public:kinetics400" and prov["source"] == "torchvision"
    assert prov["url"] == "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"
    assert prov["checkpoint_sha256"] == _sha(data) and prov["hash_published"] == _sha(data)[:8]
    assert prov["hash_check"] == "matches the sha256 prefix torchvision publishes"
    assert prov["published"]["top1"] == 63.2 and prov["published"]["dataset"] == "Kinetics-400"
    assert manifest.labels == (hub.LABELS_DIR / "kinetics400.txt").read_text().splitlines()
    assert manifest.validation["onnxruntime"]["max_rel_diff"] <= 1e-3
