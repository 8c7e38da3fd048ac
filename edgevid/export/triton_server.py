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

The server listens on loopback ports only; ``stop()`` ends it by its pid.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from edgevid.errors import EdgevidError

INSTALL_HINT = "pip install --no-deps nvidia-pytriton"


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


class LocalServer:
    """``tritonserver`` on loopback ports serving ``repository``; a context manager."""

    def __init__(self, repository: str | os.PathLike, *, log: str | os.PathLike | None = None,
                 startup_s: float = 60.0) -> None:
        self.repository = Path(repository).absolute()
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
        self._work = Path(tempfile.mkdtemp(prefix="edgevid-triton-"))
        self.log_path = Path(log) if log else self._work / "tritonserver.log"
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        """``127.0.0.1:<port>`` for ``tritonclient.http``."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<port>`` for ``tritonclient.grpc``."""
        return f"127.0.0.1:{self.grpc_port}"

    def _backends(self) -> Path:
        """backends/python with this Python's stub beside the backend library."""
        src = self._binary.parent.parent / "backends" / "python"
        dst = self._work / "backends" / "python"
        dst.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(src / name, dst / name)
        shutil.copy2(self._stub, dst / "triton_python_backend_stub")
        return dst.parent

    def start(self) -> LocalServer:
        """Start the server and wait until it is ready (or fail with the end of its log)."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self._libs), env.get("LD_LIBRARY_PATH")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        argv = [str(self._binary), f"--model-repository={self.repository}", f"--backend-directory={self._backends()}",
                f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
                f"--metrics-port={self.metrics_port}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                "--allow-metrics=false", "--exit-on-error=true", "--log-verbose=0"]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + self._startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise EdgevidError(f"tritonserver did not become ready: {tail}")

    def log_tail(self, lines: int = 6) -> str:
        """The last lines of the server's log, for messages."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL), and remove the work folder."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its Python stubs
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
