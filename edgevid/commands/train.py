"""`edgevid train`: fine-tune a zoo model on a video dataset."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from edgevid.commands import argtypes
from edgevid.commands.weights_option import add_weights_option, checkpoint_of

# The trainer's bounds (edgevid.train.trainer: MAX_LR, MAX_WIDTH), here without importing torch.
_LR = argtypes.float_range(0.0, 10.0, lo_open=True)
_WIDTH = argtypes.float_range(0.0, 4.0, lo_open=True)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `train`."""
    from edgevid.train.workers import max_workers  # torch-free

    p = sub.add_parser(
        "train", help="fine-tune a zoo model on a video dataset",
        description="Fine-tune a zoo model (TSM, TSN and its flow / RGB-difference streams, the 3D CNNs and their "
        "-online streaming forms, LRCN) "
        "on a dataset folder: class folders (DIR/<class>/*.mp4) or annotation lists (DIR/train.txt, "
        "DIR/val.txt: 'path label' per line). "
        "Evaluates on the val split every epoch, keeps the best checkpoint at -o, and the latest "
        "epoch at <-o>.last for --resume.",
    )
    p.add_argument("--model", required=True,
                   help="zoo name, e.g. tsm (online TSM MobileNetV2), tsn-mobilenetv2, x3d-xs-online")
    p.add_argument("--data", required=True, help="dataset folder (see `edgevid data synth`)")
    # `--out` (the old name) still works: argparse accepts it as an abbreviation of --output.
    p.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="where to write the best checkpoint")
    p.add_argument("--checkpoint", help="initial weights: ours, an official TSM checkpoint, or a plain state dict")
    add_weights_option(p)
    p.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=8, help="default: %(default)s")
    p.add_argument("--lr", type=_LR, default=2e-3,
                   help="AdamW learning rate in (0, 10], cosine decay (default: %(default)s)")
    p.add_argument("--size", type=int, default=112, help="input crop size (default: %(default)s, CPU-friendly)")
    p.add_argument("--frames", type=int, default=8,
                   help="frames per clip, motion stacks for tsn-flow-* / tsn-rgbdiff-* (default: %(default)s)")
    p.add_argument("--width-mult", "--width", type=_WIDTH, dest="width_mult", metavar="W",
                   help="MobileNetV2 width multiplier (default: 1.0; TSM, TSN, LRCN only)")
    p.add_argument("--sampling", choices=("segment", "dense"),
                   help="TSN segments or dense consecutive frames (default: segment; dense for the motion "
                   "models tsn-flow-*, tsn-rgbdiff-*, whose L + --frames consecutive frames make --frames stacks, "
                   "and in the stream regime)")
    p.add_argument("--regime", choices=("clip", "stream"),
                   help="clip: the loss on T-frame clips; stream: on the outputs of --stream-frames consecutive frames "
                   "after a warm-up of --frames, the regime a causal model streams in (default: stream for the "
                   "-online 3D CNNs and LRCN, clip for the rest)")
    p.add_argument("--stream-frames", type=argtypes.int_range(2, 1024), metavar="S",
                   help="frames per training stream in the stream regime (default: 2 x --frames, at least 16)")
    p.add_argument("--workers", type=argtypes.int_range(0, max_workers()), default=1,
                   help=f"data loading processes, 0 to {max_workers()} (4 per CPU, at most 64; default: %(default)s)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="0 to 2**32-1 (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.last")
    p.add_argument("--force", action="store_true",
                   help="replace an existing checkpoint at OUT (only one edgevid wrote) and start over")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out videos that cannot be decoded (counted and reported) instead of failing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the checkpoint written and the history as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train and print the best epoch."""
    from edgevid.errors import require

    require("torch", "export")
    from edgevid.signals import exit_on
    from edgevid.train.trainer import TrainConfig, last_path, train

    cfg = TrainConfig(model=args.model, data=args.data, out=args.output,
                      checkpoint=checkpoint_of(args, None, not args.quiet),
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, size=args.size,
                      frames=args.frames, width_mult=args.width_mult, sampling=args.sampling,
                      regime=args.regime, stream_frames=args.stream_frames,
                      workers=args.workers, seed=args.seed, resume=args.resume, force=args.force,
                      on_error="skip" if args.skip_unreadable else "raise", progress=not args.quiet)
    with exit_on():  # SIGTERM: workers shut down, temp files removed, exit 143
        history = train(cfg)
    best = max(history, key=lambda h: h.score)
    if args.json:
        print(json.dumps({"output": str(args.output), "last": str(last_path(args.output)),
                          "best": asdict(best), "history": [asdict(h) for h in history]}, indent=2))
        return 0
    streamed = f" (stream {best.val_stream_top1:.3f})" if best.val_stream_top1 is not None else ""
    print(f"best epoch {best.epoch}: val top-1 {best.val_top1:.3f}{streamed}, order-pair {best.val_pair:.3f} -> "
          f"{args.output}")
    return 0
