"""Keeps a local ``tritonserver`` and its Python-backend stubs tied to the edgevid process that started them.

Run by ``edgevid.export.triton_server.LocalServer`` as ``python -I triton_keeper.py PARENT_PID
WORK_DIR -- tritonserver ARGS...`` (stdlib only: ``-I`` keeps the user's environment and the
working directory out of its imports). It sits between edgevid and the server because
nothing else can clean up after a ``kill -9``:

- edgevid killed (any signal, SIGKILL included): the kernel sends this keeper SIGTERM
  (``PR_SET_PDEATHSIG``); it stops the server, kills the server's process group (the stubs),
  removes ``WORK_DIR`` and exits.
- tritonserver killed or crashed: the stubs it started would stay behind, re-parented; this
  keeper is their *subreaper* (``PR_SET_CHILD_SUBREAPER``), so it kills the server's process
  group, reaps them, and exits with ``128 + signal`` (or the server's own exit status), which
  edgevid reports as one line.
- SIGTERM / SIGINT / SIGHUP to the keeper (edgevid's ``stop()``): SIGTERM to the server (a
  clean shutdown that finalizes the models), SIGKILL to its group after a grace period, exit 0.

The server runs in a session of its own, with ``PR_SET_PDEATHSIG`` = SIGKILL towards this
keeper. A stub that outlived its server would otherwise keep running: it polls its parent's
pid, and a dead server stays a zombie wherever PID 1 does not reap orphans (many containers).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0  # a clean shutdown of tritonserver (models finalized) before SIGKILL
REAP_S = 5.0  # how long to wait for the killed group to be gone
PID_FILE = "tritonserver.pid"  # in WORK_DIR: the server's pid, for the edgevid process that reports it


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _spawn(argv: list[str]) -> int:
    """Start the server in its own session, killed with this keeper; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe work until exec
        try:
            os.setsid()
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    return pid


def _reap(server: int) -> int | None:
    """Reap every exited child (adopted stubs too); the server's wait status if it exited."""
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == server:
            status = st


def _kill_group(server: int) -> None:
    try:
        os.killpg(server, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _wait_children(deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.02)
        except ChildProcessError:
            return


def _exit_code(status: int | None) -> int:
    if status is None:
        return 0
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _cleanup_if_orphaned(parent: int, work: str) -> None:
    if os.getppid() != parent:  # edgevid is gone: nobody else will remove the work folder
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Run the server until it ends or this keeper is told to stop; returns the exit status."""
    parent, work, server_argv = int(argv[0]), argv[1], argv[3:]
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if stop or os.getppid() != parent:  # told to stop, or edgevid died, before the server started
        _cleanup_if_orphaned(parent, work)
        return 0
    server = _spawn(server_argv)
    with open(os.path.join(work, PID_FILE + ".tmp"), "w") as fh:
        fh.write(str(server))
    os.replace(os.path.join(work, PID_FILE + ".tmp"), os.path.join(work, PID_FILE))
    status = None
    while status is None and not stop:
        status = _reap(server)
        time.sleep(0.05)  # the handlers only record a signal: it is seen here within 50 ms
    asked = status is None
    if asked:
        os.kill(server, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while status is None and time.monotonic() < deadline:
            status = _reap(server)
            time.sleep(0.05)
    _kill_group(server)  # what is left: the stubs, or a server that did not stop in time
    if status is None:
        status = os.waitpid(server, 0)[1]
    _wait_children(time.monotonic() + REAP_S)
    _cleanup_if_orphaned(parent, work)
    return 0 if asked else _exit_code(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
