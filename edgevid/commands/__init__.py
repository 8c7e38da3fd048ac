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

