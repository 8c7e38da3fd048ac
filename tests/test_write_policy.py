"""The README's write-policy table is true for every verb that writes (issue 23).

The table lists every verb with `-o/--output` (checked against the CLI's own parsers), and for
each one the real command is run against an output that exists but is not edgevid's: refused
without `--force`, refused with it, and left byte for byte as it was.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from probe import check_one_line, edgevid, snapshot

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_verbs() -> list[tuple[str, ...]]:
    text = README.read_text()
    section = text.split("### What each verb writes, and what it never overwrites", 1)[1]
    rows = [line for line in section.split("\n\n")[2].splitlines() if line.startswith("| `")]
    verbs = []
    for row in rows:
        command = re.match(r"\| `([^`]+)`", row).group(1)
        words = [w for w in command.split() if re.fullmatch(r"[a-z]+", w)]
        verbs.append(tuple(words))
    return verbs


def _writing_verbs() -> set[tuple[str, ...]]:
    from test_writes import _verbs

    return {path for path, parser in _verbs()
            if "--output" in {flag for action in parser._actions for flag in action.option_strings}}


def test_the_table_lists_every_verb_that_writes():
    listed = {v for v in _table_verbs() if v and v[0] != "caches"}
    assert listed == _writing_verbs()


def _foreign_file(tmp: Path) -> Path:
    path = tmp / "theirs.mp4"
    path.write_bytes(b"someone's own file\n")
    return path


def _foreign_folder(tmp: Path) -> Path:
    folder = tmp / "theirs"
    folder.mkdir()
    (folder / "precious.txt").write_text("someone's own file\n")
    return folder


# verb -> (argv for an output, make the foreign output, message without --force, message with it)
CASES = {
    "data synth": (lambda t, o, a: ["data", "synth", "-o", o, "-q"], _foreign_folder, "pass --force",
                   "not a dataset written by `edgevid data synth`"),
    "train": (lambda t, o, a: ["train", "--model", "tsm", "--data", t, "-o", o, "-q"], _foreign_file,
              "pass --force", "is not an edgevid checkpoint"),
    "compress": (lambda t, o, a: ["compress", "--model", "tsm", "--data", t, "--prune-channels", "0.25", "-o", o,
                                  "-q"], _foreign_file, "pass --force", "is not an edgevid checkpoint"),
    "export": (lambda t, o, a: ["export", "--model", "tsm", "-o", o, "-q"], _foreign_folder, "pass --force",
               "is not an edgevid export"),
    "deploy": (lambda t, o, a: ["deploy", "--model", "tsm", "--device", "x86-cpu", "-o", o, "-q"], _foreign_folder,
               "pass --force", "is not an edgevid output"),
    "triton write": (lambda t, o, a: ["triton", "write", a, "-o", o.parent, "--name", o.name, "-q"],
                     _foreign_folder, "pass --force", "is not an edgevid output"),
    "run": (lambda t, o, a: ["run", a, "--video", t / "none.mp4", "-o", o], _foreign_file, "pass --force",
            "is not a video edgevid wrote"),
}


@pytest.mark.parametrize("verb", list(CASES))
@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
def test_a_foreign_output_is_never_replaced(verb, force, runtime_stream_artifact, tmp_path):
    argv_of, make, refused, refused_forced = CASES[verb]
    out = make(tmp_path)
    argv = argv_of(tmp_path, out, runtime_stream_artifact) + (["--force"] if force else [])
    before = snapshot(tmp_path)
    check_one_line(edgevid(argv, cwd=tmp_path), refused_forced if force else refused)
    assert snapshot(tmp_path) == before


def test_report_replaces_its_own_report_but_never_a_foreign_file(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "report.html").write_text("<html>my own page</html>")
    before = snapshot(tmp_path)
    check_one_line(edgevid(["report", "--model", "tsm", "--quick", "-o", out, "-q"], cwd=tmp_path),
                   "is not a file edgevid report wrote")
    assert snapshot(tmp_path) == before
