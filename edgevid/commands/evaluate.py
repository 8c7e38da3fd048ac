"""`edgevid eval`: accuracy of a zoo model (torch) on a dataset split."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict

from edgevid.commands.weights_option import add_weights_option, checkpoint_of


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `eval`."""
    p = sub.add_parser(
        "eval", help="measure a model's accuracy on a dataset split (torch)",
        description="Top-1 and order-pair accuracy (telling time-reversed class pairs apart, chance 0.5) of a "
        "zoo model on a dataset split, with the preprocessing and frame count it was trained with. A two-stream "
        "model runs both streams on the same clips and reports the fused scores and each stream alone. A model "
        "trained to stream (the -online 3D CNNs, LRCN) is also streamed over every video from its first frame to "
        "its last, and scored by its final output.",
    )
    p.add_argument("--model", required=True, help="zoo name, e.g. tsm")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--checkpoint", help="weights (default: the checkpoint shipped with the model)")
    add_weights_option(p)
    p.add_argument("--rgb-checkpoint", metavar="FILE",
                   help="two-stream-* only: the RGB stream's checkpoint (a tsn-<backbone> one), fused with "
                   "--flow-checkpoint (default: the shipped weights of each)")
    p.add_argument("--flow-checkpoint", metavar="FILE",
                   help="two-stream-* only: the flow stream's checkpoint (a tsn-flow-<backbone> one)")
    p.add_argument("--split", default="val", help="default: %(default)s")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out videos that cannot be decoded (counted and reported) instead of failing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print."""
    from edgevid.errors import require

    require("torch", "export")
    from edgevid.signals import exit_on
    from edgevid.train.evaluate import evaluate_checkpoint

    with exit_on():  # SIGTERM: the loader's worker shut down, exit 143
        r = evaluate_checkpoint(args.model, args.data, checkpoint_of(args, "default", not args.quiet), args.split,
                                on_error="skip" if args.skip_unreadable else "raise", progress=not args.quiet,
                                rgb_checkpoint=args.rgb_checkpoint, flow_checkpoint=args.flow_checkpoint)
    if args.json:
        print(json.dumps(asdict(r), indent=2))
        return 0
    skipped = f", {r.skipped} unreadable skipped" if r.skipped else ""
    print(f"{r.model} on {args.data} [{r.split}, {r.clips} clips{skipped}]: top-1 {r.top1:.3f}, "
          f"order-pair {_pair(r.order_pair)}")
    if r.stream_top1 is not None:
        print(f"  streamed, each video from its first frame to its last, final output: top-1 {r.stream_top1:.3f}, "
              f"order-pair {_pair(r.stream_order_pair)}")
    for name, alone in r.streams.items():  # two-stream: each stream alone, same clips
        print(f"  {name} stream alone: top-1 {alone['top1']:.3f}, order-pair {_pair(alone['order_pair'])}")
    for name, acc in r.per_class.items():
        print(f"  {name:20s} {acc:.3f}")
    return 0


def _pair(value: float) -> str:
    return "n/a (no order pairs)" if math.isnan(value) else f"{value:.3f} (chance 0.500)"
