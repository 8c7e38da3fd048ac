"""How far back a stream looks: the receptive field, in frames, of streaming entries' final output.

A causal stream's output after t steps is the causal clip model on frames 0..t (``edgevid.models.continual``).
How many of the latest frames it depends on is read from the input gradient of the causal clip model on a
long clip: the earliest frame with a non-zero gradient. Random weights, with every BatchNorm scale drawn in
[0.5, 1.5] (PyTorchVideo zero-initialises the last BatchNorm of each residual branch, which would hide the
branches), 32 px (the temporal receptive field does not depend on the size), seeded. A frame whose every path
runs through a dead ReLU has a zero gradient too, so the figure is the frames that count for this input: the
structural field can be a frame or two longer.

    python benchmarks/measure_receptive_field.py [--frames-probe 160] [MODEL:T ...]
"""

from __future__ import annotations

import argparse
import sys

DEFAULT = ["x3d-xs-online:4", "r2plus1d-18-online:8", "mc3-18-online:8", "lrcn-mobilenetv2:8"]


def receptive_field(name: str, frames: int, probe: int) -> int:
    """Frames the final output of ``name`` (built for ``frames``-frame clips) depends on, out of ``probe``."""
    import torch

    from edgevid.models import build_model

    torch.manual_seed(0)
    model = build_model(name, frames=frames, num_classes=5, global_rng=True).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, probe, 3, 32, 32, requires_grad=True)
    model(x).sum().backward()
    reached = (x.grad.abs().sum(dim=(0, 2, 3, 4)) > 0).nonzero().flatten()
    return probe - int(reached[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", default=DEFAULT, help="MODEL:T (default: %(default)s)")
    p.add_argument("--frames-probe", type=int, default=160, help="the long clip's frames")
    args = p.parse_args()
    print("| entry | T | receptive field (frames) |")
    print("| --- | --- | --- |")
    for item in args.models:
        name, _, t = item.partition(":")
        r = receptive_field(name, int(t), args.frames_probe)
        shown = f">= {r} (all {args.frames_probe})" if r == args.frames_probe else str(r)
        print(f"| {name} | {t} | {shown} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
