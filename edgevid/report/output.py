"""Writing report.json, report.md and report.html atomically into the output folder."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError

FILES = ("report.json", "report.md", "report.html")


def check_output_dir(out: str | os.PathLike) -> Path:
    """The output folder, created if missing; an existing file there is an error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgevidError(f"output {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgevidError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK):
        raise EdgevidError(f"output folder {out} is not writable")
    return out


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename over ``path``: never half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: dict[str, Any], out: str | os.PathLike) -> list[Path]:
    """Render and write the three files; returns their paths."""
    from edgevid.report.render_html import render_html
    from edgevid.report.render_md import render_markdown

    out = check_output_dir(out)
    texts = {"report.json": json.dumps(report, indent=2, allow_nan=False) + "\n",
             "report.md": render_markdown(report), "report.html": render_html(report)}
    paths = []
    for name in FILES:
        _write_atomic(out / name, texts[name])
        paths.append(out / name)
    return paths
