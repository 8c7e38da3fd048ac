"""`edgevid report`: accuracy and latency of a model across backends, precisions and modes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edgevid.commands import argtypes
from edgevid.commands.weights_option import add_weights_option, checkpoint_of


def add_parser(subparsers: Any) -> None:
    """Register `edgevid report` (cheap: no heavy imports)."""
    p = subparsers.add_parser(
        "report", help="compare accuracy and latency of a model across backends, precisions and modes",
        description="Export every variant (reusing artifacts built before from identical inputs), measure "
        "its accuracy through the runtime exactly as `edgevid run` steps it, its agreement with the torch FP32 "
        "model, and its latency interleaved with the others and with torch eager; write report.md, "
        "report.json and report.html, with a verdict (the fastest variant within --within points of the best "
        "top-1) and a warning instead of speed-ups when the machine was too busy to time. Default: the built-in "
        "held-out videos.",
    )
    p.add_argument("--model", required=True, help="zoo name, e.g. tsm")
    p.add_argument("--checkpoint", help="weights (default: the checkpoint shipped with the model; a model that ships "
                   "none gets seeded random weights: a latency-only report, marked as such)")
    add_weights_option(p)
    p.add_argument("--backends", default="onnxruntime,openvino,tensorrt", metavar="LIST",
                   help="comma-separated: onnxruntime,openvino,tensorrt (default: all; TensorRT rows are "
                   "listed as skipped where there is no GPU)")
    p.add_argument("--precisions", default="fp32,int8", metavar="LIST", help="fp32,fp16,int8 (default fp32,int8)")
    p.add_argument("--modes", metavar="LIST", help="stream,clip (default both; --quick: stream)")
    p.add_argument("--data", metavar="DIR",
                   help="labelled videos (dataset folder; its val split); default: the built-in held-out "
                   "synthetic set, generated on first use")
    p.add_argument("--split", default="val", help="dataset split (default: %(default)s)")
    p.add_argument("--videos", type=argtypes.int_range(1, 100_000), metavar="N", help="evaluate on N videos, spread over the classes")
    p.add_argument("--size", type=argtypes.side, metavar="PX", help="input size to export at (default: the model's)")
    p.add_argument("--calib", metavar="DIR", help="INT8 calibration data (default: the built-in synthetic set)")
    p.add_argument("--calib-size", type=argtypes.int_range(1, 100_000), metavar="N", help="INT8 calibration clips")
    p.add_argument("--threads", type=argtypes.threads, metavar="N", help="threads for every backend and torch")
    p.add_argument("--rounds", type=argtypes.int_range(1, 1_000_000), metavar="N", help="latency rounds (default 8, --quick 4)")
    p.add_argument("--block", type=argtypes.int_range(1, 1_000_000), metavar="N", help="timed calls per variant per round (default 20)")
    p.add_argument("--quick", action="store_true",
                   help="stream mode (unless --modes is given), 11 videos, short latency rounds, INT8 calibrated "
                   "on 8 clips")
    p.add_argument("--within", type=argtypes.float_range(0.0, 100.0), default=1.0, metavar="POINTS",
                   help="the verdict recommends the fastest variant whose top-1 is within POINTS of the best "
                   "(default: %(default)s)")
    p.add_argument("--no-efficiency", action="store_true",
                   help="leave out the frame-delta gating / salient-window rows (measured on the built-in videos "
                   "with still stretches, for the first stream variant)")
    p.add_argument("--streams", type=argtypes.int_range(0, 256), default=8, metavar="N",
                   help="the 'many cameras' section: every stream variant steps N streams batched (one call per "
                   "tick) against N independent sessions, interleaved (default %(default)s; 0: leave it out)")
    p.add_argument("--cache", metavar="DIR",
                   help="artifact cache (default $EDGEVID_CACHE/report-artifacts or ~/.cache/edgevid/report-artifacts)")
    p.add_argument("-o", "--output", default="report", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="also print report.json on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the report and write it; 130 after Ctrl-C (the partial report is written)."""
    from edgevid.errors import require

    require("torch", "export")
    require("matplotlib", "report")
    from edgevid.models import get_config
    from edgevid.report.compare import ReportOptions, make_report, quick_options
    from edgevid.report.output import check_output_dir, write_report
    from edgevid.report.variants import BACKENDS, MODES, PRECISIONS, parse_list

    aliases = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}
    model = get_config(args.model).name
    checkpoint = checkpoint_of(args, "default", not args.quiet)
    # A model that ships no checkpoint (the 3D zoo) still gets a latency report: seeded random weights.
    random_weights = checkpoint == "default" and get_config(model).default_weights is None
    opts = ReportOptions(
        model=model, checkpoint=checkpoint, random_weights=random_weights, within_points=args.within,
        backends=parse_list(args.backends, BACKENDS, "backend", aliases),
        precisions=parse_list(args.precisions, PRECISIONS, "precision"),
        modes=parse_list(args.modes or "stream,clip", MODES, "mode"), data=args.data, split=args.split, videos=args.videos,
        size=args.size, calib=args.calib, calib_size=args.calib_size, threads=args.threads, quick=args.quick,
        cache=args.cache, progress=not args.quiet, efficiency=not args.no_efficiency,
        streams=args.streams)
    if args.quick:
        quick_options(opts, modes_given=args.modes is not None)
    opts.rounds = args.rounds or opts.rounds
    opts.block = args.block or opts.block
    check_output_dir(args.output)  # fail before minutes of work
    report, interrupted = make_report(opts)
    paths = write_report(report, args.output)
    if args.json:
        print(json.dumps(report, indent=2))
    if not args.quiet:
        verdict = report.get("verdict") or {}
        if verdict.get("text"):
            print(f"verdict: {verdict['text']}", file=sys.stderr)
            if verdict.get("command"):
                print(f"  {verdict['command']}", file=sys.stderr)
        print("findings:", file=sys.stderr)
        for line in report["findings"]:
            print(f"  {line}", file=sys.stderr)
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if interrupted:
        print("interrupted: the report keeps the rows measured so far", file=sys.stderr)
        return 130
    return 0
