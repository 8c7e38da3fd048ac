"""Signals that end a run cleanly: SIGTERM (and SIGHUP for a server) unwind like Ctrl-C does.

Torch-free and dependency-free: the runtime verbs, training and the Triton wrapper share it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def exit_on(signums: tuple[int, ...] = (signal.SIGTERM,), later: Any = signal.SIG_DFL) -> Iterator[None]:
    """While inside, each of ``signums`` raises ``SystemExit(128 + signum)`` in the main thread.

    For work that is a Python loop (run's frames, training epochs, a server's wait): the exit
    unwinds through ``finally`` and ``except BaseException`` clauses, so temp files are removed,
    loader workers shut down and a server stopped, where the default action would end the
    process on the spot. Once one arrived, every one of ``signums`` gets ``later``: SIG_DFL lets
    a second one kill at once (a cleanup that hangs), SIG_IGN keeps it from cutting a shutdown
    short. The previous handlers come back on the way out. Off the main thread it does nothing
    (Python delivers signals to the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, frame: object) -> None:
        for sig in signums:
            signal.signal(sig, later)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, unwind) for sig in signums}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
