"""`edgevid export`: a zoo model to a validated ONNX / OpenVINO / TensorRT-ready artifact."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# Plain data only (no torch): `edgevid --help` stays instant.
from edgevid.commands import argtypes
from edgevid.commands.weights_option import add_weights_option, checkpoint_of
from edgevid.export.api import MAX_BATCH, MAX_TOLERANCE, MAX_WIDTH_MULT, MIN_WIDTH_MULT
from edgevid.export.targets import DEFAULT_OPSET, PRECISIONS, TARGETS, target_names

MAX_CALIB_SIZE = 100_000  # calibration clips: far above NNCF's useful few hundred


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `export`."""
    targets = "; ".join(f"{name}: {t.description}" for name, t in TARGETS.items())
    p = sub.add_parser(
        "export", help="export a zoo model to ONNX (clip or streaming), OpenVINO IR or TensorRT-ready ONNX",
        description="Export a zoo model, validate it against torch on the target's runtimes, and write "
        "model files plus manifest.json into a new directory. Streaming models export in stream "
        "mode by default: one frame in, every temporal state as an explicit input/output "
        f"(state_in.<module> / state_out.<module>). Targets: {targets}. "
        "'onnx' is an alias of onnxruntime (the plain ONNX artifact, validated in ONNX Runtime).",
    )
    p.add_argument("--model", required=True, help="zoo model name or alias (see `edgevid zoo list`)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="weights to export (default: the checkpoint shipped with the model, else random init)")
    add_weights_option(p)
    p.add_argument("--mode", choices=("clip", "stream"),
                   help="clip: frames (N,T,3,H,W) -> logits; stream: frame + states -> logits + states "
                        "(default: stream if the model can stream)")
    p.add_argument("--target", choices=target_names(), metavar="TARGET",
                   help=f"one of {', '.join(target_names())} (default: the --device profile's backend, else "
                        "onnxruntime)")
    p.add_argument("--device", metavar="PROFILE",
                   help="device profile (edgevid devices list), e.g. orin-nano: picks target, precision and opset, "
                        "refuses what the device cannot run; TensorRT engines of fp32 exports for a Jetson use fp16 "
                        "kernels")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp16: fp16 weights and compute in the ONNX with fp32 inputs/outputs "
                        "(OpenVINO: fp16-compressed IR weights); int8: NNCF post-training quantization "
                        "(QDQ ONNX), calibrated on real video; default fp32 (or the --device profile's)")
    p.add_argument("--calib", metavar="DATA",
                   help="int8: dataset folder to calibrate on (its train split; the val split measures "
                        "INT8 vs FP32). Default: the built-in synthetic set, generated once into the cache")
    # The int8 options' ranges are checked with the other int8 options (edgevid.compress.export_int8),
    # so the types below refuse only what cannot be a number there (nan, 30 digits, over the ceiling).
    p.add_argument("--calib-size", type=argtypes.int_range(0, MAX_CALIB_SIZE), metavar="N",
                   help="int8: clips to calibrate on (default 24)")
    p.add_argument("--max-accuracy-drop", type=argtypes.float_range(-math.inf, math.inf), metavar="X",
                   help="int8: NNCF accuracy-controlled quantization, keeping layers in float until the val "
                        "top-1 drops by at most X (absolute, 0.01 = 1 point)")
    p.add_argument("--frames", type=argtypes.frames, metavar="T", help="frames per clip (default: the model's)")
    p.add_argument("--size", type=argtypes.side, metavar="S", help="input crop size in pixels (default: the model's)")
    p.add_argument("--opset", type=argtypes.positive,
                   help=f"ONNX opset (default {DEFAULT_OPSET}, the newest TensorRT 8.5 / 8.6 parse)")
    p.add_argument("--uint8-input", action="store_true",
                   help="the graph takes uint8 RGB crops, channels last, and normalises inside "
                        "(4x less input bandwidth, less host work)")
    p.add_argument("--batch", type=argtypes.int_range(1, MAX_BATCH), metavar="N",
                   help="fix the batch size (default: dynamic; 1 for tensorrt)")
    p.add_argument("--width-mult", type=argtypes.float_range(MIN_WIDTH_MULT, MAX_WIDTH_MULT), metavar="W",
                   help=f"MobileNetV2 width multiplier, {MIN_WIDTH_MULT:g}-{MAX_WIDTH_MULT:g} (random-init models)")
    p.add_argument("--tolerance", type=argtypes.float_range(0.0, MAX_TOLERANCE), metavar="TOL",
                   help="allowed max |exported - torch| relative to each output's peak, 0-1 "
                        "(default 1e-3 for fp32, 5e-2 for fp16)")
    p.add_argument("--no-validate", action="store_true", help="skip validation against torch (not recommended)")
    p.add_argument("--force", action="store_true", help="replace DIR if it holds an earlier export")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="directory to create (default: exports/<model>-<mode>-<target>)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines, summary only")
    p.add_argument("--json", action="store_true",
                   help="print {\"output\": DIR, \"manifest\": {...}} as JSON instead of the summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then print a one-screen summary."""
    from edgevid.commands import warnings_as_lines
    from edgevid.pipeline import export

    with warnings_as_lines("export"):
        manifest = export(
            args.model, args.output, checkpoint=checkpoint_of(args, None, not args.quiet), mode=args.mode, target=args.target,
            precision=args.precision, frames=args.frames, size=args.size, opset=args.opset,
            uint8_input=args.uint8_input, force=args.force, width_mult=args.width_mult, batch=args.batch,
            validate=not args.no_validate, tolerance=args.tolerance, progress=not args.quiet,
            device=args.device, **_int8_options(args),
        )
    out = (Path(args.output) if args.output else _default_dir(manifest, args)).absolute()
    if args.json:
        print(json.dumps({"output": str(out), "manifest": manifest.to_dict()}, indent=2))
    else:
        print(summary(manifest, out))
    return 0


def _int8_options(args: argparse.Namespace) -> dict:
    """--calib/--calib-size/--max-accuracy-drop (export refuses them without --precision int8)."""
    given = {"calib": args.calib, "calib_size": args.calib_size, "max_accuracy_drop": args.max_accuracy_drop}
    return {k: v for k, v in given.items() if v is not None}


def _default_dir(manifest, args: argparse.Namespace) -> Path:
    from edgevid.export.api import default_output_dir

    return default_output_dir(manifest.model, manifest.mode, manifest.target, manifest.precision, args.uint8_input,
                              manifest.device)


def _shape(shape: list) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def summary(manifest, out: Path) -> str:
    """The one-screen report: files, I/O, states, validation."""
    device = f", device {manifest.device}" if manifest.device != "generic" else ""
    lines = [f"exported {manifest.model} ({manifest.mode} mode, {manifest.precision}, target {manifest.target}{device}) "
             f"to {out}"]
    for role, name in manifest.files.items():
        size = (out / name).stat().st_size if (out / name).is_file() else 0
        lines.append(f"  {name:<16} {role:<13} {size / 2**20:7.1f} MiB")
    lines.append(f"  {'manifest.json':<16} manifest")
    for t in manifest.inputs:
        lines.append(f"  input   {t.name:<10} {_shape(t.shape):<24} {t.dtype:<8} {t.layout}")
    for t in manifest.outputs:
        lines.append(f"  output  {t.name:<10} {_shape(t.shape):<24} {t.dtype}")
    if manifest.states:
        from edgevid.runtime.crosscheck import state_encodings

        shapes = list(dict.fromkeys(_shape(s.shape) for s in manifest.states))  # distinct, in order
        dtypes = "/".join(dict.fromkeys(s.dtype for s in manifest.states))
        integer = " NHWC, decoded by build.int8.integer_states" if state_encodings(manifest) else ""
        lines.append(f"  states  {len(manifest.states)} pairs state_in.* -> state_out.* ({dtypes}{integer}; batch-1 "
                     f"shapes {', '.join(shapes[:4])}{', ...' if len(shapes) > 4 else ''})")
    build = manifest.build
    lines.append(f"  opset {build.get('opset')}, batch {build.get('batch')}, {len(manifest.labels)} classes, "
                 f"weights: {manifest.provenance.get('weights')}")
    published = manifest.provenance.get("published")
    if manifest.provenance.get("source") and isinstance(published, dict):
        figures = ", ".join(f"{k} {v}" for k, v in published.items() if k in ("dataset", "top1", "top5", "views"))
        lines.append(f"  weights from {manifest.provenance['source']} ({manifest.provenance.get('hash_check')}); "
                     f"published: {figures}")
    int8 = build.get("int8")
    if int8:
        acc = int8.get("accuracy")
        lines.append(f"  int8: {int8['int8_layers']} layers INT8, {len(int8['float_layers'])} kept in float"
                     + (f" ({', '.join(int8['float_layers'][:3])}{', ...' if len(int8['float_layers']) > 3 else ''})"
                        if int8["float_layers"] else "")
                     + f"; calibrated on {int8['calibration']['source']}"
                     + (f" ({int8['calibration']['states']} states)" if int8["calibration"]["states"] != "none" else ""))
        if acc:
            frame = f", per-frame {acc['frame_top1_agreement']:.1%}" if "frame_top1_agreement" in acc else ""
            lines.append(f"  int8 vs fp32 on {acc['clips']}: top-1 {acc['int8_top1']:.3f} vs {acc['fp32_top1']:.3f}, "
                         f"agreement per clip {acc['clip_top1_agreement']:.1%}{frame}")
    trt = build.get("tensorrt")
    if trt:
        lines.append(f"  tensorrt engine: {trt['engine']}" + (f" ({trt['reason']})" if trt.get("reason") else ""))
    if manifest.validation.get("skipped"):
        lines.append("  validation: SKIPPED")
    for backend, v in manifest.validation.items():
        if isinstance(v, dict):
            lines.append(f"  validation {backend:<12} max|diff| {v['max_abs_diff']:.2e} (logits "
                         f"{v['max_abs_diff_logits']:.2e}, rel {v['max_rel_diff']:.1e} <= {v['tolerance']:g}), "
                         f"top-1 agreement {v['top1_agreement']:.0%} over {v['compared']}")
    return "\n".join(lines)
