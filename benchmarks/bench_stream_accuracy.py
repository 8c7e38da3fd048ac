"""Does a streamed model keep its clip accuracy? Clip against streamed top-1, per training regime, in one run.

A causal stream's output after t steps is the causal clip model on every frame since the
stream began, not on the last T (``edgevid.models.continual``): stacked causal convolutions
and an LSTM keep looking further back. This trains each model on the built-in set's ``train``
split (``edgevid train``, from scratch) in the regimes of ``edgevid.train.regime`` (``MODELS`` says
which per model, ``--regimes`` overrides):

- ``clip``: T-frame clips of consecutive frames (dense, stride 1: the frame gap the stream steps);
- ``stream`` (the default of these entries): S = 16 consecutive frames, the loss on the outputs
  after a warm-up of T frames;

and scores each checkpoint with ``edgevid eval`` on a test set generated with another seed (never
trained on, never used to pick an epoch; the built-in set's ``val`` split picks the epoch):

- clip top-1: the centred T-frame clip of each video, as a clip model is scored;
- streamed top-1: each video stepped from its first frame to its last (16 steps), the final output.

    python benchmarks/bench_stream_accuracy.py [--models M ...] [--regimes stream clip] [--size PX] [--epochs N]
        [--test-per-class 20] [--work DIR] [--json out.json]
    python benchmarks/bench_stream_accuracy.py --tiny     # one epoch of X3D-XS at 32 px: a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Per model: T = 8, half the 16-frame videos, so that a stream runs twice its clip (X3D-XS too: its zoo clip is 4
# frames 12 apart, and 4 consecutive frames at 64 px left its clip top-1 near chance here). Sizes and epochs fit a
# 2-core CPU in about an hour: from scratch, X3D-XS needs more epochs than the others to leave chance
# (tests/test_streaming3d.py); R(2+1)D-18 and MC3-18 cost 4-5x an X3D-XS epoch, so 48 px and the stream regime
# only; LRCN at width 0.5 (the shipped TSM's). `--regimes` runs both regimes on every model.
MODELS = {
    "x3d-xs-online": {"frames": 8, "epochs": 20, "size": 64, "regimes": ("stream", "clip")},
    "lrcn-mobilenetv2": {"frames": 8, "epochs": 16, "size": 64, "width": 0.5, "regimes": ("stream", "clip")},
    "mc3-18-online": {"frames": 8, "epochs": 12, "size": 48, "regimes": ("stream",)},
    "r2plus1d-18-online": {"frames": 8, "epochs": 12, "size": 48, "regimes": ("stream",)},
}
TEST_SEED = 4  # the built-in set is seed 1, `edgevid data synth` seed 0


def _edgevid(*argv: str) -> dict:
    """Run an edgevid verb with --json; its JSON (stderr passes through: the per-epoch lines)."""
    proc = subprocess.run([sys.executable, "-m", "edgevid.cli", *argv, "--json", "-q"], stdout=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"edgevid {' '.join(argv)} failed ({proc.returncode})")
    return json.loads(proc.stdout)


def _cpu() -> str:
    from edgevid.report.machine import _cpuinfo

    return _cpuinfo()[0] or platform.processor() or platform.machine()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--regimes", nargs="+", choices=["stream", "clip"], help="default: MODELS (per model)")
    p.add_argument("--size", type=int, help="every model's crop size (default: MODELS)")
    p.add_argument("--test-per-class", type=int, default=20, help="test videos per class (x 11 classes)")
    p.add_argument("--epochs", type=int, help="every model's epochs (default: MODELS)")
    p.add_argument("--work", type=Path, help="keep checkpoints and the test set here (default: a temp folder)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--tiny", action="store_true", help="X3D-XS, 1 epoch, 32 px, 2 test videos per class")
    args = p.parse_args()
    if args.tiny:
        args.models, args.size, args.epochs, args.test_per_class = ["x3d-xs-online"], 32, 1, 2

    from edgevid.data.builtin import held_out_set
    from edgevid.data.synth import generate_dataset

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-stream-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    train_data = held_out_set(progress=False)
    test = work / f"test-seed{TEST_SEED}-n{args.test_per_class}"
    if not (test / "val.txt").is_file():
        generate_dataset(test, seed=TEST_SEED, videos_per_class=2 * args.test_per_class, val_fraction=0.5,
                         force=True, progress=False)
    rows = []
    for model in args.models:
        spec = MODELS[model]
        frames, epochs, size = spec["frames"], args.epochs or spec["epochs"], args.size or spec["size"]
        width = ["--width", str(spec["width"])] if "width" in spec else []
        for regime in args.regimes or spec["regimes"]:
            ckpt = work / f"{model}-{regime}-{size}px.pt"
            t0 = time.perf_counter()
            trained = _edgevid("train", "--model", model, "--data", str(train_data), "-o", str(ckpt), "--force",
                               "--size", str(size), "--frames", str(frames), "--epochs", str(epochs), *width,
                               "--regime", regime, *(["--sampling", "dense"] if regime == "clip" else []))
            seconds = time.perf_counter() - t0
            scored = _edgevid("eval", "--model", model, "--checkpoint", str(ckpt), "--data", str(test))
            row = {"model": model, "regime": regime, "frames": frames, "size": size, "epochs": epochs,
                   "best_epoch": trained["best"]["epoch"], "train_seconds": round(seconds),
                   "test_videos": scored["clips"], "clip_top1": scored["top1"], "stream_top1": scored["stream_top1"]}
            row["points"] = round(100 * (row["stream_top1"] - row["clip_top1"]), 1)
            rows.append(row)
            print(f"{model} {regime}: clip top-1 {row['clip_top1']:.3f}, streamed {row['stream_top1']:.3f} "
                  f"({row['points']:+.1f} points)", file=sys.stderr, flush=True)
    print(f"CPU: {_cpu()}; trained on {train_data} [train], picked by its [val], tested on {test} [val]")
    print("| model | T | px | training regime | epochs (best) | train min | clip top-1 | streamed top-1 | streamed - clip |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['frames']} | {r['size']} | {r['regime']} | {r['epochs']} ({r['best_epoch']}) | "
              f"{r['train_seconds'] / 60:.0f} | {100 * r['clip_top1']:.1f} | {100 * r['stream_top1']:.1f} | "
              f"{r['points']:+.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": _cpu(), "test": str(test), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
