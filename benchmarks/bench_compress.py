"""Compression benchmark: is INT8 faster than FP32, and does channel pruning cut latency?

One run, streaming TSM-MobileNetV2 (width 1.0) at 224 px, random weights with BatchNorm
statistics from real clips (speed does not depend on the weights; calibration ranges do,
so they must look like a trained network's), exported with ``edgevid.export.api``:

1. ONNX Runtime: FP32 vs naive ``nncf.quantize`` INT8 vs edgevid's INT8 recipe
   (``edgevid.compress.quantize``), plus how many convs ORT runs as integer kernels.
2. OpenVINO: FP32 at f32 (what edgevid's runtime runs for an fp32 artifact) and at the CPU
   plugin's default (bf16 on AVX512-BF16/AMX CPUs), vs naive INT8, edgevid's INT8 (with the
   runtime's f32 hint and with the plugin default), and NNCF's OpenVINO-native INT8.
3. Channel pruning (ratio 0.5, residual stream kept): MACs and parameters, and latency on
   both backends.

Every variant steps one frame at a time the way the runtime does (ORT: IOBinding with bound
state buffers; OpenVINO: stateful model, states inside the plugin) with the same thread
count. Variants run in interleaved rounds so load spikes on a shared machine hit them alike;
the table reports medians over all rounds. One thread (the default) is the cleanest figure on
a shared 2-core machine; with more, ONNX Runtime's thread pools do not spin between runs.

    python benchmarks/bench_compress.py [--threads 1] [--rounds 60] [--work DIR] [--json out.json]

``--size``, ``--width`` and ``--calib-clips`` shrink the run (the test suite runs it at 64 px,
width 0.5, to check that it works; its figures mean nothing at that size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

MODEL = "tsm-mobilenetv2-online"
SIZE = 224
WIDTH = 1.0
CALIB_CLIPS = 8


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_checkpoint(work: Path) -> Path:
    """Random width-1.0 online TSM with BatchNorm statistics from 8 real clips."""
    import torch

    from edgevid.compress.calibration import load_clips
    from edgevid.manifest import Preprocess
    from edgevid.models import build_model
    from edgevid.models.batchnorm import recalibrate_batchnorm
    from edgevid.models.weights import save_checkpoint

    path = work / "tsm224.pt"
    if path.is_file():
        return path
    torch.manual_seed(0)
    model = build_model(MODEL, width_mult=WIDTH, num_classes=11)
    clips = load_clips(None, "train", Preprocess(resize=round(SIZE * 256 / 224), crop=SIZE), 8, CALIB_CLIPS)
    recalibrate_batchnorm(model, [torch.from_numpy(clips.torch_clips[i:i + 2]) for i in range(0, len(clips), 2)])
    save_checkpoint(path, model.eval(), MODEL, clips.classes,
                    {"width_mult": WIDTH, "num_classes": 11, "frames": 8, "input_size": SIZE,
                     "resize": round(SIZE * 256 / 224)})
    return path


def export_fp32(checkpoint: Path, out: Path) -> Path:
    from edgevid.export.api import export_model

    if not (out / "manifest.json").is_file():
        export_model(MODEL, out, checkpoint=checkpoint, mode="stream", target="openvino", size=SIZE,
                     validate=False, force=True, progress=False)
    return out


def prune_checkpoint(checkpoint: Path, out: Path) -> tuple[Path, dict]:
    """Channel-pruned copy (ratio 0.5, no fine-tuning: speed only), MACs per frame before/after."""
    import torch

    from edgevid.compress.prune import count_macs, prune_channels
    from edgevid.models import build_model
    from edgevid.models.weights import save_checkpoint

    model = build_model(MODEL, checkpoint=checkpoint).eval()
    example = torch.zeros(1, 1, 3, SIZE, SIZE)  # one frame: MACs per streaming step
    report = prune_channels(model, 0.5, example)
    report["macs_check"] = count_macs(model, example)
    save_checkpoint(out, model, MODEL, model.labels, {"width_mult": WIDTH, "num_classes": 11, "frames": 8,
                                                      "input_size": SIZE, "resize": round(SIZE * 256 / 224)},
                    pruned_channels=True)
    return out, report


def stream_calibration(fp32: Path, checkpoint: Path):
    """Calibration samples for the stream export ``fp32``: real clips, states recorded from torch FP32."""
    from edgevid.compress.calibration import load_clips, stream_samples
    from edgevid.manifest import Manifest
    from edgevid.models import build_model
    from edgevid.models.streaming import to_streaming

    manifest = Manifest.load(fp32)
    streaming = to_streaming(build_model(MODEL, checkpoint=checkpoint).eval()).eval()
    return stream_samples(streaming, manifest.states, load_clips(None, "train", manifest.preprocess, 8, CALIB_CLIPS))


def quantized_models(fp32: Path, checkpoint: Path, work: Path) -> dict[str, object]:
    """naive NNCF, edgevid ORT / OpenVINO recipes (ONNX paths) and NNCF's OpenVINO-native model."""
    import nncf
    import onnx
    import openvino as ov

    from edgevid.compress import quantize as q
    from edgevid.manifest import Manifest

    manifest = Manifest.load(fp32)
    calib = stream_calibration(fp32, checkpoint)
    out: dict[str, object] = {}
    naive = work / "int8_naive.onnx"
    if not naive.is_file():
        log("  quantizing: naive nncf.quantize ...")
        with q._quiet():
            onnx.save(nncf.quantize(onnx.load(str(fp32 / "model.onnx")), nncf.Dataset(calib.samples),
                                    subset_size=len(calib)), str(naive))
    out["naive"] = naive
    for target in ("onnxruntime", "openvino"):
        path = work / f"int8_{target}.onnx"
        if not path.is_file():
            log(f"  quantizing: edgevid recipe for {target} ...")
            q.quantize_onnx(fp32 / "model.onnx", calib, target=target, states=manifest.states, out_path=path)
        out[target] = path
    native = work / "int8_ov_native.xml"
    if not native.is_file():
        log("  quantizing: NNCF OpenVINO-native ...")
        model = ov.Core().read_model(str(fp32 / "model.xml"))
        model.reshape({p.get_any_name(): ov.PartialShape([1, *list(p.get_partial_shape())[1:]]) for p in model.inputs})
        ov.save_model(q.quantize_openvino(model, calib), str(native), compress_to_fp16=False)
    out["ov_native"] = native
    return out


def example_feed(arg, rng: np.random.Generator) -> np.ndarray:
    """A batch-1 value for an ORT input: float noise, or for the integer states of an INT8 ONNX
    Runtime model (uint8 around their zero point) integers."""
    shape = [1, *[d if isinstance(d, int) else 1 for d in arg.shape[1:]]]
    if arg.type == "tensor(uint8)":
        return rng.integers(100, 156, shape).astype(np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def ort_stepper(path: Path, threads: int) -> Callable[[], None]:
    """One streaming step through ONNX Runtime with bound buffers (as the runtime does)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if threads > 1:
        # Several sessions take turns here; a pool spinning after its run would steal the cores
        # of the next session's pool (measured: FP32 4x slower with spinning on 2 cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    rng = np.random.default_rng(0)
    for arg in session.get_inputs():
        binding.bind_ortvalue_input(arg.name, ort.OrtValue.ortvalue_from_numpy(example_feed(arg, rng)))
    for arg in session.get_outputs():
        binding.bind_output(arg.name)
    session.run_with_iobinding(binding)
    outputs = binding.get_outputs()
    binding.clear_binding_outputs()
    for arg, value in zip(session.get_outputs(), outputs):
        binding.bind_ortvalue_output(arg.name, value)  # fixed output buffers, reused every step
    return lambda: session.run_with_iobinding(binding)


def ov_stepper(path: Path, threads: int, hint: str | None) -> Callable[[], None]:
    """One streaming step through a stateful OpenVINO model (the runtime's make_stateful)."""
    import openvino as ov

    from edgevid.manifest import StatePair
    from edgevid.runtime.backends.openvino import make_stateful

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({p.get_any_name(): ov.PartialShape([1, *list(p.get_partial_shape())[1:]]) for p in model.inputs})
    names = [p.get_any_name() for p in model.inputs if p.get_any_name().startswith("state_in.")]
    make_stateful(ov, model, [StatePair(n[len("state_in."):], []) for n in names])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1"}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    request = core.compile_model(model, "CPU", config).create_infer_request()
    frame = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    request.set_tensor("frame", ov.Tensor(frame, shared_memory=True))
    return request.infer


def measure(steppers: dict[str, Callable[[], None]], rounds: int, steps: int = 5) -> dict[str, float]:
    """Median ms per step of every stepper, over interleaved rounds."""
    for step in steppers.values():
        for _ in range(10):
            step()
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - t0) * 1e3 / steps)
    return {k: float(np.median(v)) for k, v in times.items()}


def prepare(work: Path) -> None:
    """Make every model (cached in ``work``) and write their paths to ``work/paths.json``."""
    from edgevid.compress import qdq

    checkpoint = make_checkpoint(work)
    fp32 = export_fp32(checkpoint, work / "fp32")
    int8 = quantized_models(fp32, checkpoint, work)
    pruned_ckpt, prune = prune_checkpoint(checkpoint, work / "tsm224_pruned.pt")
    pruned = export_fp32(pruned_ckpt, work / "pruned")
    fusion = {name: qdq.fusion_report(str(int8[name])) for name in ("naive", "onnxruntime")}
    (work / "paths.json").write_text(json.dumps({"fp32": str(fp32), "pruned": str(pruned), "prune": prune,
                                                 "int8": {k: str(v) for k, v in int8.items()}, "fusion": fusion},
                                                default=str))


def main(argv: list[str] | None = None) -> int:
    global SIZE, WIDTH, CALIB_CLIPS  # set from the arguments; the model helpers above read them
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every backend (default 1)")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds of 5 steps (default 60)")
    parser.add_argument("--work", help="folder for exports and models (reused between runs)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--size", type=int, default=SIZE, help=f"crop size in pixels (default {SIZE})")
    parser.add_argument("--width", type=float, default=WIDTH, help=f"MobileNetV2 width (default {WIDTH})")
    parser.add_argument("--calib-clips", type=int, default=CALIB_CLIPS,
                        help=f"clips for calibration and BatchNorm statistics (default {CALIB_CLIPS})")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    SIZE, WIDTH, CALIB_CLIPS = args.size, args.width, args.calib_clips
    shape = ["--size", str(SIZE), "--width", str(WIDTH), "--calib-clips", str(CALIB_CLIPS)]

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_compress_"))
    work.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    if args.prepare_only:
        prepare(work)
        return 0
    # Models are made in a child process: NNCF's calibration leaves ONNX Runtime sessions (and
    # their spinning thread pools) behind, which measurably slowed the timings in this process.
    log(f"preparing models in {work} ...")
    subprocess.run([sys.executable, __file__, "--prepare-only", "--work", str(work), *shape], check=True)
    paths = json.loads((work / "paths.json").read_text())
    fp32, pruned = Path(paths["fp32"]), Path(paths["pruned"])
    int8 = {k: Path(v) for k, v in paths["int8"].items()}
    prune, fusion = paths["prune"], paths["fusion"]
    t = args.threads
    log(f"measuring ({args.rounds} rounds x 5 steps, {t} thread(s)) ...")
    ort_times = measure({"fp32": ort_stepper(fp32 / "model.onnx", t), "int8_naive": ort_stepper(int8["naive"], t),
                         "int8_edgevid": ort_stepper(int8["onnxruntime"], t),
                         "pruned_fp32": ort_stepper(pruned / "model.onnx", t)}, args.rounds)
    ov_times = measure({"fp32_f32": ov_stepper(fp32 / "model.xml", t, "f32"),
                        "fp32_default_bf16": ov_stepper(fp32 / "model.xml", t, None),
                        "int8_naive": ov_stepper(int8["naive"], t, "f32"),
                        "int8_edgevid": ov_stepper(int8["openvino"], t, "f32"),
                        "int8_edgevid_default": ov_stepper(int8["openvino"], t, None),
                        "int8_ov_native": ov_stepper(int8["ov_native"], t, "f32"),
                        "pruned_fp32_f32": ov_stepper(pruned / "model.xml", t, "f32")}, args.rounds)

    def convs(report: dict) -> str:
        integer = report["integer_ops"].get("QLinearConv", 0)
        floating = sum(report["float_compute"].get(k, 0) for k in ("Conv", "FusedConv"))
        return f"{integer} int8 / {floating} float convs"

    cpu = platform.processor() or platform.machine()
    w = 50
    lines = [f"streaming {MODEL} width {WIDTH} at {SIZE} px, one step per frame, {t} thread(s), "
             f"medians of {args.rounds} interleaved rounds ({cpu}, {os.cpu_count()} CPUs)", "",
             f"{'ONNX Runtime':<{w + 2}} ms/frame   FP32/this",
             f"  {'FP32':<{w}} {ort_times['fp32']:8.2f}   {1.0:9.2f}"]
    for name, label in (("int8_naive", f"INT8 naive nncf.quantize ({convs(fusion['naive'])})"),
                        ("int8_edgevid", f"INT8 edgevid ({convs(fusion['onnxruntime'])})")):
        lines.append(f"  {label:<{w}} {ort_times[name]:8.2f}   {ort_times['fp32'] / ort_times[name]:9.2f}")
    lines += ["", f"{'OpenVINO':<{w + 2}} ms/frame   FP32(f32)/this   FP32(bf16)/this"]
    for name, label in (("fp32_f32", "FP32, f32 (edgevid runtime)"), ("fp32_default_bf16", "FP32, CPU default (bf16)"),
                        ("int8_naive", "INT8 naive nncf.quantize"), ("int8_edgevid", "INT8 edgevid (runtime: f32 rest)"),
                        ("int8_edgevid_default", "INT8 edgevid, CPU default rest"),
                        ("int8_ov_native", "INT8 NNCF OpenVINO-native")):
        lines.append(f"  {label:<{w}} {ov_times[name]:8.2f}   {ov_times['fp32_f32'] / ov_times[name]:14.2f}"
                     f"   {ov_times['fp32_default_bf16'] / ov_times[name]:15.2f}")
    macs_ratio = prune["macs_before"] / prune["macs_after"]
    lines += ["", "Channel pruning 0.5 (residual stream kept, FP32)",
              f"  MACs/frame  {prune['macs_before'] / 1e6:7.1f} M -> {prune['macs_after'] / 1e6:7.1f} M   "
              f"({macs_ratio:.2f}x fewer)",
              f"  params      {prune['params_before'] / 1e6:7.2f} M -> {prune['params_after'] / 1e6:7.2f} M",
              f"  ORT         {ort_times['fp32']:7.2f} ms -> {ort_times['pruned_fp32']:7.2f} ms  "
              f"({ort_times['fp32'] / ort_times['pruned_fp32']:.2f}x faster)",
              f"  OpenVINO    {ov_times['fp32_f32']:7.2f} ms -> {ov_times['pruned_fp32_f32']:7.2f} ms  "
              f"({ov_times['fp32_f32'] / ov_times['pruned_fp32_f32']:.2f}x faster, f32)"]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": t, "rounds": args.rounds, "onnxruntime_ms": ort_times,
                                               "openvino_ms": ov_times, "fusion": fusion, "pruning": prune},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
