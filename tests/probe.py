"""Harness for bad-input, fault and security cases: the real `edgevid` command in a subprocess.

What every case checks (``check_one_line``): exit status 2, no traceback, exactly one
``edgevid <verb>: error: ...`` line naming the problem, no foreign lines on stderr (library
chatter), nothing written where the case watches (``snapshot`` before and after), and no
process left running (``leftovers``: every process started by the command carries a tag in
its environment, so an orphan re-parented to init is still found).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

TAG_VAR = "EDGEVID_PROBE_TAG"


def edgevid(argv: list, cwd: Path, env: dict | None = None, timeout: float = 300,
            tag: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m edgevid.cli *argv`` in ``cwd``; stdin closed, output captured."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    if tag:
        full_env[TAG_VAR] = tag
    return subprocess.run([sys.executable, "-m", "edgevid.cli", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)


def new_tag() -> str:
    return uuid.uuid4().hex


def leftovers(tag: str, wait: float = 5.0) -> list[str]:
    """Processes still alive whose environment carries ``tag`` (after up to ``wait`` s of grace)."""
    needle = f"{TAG_VAR}={tag}".encode()
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes():
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    state = next((ln for ln in (entry / "status").read_text().splitlines()
                                  if ln.startswith("State:")), "")
                    if "zombie" not in state:
                        found.append(f"{entry.name}: {cmd.strip()}")
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def kill_tagged(tag: str) -> None:
    """Clean up after a failed leftover check, so one failure does not leak into the suite."""
    import signal

    for line in leftovers(tag, wait=0):
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except OSError:
            pass


def snapshot(*folders: Path) -> dict[str, tuple]:
    """Every entry under ``folders`` (not following links) with its type, size, mtime and mode."""
    seen: dict[str, tuple] = {}
    for folder in folders:
        if not os.path.lexists(folder):
            continue
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                seen[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


def check_one_line(proc: subprocess.CompletedProcess, expected: str) -> str:
    """Assert the one-line-error contract; returns the error line."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert proc.returncode == 2, f"rc={proc.returncode}\n{out[-3000:]}"
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith("edgevid "), errors[0]
    assert expected.lower() in errors[0].lower(), errors[0]
    foreign = [line for line in proc.stderr.splitlines()
               if line.strip() and not line.startswith(("edgevid", "  ", "usage:", "note:", "warning:"))]
    assert not foreign, foreign
    return errors[0]


def check_case(argv: list, expected: str, cwd: Path, *watch: Path, timeout: float = 120) -> str:
    """One bad-input case: the one-line contract, nothing written under ``cwd`` and ``watch``, no
    process left behind. Returns the error line."""
    before = snapshot(cwd, *watch)
    tag = new_tag()
    try:
        line = check_one_line(edgevid(argv, cwd=cwd, tag=tag, timeout=timeout), expected)
        assert not leftovers(tag)
    finally:
        kill_tagged(tag)
    assert snapshot(cwd, *watch) == before, "the failed command wrote something"
    return line


def kill_midway(argv: list, cwd: Path, sig: int, started, what: str, timeout: float = 120,
                grace: float = 5.0) -> tuple[int, str]:
    """Start ``edgevid *argv`` (tagged), wait until ``started(pid, tag)`` is true, send ``sig``.

    Asserts that no process of the command is left ``grace`` seconds after it exited; returns
    (its return code, its stderr). ``what`` names the awaited state in the failure message.
    """
    tag = new_tag()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", TAG_VAR: tag}
    proc = subprocess.Popen([sys.executable, "-m", "edgevid.cli", *map(str, argv)], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not started(proc.pid, tag):
            assert proc.poll() is None, f"exited before {what}: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"never reached: {what}"
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        left = leftovers(tag, wait=grace)
        assert left == [], left
    finally:
        kill_tagged(tag)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode, proc.stderr.read()


def put(*path, value: object):
    """A manifest edit for a case: set ``data[path[0]][path[1]]... = value``."""
    def edit(data: dict) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return edit
