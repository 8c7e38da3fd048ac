"""The `edgevid` command: one verb per module in `edgevid.commands`.

Each command module exposes `add_parser(subparsers)` (cheap: no heavy imports) and
`run(args) -> int`. Heavy libraries are imported inside `run`, so `edgevid --help` and the
runtime verbs work on a device that has no torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from edgevid import __version__
from edgevid.errors import EdgevidError

# verb -> module; the order is the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "zoo": "edgevid.commands.zoo",
    "data": "edgevid.commands.data",
    "train": "edgevid.commands.train",
    "eval": "edgevid.commands.evaluate",
    "export": "edgevid.commands.export",
    "compress": "edgevid.commands.compress",
    "run": "edgevid.commands.run",
    "bench": "edgevid.commands.bench",
    "report": "edgevid.commands.report",
    "devices": "edgevid.commands.devices",
    "deploy": "edgevid.commands.deploy",
    "triton": "edgevid.commands.triton",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available verb."""
    parser = argparse.ArgumentParser(
        prog="edgevid",
        description="Video action recognition for the edge: model zoo, training, NNCF compression, "
        "ONNX export (clip or streaming), OpenVINO/TensorRT, and a torch-free runtime.",
    )
    parser.add_argument("--version", action="version", version=f"edgevid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # verb not implemented in this build
                continue
            raise
        module.add_parser(sub)
    return parser


# File-system errors that come from where the user pointed edgevid (a name too long, a folder
# without permission, a full or read-only disk): one line naming the path, like any user mistake.
# Anything else (EBADF, EINVAL from a library...) is a bug and keeps its traceback.
_ENVIRONMENT_ERRNOS = {errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                       errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.ELOOP, errno.EEXIST, errno.EFBIG,
                       errno.EMFILE, errno.ENFILE, errno.EIO, errno.EXDEV, errno.ENXIO}


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    name = exc.filename
    if isinstance(name, str) and len(name) > 160:  # a 300-character path is the problem, not the message
        name = name[:80] + "..." + name[-60:]
    return f"{what}: {name}" if name else what


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgevidError as exc:
        print(f"edgevid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `edgevid ... | head`: the reader left, nothing to report
        # Before OSError (its base class). Point stdout at devnull so that the flush at exit
        # does not fail on the closed pipe again (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"edgevid {args.command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"edgevid {args.command}: error: out of memory (the input or an option asks for more memory "
              "than this machine has)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
