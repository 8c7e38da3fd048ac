"""Writing report.json, report.md and report.html atomically into the output folder."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError

FILES = ("report.json", "report.md", "report.html")


def check_output_dir(out: str | os.PathLike) -> Path:
    """Fail now if the output folder cannot be written; it is created only when the report is.

    Checked before minutes of work, and created at the end: a report stopped meanwhile (Ctrl-C
    writes its partial rows; SIGTERM, a crash) leaves no empty folder behind.
    """
    from edgevid.manifest import check_writable

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgevidError(f"output {out} exists and is not a folder")
    for name in FILES:  # a report replaces the previous report, never the user's own file
        path = out / name
        if os.path.lexists(path) and not _written_by_edgevid(path):
            raise EdgevidError(f"{path} is not a file edgevid report wrote; refusing to replace it "
                               "(choose another -o folder)")
    check_writable(out / FILES[0])
    return out


# How each file of a report begins (its first few hundred bytes): what tells edgevid's own
# report from a user's file of the same name.
_HEADS = {"report.json": '"schema": "edgevid.report"', "report.md": "# edgevid report: ",
          "report.html": "<title>edgevid report: "}


def _written_by_edgevid(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(512)
    except OSError:
        return False
    return _HEADS[path.name] in head


def write_report(report: dict[str, Any], out: str | os.PathLike) -> list[Path]:
    """Render and write the three files, all or none; returns their paths.

    Each goes to a temp file first (with the permissions a plain ``open`` gives); the renames
    happen only once all three are on disk, so a full disk leaves the previous report whole
    rather than a new report.json beside an old report.html.
    """
    from edgevid.manifest import write_error
    from edgevid.report.render_html import render_html
    from edgevid.report.render_md import render_markdown

    out = check_output_dir(out)
    texts = {"report.json": json.dumps(report, indent=2, allow_nan=False) + "\n",
             "report.md": render_markdown(report), "report.html": render_html(report)}
    created = not out.exists()
    staged: dict[str, Path] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            staged[name] = _write_temp(out / name, texts[name])
        for name in FILES:
            os.replace(staged.pop(name), out / name)
    except OSError as exc:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty
        raise write_error(out, exc) from exc
    return [out / name for name in FILES]


def _write_temp(path: Path, text: str) -> Path:
    from edgevid.manifest import file_mode

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; a report is meant to be shared
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)

