"""Issue 23, the Triton cases of the reliability probe, by their probe ids.

The bad inputs run the real `edgevid` command (tests/probe.py): exit 2, one line naming the
problem, no traceback, nothing written, no process left. The write cases check what lands in
the repository (only the manifest's files, never a link's target, never the user's README;
a config built by protobuf, so no name can change its structure). The server cases start the
CPU tritonserver of nvidia-pytriton on loopback ports (skipped, with the reason, where it is
absent) and check the process tree after SIGTERM / SIGKILL of either side: no tritonserver,
no Python-backend stub, no work folder left behind.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from probe import TAG_VAR, check_case, check_one_line, edgevid, kill_tagged, leftovers, new_tag

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'edgevid[triton]')")

# Runs a command as root without the capabilities that let root ignore file permissions (the
# suite runs as root in CI), so a mode-000 folder is as unreadable as it is for any user.
_NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
SECRET = b"the user's secret, never to be copied"
# A name that would inject an output entry into a config.pbtxt built by string formatting.
QUOTED = 'frame" data_type: TYPE_FP32 dims: [ 1 ] } ] output [ { name: "injected'


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def art(runtime_stream_artifact, tmp_path):
    """A private copy of the small stream artifact (model.onnx, model.xml/.bin, manifest.json)."""
    dst = tmp_path / "art"
    shutil.copytree(runtime_stream_artifact, dst)
    return dst


def _edit_manifest(art: Path, edit) -> Path:
    path = art / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return art


def _save_onnx(art: Path, proto) -> None:
    """Save ``proto`` as the artifact's model.onnx and record its new sha256, as an export would."""
    import onnx

    from edgevid.manifest import sha256_file

    onnx.save_model(proto, str(art / "model.onnx"))
    digest = sha256_file(art / "model.onnx")
    _edit_manifest(art, lambda d: d["provenance"].update(onnx_sha256=digest))


def _external_weight(art: Path, location: str) -> Path:
    """Move the ONNX's first initializer into an external file at ``location`` (re-hashed, so only the
    external data is wrong)."""
    import onnx
    from onnx.external_data_helper import set_external_data

    proto = onnx.load(str(art / "model.onnx"))
    tensor = next(t for t in proto.graph.initializer if t.raw_data)
    set_external_data(tensor, location, offset=0, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    _save_onnx(art, proto)
    return art


def _rename_input(art: Path, old: str, new: str) -> Path:
    """Rename a graph input in model.onnx and in the manifest."""
    import onnx

    proto = onnx.load(str(art / "model.onnx"))
    for value in proto.graph.input:
        if value.name == old:
            value.name = new
    for node in proto.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
    _save_onnx(art, proto)
    return _edit_manifest(art, lambda d: d["inputs"][0].update(name=new))


def _config(model_dir: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _write(art: Path, repo: Path, *extra) -> subprocess.CompletedProcess:
    proc = edgevid(["triton", "write", art, "-o", repo, "-q", *extra], cwd=repo.parent, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink())


# --- the one-line matrix ------------------------------------------------------------------------


def _t1(tmp, art, video):
    os.mkfifo(tmp / "outside.bin")  # anything that reads it hangs: the test would time out
    return ["triton", "write", _external_weight(art, "../work/outside.bin"), "-o", tmp / "repo", "--flavour",
            "production"], "outside the artifact folder"


def _t2(tmp, art, video):
    os.mkfifo(tmp / "outside.bin")
    return ["triton", "write", _external_weight(art, str(tmp / "outside.bin")), "-o", tmp / "repo", "--flavour",
            "production"], "outside the artifact folder"


def _t2_inside(tmp, art, video):
    (art / "weights.bin").write_bytes(b"\0" * 64)
    return ["triton", "write", _external_weight(art, "weights.bin"), "-o", tmp / "repo"], \
        "which manifest.json neither lists nor hashes"


def _t4_model_is_link_outside(tmp, art, video):
    (tmp / "model.onnx").write_bytes((art / "model.onnx").read_bytes())  # same bytes, same sha256
    (art / "model.onnx").unlink()
    (art / "model.onnx").symlink_to(tmp / "model.onnx")
    return ["triton", "write", art, "-o", tmp / "repo"], "is a link to a file outside the artifact folder"


def _t6_fifo_model(tmp, art, video):
    (art / "model.onnx").unlink()
    os.mkfifo(art / "model.onnx")
    return ["triton", "write", art, "-o", tmp / "repo"], "model.onnx"


def _t9(tmp, art, video):
    return ["triton", "write", art, "-o", tmp / "repo", "--name", "README.md"], "model name 'README.md' is reserved"


def _t11(tmp, art, video):
    return ["triton", "write", art, "-o", tmp / "repo", "--name", 'a"b'], "is not one Triton serves"


def _t11_default(tmp, art, video):
    _edit_manifest(art, lambda d: d.update(model='tsm" } output { name: "x'))
    return ["triton", "write", art, "-o", tmp / "repo"], "choose one with --name"


def _t13(tmp, art, video):
    _edit_manifest(art, lambda d: d["inputs"][0].update(dtype="float64"))
    return ["triton", "write", art, "-o", tmp / "repo", "--flavour", "production"], "float64"


def _t15(tmp, art, video):
    return ["triton", "write", art, "-o", "/sys/edgevid-probe/repo"], "cannot write"


def _t20(tmp, art, video):
    return ["run", "--triton", "127.0.0.1:99999", "--model", "tsm", "--video", video], \
        "the port must be between 1 and 65535, got 99999"


def _t30(value: str):
    def case(tmp, art, video):
        (tmp / "repo").mkdir()
        return ["triton", "serve", tmp / "repo", f"--seconds={value}"], "argument --seconds"
    return case


def _t30_idle(tmp, art, video):
    return ["triton", "write", art, "-o", tmp / "repo", "--max-idle", "inf"], "argument --max-idle"


def _u30_file(tmp, art, video):
    (tmp / "notafolder").write_text("x")
    return ["triton", "write", tmp / "notafolder", "-o", tmp / "repo"], "is not an artifact directory"


CASES = {
    "T1-production-external-data-up-and-out": _t1,
    "T2-production-external-data-absolute": _t2,
    "T2-external-data-inside-unhashed": _t2_inside,
    "T4-model-onnx-links-outside": _t4_model_is_link_outside,
    "T6-fifo-as-model-onnx": _t6_fifo_model,
    "T9-name-README.md": _t9,
    "T11-name-with-quote": _t11,
    "T11-manifest-model-name-with-quote": _t11_default,
    "T13-float64-input-production": _t13,
    "T15-output-under-read-only-sys": _t15,
    "T20-port-99999": _t20,
    "T30-seconds-negative": _t30("-1"),
    "T30-seconds-nan": _t30("nan"),
    "T30-max-idle-inf": _t30_idle,
    "U30-artifact-is-a-file": _u30_file,
}


@pytest.mark.parametrize("name", list(CASES))
def test_probe_case_is_one_clear_line(name, art, runtime_video, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    argv, expected = CASES[name](work, art, runtime_video)
    check_case(argv, expected, work, art)


def test_t15_read_only_parent_of_output(art, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    proc = subprocess.run([*_NO_DAC, sys.executable, "-m", "edgevid.cli", "triton", "write", str(art), "-o",
                           str(parent / "repo")], capture_output=True, text=True, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, timeout=120)
    check_one_line(proc, "cannot write")
    assert not any(parent.iterdir())


def test_u30_unreadable_artifact_folder(art, tmp_path):
    art.chmod(0)
    try:
        proc = subprocess.run([*_NO_DAC, sys.executable, "-m", "edgevid.cli", "triton", "write", str(art), "-o",
                               str(tmp_path / "repo")], capture_output=True, text=True, cwd=tmp_path,
                              stdin=subprocess.DEVNULL, timeout=120)
    finally:
        art.chmod(0o755)
    check_one_line(proc, "permission denied")
    assert not (tmp_path / "repo").exists()


# --- what a write copies, and what it never touches ---------------------------------------------


def _plant(art: Path, tmp: Path, what: str) -> None:
    secret = tmp / "secret.txt"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    if what == "link":
        (art / "notes.txt").symlink_to(secret)
    elif what == "folder-link":
        tree = tmp / "tree"
        (tree / "deep").mkdir(parents=True)
        (tree / "deep" / "key.pem").write_bytes(SECRET)
        (art / "extra").symlink_to(tree, target_is_directory=True)
    else:
        os.mkfifo(art / "pipe")


@pytest.mark.parametrize("what", ["link", "folder-link", "fifo"],
                         ids=["T4-symlink-to-a-secret", "T5-symlinked-folder", "T6-fifo-in-artifact"])
def test_portable_copies_only_the_manifests_files(what, art, tmp_path):
    _plant(art, tmp_path, what)
    _write(art, tmp_path / "repo", "--name", "tsm")
    model = tmp_path / "repo" / "tsm"
    copied = model / "1" / "artifact"
    assert sorted(p.name for p in copied.iterdir()) == ["manifest.json", "model.onnx"]
    assert not [p for p in (tmp_path / "repo").rglob("*") if p.is_symlink() or not (p.is_file() or p.is_dir())]
    assert SECRET not in _all_bytes(tmp_path / "repo")
    assert (copied / "model.onnx").read_bytes() == (art / "model.onnx").read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in copied.iterdir()} == {oct(0o666 & ~umask)}


def test_portable_openvino_copies_the_ir_only(art, tmp_path):
    _write(art, tmp_path / "repo", "--name", "tsm", "--backend", "openvino")
    copied = tmp_path / "repo" / "tsm" / "1" / "artifact"
    assert sorted(p.name for p in copied.iterdir()) == ["manifest.json", "model.bin", "model.xml"]


def test_a_changed_model_file_is_refused_while_copying(art, tmp_path):
    with open(art / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    proc = edgevid(["triton", "write", art, "-o", tmp_path / "repo"], cwd=tmp_path)
    check_one_line(proc, "does not match manifest.json")
    assert not (tmp_path / "repo").exists()


def test_t7_the_users_readme_is_never_overwritten(art, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("my own notes\n")
    proc = edgevid(["triton", "write", art, "-o", repo, "--name", "tsm", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (repo / "README.md").read_text() == "my own notes\n"
    assert json.loads(proc.stdout)["readme"] == str(repo / "tsm" / "README.md")
    assert "edgevid run --triton" in (repo / "tsm" / "README.md").read_text()


def test_t7_the_repository_index_is_ours_and_lists_every_model(art, tmp_path):
    repo = tmp_path / "repo"
    _write(art, repo, "--name", "cam1")
    _write(art, repo, "--name", "cam2", "--flavour", "production")
    index = (repo / "README.md").read_text()
    assert "[`cam1`](cam1/README.md): portable flavour" in index
    assert "[`cam2`](cam2/README.md): production flavour" in index
    (repo / "README.md").unlink()
    (repo / "README.md").symlink_to(tmp_path / "elsewhere.md")  # planted: never followed
    _write(art, repo, "--name", "cam3")
    assert (repo / "README.md").is_symlink() and not (tmp_path / "elsewhere.md").exists()


def test_force_replaces_only_a_model_folder_edgevid_wrote(art, tmp_path):
    repo = tmp_path / "repo"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "edgevid-triton.json").write_text("{}")
    repo.mkdir()
    (repo / "tsm").symlink_to(elsewhere, target_is_directory=True)
    proc = edgevid(["triton", "write", art, "-o", repo, "--name", "tsm", "--force"], cwd=tmp_path)
    check_one_line(proc, "refusing to replace it")
    assert (repo / "tsm").is_symlink() and [p.name for p in elsewhere.iterdir()] == ["edgevid-triton.json"]


@pytest.mark.parametrize("flavour", ["production", "portable"])
def test_t11_t12_a_quoted_tensor_name_stays_one_name(flavour, art, tmp_path):
    """T12: a manifest (and ONNX) input named with quotes: the config has exactly that input, one output."""
    from edgevid.manifest import Manifest

    _rename_input(art, "frame", QUOTED)
    _write(art, tmp_path / "repo", "--name", "tsm", "--flavour", flavour)
    config = _config(tmp_path / "repo" / "tsm")
    assert [i.name for i in config.input] == [QUOTED]
    assert [o.name for o in config.output] == ["logits"]
    assert len(config.sequence_batching.state) == (len(Manifest.load(art).states) if flavour == "production" else 0)


def test_t14_dynamic_dims_are_minus_one(art, tmp_path):
    _edit_manifest(art, lambda d: d["inputs"][0].update(shape=["N", 3, "H", "W"]))
    _write(art, tmp_path / "repo", "--name", "tsm", "--flavour", "production")
    config = _config(tmp_path / "repo" / "tsm")
    assert list(config.input[0].dims) == [3, -1, -1]


def test_t14_a_client_accepts_dynamic_dims_served_as_minus_one(art):
    from edgevid.export.triton import model_config
    from edgevid.manifest import Manifest
    from edgevid.runtime.remote import _served_manifest

    _edit_manifest(art, lambda d: d["inputs"][0].update(shape=["N", 3, "H", "W"]))
    manifest = Manifest.load(art)
    config = json.loads(json.dumps(_as_json(model_config(manifest, "tsm", "portable", "onnxruntime"))))
    assert _served_manifest(config, "tsm", "x:1").inputs[0].shape == ["N", 3, "H", "W"]


def _as_json(message) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def test_the_writer_needs_the_triton_extra_only_when_writing(tmp_path):
    """Without tritonclient, `triton write` is one line naming the extra; the runtime still imports."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "tritonclient").mkdir()
    (blocker / "tritonclient" / "__init__.py").write_text("raise ImportError('tritonclient is blocked here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    code = ("import edgevid.runtime, edgevid.export.triton as t\n"
            "from edgevid.errors import MissingExtraError\n"
            "try:\n    t._protobuf()\nexcept MissingExtraError as e:\n    print('extra:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, **env}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'edgevid[triton]'" in proc.stdout


# --- run --triton: a deadline on every call -----------------------------------------------------


def _silent_server() -> socket.socket:
    """A loopback socket that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def test_t26_connect_to_a_silent_server_ends_within_the_timeout():
    from edgevid.errors import EdgevidError
    from edgevid.runtime.remote import connect

    with _silent_server() as s:
        url = f"127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(EdgevidError, match=f"Triton at {url} did not answer within 1 s"):
            connect(url, "tsm", timeout=1)
        assert time.monotonic() - t0 < 5


def test_t26_run_against_a_silent_server_is_one_line_within_the_timeout(runtime_video, tmp_path):
    with _silent_server() as s:
        url = f"127.0.0.1:{s.getsockname()[1]}"
        tag = new_tag()
        t0 = time.monotonic()
        try:
            proc = edgevid(["run", "--triton", url, "--model", "tsm", "--video", runtime_video, "--timeout", "2"],
                           cwd=tmp_path, tag=tag, timeout=60)
            elapsed = time.monotonic() - t0
            check_one_line(proc, "did not answer within 2 s")
            assert not leftovers(tag)
        finally:
            kill_tagged(tag)
    assert elapsed < 15, f"{elapsed:.1f} s"


def test_t26_timeout_and_url_are_checked():
    from edgevid.errors import EdgevidError
    from edgevid.runtime.remote import check_timeout, check_url

    for bad in ("127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":8001", "127.0.0.1:80a"):
        with pytest.raises(EdgevidError):
            check_url(bad)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(EdgevidError):
            check_timeout(bad)
    assert check_url("[::1]:8001") == "[::1]:8001" and check_timeout(2) == 2.0


# --- a real server: its failures, and the process tree after signals -----------------------------


def _server_or_skip() -> None:
    from edgevid.errors import EdgevidError
    from edgevid.export.triton_server import pytriton_home

    try:
        pytriton_home()
    except EdgevidError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def portable_repo(runtime_stream_artifact, tmp_path_factory):
    """A portable repository with the small stream model as ``tsm``."""
    _server_or_skip()
    from edgevid.export.triton import write_repository

    repo = tmp_path_factory.mktemp("triton-probe") / "repo"
    write_repository(runtime_stream_artifact, repo, name="tsm", max_idle_s=30)
    return repo


class Serving:
    """``edgevid triton serve REPO --json`` in the background, tagged, with its own TMPDIR."""

    def __init__(self, repo: Path, tmp: Path, *extra: str, cwd: Path | None = None,
                 command: list[str] | None = None) -> None:
        self.tag, self.tmpdir = new_tag(), tmp / "tmpdir"
        self.tmpdir.mkdir()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", TAG_VAR: self.tag, "TMPDIR": str(self.tmpdir)}
        argv = command or [sys.executable, "-m", "edgevid.cli"]
        self.proc = subprocess.Popen([*argv, "triton", "serve", str(repo), "--json", *extra], cwd=cwd or tmp,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        self.urls = self._first_line(timeout=90)

    def _first_line(self, timeout: float) -> dict:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError("triton serve printed nothing")
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()[-3000:]
        return json.loads(line)

    def finish(self, timeout: float = 60) -> subprocess.CompletedProcess:
        out, err = self.proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def close(self) -> None:
        kill_tagged(self.tag)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _gone(tmpdir: Path, wait: float = 20.0) -> list[str]:
    """edgevid's work folders left in the server's TMPDIR after up to ``wait`` s (ONNX Runtime, in the
    stub, leaves its own ``.ses`` file there: not ours)."""
    def ours() -> list[str]:
        return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("edgevid"))

    deadline = time.monotonic() + wait
    while ours() and time.monotonic() < deadline:
        time.sleep(0.2)
    return ours()


def _stub_running(tag: str) -> bool:
    return any("triton_python_backend_stub" in line for line in leftovers(tag, wait=0))


def test_t25_sigterm_stops_server_and_stubs(portable_repo, tmp_path):
    serving = Serving(portable_repo, tmp_path)
    try:
        assert _stub_running(serving.tag), "the model's stub should be running"
        serving.proc.send_signal(signal.SIGTERM)
        done = serving.finish()
        assert done.returncode == 143 and "Traceback" not in done.stderr, done.stderr
        assert not leftovers(serving.tag, wait=10)
        assert _gone(serving.tmpdir) == []
    finally:
        serving.close()


def test_sigkill_of_triton_serve_leaves_no_server_stub_or_work_folder(portable_repo, tmp_path):
    serving = Serving(portable_repo, tmp_path)
    try:
        assert _stub_running(serving.tag)
        serving.proc.kill()
        serving.proc.wait(timeout=10)
        assert not leftovers(serving.tag, wait=25)
        assert _gone(serving.tmpdir) == []
    finally:
        serving.close()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("victim, expected", [
    ("tritonserver", "tritonserver stopped: killed by signal 9 (SIGKILL)"),
    ("keeper", "its keeper process (triton_keeper.py) was killed by signal 9 (SIGKILL)"),
], ids=["T17-T18-tritonserver", "its-keeper"])
def test_t17_t18_sigkill_under_triton_serve_is_one_line_and_no_orphan(victim, expected, portable_repo, tmp_path):
    serving = Serving(portable_repo, tmp_path)
    try:
        assert _stub_running(serving.tag)
        server = serving.urls["pid"]
        os.kill(server if victim == "tritonserver" else _parent(server), signal.SIGKILL)
        done = serving.finish()
        line = check_one_line(done, expected)
        assert not leftovers(serving.tag, wait=10)
        log = Path(line.rsplit("(its log: ", 1)[1].rstrip(")"))
        assert log.is_file() and _gone(serving.tmpdir, wait=0) == [log.parent.name]
    finally:
        serving.close()


def _wait_stopped(pid: int, within: float = 10.0) -> None:
    """Until every thread of ``pid`` is in the stopped state (``T`` in /proc/PID/task/*/stat)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in Path(f"/proc/{pid}/task").iterdir()]
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"tritonserver {pid} did not stop within {within} s: {states}")


def test_t26_a_stopped_server_ends_a_stream_within_the_timeout(portable_repo, tmp_path):
    import numpy as np

    from edgevid.errors import EdgevidError
    from edgevid.runtime.remote import connect

    serving = Serving(portable_repo, tmp_path)
    try:
        runner = connect(serving.urls["grpc"], "tsm", timeout=2)
        stream = runner.open_stream()
        frame = np.zeros((1, *runner.frame_input.shape[1:]), np.float32)
        stream.step(frame)
        os.kill(serving.urls["pid"], signal.SIGSTOP)
        try:
            _wait_stopped(serving.urls["pid"])  # SIGSTOP lands late on a busy machine: the step must not beat it
            t0 = time.monotonic()
            with pytest.raises(EdgevidError, match="did not answer within 2 s"):
                stream.step(frame)
            stream.close()  # no END request to a server that does not answer
            runner.close()
            assert time.monotonic() - t0 < 10
        finally:
            os.kill(serving.urls["pid"], signal.SIGCONT)
        serving.proc.send_signal(signal.SIGTERM)
        assert serving.finish().returncode == 143
    finally:
        serving.close()


def test_t24_a_bad_model_config_is_its_cause_in_one_line_and_the_log_is_kept(portable_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(portable_repo, repo)
    with open(repo / "tsm" / "config.pbtxt", "a") as fh:
        fh.write("bogus_field: 3\n")
    tag = new_tag()
    try:
        proc = edgevid(["triton", "serve", repo, "--seconds", "1"], cwd=tmp_path, tag=tag, timeout=120,
                       env={"TMPDIR": str(tmp_path)})
        line = check_one_line(proc, 'has no field named "bogus_field"')
        assert not leftovers(tag)
    finally:
        kill_tagged(tag)
    assert "tritonserver did not start" in line and "Waiting for in-flight" not in line
    log = Path(line.rsplit("(its log: ", 1)[1].rstrip(")"))
    assert log.is_file() and "bogus_field" in log.read_text()
    assert sorted(p.name for p in log.parent.iterdir()) == ["tritonserver.log"]


def test_t29_a_folder_named_edgevid_in_the_working_directory(portable_repo, tmp_path):
    cwd = tmp_path / "cwd"
    (cwd / "edgevid").mkdir(parents=True)
    (cwd / "edgevid" / "__init__.py").write_text("raise ImportError('the planted edgevid was imported')\n")
    console = [str(Path(sys.executable).parent / "edgevid")]  # as a user runs it (python -m would add the cwd)
    serving = Serving(portable_repo, tmp_path, "--seconds", "1", cwd=cwd, command=console)
    try:
        done = serving.finish()
        assert done.returncode == 0, done.stderr
        assert not leftovers(serving.tag)
    finally:
        serving.close()
