"""Flow benchmark: what the host's optical flow costs per frame, against the network step it feeds.

The two-stream papers say computing optical flow takes longer than the network itself. This
measures it on this machine: milliseconds per frame of ``MotionState.push``'s motion part (grey
conversion, flow, quantisation, the stack: ``MotionState.last_ms``, what a session reports as
``latency_ms["motion"]``) for DIS ultrafast / fast / medium, Farneback and TV-L1 (where
opencv-contrib provides ``cv2.optflow``), at 112 and 224 px, on real decoded frames of the
built-in synthetic videos (``edgevid.data.synth.generate_dataset`` into a temp folder).

Rounds are interleaved: every round runs each variant once over the same videos, in an order
rotated from round to round, so a change of load on the machine hits every variant alike; the
table gives the median and p10/p90 over all frames of all rounds.

With ``--export DIR`` (an exported artifact, e.g. the shipped TSN: ``edgevid export --model
tsn-mobilenetv2 --mode stream -o exports/tsn``) the network's own step is timed in the same
rounds (a stream step, or one clip call; on motion stacks if the artifact is a motion model)
and each flow variant at the artifact's crop size gets a ratio line: flow ms / network ms.

    python benchmarks/bench_flow.py [--rounds 5] [--videos 11] [--sizes 112 224] [--export DIR] [--json out.json]
    python benchmarks/bench_flow.py --tiny      # small sizes, one round: a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

VARIANTS = [("dis", "ultrafast"), ("dis", "fast"), ("dis", "medium"), ("farneback", ""), ("tvl1", "")]


def label(algorithm: str, preset: str) -> str:
    """``DIS fast``, ``Farneback``, ``TV-L1``."""
    return {"dis": f"DIS {preset}", "farneback": "Farneback", "tvl1": "TV-L1"}[algorithm]


def decoded_videos(work: Path, count: int, frames: int, size: int) -> list[np.ndarray]:
    """``count`` synthetic videos (one per class, then round the classes again), decoded: (T, H, W, 3) BGR."""
    from edgevid.data.synth import CLASSES, generate_dataset
    from edgevid.data.video_io import read_frames

    per_class = max(2, -(-count // len(CLASSES)))  # the generator makes at least 2 per class
    summary = generate_dataset(work / "synth", seed=0, videos_per_class=per_class, frames=frames, size=size,
                               val_fraction=0.0, progress=False)
    paths = [summary.root / name / f"{name}_{v:03d}.mp4" for v in range(per_class) for name in CLASSES]
    return [read_frames(p) for p in paths[:count]]


def flow_pass(motion, preprocess, videos: list[np.ndarray]) -> list[float]:
    """Motion ms of every frame that makes a flow field (all but each video's first), one MotionState per video."""
    from edgevid.runtime.motion import MotionState

    state = MotionState(motion, preprocess)
    ms: list[float] = []
    for video in videos:
        state.reset()
        for i, frame in enumerate(video):
            state.push(frame)
            if i:
                ms.append(state.last_ms)
    return ms


def network_pass(export: Path, backend: str | None, videos: list[np.ndarray]) -> tuple[Callable[[], list[float]],
                                                                                        dict, Callable[[], None]]:
    """(a pass timing one network call per video frame, what was timed, close) for the artifact in ``export``."""
    from edgevid import runtime
    from edgevid.runtime.motion import motion_inputs
    from edgevid.runtime.preprocess import preprocess_frame

    runner = runtime.load(export, backend)
    m = runner.manifest
    video = videos[0]
    if m.motion is not None:
        steps = motion_inputs(list(video), m.motion, m.preprocess)
    else:
        steps = np.stack([preprocess_frame(f, m.preprocess) for f in video])
    info = {"model": m.model, "backend": runner.name, "mode": m.mode, "crop": m.preprocess.crop,
            "motion": None if m.motion is None else m.motion.kind}
    if m.mode == "stream":
        stream = runner.open_stream()

        def one_pass() -> list[float]:
            out = []
            stream.reset()
            for x in steps:
                t0 = time.perf_counter()
                stream.step(x[None])
                out.append((time.perf_counter() - t0) * 1e3)
            return out

        def close() -> None:
            stream.close()
            runner.close()

        return one_pass, info, close
    t = m.sampling.frames
    clip = np.stack([steps[i % len(steps)] for i in range(t)])[None]
    feeds = {runner.frame_input.name: clip}

    def one_clip_pass() -> list[float]:
        out = []
        for _ in range(len(steps)):
            t0 = time.perf_counter()
            runner.infer(feeds)
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    return one_clip_pass, info, runner.close


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the videos")
    parser.add_argument("--videos", type=int, default=11, help="synthetic videos (one per class first)")
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224], help="crop sizes flow is computed at")
    parser.add_argument("--length", type=int, default=5, help="L, flow fields per stack")
    parser.add_argument("--threads", type=int, default=None, help="OpenCV threads (default: OpenCV's)")
    parser.add_argument("--export", type=Path, default=None, help="an exported artifact: time its network step too")
    parser.add_argument("--backend", default=None, help="backend for --export (default: its manifest's target)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--tiny", action="store_true", help="smoke-test settings: 32 and 48 px, 2 videos, 1 round")
    args = parser.parse_args()
    if args.tiny:
        args.rounds, args.videos, args.frames, args.sizes = 1, 2, 8, [32, 48]
    if min(args.rounds, args.videos, args.length) < 1 or args.frames < 4 or min(args.sizes) < 8:
        parser.error("--rounds, --videos and --length must be >= 1, --frames >= 4 (the generator's least), "
                     "--sizes >= 8")

    from edgevid.runtime._opencv import cv2

    if args.threads:
        cv2.setNumThreads(args.threads)
    from edgevid.errors import EdgevidError

    try:
        with tempfile.TemporaryDirectory(prefix="edgevid-bench-flow-") as work:
            return bench(args, Path(work), cv2)
    except EdgevidError as exc:  # a bad --export, a full disk: one line, as the CLI gives it
        print(f"bench_flow: error: {exc}", file=sys.stderr)
        return 2


def bench(args: argparse.Namespace, work: Path, cv2) -> int:
    """Decode the videos, time every variant in interleaved rounds, print the table and ratios."""
    from edgevid.manifest import Motion, Preprocess
    from edgevid.report.machine import describe_machine

    sizes = sorted(set(args.sizes))
    if args.export is not None:
        from edgevid.manifest import Manifest

        crop = Manifest.load(args.export).preprocess.crop
        sizes = sorted(set(sizes) | {crop})
    # Videos as large as the largest crop (even: MPEG-4), so no size is timed on upscaled frames.
    videos = decoded_videos(work, args.videos, args.frames, max(32, max(sizes) + max(sizes) % 2))
    passes: dict[str, Callable[[], list[float]]] = {}
    skipped: list[str] = []
    for algorithm, preset in VARIANTS:
        if algorithm == "tvl1" and not hasattr(cv2, "optflow"):
            skipped.append("TV-L1: skipped, cv2.optflow is missing (pip install opencv-contrib-python-headless "
                           "in place of opencv-python-headless)")
            continue
        motion = Motion("flow", args.length, algorithm, preset)
        for size in sizes:
            geometry = Preprocess(resize=size, crop=size)
            passes[f"{label(algorithm, preset)} @ {size} px"] = (
                lambda m=motion, g=geometry: flow_pass(m, g, videos))
    close, info = None, None
    if args.export is not None:
        network, info, close = network_pass(args.export, args.backend, videos)
        passes["network"] = network
    names = list(passes)
    print(f"timing {len(names)} variants in {args.rounds} interleaved rounds over {len(videos)} videos...",
          file=sys.stderr)
    ms: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # one untimed pass each: caches, thread pools and lazy initialisation
        passes[name]()
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            ms[name] += passes[name]()
    if close is not None:
        close()

    machine = describe_machine()
    stats = {n: {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)),
                 "p90": float(np.percentile(v, 90)), "frames": len(v)} for n, v in ms.items()}
    print(f"\nedgevid flow benchmark: L={args.length}, {len(videos)} synthetic videos of {args.frames} frames "
          f"({videos[0].shape[2]}x{videos[0].shape[1]}), {args.rounds} rounds")
    print(f"CPU: {machine['cpu']} ({machine['cores_usable']} usable cores), OpenCV {cv2.__version__} with "
          f"{cv2.getNumThreads()} threads")
    print(f"\n{'flow (ms per frame: grey, flow, quantise, stack)':<52}{'median':>9}{'p10':>9}{'p90':>9}")
    for name in names:
        if name != "network":
            s = stats[name]
            print(f"{name:<52}{s['median']:>9.2f}{s['p10']:>9.2f}{s['p90']:>9.2f}")
    for line in skipped:
        print(line)
    ratios = {}
    if info is not None:
        s = stats["network"]
        unit = "step" if info["mode"] == "stream" else "clip call"
        what = f"{info['model']} on {info['backend']}, {info['mode']} mode, {info['crop']} px"
        print(f"\nnetwork: {what}: {s['median']:.2f} ms per {unit} (p10 {s['p10']:.2f}, p90 {s['p90']:.2f})")
        for name in names:
            if name.endswith(f"@ {info['crop']} px"):
                ratios[name] = stats[name]["median"] / s["median"]
                print(f"  {name}: {stats[name]['median']:.2f} ms per frame = {ratios[name]:.2f}x the network {unit}")
    if args.json:
        args.json.write_text(json.dumps({"ms": stats, "ratios_vs_network": ratios, "network": info,
                                         "skipped": skipped, "cpu": machine["cpu"], "opencv": cv2.__version__,
                                         "threads": cv2.getNumThreads(), "rounds": args.rounds,
                                         "length": args.length}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
