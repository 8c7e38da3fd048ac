"""`edgevid data ...`: dataset verbs. `data synth` writes the built-in synthetic action dataset.

More sub-verbs register in ``SUBCOMMANDS`` below (one ``_add_<verb>`` function each).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from edgevid.commands import argtypes


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write the built-in synthetic action dataset (mp4 clips, class folders, train/val lists)",
        description="Write a synthetic action dataset whose classes differ only in the order of "
        "frames (moving left/right, up/down, rotating cw/ccw, growing/shrinking, "
        "appearing/disappearing, static): a frame-averaging model cannot tell the pairs apart.",
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--seed", type=argtypes.seed, default=0,
                   help="random seed: same seed, same dataset (default 0)")
    p.add_argument("--videos-per-class", type=_videos_per_class, default=30, metavar="N",
                   help="videos per class (default 30)")
    p.add_argument("--frames", type=argtypes.int_range(4, argtypes.MAX_FRAMES), default=16, metavar="F",
                   help="frames per video (default 16)")
    p.add_argument("--size", type=argtypes.int_range(32, argtypes.MAX_SIDE), default=112, metavar="S",
                   help="frame width and height in pixels, even (default 112)")
    p.add_argument("--val-fraction", type=argtypes.float_range(0.0, 1.0, hi_open=True), default=0.2,
                   metavar="f", help="fraction of each class listed in val.txt (default 0.2)")
    p.add_argument("--fps", type=argtypes.float_range(0.0, 65535.0, lo_open=True), default=8.0,
                   help="frame rate written in the files (default 8)")
    p.add_argument("--still", metavar="BEFORE:AFTER", type=_still, default=(0, 0),
                   help="embed each action in that many still frames before / after it (a static camera scene; "
                   "the test set of --gate), e.g. 48:4")
    p.add_argument("--noise", type=argtypes.float_range(0.0, 50.0), default=0.0, metavar="SIGMA",
                   help="camera noise on every frame, in grey levels, 0-50 (default 0)")
    p.add_argument("--drift", type=argtypes.float_range(-5.0, 5.0), default=0.0, metavar="D",
                   help="slow brightness drift, grey levels per frame, -5 to 5 (default 0)")
    p.add_argument("--force", action="store_true",
                   help="replace DIR if it holds an earlier `data synth` dataset (never any other folder)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, summary only")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=_run_synth)


def _videos_per_class(text: str) -> int:
    """2 to the generator's ceiling (imported only when the option is used: the generator pulls in
    OpenCV, and `edgevid --help` must stay instant)."""
    from edgevid.data.synth import MAX_VIDEOS_PER_CLASS

    return argtypes.int_range(2, MAX_VIDEOS_PER_CLASS)(text)


def _still(text: str) -> tuple[int, int]:
    """``BEFORE:AFTER`` still-frame counts, each bounded (a typo must not allocate terabytes)."""
    from edgevid.data.synth import MAX_STILL

    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"takes BEFORE:AFTER frame counts, e.g. 48:4, got {text!r}")
    count = argtypes.int_range(0, MAX_STILL)
    return count(parts[0]), count(parts[1])


def _run_synth(args: argparse.Namespace) -> int:
    from edgevid.data.synth import generate_dataset

    summary = generate_dataset(
        args.output,
        seed=args.seed,
        videos_per_class=args.videos_per_class,
        frames=args.frames,
        size=args.size,
        val_fraction=args.val_fraction,
        fps=args.fps,
        force=args.force,
        progress=not (args.quiet or args.json),
        still=args.still,
        noise=args.noise,
        drift=args.drift,
    )
    if args.json:
        print(json.dumps({"output": str(summary.root), "classes": list(summary.classes), "train": summary.train,
                          "val": summary.val, "seconds": round(summary.seconds, 3)}, indent=2))
        return 0
    print(
        f"wrote {summary.train + summary.val} videos of {len(summary.classes)} classes "
        f"({summary.train} train, {summary.val} val) to {summary.root} in {summary.seconds:.1f} s"
    )
    return 0


# sub-verb -> function registering it
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {"synth": _add_synth}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `edgevid data` and its sub-verbs."""
    parser = subparsers.add_parser(
        "data", help="datasets: generate the built-in synthetic set", description="Dataset tools."
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    for add in SUBCOMMANDS.values():
        add(sub)
    parser.set_defaults(func=lambda args: run(args, parser))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """`edgevid data` without a sub-verb: print the usage and fail."""
    if parser is not None:
        parser.print_help(sys.stderr)
    return 2
