"""`edgevid train`: fine-tune a zoo model on a video dataset."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `train`."""
    p = sub.add_parser(
        "train", help="fine-tune a zoo model on a video dataset",
        description="Fine-tune a zoo model (offline or online TSM, TSN) on a dataset folder: class folders "
        "(DIR/<class>/*.mp4) or annotation lists (DIR/train.txt, DIR/val.txt: 'path label' per line). "
        "Evaluates on the val split every epoch, keeps the best checkpoint at -o, and the latest "
        "epoch at <-o>.last for --resume.",
    )
    p.add_argument("--model", required=True, help="zoo name, e.g. tsm (online TSM MobileNetV2) or tsn-mobilenetv2")
    p.add_argument("--data", required=True, help="dataset folder (see `edgevid data synth`)")
    p.add_argument("-o", "--out", required=True, help="where to write the best checkpoint (.pt)")
    p.add_argument("--checkpoint", help="initial weights: ours, an official TSM checkpoint, or a plain state dict")
    p.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=8, help="default: %(default)s")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate, cosine decay (default: %(default)s)")
    p.add_argument("--size", type=int, default=112, help="input crop size (default: %(default)s, CPU-friendly)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default: %(default)s)")
    p.add_argument("--width", type=float, dest="width_mult", help="MobileNetV2 width multiplier (default: 1.0)")
    p.add_argument("--sampling", choices=("segment", "dense"), default="segment",
                   help="TSN segments (default) or dense consecutive frames")
    p.add_argument("--workers", type=int, default=1, help="data loading processes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--resume", action="store_true", help="continue from <out>.last")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out videos that cannot be decoded (counted and reported) instead of failing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train and print the best epoch."""
    from edgevid.errors import require

    require("torch", "export")
    from edgevid.train.trainer import TrainConfig, train

    cfg = TrainConfig(model=args.model, data=args.data, out=args.out, checkpoint=args.checkpoint,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, size=args.size,
                      frames=args.frames, width_mult=args.width_mult, sampling=args.sampling,
                      workers=args.workers, seed=args.seed, resume=args.resume,
                      on_error="skip" if args.skip_unreadable else "raise", progress=not args.quiet)
    history = train(cfg)
    best = max(history, key=lambda h: h.val_top1)
    print(f"best epoch {best.epoch}: val top-1 {best.val_top1:.3f}, order-pair {best.val_pair:.3f} -> {args.out}")
    return 0
