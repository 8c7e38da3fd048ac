"""`edgevid run` with several sources: one network call per tick steps every source that has a frame.

Output lines name their source (``[door.mp4] frame 12 ...``; JSON lines carry ``"source"``). A
source that ends prints its result; one that fails mid-run (a decode error, a camera gone)
prints an error line naming it and is dropped while the others go on, and the run then exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError

MAX_SOURCES = 256
_SOURCES_FILE_BYTES = 1 << 20


def _read_sources_file(path: str) -> list[str | int]:
    from edgevid.runtime.video import MAX_CAMERA_INDEX

    file = Path(path)
    try:
        if file.is_file() and file.stat().st_size > _SOURCES_FILE_BYTES:
            raise EdgevidError(f"--sources {path} is larger than {_SOURCES_FILE_BYTES >> 20} MiB: one source a line")
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise EdgevidError(f"cannot read --sources {path}: {reason}") from None
    out: list[str | int] = []
    for line in text.splitlines():
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.isdigit():
            if int(item) > MAX_CAMERA_INDEX:
                raise EdgevidError(f"--sources {path}: camera index {item} is out of range (0-{MAX_CAMERA_INDEX})")
            out.append(int(item))
        else:
            out.append(item)
    if not out:
        raise EdgevidError(f"--sources {path} names no source (one video, folder, camera index or URL a line)")
    return out


def gather_sources(args: argparse.Namespace) -> list[str | int]:
    """Every source of ``--video``, ``--camera`` and ``--sources``, in that order."""
    items: list[str | int] = [*(args.video or []), *(args.camera or [])]
    if args.sources:
        items += _read_sources_file(args.sources)
    if not items:
        raise EdgevidError("give a source: --video SRC, --camera N or --sources FILE")
    if len(items) > MAX_SOURCES:
        raise EdgevidError(f"{len(items)} sources: at most {MAX_SOURCES} in one run")
    return items


def source_names(items: list[str | int]) -> list[str]:
    """Printable, distinct names: the path or URL as given, ``camera N``; repeats get ``#2``, ``#3``."""
    names: list[str] = []
    for item in items:
        base = f"camera {item}" if isinstance(item, int) else str(item)
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base} #{k}"
        names.append(name)
    return names


class _Counts:
    def __init__(self) -> None:
        self.frames = self.predictions = self.warmup = 0
        self.shown: tuple[str, bool] | None = None


class _ManyPrinter:
    """One line per prediction change and source, or JSON lines with ``"source"``."""

    def __init__(self, as_json: bool, quiet: bool) -> None:
        self.as_json, self.quiet = as_json, quiet

    def show(self, name: str, pred: Any, counts: _Counts, batch: int) -> None:
        if self.quiet:
            return
        if self.as_json:
            print(json.dumps({"source": name, **pred.to_dict(), "batch": batch}), flush=True)
            return
        if (pred.label, pred.warmup) == counts.shown:
            return
        counts.shown = (pred.label, pred.warmup)
        line = f"[{name}] frame {pred.frame:6d}  {pred.label}  {pred.score:.3f}  " \
               f"(infer {pred.latency_ms['infer']:.1f} ms for {batch} source{'s' if batch > 1 else ''})"
        print(line + ("  [warm-up]" if pred.warmup else ""), flush=True)

    def result(self, name: str, last: Any, counts: _Counts, skipped: int, how: str) -> None:
        if self.as_json:
            record = {"source": name, "label": last.label if last else None,
                      "score": round(last.score, 6) if last else None, "frames": counts.frames,
                      "predictions": counts.predictions, "warmup_predictions": counts.warmup,
                      "skipped_frames": skipped, "end": how}
            print(json.dumps({"result": record}), flush=True)
            return
        verdict = f"{last.label} {last.score:.3f}" if last else "none"
        extra = f", {skipped} undecodable frames skipped" if skipped else ""
        print(f"result [{name}]: {verdict} ({counts.frames} frames, {counts.predictions} predictions, "
              f"{counts.warmup} in warm-up{extra}; {how})", flush=True)

    def error(self, name: str, message: str) -> None:
        if self.as_json:
            print(json.dumps({"source": name, "error": message}), flush=True)
        print(f"edgevid: error: [{name}] {message}", file=sys.stderr, flush=True)


def _open_sources(items: list[str | int], names: list[str]) -> dict[str, Any]:
    from edgevid import runtime

    opened: dict[str, Any] = {}
    try:
        for item, name in zip(items, names):
            opened[name] = runtime.open_source(item)
    except BaseException:
        for source in opened.values():
            source.close()
        raise
    return opened


def run_many(args: argparse.Namespace, items: list[str | int], make_runner: Callable[[argparse.Namespace], Any],
             make_gate: Callable[[argparse.Namespace], Any]) -> int:
    """Run the artifact on every source, batched; returns the exit code."""
    from edgevid import runtime
    from edgevid.report.noise import NoiseMonitor
    from edgevid.runtime.cameras import SourceSet
    from edgevid.runtime.stats import LatencyStats
    from edgevid.signals import exit_on

    if args.out or args.salient or args.force:
        raise EdgevidError("--output, --force and --salient take one source; with several, each line of output "
                           "names its source")
    make_gate(args)  # checks --gate once, before anything opens
    args.max_batch = len(items)  # TensorRT: an optimization profile for every source in one call
    names = source_names(items)
    printer = _ManyPrinter(args.json, args.quiet)
    counts = {name: _Counts() for name in names}
    failures = 0
    interrupted = False
    tick_ms, infer_ms = LatencyStats(), LatencyStats()
    stepped = 0  # source steps over all calls
    with exit_on(), make_runner(args) as runner:
        if runner.manifest.mode != "stream":
            raise EdgevidError(f"{runner.manifest.model} was exported in clip mode: several sources are stepped "
                               "together in stream mode only (export with --mode stream), or run one --video at a time")
        sources = SourceSet(_open_sources(items, names), max_frames=args.max_frames)
        multi = runtime.MultiStreamSession(runner, topk=args.topk, smooth=args.smooth, every=args.every,
                                           batched=runner.name != "triton")
        for name in names:
            multi.add(name, gate=make_gate(args))
        noise = NoiseMonitor().start()
        start = time.perf_counter()

        def finish(name: str, how: str) -> None:
            printer.result(name, multi.last(name), counts[name], getattr(sources.sources[name], "skipped", 0), how)
            multi.remove(name)

        try:
            for tick in sources.ticks():
                t0 = time.perf_counter()
                calls = multi.calls
                preds = multi.push(tick.frames) if tick.frames else {}
                if multi.calls > calls:
                    tick_ms.add((time.perf_counter() - t0) * 1e3)
                    infer_ms.add(multi.last_infer_ms)
                    stepped += multi.last_batch
                for name in tick.frames:
                    counts[name].frames += 1
                for name, pred in preds.items():
                    counts[name].predictions += 1
                    counts[name].warmup += pred.warmup
                    printer.show(name, pred, counts[name], multi.last_batch)
                for name, message in multi.failed.items():  # non-finite scores: that source was reset
                    printer.error(name, message)
                for name in tick.ended:
                    finish(name, "ended")
                for name, message in tick.failed.items():
                    failures += 1
                    printer.error(name, message)
                    finish(name, "failed")
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for name in multi.sources:
                finish(name, "interrupted" if interrupted else "stopped")
            multi.close()
            sources.close()
        seconds = time.perf_counter() - start
        frames = sum(c.frames for c in counts.values())
        fps = frames / seconds if seconds > 0 else 0.0
        mean_batch = stepped / multi.calls if multi.calls else 0.0
        lines = [f"{len(names)} sources, {frames} frames in {seconds:.2f} s: {fps:.1f} fps end to end; "
                 f"{multi.calls} network calls, {mean_batch:.1f} sources a call [{runner.name}, {'batched' if multi.batched else 'one call per source'}]",
                 f"{'latency ms':<14}{'mean':>8}{'p50':>8}{'p99':>8}"]
        for stage, values in (("tick", tick_ms), ("infer", infer_ms)):
            if len(values):
                lines.append(f"  {stage:<12}{values.mean:8.2f}{values.percentile(50):8.2f}{values.percentile(99):8.2f}")
        print("\n".join(lines), file=sys.stderr)
        seen = noise.summary()
        if seen["noisy"]:
            print(f"note: these latencies are not reliable: {seen['summary']}; {seen['advice']}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if failures else 0
