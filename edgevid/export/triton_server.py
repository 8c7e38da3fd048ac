"""A local Triton Inference Server (CPU) from the ``nvidia-pytriton`` wheel, for trying a repository and for tests.

The wheel ships a real ``tritonserver`` binary with the Python backend, and one
``triton_python_backend_stub`` per Python version. The stub must sit in
``backends/python`` next to the backend library, so a run copies the backend into a
work folder with the stub of this Python; the bundled shared libraries are found through
``LD_LIBRARY_PATH`` and the stub runs this environment's Python (its ``bin`` first on
``PATH``), so a portable model imports ``edgevid.runtime`` from here.

nvidia-pytriton pins numpy < 2, which conflicts with OpenCV 5 (numpy >= 2), so it is not
a dependency: install only its files with ``pip install --no-deps nvidia-pytriton``
(``.ci/run`` does). Production serving uses NVIDIA's Triton container instead.

The server listens on loopback ports only and runs under ``triton_keeper.py`` (see there),
which ties it and its stubs to this process: a ``kill -9`` of either side leaves no server or
stub behind. It runs in a work folder of its own (so a folder named ``edgevid`` in the user's
working directory cannot shadow the package in the stubs), with this process's ``edgevid``
first on the stubs' ``PYTHONPATH``. ``stop()`` ends it by its pid; a server that fails or
dies is one line with its cause (the server's own error lines), and its log is kept.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import edgevid
from edgevid.errors import EdgevidError
from edgevid.export import triton_keeper

INSTALL_HINT = "pip install --no-deps nvidia-pytriton"
LOG_NAME = "tritonserver.log"
EXIT_TIMEOUT_S = 5  # tritonserver's own wait for in-flight requests on SIGTERM (its default: 30 s)
_LOG_ERROR = (re.compile(r"^E\d{4} \S+\s+\d+ [^\]]*\] (.*)$"),  # Triton's error lines
              re.compile(r"^\[libprotobuf ERROR [^\]]*\] (.*)$"),  # a config.pbtxt it cannot parse
              re.compile(r"^error: (.*)$"))  # its last word before exiting
_LOG_NOISE = ("cuda", "pinned memory")  # a CPU machine's usual complaints, never the cause


def pytriton_home() -> Path:
    """The folder of the installed ``pytriton`` package (its files only: it is never imported)."""
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EdgevidError(f"no tritonserver here: install one with `{INSTALL_HINT}` (a CPU build of Triton "
                           "with the Python backend), or use NVIDIA's Triton container")
    return Path(list(spec.submodule_search_locations)[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_errors(text: str, limit: int = 2) -> list[str]:
    """The first ``limit`` distinct error messages of a tritonserver log (its CPU-only noise skipped)."""
    found: list[str] = []
    for line in text.splitlines():
        match = next((m for m in (r.match(line.strip()) for r in _LOG_ERROR) if m), None)
        if match is None:
            continue
        # Triton quotes its messages and escapes their newlines: the first line is the message.
        message = match.group(1).strip().strip('"').split("\\n")[0].strip()[:300]
        if message and message not in found and not any(n in message.lower() for n in _LOG_NOISE):
            found.append(message)
        if len(found) == limit:
            break
    return found


def _signal_name(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def _describe_exit(code: int) -> str:
    """The keeper's exit status in words: 128 + N is the server killed by signal N, -N the keeper itself."""
    if code < 0:
        return f"its keeper process (triton_keeper.py) was killed by {_signal_name(-code)}"
    if code > 128:
        return f"killed by {_signal_name(code - 128)}"
    return f"exit status {code}"


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Block SIGTERM / SIGHUP / SIGINT in this thread while inside; pending ones arrive on the way out."""
    held = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class LocalServer:
    """``tritonserver`` on loopback ports serving ``repository``; a context manager.

    Start it from a thread that outlives it (the main thread): the server is tied to the
    thread that started it (``PR_SET_PDEATHSIG``).
    """

    def __init__(self, repository: str | os.PathLike, *, log: str | os.PathLike | None = None,
                 startup_s: float = 60.0) -> None:
        self.repository = Path(repository).absolute()
        if not self.repository.is_dir():
            raise EdgevidError(f"{repository} is not a folder: give the model repository that `edgevid triton "
                               "write` made")
        home = pytriton_home()
        self._binary = home / "tritonserver" / "bin" / "tritonserver"
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        self._stub = home / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
        self._libs = home.parent / "nvidia_pytriton.libs"
        for path in (self._binary, self._stub):
            if not path.is_file():
                raise EdgevidError(f"{path} is missing: the nvidia-pytriton install is incomplete or has no stub "
                                   f"for Python {version}")
        self.http_port, self.grpc_port, self.metrics_port = _free_port(), _free_port(), _free_port()
        self._startup_s = startup_s
        self._log = Path(log).absolute() if log else None
        self._work: Path | None = None
        self.log_path: Path | None = self._log
        self.process: subprocess.Popen | None = None  # the keeper (triton_keeper.py), parent of tritonserver

    @property
    def http_url(self) -> str:
        """``127.0.0.1:<port>`` for ``tritonclient.http``."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<port>`` for ``tritonclient.grpc``."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def server_pid(self) -> int | None:
        """The pid of ``tritonserver`` itself (None before it started)."""
        try:
            return int((self._work / triton_keeper.PID_FILE).read_text())  # type: ignore[operator]
        except (OSError, TypeError, ValueError):
            return None

    def _backends(self) -> Path:
        """backends/python with this Python's stub beside the backend library."""
        src = self._binary.parent.parent / "backends" / "python"
        dst = self._work / "backends" / "python"  # type: ignore[operator]
        dst.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(src / name, dst / name)
        shutil.copy2(self._stub, dst / "triton_python_backend_stub")
        return dst.parent

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self._libs), env.get("LD_LIBRARY_PATH")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        # The stubs import the edgevid this process runs, whatever else is on their path.
        here = str(Path(edgevid.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        return env

    def start(self) -> LocalServer:
        """Start the server and wait until it is ready (or fail with one line naming the cause)."""
        self._work = Path(tempfile.mkdtemp(prefix="edgevid-triton-"))
        self.log_path = self._log or self._work / LOG_NAME
        try:
            self._launch()
            self._wait_ready()
        except EdgevidError:
            raise
        except BaseException:  # Ctrl-C, SIGTERM, a failed launch: nothing may stay running
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        argv = [str(self._binary), f"--model-repository={self.repository}", f"--backend-directory={self._backends()}",
                f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
                f"--metrics-port={self.metrics_port}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                "--allow-metrics=false", "--exit-on-error=true", "--log-verbose=0",
                f"--exit-timeout-secs={EXIT_TIMEOUT_S}"]
        keeper = [sys.executable, "-I", triton_keeper.__file__, str(os.getpid()), str(self._work), "--", *argv]
        with open(self.log_path, "wb") as log:  # the keeper and the server write it while they run
            self.process = subprocess.Popen(keeper, stdout=log, stderr=subprocess.STDOUT, env=self._environment(),
                                            stdin=subprocess.DEVNULL, cwd=self._work, start_new_session=True)

    def _wait_ready(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        deadline = time.monotonic() + self._startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # type: ignore[union-attr]
                raise self._failure("did not start")
            try:
                with opener.open(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise self._failure(f"did not become ready within {self._startup_s:g} s")

    def _failure(self, what: str) -> EdgevidError:
        """Stop what is left, keep the log, and say why in one line."""
        code = self.process.poll() if self.process is not None else None
        self.stop(keep_log=True)
        try:
            errors = log_errors(self.log_path.read_text(errors="replace"))  # type: ignore[union-attr]
        except OSError:
            errors = []
        if code is not None and (code > 128 or code < 0):  # killed: the signal is the cause, not the log
            errors = [_describe_exit(code)]
        elif code is not None:
            what = f"{what} ({_describe_exit(code)})"
        cause = "; ".join(errors) or "no error in its log"
        return EdgevidError(f"tritonserver {what}: {cause} (its log: {self.log_path})")

    def wait(self, seconds: float | None = None) -> None:
        """Serve for ``seconds`` (None: until interrupted); a server that stops by itself is an EdgevidError."""
        deadline = time.monotonic() + seconds if seconds else None
        while deadline is None or time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise self._failure("stopped")
            time.sleep(0.2)

    def log_tail(self, lines: int = 6) -> str:
        """The last lines of the server's log, for messages."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return "(no log)"
        return " | ".join(text[-lines:])

    def stop(self, keep_log: bool = False) -> None:
        """Stop the server by its pid (the keeper stops it, then its process group), and remove the work folder.

        ``keep_log``: leave the log file (in the work folder unless ``log`` was given) for the user.
        """
        with _signals_held():  # a SIGTERM now is handled once the server is down, not halfway
            self._stop(keep_log)

    def _stop(self, keep_log: bool) -> None:
        proc, self.process = self.process, None
        server = self.server_pid
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=triton_keeper.GRACE_S + triton_keeper.REAP_S + 5)
            except subprocess.TimeoutExpired:  # a keeper that hangs: kill it and the server's group
                for group in (proc.pid, server):
                    if group:
                        with contextlib.suppress(OSError):
                            os.killpg(group, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None and proc.returncode is not None and proc.returncode < 0 and server:
            # The keeper itself was killed: the server died with it (PR_SET_PDEATHSIG), its stubs may not.
            with contextlib.suppress(OSError):
                os.killpg(server, signal.SIGKILL)
        work, self._work = self._work, None
        if work is None:
            return
        if keep_log and self.log_path is not None and self.log_path.parent == work:
            for entry in work.iterdir():
                if entry == self.log_path:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
