"""Deciding what to export: every choice of one export resolved and checked before any heavy work.

Device profile -> target, precision, opset; mode, sizes and batch within bounds; which weights;
the output folder and its ``force`` policy; then, once the model is built, frames, crop size and
preprocessing. Nothing here writes a file or traces a graph (that is ``edgevid.export.write``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevid.errors import EdgevidError, EdgevidWarning
from edgevid.export.targets import DEFAULT_OPSET, Target, check_opset, check_precision, get_target
from edgevid.manifest import MAX_CROP, MAX_ELEMENTS, MAX_FRAMES, Preprocess
from edgevid.staging import check_destination

MODES = ("clip", "stream")
# Bounds on what an export may be asked for (the CLI's argument types use the same): a typo
# must be one line, not a MemoryError deep in torch. Frames and crop size share the
# manifest's ceilings, and the input tensor its per-tensor ceiling: the runtime would refuse
# an artifact past them.
MAX_BATCH = 1024
MIN_WIDTH_MULT, MAX_WIDTH_MULT = 0.05, 8.0  # what a checkpoint's config may say (edgevid.models)
MAX_TOLERANCE = 1.0  # relative to each output's peak: above 1 nothing is compared any more


class RandomWeightsWarning(EdgevidWarning):
    """The exported model has random weights (no checkpoint given and none shipped)."""


@dataclass(frozen=True)
class ExportPlan:
    """Every resolved choice of one export, checked before any heavy work."""

    model: str
    mode: str
    target: Target
    precision: str
    opset: int
    batch: int | None  # None: dynamic batch axis "N"
    uint8_input: bool
    out_dir: Path
    device: str = "generic"  # the device profile (manifest ``device``)
    fp16_kernels: bool = False  # a TensorRT engine of this fp32 ONNX uses fp16 kernels (Jetson profiles)


def default_output_dir(model: str, mode: str, target: str, precision: str = "fp32", uint8_input: bool = False,
                       device: str = "generic") -> Path:
    """``exports/<model>-<mode>-<target>[-fp16][-uint8][-<device>]`` under the current directory."""
    suffix = (f"-{precision}" if precision != "fp32" else "") + ("-uint8" if uint8_input else "") + \
        (f"-{device}" if device != "generic" else "")
    return Path("exports") / f"{model}-{mode}-{target}{suffix}"


def plan_export(config: Any, out_dir: str | os.PathLike | None, *, mode: str | None, target: str | None,
                precision: str | None, opset: int | None, uint8_input: bool, force: bool, frames: int | None,
                size: int | None, batch: int | None, num_classes: int | None, width_mult: float | None,
                tolerance: float | None, quantized: bool, device: str | None) -> ExportPlan:
    """The checked plan for zoo entry ``config`` (arguments as ``export_model`` takes them).

    ``quantized``: a graph quantizer was given. Refuses, in one line, anything the target or
    device cannot run, a number out of range, and an ``out_dir`` that exists without ``force``.
    """
    profile = _device_profile(device)
    target_spec = get_target(target or (profile.default_backend if profile else "onnxruntime"))
    precision = check_precision(precision or (profile.default_precision if profile else "fp32"))
    opset = DEFAULT_OPSET if opset is None else opset
    if profile is not None:
        check_for_device(profile, target_spec.name, precision, opset)
    if precision == "int8" and not quantized:
        raise EdgevidError("an int8 export needs a quantizer: use edgevid.pipeline.export "
                           "(what `edgevid export --precision int8` calls)")
    if precision != "int8" and quantized:
        raise EdgevidError(f"a quantizer only applies to precision int8, not {precision}")
    check_opset(target_spec, opset)
    mode = mode or ("stream" if config.can_stream else "clip")
    if mode not in MODES:
        raise EdgevidError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    _check_numbers(frames, size, batch, num_classes, width_mult, tolerance)
    if batch is None and target_spec.static_shapes:
        batch = 1
    if uint8_input and getattr(config, "motion", None) is not None:
        # The graph's input is a stack of flow fields or frame differences the host computes,
        # not camera pixels: there is nothing for an in-graph uint8 normalisation to take.
        raise EdgevidError(f"--uint8-input applies to models that take camera frames; {config.name} takes a "
                           f"{config.motion.kind} stack the runtime computes")
    if mode == "stream" and batch not in (None, 1):
        raise EdgevidError("a streaming export runs one stream per call: use batch 1 (or a dynamic batch)")
    out = check_destination(
        out_dir if out_dir is not None
        else default_output_dir(config.name, mode, target_spec.name, precision, uint8_input,
                                profile.name if profile else "generic"), force)
    return ExportPlan(config.name, mode, target_spec, precision, opset, batch, uint8_input, out,
                      device=profile.name if profile else "generic",
                      fp16_kernels=bool(profile and profile.fp16_kernels and precision == "fp32"))


def plan_input(plan: ExportPlan, model_config: Any, frames: int | None, size: int | None,
               ) -> tuple[int, int, Preprocess]:
    """(frames, crop size, preprocessing) once the model is built: the model's defaults, checked."""
    frames = frames or model_config.frames
    size = size or model_config.input_size
    model_config.check_input(frames, size)
    _check_input_size(plan.mode, frames, size, plan.batch)
    return frames, size, _preprocess_for(model_config, size, plan.uint8_input)


def _check_numbers(frames: int | None, size: int | None, batch: int | None, num_classes: int | None,
                   width_mult: float | None, tolerance: float | None) -> None:
    """Refuse a count out of range or a number that is not finite, before any model is built."""
    for name, value, hi in (("frames", frames, MAX_FRAMES), ("size", size, MAX_CROP), ("batch", batch, MAX_BATCH),
                            ("num_classes", num_classes, 100_000)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi):
            raise EdgevidError(f"{name} must be an integer between 1 and {hi}, got {value}")
    if width_mult is not None and not MIN_WIDTH_MULT <= width_mult <= MAX_WIDTH_MULT:  # also refuses nan
        raise EdgevidError(f"width_mult must be in [{MIN_WIDTH_MULT:g}, {MAX_WIDTH_MULT:g}], got {width_mult}")
    if tolerance is not None and not 0.0 <= tolerance <= MAX_TOLERANCE:
        raise EdgevidError(f"tolerance must be in [0, {MAX_TOLERANCE:g}], got {tolerance}")


def _check_input_size(mode: str, frames: int, size: int, batch: int | None) -> None:
    """Refuse an input tensor past the manifest's per-tensor ceiling (the runtime would refuse it),
    before torch allocates the example inputs and the validation clips."""
    per_call = (batch or 1) * (frames if mode == "clip" else 1) * 3 * size * size
    if per_call > MAX_ELEMENTS:
        what = f"{frames} frames" if mode == "clip" else "one frame"
        raise EdgevidError(f"a {mode} input of {what} at {size}x{size} px{f' x batch {batch}' if batch else ''} has "
                           f"{per_call} values, more than the {MAX_ELEMENTS} a manifest allows per tensor; use fewer "
                           "--frames, a smaller --size or --batch")


def _device_profile(device: str | None) -> Any:
    """The supported profile called ``device`` (None: no device given)."""
    if device is None:
        return None
    from edgevid.devices.profiles import get_profile, require_supported

    return require_supported(get_profile(device))


def check_for_device(profile: Any, target: str, precision: str, opset: int) -> None:
    """Refuse a target, precision or opset the device cannot run (one line, before any work)."""
    if target not in profile.backends:
        raise EdgevidError(f"{profile.name} runs {', '.join(profile.backends)}, not {target}")
    if precision not in profile.precisions:
        why = f" ({profile.sources['precisions']})" if "precisions" in profile.sources else ""
        raise EdgevidError(f"{profile.name} cannot run {precision}: it runs {', '.join(profile.precisions)}{why}")
    if opset > profile.max_opset:
        raise EdgevidError(f"opset {opset} is too new for {profile.name}: its TensorRT parses up to opset "
                           f"{profile.max_opset}; use --opset {profile.max_opset}")


def resolve_checkpoint(name: str, checkpoint: str | os.PathLike | None) -> tuple[Any, dict[str, Any]]:
    """Which weights to load, and their provenance; warns when they are random.

    The warning points two frames up (``stacklevel=3``): call this from ``export_model`` itself,
    so that it names the caller's line.
    """
    from edgevid.models import DEFAULT_CHECKPOINT, get_config

    spec = get_config(name).default_weights
    if checkpoint is None and spec is not None:
        checkpoint = DEFAULT_CHECKPOINT
    if checkpoint is None:
        public = [w.name for w in get_config(name).weights if w.url]
        hint = f"pass --weights {public[0]} (its public weights) or --checkpoint PATH" if public else \
            "pass --checkpoint PATH"
        warnings.warn(RandomWeightsWarning(
            f"{name} ships no checkpoint and none was given: exporting RANDOM weights "
            f"(fine to test the pipeline, useless for predictions); {hint}"), stacklevel=3)
        return None, {"weights": "random-init", "checkpoint": None, "checkpoint_sha256": None}
    if checkpoint == DEFAULT_CHECKPOINT:
        if spec is None:
            raise EdgevidError(f"{name} ships no checkpoint; pass --checkpoint PATH")
        return checkpoint, {"weights": f"shipped:{spec.name}", "checkpoint": spec.file, "checkpoint_sha256": spec.sha256}
    return checkpoint, {"weights": "checkpoint", "checkpoint": str(checkpoint), "checkpoint_sha256": None}


def _preprocess_for(config: Any, size: int, uint8_input: bool) -> Preprocess:
    # The model's resize belongs to its input size (256 for 224: the usual 0.875 crop);
    # another crop size keeps that ratio.
    resize = config.resize if size == config.input_size else round(size * config.resize / config.input_size)
    return Preprocess(resize=resize, crop=size, mean=list(config.mean), std=list(config.std),
                      channel_order="RGB", uint8_input=uint8_input)
