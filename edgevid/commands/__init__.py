"""The CLI verbs, one module each (see ``edgevid.cli``), and what they share."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def warnings_as_lines(verb: str) -> Iterator[None]:
    """edgevid's own warnings as one line each (``edgevid <verb>: warning: ...``) when they happen.

    Library warnings (torch, NNCF, ...) stay silent: a user cannot act on them.
    """
    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if category.__module__.startswith("edgevid"):  # EdgevidWarning and edgevid's own subclasses
            print(f"edgevid {verb}: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit(143)`` in the main thread.

    For verbs whose long work is a Python loop (``run``'s frame loop): the exception unwinds
    through their ``finally`` and ``except BaseException`` clauses, so a temp file (the annotated
    video) is removed and the source and backend are released, where the default action would
    end the process on the spot. Only over the default handler, and restored on the way out.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
