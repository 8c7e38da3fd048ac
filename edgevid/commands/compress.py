"""`edgevid compress`: sparsity or channel pruning of a zoo model, fine-tuned, as a checkpoint."""

from __future__ import annotations

import argparse
import json

from edgevid.commands import argtypes


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `compress`."""
    p = sub.add_parser(
        "compress", help="sparsify or channel-prune a model, fine-tune it, write a checkpoint",
        description="Torch-side compression of a zoo model: unstructured magnitude sparsity (nncf.prune), the "
        "2:4 pattern TensorRT accelerates on Ampere/Orin, or structured channel pruning (Torch-Pruning, "
        "keeping the temporal shift valid), then a short fine-tune on DATA's train split and BatchNorm "
        "adaptation. Reports accuracy on the val split, sparsity, MACs, latency and file size. The "
        "checkpoint exports like any other (edgevid export --checkpoint OUT). For INT8 use "
        "`edgevid export --precision int8`.",
    )
    p.add_argument("--model", required=True, help="zoo name, e.g. tsm")
    p.add_argument("--checkpoint", metavar="PATH", help="weights to start from (default: the shipped checkpoint)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder (train split to fine-tune, val to measure)")
    method = p.add_mutually_exclusive_group(required=True)
    method.add_argument("--sparsity", metavar="R|2:4",
                        help="unstructured magnitude sparsity ratio R in (0, 1) (smaller compressed file, NO "
                             "speed-up on dense kernels), or 2:4 (TensorRT sparse tensor cores)")
    method.add_argument("--prune-channels", type=argtypes.float_range(0.0, 1.0), metavar="R",
                        help="remove ratio R of the prunable channels (fewer MACs, faster on every backend)")
    p.add_argument("--epochs", type=argtypes.int_range(0, 10_000), default=2, help="fine-tuning epochs (default: %(default)s)")
    p.add_argument("--lr", type=argtypes.float_range(0.0, 10.0, lo_open=True), default=5e-4, help="fine-tuning learning rate (default: %(default)s)")
    p.add_argument("--batch-size", type=argtypes.int_range(1, 4096), default=8, help="default: %(default)s")
    p.add_argument("--size", type=argtypes.side, help="input crop size (default: the checkpoint's)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="checkpoint to write")
    p.add_argument("--force", action="store_true", help="replace OUT.pt if it is an earlier edgevid checkpoint")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compress, then print the report."""
    from edgevid.errors import require

    require("torch", "export")
    from edgevid.commands import warnings_as_lines
    from edgevid.compress.pipeline import compress_model
    from edgevid.compress.sparsity import parse_sparsity

    sparsity = parse_sparsity(args.sparsity) if args.sparsity is not None else None
    from edgevid.signals import exit_on

    with warnings_as_lines("compress"), exit_on():  # SIGTERM: loader workers shut down, temp files removed
        report = compress_model(args.model, args.data, args.output, checkpoint=args.checkpoint, sparsity=sparsity,
                                prune_channels=args.prune_channels, epochs=args.epochs, lr=args.lr,
                                batch_size=args.batch_size, size=args.size, progress=not args.quiet,
                                force=args.force)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(format_report(report))
    return 0


def format_report(r) -> str:
    """Human-readable before/after table."""
    mb = 2**20
    lines = [f"{r.model}: {r.method}, fine-tuned {r.epochs} epoch(s) -> {r.out}",
             f"  val top-1        {r.top1_before:.3f} -> {r.top1_after:.3f}",
             f"  weight sparsity  {r.sparsity['weights']:.1%} of conv/linear weights "
             f"({r.sparsity['all_parameters']:.1%} of all parameters)",
             f"  parameters       {r.params_before / 1e6:.3f} M -> {r.params_after / 1e6:.3f} M",
             f"  MACs per clip    {r.macs_before / 1e6:.1f} M -> {r.macs_after / 1e6:.1f} M "
             f"({r.macs_before / max(r.macs_after, 1):.2f}x fewer)",
             f"  file size        {r.file_bytes_before / mb:.2f} MiB -> {r.file_bytes_after / mb:.2f} MiB; "
             f"zlib-compressed {r.zlib_bytes_before / mb:.2f} -> {r.zlib_bytes_after / mb:.2f} MiB"]
    if r.latency_ms_before is not None:
        lines.append(f"  stream step      {r.latency_ms_before:.2f} ms -> {r.latency_ms_after:.2f} ms "
                     f"(torch CPU, 1 thread; {r.latency_ms_before / r.latency_ms_after:.2f}x)")
    lines += [f"  note: {n}" for n in r.notes]
    return "\n".join(lines)
