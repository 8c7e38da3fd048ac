"""Where INT8 time goes: INT8 against each backend's DEFAULT float execution and strict f32, per layer type.

One run, TSM-MobileNetV2 online (width 1.0) at 224 px, stream step and clip (8 frames), the
models of ``bench_compress.py`` (edgevid's INT8 recipe per backend) plus the clip exports.
Every variant is timed interleaved with the others in one process, 2 threads, each backend as a
user gets it by default:

- ONNX Runtime: FP32 and INT8 (its default: ORT_ENABLE_ALL graph optimisation), and INT8 by
  edgevid's previous recipe (float NCHW states, 3-channel stem) for before/after rows;
- OpenVINO: FP32 with the CPU plugin's default precision (bf16 on AVX512-BF16 / AMX CPUs),
  FP32 at strict f32, INT8 with the plugin's default for the layers left in float (bf16
  where the CPU has it), INT8 at f32.

Then each backend's own profiler on the same models: ONNX Runtime's profiling JSON summed per
operator type (which ops run as integer kernels: QLinearConv, QLinearAdd, ...; which stay
float), and OpenVINO's PERF_COUNT per layer type and kernel ("exec type": which run in I8, which
in BF16 / FP32, where reorders sit).

    python benchmarks/bench_int8.py [--rounds 40] [--work DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_compress as bc  # noqa: E402 - the models and steppers are shared

from edgevid.report import layers  # noqa: E402 - the profilers' per-layer summaries, as `edgevid bench --layers`

THREADS = 2


def previous_recipe(src: Path, samples, out: Path) -> str:
    """edgevid's ONNX Runtime recipe as it was before its last two rewrites (float NCHW states at
    the graph boundary, the 3-channel stem as is): the "before" rows, from the same NNCF run settings."""
    from dataclasses import replace

    import nncf
    import onnx

    from edgevid.compress import quantize as q

    if not out.is_file():
        recipe = replace(q.recipe_for("onnxruntime"), integer_states=False, pad_channels=False)
        proto = onnx.load(str(src))
        with q._quiet():
            model = nncf.quantize(proto, nncf.Dataset(samples.samples), **q._nncf_args(nncf, proto, samples, recipe, ()))
        q.finalize(model, recipe)
        onnx.save(model, str(out))
    return str(out)


def prepare_clip(work: Path) -> dict[str, str]:
    """Clip-mode FP32 (ONNX + IR) and edgevid INT8 per backend, from the same checkpoint."""
    from edgevid.compress import quantize as q
    from edgevid.compress.calibration import clip_samples, load_clips
    from edgevid.export.api import export_model
    from edgevid.manifest import Manifest

    ckpt = bc.make_checkpoint(work)
    out = work / "clip_fp32"
    if not (out / "manifest.json").is_file():
        export_model(bc.MODEL, out, checkpoint=ckpt, mode="clip", target="openvino", size=bc.SIZE, frames=8,
                     validate=False, force=True, progress=False)
    manifest = Manifest.load(out)
    samples = clip_samples(load_clips(None, "train", manifest.preprocess, 8, bc.CALIB_CLIPS))
    paths = {"fp32": str(out)}
    for target in ("onnxruntime", "openvino"):
        path = work / f"clip_int8_{target}.onnx"
        if not path.is_file():
            q.quantize_onnx(out / "model.onnx", samples, target=target, out_path=path)
        paths[target] = str(path)
    paths["onnxruntime_previous"] = previous_recipe(out / "model.onnx", samples, work / "clip_int8_ort_previous.onnx")
    return paths


def ort_clip(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 8, 3, bc.SIZE, bc.SIZE)).astype(np.float32)
    return lambda: session.run(None, {"frames": x})


def ov_clip(path: str, threads: int, hint: str | None):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({"frames": ov.PartialShape([1, 8, 3, bc.SIZE, bc.SIZE])})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1"}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, 8, 3, bc.SIZE, bc.SIZE)).astype(np.float32)
    return lambda: request.infer({"frames": x})


def ort_profile(path: str, feeds_like: str, steps: int = 30) -> dict[str, float]:
    """Microseconds per call summed per operator type, from ONNX Runtime's own profiler."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.enable_profiling = True
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {a.name: bc.example_feed(a, rng) for a in session.get_inputs()}
        for _ in range(steps):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    return dict(sorted(layers.ort_trace_per_layer(trace, layers.conv_kinds(path), steps).items(), key=lambda kv: -kv[1]))


def ov_profile(path: str, hint: str | None, clip: bool, steps: int = 30) -> dict[str, float]:
    """Microseconds per call summed per (layer type, kernel), from OpenVINO's PERF_COUNT."""
    import openvino as ov

    from edgevid.manifest import StatePair
    from edgevid.runtime.backends.openvino import make_stateful

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({p.get_any_name(): ov.PartialShape([1, *list(p.get_partial_shape())[1:]]) for p in model.inputs})
    if not clip:
        names = [p.get_any_name() for p in model.inputs if p.get_any_name().startswith("state_in.")]
        make_stateful(ov, model, [StatePair(n[len("state_in."):], []) for n in names])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(THREADS), "NUM_STREAMS": "1",
              "PERF_COUNT": "YES"}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    request = core.compile_model(model, "CPU", config).create_infer_request()
    rng = np.random.default_rng(0)
    feeds = {p.get_any_name(): rng.standard_normal([d.get_length() for d in p.get_partial_shape()]).astype(np.float32)
             for p in request.model_inputs}
    per: dict[str, float] = defaultdict(float)
    for _ in range(steps):
        request.infer(feeds)
        layers.ov_per_layer(request.profiling_info, per, steps)
    return dict(sorted(per.items(), key=lambda kv: -kv[1]))


def _table(title: str, profile: dict[str, float], top: int = 12) -> list[str]:
    total = sum(profile.values()) or 1.0
    lines = [title, f"  {'layer [kernel]':<58} {'us/call':>9} {'share':>7}"]
    for name, us in list(profile.items())[:top]:
        lines.append(f"  {name[:58]:<58} {us:9.0f} {us / total:7.1%}")
    return lines + [f"  {'(total)':<58} {total:9.0f}", ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=40, help="interleaved rounds of 5 calls (default 40)")
    p.add_argument("--work", help="folder for the models (reused between runs)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--size", type=int, default=bc.SIZE, help=argparse.SUPPRESS)
    p.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bc.SIZE = args.size
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_int8_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        bc.prepare(work)
        stream_previous = previous_recipe(work / "fp32" / "model.onnx", bc.stream_calibration(work / "fp32", bc.make_checkpoint(work)),
                                          work / "int8_ort_previous.onnx")
        (work / "clip_paths.json").write_text(json.dumps({**prepare_clip(work), "stream_previous": stream_previous}))
        return 0
    print(f"preparing models in {work} (a child process: NNCF leaves thread pools behind) ...", file=sys.stderr)
    subprocess.run([sys.executable, __file__, "--prepare-only", "--work", str(work), "--size", str(bc.SIZE)],
                   check=True)
    paths = json.loads((work / "paths.json").read_text())
    clip = json.loads((work / "clip_paths.json").read_text())
    fp32, int8 = Path(paths["fp32"]), {k: Path(v) for k, v in paths["int8"].items()}
    t = THREADS
    print(f"measuring ({args.rounds} interleaved rounds, {t} threads) ...", file=sys.stderr)
    started = time.perf_counter()
    ms = bc.measure({
        "stream ort fp32": bc.ort_stepper(fp32 / "model.onnx", t), "stream ort int8": bc.ort_stepper(int8["onnxruntime"], t),
        "stream ort int8 previous": bc.ort_stepper(Path(clip["stream_previous"]), t),
        "stream ov fp32 default": bc.ov_stepper(fp32 / "model.xml", t, None),
        "stream ov fp32 f32": bc.ov_stepper(fp32 / "model.xml", t, "f32"),
        "stream ov int8 default": bc.ov_stepper(int8["openvino"], t, None),
        "stream ov int8 f32": bc.ov_stepper(int8["openvino"], t, "f32"),
        "clip ort fp32": ort_clip(str(Path(clip["fp32"]) / "model.onnx"), t),
        "clip ort int8": ort_clip(clip["onnxruntime"], t),
        "clip ort int8 previous": ort_clip(clip["onnxruntime_previous"], t),
        "clip ov fp32 default": ov_clip(str(Path(clip["fp32"]) / "model.xml"), t, None),
        "clip ov fp32 f32": ov_clip(str(Path(clip["fp32"]) / "model.xml"), t, "f32"),
        "clip ov int8 default": ov_clip(clip["openvino"], t, None),
        "clip ov int8 f32": ov_clip(clip["openvino"], t, "f32"),
    }, args.rounds)
    ratios = {}
    for mode in ("stream", "clip"):
        ratios[mode] = {
            "ort int8 / ort default float": ms[f"{mode} ort int8"] / ms[f"{mode} ort fp32"],
            "ort int8 previous recipe / ort default float": ms[f"{mode} ort int8 previous"] / ms[f"{mode} ort fp32"],
            "ov int8 (default) / ov default float": ms[f"{mode} ov int8 default"] / ms[f"{mode} ov fp32 default"],
            "ov int8 (f32 rest) / ov default float": ms[f"{mode} ov int8 f32"] / ms[f"{mode} ov fp32 default"],
            "ov int8 (default) / ov strict f32": ms[f"{mode} ov int8 default"] / ms[f"{mode} ov fp32 f32"],
        }
    lines = [f"{bc.MODEL} width {bc.WIDTH} at {bc.SIZE} px, {t} threads, medians of {args.rounds} interleaved rounds "
             f"({time.perf_counter() - started:.0f} s)", ""]
    for name, value in ms.items():
        lines.append(f"  {name:<28} {value:8.2f} ms")
    lines.append("")
    for mode, r in ratios.items():
        lines += [f"{mode}:"] + [f"  {k:<40} {v:6.2f}" for k, v in r.items()] + [""]
    profiles = {
        "ort fp32 (stream)": ort_profile(str(fp32 / "model.onnx"), "stream"),
        "ort int8 previous recipe (stream)": ort_profile(clip["stream_previous"], "stream"),
        "ort int8 (stream)": ort_profile(str(int8["onnxruntime"]), "stream"),
        "ov fp32 default (stream)": ov_profile(str(fp32 / "model.xml"), None, clip=False),
        "ov int8 default (stream)": ov_profile(str(int8["openvino"]), None, clip=False),
    }
    for title, prof in profiles.items():
        lines += _table(f"per layer: {title}", prof)
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"ms": ms, "ratios": ratios, "profiles": profiles}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
