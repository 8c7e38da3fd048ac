"""``make_report``: build every variant, measure accuracy and latency, and assemble report.json.

Phases: plan the variants (TensorRT rows skipped with the reason where it cannot run) ->
build or reuse the artifacts -> decode the held-out videos -> torch FP32 reference ->
per variant: load, accuracy through the runtime, agreement with torch -> latency of all
variants and torch eager, interleaved -> ratios and findings.

Ctrl-C at any point keeps what is finished: rows whose accuracy is measured, and every
latency block timed so far; the report says it is incomplete (``complete: false``).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError
from edgevid.report.variants import Variant

REPORT_SCHEMA_VERSION = 1
MOTION_VIDEOS = 11  # held-out videos the motion input is timed on (one per built-in class)


@dataclass
class ReportOptions:
    """What ``edgevid report`` was asked for."""

    model: str
    checkpoint: str = "default"
    backends: list[str] = field(default_factory=lambda: ["onnxruntime", "openvino", "tensorrt"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    modes: list[str] = field(default_factory=lambda: ["stream", "clip"])
    data: str | None = None
    split: str = "val"
    videos: int | None = None
    size: int | None = None
    frames: int | None = None
    calib: str | None = None
    calib_size: int | None = None
    threads: int | None = None
    rounds: int = 8
    block: int = 20
    quick: bool = False
    cache: str | None = None
    progress: bool = True
    efficiency: bool = True  # gating / salient-window rows for the first stream variant
    within_points: float = 1.0  # the verdict: the fastest variant within this many top-1 points of the best
    random_weights: bool = False  # a model that ships no checkpoint: seeded random weights, latency only
    streams: int = 8  # the "many cameras" section: N streams batched against N sessions (0: none)
    stream_ticks: int = 40  # timed ticks per way there


def quick_options(opts: ReportOptions, modes_given: bool = False) -> ReportOptions:
    """``--quick``: stream mode (unless ``--modes`` was given), 11 videos, short latency rounds, small calibration."""
    if not modes_given:
        # A clip-only model (no stream form) keeps its clip rows rather than planning nothing.
        from edgevid.models import get_config

        opts.modes = ["stream"] if get_config(opts.model).can_stream else ["clip"]
    opts.videos = opts.videos or 11
    opts.rounds, opts.block = 4, 15
    opts.stream_ticks = 15
    opts.calib_size = opts.calib_size or 8
    return opts


def _no_stream_reason(model: str) -> str:
    """Why a clip model has no stream rows, naming its causal streaming twin where the zoo has one."""
    from edgevid.models import list_models

    twin = f"{model}-online"
    if any(c.name == twin for c in list_models()):
        return (f"{model} is a clip model (symmetric temporal padding); its causal twin streams: "
                f"edgevid report --model {twin} (same checkpoints)")
    return f"{model} has no streaming form (a clip model)"


def plan(opts: ReportOptions, gpu: dict[str, Any], can_stream: bool = True,
         openvino_default: str | None = None) -> tuple[list[Variant], list[dict[str, Any]]]:
    """The variants to measure and the ones skipped (with the reason).

    OpenVINO FP32 runs at the CPU plugin's default inference precision (``openvino_default``:
    bf16 on CPUs with AVX512-BF16 or AMX), which is what an OpenVINO user gets; where that is
    not f32, strict f32 is a row of its own, so a ratio against FP32 is against the baseline
    people actually run and the strict figure is still there.
    """
    variants, skipped = [], []
    for mode in opts.modes:
        for precision in opts.precisions:
            for backend in opts.backends:
                vs = [Variant(backend, mode, precision)]
                if backend == "openvino" and precision == "fp32" and openvino_default not in (None, "f32"):
                    vs = [Variant(backend, mode, precision, runs=openvino_default),
                          Variant(backend, mode, precision, hint="f32")]
                for v in vs:
                    if mode == "stream" and not can_stream:
                        skipped.append({"variant": v.name, "label": v.label, "reason": _no_stream_reason(opts.model)})
                    elif backend == "tensorrt" and not gpu.get("available"):
                        skipped.append({"variant": v.name, "label": v.label, "reason": gpu.get("reason", "no GPU")})
                    else:
                        variants.append(v)
    return variants, skipped


def skipped_reasons(skipped: list[dict[str, Any]]) -> str:
    """Every distinct reason once, with the variants it applies to (a reason repeated six times is noise)."""
    by_reason: dict[str, list[str]] = {}
    for s in skipped:
        by_reason.setdefault(s["reason"], []).append(s["variant"])
    return "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())


class _Log:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


class ReportBuilder:
    """Holds everything measured so far; ``report()`` assembles it at any point."""

    def __init__(self, opts: ReportOptions) -> None:
        from edgevid.report.machine import describe_machine

        self.opts = opts
        self.started = time.time()
        self.machine = describe_machine()
        self.phase = "planning"
        self.variants: list[Variant] = []
        self.skipped: list[dict[str, Any]] = []
        self.rows: dict[str, dict[str, Any]] = {}  # variant name -> row
        self.samples: dict[str, list[float]] = {}
        self.data: dict[str, Any] = {}
        self.efficiency: list[dict[str, Any]] = []
        self.noise: Any = None  # NoiseMonitor, from the start of the latency phase
        self.noise_summary: dict[str, Any] | None = None  # what it saw, at the end of that phase
        self.motion: list[dict[str, Any]] = []  # flow / RGB-difference ms per frame (edgevid.report.motion_cost)
        self.many_cameras: list[dict[str, Any]] = []  # N streams batched vs N sessions (report.bench_streams)
        self.complete = False
        self.log = _Log(opts.progress)

    # -- the phases ------------------------------------------------------------------------

    def run(self) -> None:
        """Every phase in order; raises KeyboardInterrupt with what is measured kept."""
        from edgevid.models import get_config
        from edgevid.report import accuracy as acc
        from edgevid.report import variants as var
        from edgevid.report.bench import call_unit

        opts = self.opts
        self.variants, self.skipped = plan(opts, self.machine["gpu"], get_config(opts.model).can_stream,
                                           self.machine.get("openvino_default_precision"))
        if not self.variants:
            raise EdgevidError(f"nothing to measure: every requested variant is skipped ({skipped_reasons(self.skipped)})")
        cache = Path(opts.cache) if opts.cache else var.default_cache()
        if opts.random_weights:
            opts.checkpoint = str(var.random_checkpoint(opts.model, cache))
            if opts.progress:
                print(f"warning: {opts.model} ships no checkpoint: reporting seeded random weights "
                      f"({opts.checkpoint}); accuracy will be chance, latency is real (pass --checkpoint or --weights "
                      "for accuracy)", file=sys.stderr)
        ckpt_hash = var.checkpoint_sha256(opts.model, opts.checkpoint)
        if opts.data is not None and not Path(opts.data).exists():
            raise EdgevidError(f"data {opts.data} does not exist")

        self.phase = "building artifacts"
        artifacts: dict[str, tuple[Path, bool, float]] = {}
        specs = {v.name: var.build_spec(opts.model, opts.checkpoint, v, size=opts.size, frames=opts.frames,
                                        calib=opts.calib, calib_size=opts.calib_size, ckpt_hash=ckpt_hash)
                 for v in self.variants}
        built: dict[str, tuple[Path, bool, float]] = {}
        unique = {spec.key(): spec for spec in specs.values()}
        from tqdm import tqdm

        for i, (key, spec) in enumerate(tqdm(unique.items(), desc="artifacts", unit="artifact", file=sys.stderr,
                                             disable=not opts.progress, leave=False)):
            self.log(f"artifact {i + 1}/{len(unique)}: {spec.mode} {spec.precision} for {spec.target} ...")
            built[key] = var.ensure_artifact(spec, cache, progress=False)
            path, reused, seconds = built[key]
            self.log(f"  {'reused' if reused else f'built in {seconds:.0f}s'}: {path}")
        for name, spec in specs.items():
            artifacts[name] = built[spec.key()]

        self.phase = "decoding held-out videos"
        from edgevid import runtime

        first = runtime.open_artifact(artifacts[self.variants[0].name][0]).manifest
        data = opts.data or str(acc.default_data(progress=opts.progress))
        held_out = acc.load_held_out(data, first.labels, split=opts.split, limit=opts.videos)
        self.data = {"source": held_out.source, "root": str(data), "split": opts.split,
                     "builtin": opts.data is None, "classes": list(held_out.classes),
                     "videos": [{"name": n, "label": held_out.classes[int(y)], "frames": len(f)}
                                for n, y, f in zip(held_out.names, held_out.labels, held_out.frames)]}
        self.log(f"held-out data: {held_out.source}")

        self.phase = "torch reference"
        model, streaming = self._torch_model()
        references: dict[str, Any] = {}
        manifests: dict[str, Any] = {}
        for mode in opts.modes:
            v0 = next((v for v in self.variants if v.mode == mode), None)
            if v0 is None:
                continue
            manifests[mode] = runtime.open_artifact(artifacts[v0.name][0]).manifest
            references[mode] = acc.torch_reference(model, streaming, manifests[mode], held_out,
                                                   progress=opts.progress, desc=f"torch reference ({mode})")
            name = f"torch/{mode}/fp32"
            self.rows[name] = {
                "variant": name, "label": f"torch eager {mode} FP32 (reference)", "backend": "torch", "mode": mode,
                "precision": "fp32", "reference": True, "unit": call_unit(manifests[mode]),
                "accuracy": acc.accuracy(references[mode], held_out),
            }
        if "stream" in manifests and "clip" not in manifests and get_config(opts.model).stream_training:
            # A model trained to stream keeps its clip accuracy or not: the torch clip model on the same videos,
            # each one's last T frames, sits next to the stream's final label (accuracy only, no latency).
            clip = acc.clip_of(manifests["stream"])
            reference = acc.torch_reference(model, None, clip, held_out, progress=opts.progress,
                                            desc="torch reference (clip)")
            self.rows["torch/clip/fp32"] = {
                "variant": "torch/clip/fp32", "label": "torch eager clip FP32 (reference)", "backend": "torch",
                "mode": "clip", "precision": "fp32", "reference": True, "unit": call_unit(clip),
                "accuracy": acc.accuracy(reference, held_out),
            }

        self.phase = "measuring accuracy"
        calls: dict[str, Any] = {}
        runners = []
        try:
            for v in tqdm(self.variants, desc="accuracy", unit="variant", file=sys.stderr,
                          disable=not opts.progress, leave=False):
                path, reused, seconds = artifacts[v.name]
                row, runner, call = self._measure_accuracy(v, path, held_out, references[v.mode])
                row["artifact"] = {"path": str(path), "key": specs[v.name].key()[:16], "target": v.target,
                                   "reused": reused, "build_seconds": round(seconds, 1), "file_mb": row.pop("file_mb")}
                self.rows[v.name] = row
                runners.append(runner)
                calls[v.name] = call
                a = row["accuracy"]
                g = row["agreement"]
                same = "-" if g["prediction_top1"] is None else f"{100 * g['prediction_top1']:.1f}%"
                self.log(f"{v.label}: top-1 {100 * a['top1']:.1f}%; same top-1 as torch on {same} of "
                         f"{g['predictions']} predictions, {100 * g['video_top1']:.1f}% of {a['videos']} videos' "
                         "final labels")

            self.phase = "measuring latency"
            for mode in manifests:
                calls[f"torch/{mode}/fp32"] = _torch_call(model, streaming, manifests[mode], opts.threads)
            from edgevid.report.latency import interleaved
            from edgevid.report.noise import NoiseMonitor

            self.log(f"measuring latency: {len(calls)} variants, {opts.rounds} rounds of {opts.block} calls (ABBA)")
            self.noise = NoiseMonitor().start()
            interleaved(calls, rounds=opts.rounds, block=opts.block, samples=self.samples, progress=opts.progress,
                        between_rounds=self.noise.probe)
            self.noise_summary = self.noise.summary(self.samples, opts.block)

            motion_manifest = next((m for m in manifests.values() if m.motion is not None), None)
            if motion_manifest is not None:
                from edgevid.report import motion_cost

                self.phase = "measuring motion input"
                self.log(f"motion input: {motion_manifest.motion.kind} per frame, every algorithm, on the held-out videos")
                self.motion = motion_cost.measure(motion_manifest, held_out.frames[:MOTION_VIDEOS])
            stream = next(((v, r) for v, r in zip(self.variants, runners) if v.mode == "stream"), None)
            if stream is not None and opts.efficiency and motion_manifest is None:
                from edgevid.report import efficiency

                self.phase = "measuring gating and salient windows"
                self.log(f"gating and salient windows: {stream[0].label} on the built-in videos with still stretches")
                self.efficiency = efficiency.measure(stream[1], stream[0].name, limit=opts.videos,
                                                     progress=opts.progress)
            self._measure_many_cameras(runners)
            self.complete = True
        finally:
            for runner in runners:
                runner.close()

    def _measure_many_cameras(self, runners: list[Any]) -> None:
        """Every stream variant: N streams stepped batched against N independent sessions (bench --streams)."""
        from edgevid.report.bench_streams import measure_ways

        streams = [(v, r) for v, r in zip(self.variants, runners) if v.mode == "stream"]
        if not self.opts.streams or not streams:
            return
        self.phase = "measuring many cameras"
        for v, runner in streams:
            self.log(f"many cameras: {v.label}, {self.opts.streams} streams, {self.opts.stream_ticks} ticks per way")
            row = {"variant": v.name, "label": v.label, "streams": self.opts.streams}
            try:
                row |= measure_ways(runner, self.opts.streams, warmup=3, iterations=self.opts.stream_ticks,
                                    progress=self.opts.progress)
            except EdgevidError as exc:  # e.g. a fixed-batch TensorRT artifact: say so, measure the rest
                row["skipped"] = str(exc)
            self.many_cameras.append(row)

    def _torch_model(self) -> tuple[Any, Any]:
        from edgevid.models import build_model

        model = build_model(self.opts.model, checkpoint=self.opts.checkpoint).eval()
        streaming = None
        if any(v.mode == "stream" for v in self.variants):
            from edgevid.models.streaming import to_streaming

            streaming = to_streaming(model).eval()
        return model, streaming

    def _measure_accuracy(self, v: Variant, path: Path, held_out: Any, reference: Any) -> tuple[dict, Any, Any]:
        from edgevid import runtime
        from edgevid.report import accuracy as acc
        from edgevid.report.bench import (
            artifact_files_mb,
            call_unit,
            current_rss_mb,
            make_call,
            runner_options,
            what_ran,
        )

        rss = current_rss_mb()
        t0 = time.perf_counter()
        hint = (v.hint or "default") if (v.backend, v.precision) == ("openvino", "fp32") else None
        runner = runtime.load(path, v.backend, **runner_options(v.backend, self.opts.threads, hint))
        call, _ = make_call(runner)  # OpenVINO compiles the stream model here
        load_ms = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        call()
        first_ms = (time.perf_counter() - t1) * 1e3
        outputs = acc.run_variant(runner, held_out)
        row = {
            "variant": v.name, "label": v.label, "backend": v.backend, "mode": v.mode, "precision": v.precision,
            "strict": v.hint is not None, "reference": False, "unit": call_unit(runner.manifest),
            "accuracy": acc.accuracy(outputs, held_out),
            "agreement": acc.agreement(outputs, reference),
            "load_ms": round(load_ms, 2),
            "first_call_ms": round(first_ms, 2),
            "memory_mb": {"rss_increase": round(current_rss_mb() - rss, 1)},
            "file_mb": artifact_files_mb(runner),
            "what_ran": what_ran(runner),
        }
        return row, runner, call

    # -- assembling ----------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """report.json as measured so far (see report.schema.json)."""
        from edgevid.report.bench import peak_rss_mb, summarize
        from edgevid.report.findings import findings
        from edgevid.report.latency import distribution
        from edgevid.report.verdict import notes, verdict

        rows = []
        for name, row in self.rows.items():
            row = dict(row)
            ms = self.samples.get(name) or []
            if ms:
                row["latency_ms"] = summarize(ms)
                row["latency_distribution"] = distribution(ms)
                row["throughput_per_s"] = round(1000.0 / row["latency_ms"]["mean"], 2)
            else:
                row["latency_ms"] = row["latency_distribution"] = row["throughput_per_s"] = None
            rows.append(row)
        noise = self.noise_summary or (self.noise.summary(self.samples, self.opts.block) if self.noise else None)
        for row in rows:
            if row["latency_ms"] is not None and noise is not None:
                spread = noise["block_spread"].get(row["variant"])
                row["latency_noisy"] = self.noise.row_noisy(noise, row["variant"])
                row["latency_ms"]["block_spread"] = spread
        _add_ratios(rows)
        report = {
            "schema": "edgevid.report",
            "schema_version": REPORT_SCHEMA_VERSION,
            "complete": self.complete,
            "interrupted_during": None if self.complete else self.phase,
            "created": datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - self.started, 1),
            "model": self.opts.model,
            "checkpoint": self.opts.checkpoint,
            "random_weights": self.opts.random_weights,
            "options": {"backends": self.opts.backends, "precisions": self.opts.precisions,
                        "modes": self.opts.modes, "quick": self.opts.quick, "threads": self.opts.threads,
                        "latency_rounds": self.opts.rounds, "latency_block": self.opts.block,
                        "videos": self.opts.videos, "size": self.opts.size,
                        "within_points": self.opts.within_points},
            "machine": self.machine,
            "data": self.data,
            "rows": rows,
            "efficiency": self.efficiency,
            "skipped": self.skipped,
            "peak_rss_mb": peak_rss_mb(),
            "noise": noise,
            "motion": self.motion,
            "many_cameras": self.many_cameras,
        }
        report["findings"] = findings(report)
        report["verdict"] = verdict(report)
        report["notes"] = notes(report)
        return report


def _torch_call(model: Any, streaming: Any, manifest: Any, threads: int | None) -> Any:
    from edgevid.report.latency import torch_call

    return torch_call(model, streaming, manifest, threads)


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Median-latency ratios: over torch eager, over FP32 on the same backend, clip re-run over stream step."""
    def p50(backend: str, mode: str, precision: str) -> float | None:
        for r in rows:  # the default-precision row, never OpenVINO's strict-f32 one
            if (r["backend"], r["mode"], r["precision"]) == (backend, mode, precision) and r["latency_ms"] \
                    and not r.get("strict"):
                return r["latency_ms"]["p50"]
        return None

    for r in rows:
        mine = r["latency_ms"]["p50"] if r["latency_ms"] else None
        ratios = {
            "speedup_vs_torch": None if r["backend"] == "torch" else _ratio(p50("torch", r["mode"], "fp32"), mine),
            "speedup_vs_fp32": None if r["precision"] == "fp32" and not r.get("strict") else
            _ratio(p50(r["backend"], r["mode"], "fp32"), mine),
            "clip_rerun_over_stream_step": None if r["mode"] != "stream" else
            _ratio(p50(r["backend"], "clip", r["precision"]), mine),
        }
        r["ratios"] = ratios


def make_report(opts: ReportOptions) -> tuple[dict[str, Any], bool]:
    """(report, interrupted): runs every phase; on Ctrl-C returns what was measured."""
    builder = ReportBuilder(opts)
    try:
        builder.run()
    except KeyboardInterrupt:
        return builder.report(), True
    return builder.report(), False


def is_number(x: Any) -> bool:
    """A finite real number (bool excluded)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
