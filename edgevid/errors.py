"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""

from __future__ import annotations

import importlib
from types import ModuleType


class EdgevidError(Exception):
    """A mistake the user can fix (bad argument, missing file, mismatched artifact)."""


class EdgevidWarning(UserWarning):
    """Something the user should know and can act on (the CLI prints it as one line)."""


class MissingExtraError(EdgevidError):
    """An optional dependency is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional heavy module, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{module} is not installed ({exc}); install it with: pip install 'edgevid[{extra}]'"
        ) from exc
