"""`edgevid run`: run an exported model on a video, a folder of frames, a camera or a stream.

Torch-free: this verb imports only the runtime (numpy, OpenCV, one backend).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register `edgevid run` (cheap: no heavy imports)."""
    p = subparsers.add_parser(
        "run",
        help="run an exported model on a video or camera (torch-free runtime)",
        description="Run an exported artifact (see `edgevid export`) on frames and print the running "
        "top prediction. A summary with fps and per-stage latency goes to stderr at the end.",
    )
    p.add_argument("artifact", metavar="DIR", help="artifact directory (manifest.json + model files)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", metavar="SRC",
                        help="video file, folder of frames, rtsp://|http:// URL, or GStreamer pipeline")
    source.add_argument("--camera", type=int, metavar="N", help="camera index (e.g. 0)")
    p.add_argument("--backend", metavar="B",
                   help="onnxruntime | openvino | tensorrt (aliases ort, ov, trt); default: the manifest's target")
    p.add_argument("--every", type=_positive, metavar="N",
                   help="stream mode: run the model on every N-th frame (default: the frame stride the model "
                   "was trained with, from the manifest); clip mode: predict every N-th sampled frame (default 1)")
    p.add_argument("--smooth", type=_positive, metavar="K",
                   help="average class scores over the last K predictions (default: stream mode, the clip "
                   "length the model was trained with; clip mode, 1)")
    p.add_argument("--topk", type=_positive, default=5, metavar="K", help="labels per prediction (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object per prediction on stdout")
    p.add_argument("--out", metavar="FILE", help="write the video with the running label overlaid (.mp4/.avi)")
    p.add_argument("--max-frames", type=_positive, metavar="N", help="stop after N frames")
    p.set_defaults(func=run)


class _Printer:
    """Running top prediction: in place on a terminal, one line per change otherwise; or JSON lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stdout.isatty()
        self._shown: str | None = None

    def show(self, pred: Any) -> None:
        if self.as_json:
            print(json.dumps(pred.to_dict()), flush=True)
            return
        line = f"frame {pred.frame:6d}  {pred.label}  {pred.score:.3f}  (infer {pred.latency_ms['infer']:.1f} ms)"
        if self.tty:
            print("\r" + line.ljust(78), end="", flush=True)
        elif pred.label != self._shown:
            print(line, flush=True)
        self._shown = pred.label

    def finish(self) -> None:
        if self.tty and not self.as_json and self._shown is not None:
            print()


def _summary(frames: int, predictions: int, seconds: float, stages: dict[str, list[float]], what: str) -> str:
    import numpy as np

    fps = frames / seconds if seconds > 0 else 0.0
    lines = [f"{frames} frames, {predictions} predictions in {seconds:.2f} s: {fps:.1f} fps end to end [{what}]",
             f"{'latency ms':<14}{'mean':>8}{'p50':>8}{'p95':>8}"]
    for stage, values in stages.items():
        if values:
            v = np.asarray(values)
            lines.append(f"  {stage:<12}{v.mean():8.2f}{np.percentile(v, 50):8.2f}{np.percentile(v, 95):8.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the artifact on the source; returns the exit code."""
    from edgevid import runtime
    from edgevid.errors import EdgevidError
    from edgevid.runtime.video import AnnotatedWriter

    stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "infer": []}
    frames = predictions = 0
    interrupted = False
    printer = _Printer(args.json)
    with runtime.load(args.artifact, args.backend) as runner:
        session = runtime.open_session(runner, topk=args.topk, smooth=args.smooth, every=args.every)
        source = runtime.open_source(args.camera if args.camera is not None else args.video)
        writer = AnnotatedWriter(args.out, source.fps) if args.out else None
        what = f"{runner.name}, {runner.manifest.mode} mode, {source.name}"
        start = time.perf_counter()
        try:
            frames_iter = iter(source)
            while args.max_frames is None or frames < args.max_frames:
                t0 = time.perf_counter()
                frame = next(frames_iter, None)
                if frame is None:
                    break
                stages["decode"].append((time.perf_counter() - t0) * 1e3)
                frames += 1
                pred = session.push(frame)
                if pred is not None:
                    predictions += 1
                    stages["preprocess"].append(pred.latency_ms["preprocess"])
                    stages["infer"].append(pred.latency_ms["infer"])
                    printer.show(pred)
                if writer is not None:
                    last = session.last
                    writer.write(frame, f"{last.label} {last.score:.2f}" if last else "")
        except KeyboardInterrupt:
            interrupted = True
        except EdgevidError:
            # e.g. a camera lost mid-stream: still say what was done, then the one-line error.
            printer.finish()
            print(_summary(frames, predictions, time.perf_counter() - start, stages, what), file=sys.stderr)
            raise
        finally:
            source.close()
            session.close()
            if writer is not None:
                writer.close()
        printer.finish()
        print(_summary(frames, predictions, time.perf_counter() - start, stages, what), file=sys.stderr)
    if args.out:
        print(f"annotated video: {args.out}", file=sys.stderr)
    return 130 if interrupted else 0
