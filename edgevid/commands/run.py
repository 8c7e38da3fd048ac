"""`edgevid run`: run an exported model on a video, a folder of frames, a camera or a stream.

Torch-free: this verb imports only the runtime (numpy, OpenCV, one backend).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from edgevid.commands.argtypes import int_range, positive, seconds


def _camera_index(text: str) -> int:
    # OpenCV crashes (segfault) on a negative index and overflows past 2**31 - 1.
    from edgevid.runtime.video import MAX_CAMERA_INDEX

    try:
        return int_range(0, MAX_CAMERA_INDEX)(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"camera index (0, 1, ...): {exc}") from None


def add_parser(subparsers: Any) -> None:
    """Register `edgevid run` (cheap: no heavy imports)."""
    p = subparsers.add_parser(
        "run",
        help="run an exported model on a video or camera (torch-free runtime)",
        description="Run an exported artifact (see `edgevid export`) on frames and print the running "
        "top prediction, then a final `result:` line (label, score, frames, predictions). Predictions made "
        "before a stream has seen the model's clip length are marked as warm-up. A summary with fps and "
        "per-stage latency goes to stderr at the end. With several sources (--video repeated, --camera, --sources) "
        "one batched network call per tick steps every source that has a new frame; each line names its source, "
        "each source ends with its own result line, and one that fails is reported and dropped while the others "
        "go on (exit 1).",
    )
    p.add_argument("artifact", metavar="DIR", nargs="?",
                   help="artifact directory (manifest.json + model files), or a bundle from `edgevid deploy`; "
                   "not with --triton")
    p.add_argument("--triton", metavar="URL",
                   help="run on a Triton server instead (host:port of its gRPC endpoint; see `edgevid triton`)")
    p.add_argument("--model", help="--triton: the model's name in the server's repository")
    p.add_argument("--timeout", type=seconds, default=30.0, metavar="S",
                   help="--triton: seconds a request may take before the run stops with an error (default 30)")
    p.add_argument("--video", metavar="SRC", action="append",
                   help="video file, folder of frames, rtsp://|http:// URL, or GStreamer pipeline; repeat it for "
                   "several sources (stepped together, one batched call per tick: see --sources)")
    p.add_argument("--camera", type=_camera_index, metavar="N", action="append",
                   help="camera index (e.g. 0); repeatable")
    p.add_argument("--sources", metavar="FILE",
                   help="a text file of sources, one a line (video path, frame folder, camera index, URL or "
                   "pipeline; # comments): with several sources, each line of output names its source and one "
                   "network call per tick steps them all (stream mode)")
    p.add_argument("--backend", metavar="B",
                   help="onnxruntime | openvino | tensorrt (aliases ort, ov, trt); default: the manifest's target")
    p.add_argument("--dla-core", type=int, metavar="N",
                   help="tensorrt: build the engine for DLA core N (Jetson Xavier / Orin NX / AGX Orin), GPU fallback")
    p.add_argument("--precision-hint", choices=("f32", "bf16", "default"),
                   help="openvino: INFERENCE_PRECISION_HINT to compile with (default: what the export validated, "
                   "f32 for fp32 artifacts; 'default' lets the CPU plugin choose, bf16 where the CPU has it: the "
                   "report's 'OpenVINO ... FP32 (runs bf16)' rows)")
    p.add_argument("--every", type=positive, metavar="N",
                   help="stream mode: run the model on every N-th frame (default: the frame stride the model "
                   "was trained with, from the manifest); clip mode: predict every N-th sampled frame (default 1)")
    p.add_argument("--smooth", type=positive, metavar="K",
                   help="average class scores over the last K predictions (default: stream mode, the clip "
                   "length the model was trained with; clip mode, 1)")
    p.add_argument("--topk", type=positive, default=5, metavar="K", help="labels per prediction (default 5)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per prediction on stdout, and a final {\"result\": {...}} line")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no running predictions: print only the final result (and the summary on stderr)")
    p.add_argument("-o", "--output", "--out", dest="out", metavar="FILE",
                   help="write the video with the running label overlaid (.mp4/.avi/.mkv/.mov); an existing file "
                   "is refused")
    p.add_argument("--force", action="store_true",
                   help="with --output: replace an existing annotated video that edgevid wrote (never another file)")
    p.add_argument("--max-frames", type=positive, metavar="N", help="stop after N frames (of each source)")
    p.add_argument("--gate", metavar="delta[:T[:POLICY]]",
                   help="stream mode: skip the steps whose frame has not changed since the last processed one "
                   "(mean absolute difference of 32x32 grey thumbnails below T grey levels, default 1.0); POLICY "
                   "defer (default: skipped frames never reach the network) or repeat (the first still frame is "
                   "stepped once more)")
    p.add_argument("--salient", type=positive, metavar="K",
                   help="a recorded video: score every window of the model's clip by motion, run the model only on "
                   "the K windows with most, and print the video's label from them")
    p.set_defaults(func=run)


class _Printer:
    """Running top prediction: in place on a terminal, one line per change otherwise; or JSON lines."""

    def __init__(self, as_json: bool, quiet: bool = False) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self._shown: tuple[str, bool] | None = None

    def show(self, pred: Any) -> None:
        if self.quiet:
            return
        if self.as_json:
            print(json.dumps(pred.to_dict()), flush=True)
            return
        line = f"frame {pred.frame:6d}  {pred.label}  {pred.score:.3f}  (infer {pred.latency_ms['infer']:.1f} ms)"
        if pred.warmup:
            line += "  [warm-up]"
        if self.tty:
            print("\r" + line.ljust(78), end="", flush=True)
        elif (pred.label, pred.warmup) != self._shown:
            print(line, flush=True)
        self._shown = (pred.label, pred.warmup)

    def finish(self) -> None:
        if self.tty and not self.as_json and self._shown is not None:
            print()
            self._shown = None

    def result(self, last: Any, frames: int, predictions: int, warmup: int, skipped: int, gate: Any = None) -> None:
        """The final verdict: the last (smoothed) prediction and the counts."""
        self.finish()
        if self.as_json:
            record = {"label": last.label if last else None, "score": round(last.score, 6) if last else None,
                      "frames": frames, "predictions": predictions, "warmup_predictions": warmup,
                      "skipped_frames": skipped}
            if gate is not None:
                record |= {"steps_due": gate.steps_due, "steps_run": gate.steps_run, "stream_resets": gate.resets}
            print(json.dumps({"result": record}), flush=True)
            return
        counts = f"{frames} frames, {predictions} predictions, {warmup} in warm-up"
        if skipped:
            counts += f", {skipped} undecodable frames skipped"
        if gate is not None:
            counts += f", gate ran {gate.steps_run} of {gate.steps_due} steps ({gate.fraction_run:.0%})"
        verdict = f"{last.label} {last.score:.3f}" if last else "none"
        print(f"result: {verdict} ({counts})", flush=True)


def _summary(frames: int, predictions: int, seconds: float, stages: dict[str, Any], what: str,
             skipped: int = 0) -> str:
    fps = frames / seconds if seconds > 0 else 0.0
    first = f"{frames} frames, {predictions} predictions in {seconds:.2f} s: {fps:.1f} fps end to end [{what}]"
    if skipped:
        first += f"; {skipped} undecodable frames skipped"
    lines = [first, f"{'latency ms':<14}{'mean':>8}{'p50':>8}{'p95':>8}"]
    for stage, values in stages.items():
        if len(values):
            lines.append(f"  {stage:<12}{values.mean:8.2f}{values.percentile(50):8.2f}{values.percentile(95):8.2f}")
    return "\n".join(lines)


def _check_output(out: str, video: str | None, force: bool) -> None:
    """Refuse an annotated-video path that is the input video, or an existing file not ours to replace."""
    import os
    from pathlib import Path

    from edgevid.errors import EdgevidError
    from edgevid.runtime.video import check_replaceable

    if video is not None and "://" not in video.removeprefix("file://"):
        src, dst = Path(video.removeprefix("file://")), Path(out)
        same = src.resolve() == dst.resolve()
        if not same and src.exists() and dst.exists():
            same = os.path.samefile(src, dst)  # hard links, bind mounts
        if same:
            raise EdgevidError(f"--output {out} is the input video: writing it would destroy the input; "
                               "choose another file")
    check_replaceable(Path(out), force)


def _too_short(runner: Any, frames: int, name: str, max_frames: int | None) -> str:
    from edgevid.wording import every_nth

    manifest = runner.manifest
    sampling, motion = manifest.sampling, manifest.motion
    stride = sampling.stride
    # A clip model needs T sampled frames; a motion input (flow, RGB differences) L more before
    # its first stack (so a motion stream needs L + 1).
    t = (sampling.frames if manifest.mode == "clip" else 1) + (motion.length if motion is not None else 0)
    needed = (t - 1) * stride + 1
    what = "the clip model needs" if motion is None else \
        f"its {motion.kind} input {'and clip need' if manifest.mode == 'clip' else 'needs'}"
    every = f"{every_nth(stride)}, " if stride > 1 else ""
    if max_frames is not None and frames >= max_frames:
        return (f"--max-frames {max_frames} stops before the first prediction: {what} {t} sampled frames "
                f"({every}at least {needed} frames)")
    return f"{name} has {frames} frames; {what} {t} sampled frames ({every}at least {needed} frames)"


def _gate(args: argparse.Namespace) -> Any:
    """The DeltaGate of ``--gate`` (None without), checked against the other options."""
    from edgevid.errors import EdgevidError

    if args.salient and (args.gate or args.camera is not None or args.out):
        raise EdgevidError("--salient runs on a recorded --video alone (not with --gate, --camera or --output)")
    if not args.gate:
        return None
    from edgevid.runtime.gating import DeltaGate, parse_gate

    threshold, policy = parse_gate(args.gate)
    return DeltaGate(threshold, policy)


def _run_salient(runner: Any, args: argparse.Namespace) -> int:
    """--salient K: the K most moving windows of the video, one label from them."""
    from edgevid.runtime.salient import run_salient

    result = run_salient(runner, args.video, args.salient, max_frames=args.max_frames)
    if args.json:
        print(json.dumps({"result": result.to_dict()}), flush=True)
    else:
        span = runner.manifest.sampling.frames
        starts = ", ".join(str(w) for w in result.windows)
        print(f"result: {result.label} {float(result.scores.max()):.3f} ({len(result.windows)} of "
              f"{result.windows_total} windows of {span} sampled frames, starting at sampled "
              f"frame{'s' if len(result.windows) > 1 else ''} {starts}; {result.network_calls} network calls)", flush=True)
        print(f"{result.sampled_frames} sampled frames scored for motion, {len(result.windows)} windows run in "
              f"{result.seconds:.2f} s", file=sys.stderr)
    return 0


def _runner(args: argparse.Namespace) -> Any:
    """The loaded runner: a local artifact on its backend, or a model on a Triton server."""
    from edgevid import runtime
    from edgevid.errors import EdgevidError
    from edgevid.report.bench import resolve_artifact, runner_options

    if args.triton:
        if args.artifact or args.backend or args.dla_core is not None or args.precision_hint:
            raise EdgevidError("--triton runs the server's model: give --model NAME, not an artifact, --backend "
                               "or --precision-hint")
        if not args.model:
            raise EdgevidError("--triton needs --model NAME (the model's name in the server's repository)")
        from edgevid.runtime.remote import connect

        return connect(args.triton, args.model, timeout=args.timeout)
    if args.model:
        raise EdgevidError("--model names a model on a Triton server: use it with --triton URL")
    if not args.artifact:
        raise EdgevidError("give the artifact directory (or --triton URL --model NAME)")
    artifact = resolve_artifact(args.artifact)
    backend = runtime.canonical_name(args.backend or runtime.open_artifact(artifact).manifest.target)
    options = runner_options(backend, None, args.precision_hint, args.dla_core)
    if backend == "tensorrt" and getattr(args, "max_batch", None):  # several sources: a profile for all of them
        options["max_batch"] = args.max_batch
    return runtime.load(artifact, backend, **options)


def run(args: argparse.Namespace) -> int:
    """Run the artifact on the source(s); returns the exit code."""
    from edgevid.commands.run_many import gather_sources, run_many

    sources = gather_sources(args)
    if len(sources) > 1:
        return run_many(args, sources, _runner, _gate)
    args.video, args.camera = (sources[0], None) if isinstance(sources[0], str) else (None, sources[0])
    return _run_one(args)


def _run_one(args: argparse.Namespace) -> int:
    """One source: the running prediction, an annotated video with --output."""
    from edgevid import runtime
    from edgevid.errors import EdgevidError
    from edgevid.runtime.stats import LatencyStats
    from edgevid.runtime.video import AnnotatedWriter

    if args.force and not args.out:
        raise EdgevidError("--force only applies to --output")
    if args.out:
        _check_output(args.out, args.video, args.force)
    # Constant memory however long the run: a camera may be watched for months.
    stages = {"decode": LatencyStats(), "preprocess": LatencyStats(), "infer": LatencyStats()}
    frames = predictions = warmup = 0
    interrupted = False
    printer = _Printer(args.json, args.quiet)
    gate = _gate(args)
    from edgevid.signals import exit_on

    with exit_on(), _runner(args) as runner:  # SIGTERM: the temp video removed, exit 143
        if args.salient:
            return _run_salient(runner, args)
        session = runtime.open_session(runner, topk=args.topk, smooth=args.smooth, every=args.every, gate=gate)
        source = runtime.open_source(args.camera if args.camera is not None else args.video)
        writer = AnnotatedWriter(args.out, source.fps, force=args.force) if args.out else None
        what = f"{runner.name}, {runner.manifest.mode} mode, {source.name}"
        from edgevid.report.noise import NoiseMonitor

        noise = NoiseMonitor().start()  # the latency summary says when the machine was too busy to trust
        start = time.perf_counter()
        try:
            frames_iter = iter(source)
            while args.max_frames is None or frames < args.max_frames:
                t0 = time.perf_counter()
                frame = next(frames_iter, None)
                if frame is None:
                    break
                stages["decode"].add((time.perf_counter() - t0) * 1e3)
                frames += 1
                pred = session.push(frame)
                if pred is not None:
                    predictions += 1
                    warmup += pred.warmup
                    stages["preprocess"].add(pred.latency_ms["preprocess"])
                    if "motion" in pred.latency_ms:  # flow / RGB differences computed on the host
                        stages.setdefault("motion", LatencyStats()).add(pred.latency_ms["motion"])
                    stages["infer"].add(pred.latency_ms["infer"])
                    printer.show(pred)
                if writer is not None:
                    last = session.last
                    writer.write(frame, f"{last.label} {last.score:.2f}" if last else "")
        except KeyboardInterrupt:
            interrupted = True
        except BaseException as exc:
            if writer is not None:
                writer.discard()  # never leave a half-written video
            if isinstance(exc, EdgevidError):
                # e.g. a camera lost mid-stream: say what was done, then the one-line error.
                printer.finish()
                print(f"note: stopped after {frames} frames, {predictions} predictions", file=sys.stderr)
            raise
        finally:
            source.close()
            session.close()
        skipped = getattr(source, "skipped", 0)
        if predictions == 0 and frames > 0 and not interrupted and \
                (runner.manifest.mode == "clip" or runner.manifest.motion is not None):
            if writer is not None:
                writer.discard()
            raise EdgevidError(_too_short(runner, frames, source.name, args.max_frames))
        if writer is not None:
            writer.close()  # checks the file and moves it into place, or raises
        printer.result(session.last, frames, predictions, warmup, skipped, gate)
        print(_summary(frames, predictions, time.perf_counter() - start, stages, what, skipped), file=sys.stderr)
        seen = noise.summary()
        if seen["noisy"]:
            print(f"note: these latencies are not reliable: {seen['summary']}; {seen['advice']}", file=sys.stderr)
    if args.out:
        print(f"annotated video: {args.out}", file=sys.stderr)
    return 130 if interrupted else 0
