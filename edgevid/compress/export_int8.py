"""The INT8 step of ``edgevid export --precision int8``: calibrate, quantize, measure.

Called by ``edgevid.export.write`` with the FP32 ONNX graph it just exported and the torch
model it came from. Returns the INT8 graph and the facts the manifest records under
``build.int8``: the recipe, the calibration data, the layers kept in float, and FP32 vs
INT8 accuracy and top-1 agreement (per clip and, in stream mode, per frame) on labelled
clips that calibration did not use (the ``val`` split).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import onnx

from edgevid.manifest import Preprocess, StatePair

VALIDATION_CLIPS = 2  # val clips handed to the export's torch-vs-artifact validation


@dataclass
class Int8Result:
    """What export needs back: the INT8 graph, its report, and real clips to validate it on.

    An INT8 graph is only accurate inside the ranges it was calibrated for, so its
    torch-vs-artifact validation runs on held-out clips of the calibration data rather than
    on synthetic frames (``validation_inputs``: an ``edgevid.export.validate.ValidationInputs``).
    """

    model: onnx.ModelProto
    info: dict[str, Any]
    validation_inputs: Any
    states: list[StatePair] | None = None  # the INT8 graph's states where the recipe changed them


def check_int8_options(precision: str, calib: str | os.PathLike | None, calib_size: int | None,
                       max_accuracy_drop: float | None) -> None:
    """Refuse bad INT8 options before any heavy work (export calls this first).

    Lists the calibration folder's videos (no decoding): a missing or empty folder fails
    here, unreadable videos fail when the clips are decoded.
    """
    from edgevid.compress.calibration import CalibrationError
    from edgevid.errors import EdgevidError

    given = {"--calib": calib, "--calib-size": calib_size, "--max-accuracy-drop": max_accuracy_drop}
    if precision != "int8":
        used = [flag for flag, value in given.items() if value is not None]
        if used:
            raise EdgevidError(f"{', '.join(used)} only apply to --precision int8")
        return
    if calib_size is not None and calib_size < 1:
        raise CalibrationError(f"--calib-size must be at least 1, got {calib_size}")
    if max_accuracy_drop is not None and not 0.0 <= max_accuracy_drop < 1.0:
        raise EdgevidError(f"--max-accuracy-drop must be in [0, 1) (0.01 = 1 point of top-1), got {max_accuracy_drop}")
    if calib is not None:
        from edgevid.data.sources import resolve_split

        try:
            resolve_split(calib, "train")
        except EdgevidError as exc:
            raise CalibrationError(f"calibration data {calib}: {exc}") from exc


def quantize_for_export(proto: onnx.ModelProto, *, streaming: Any, states: list[StatePair], mode: str,
                        preprocess: Preprocess, frames: int, target: str, calib: str | os.PathLike | None = None,
                        calib_size: int | None = None, max_accuracy_drop: float | None = None,
                        measure: bool = True, motion: Any = None, stride: int = 1) -> Int8Result:
    """INT8 QDQ version of ``proto`` for ``target``, its report, and clips to validate it on.

    - ``calib``: dataset folder (default: the built-in synthetic set), ``train`` split;
      ``calib_size`` clips of it (default 24).
    - stream mode: calibration states are recorded by stepping ``streaming`` (FP32 torch).
    - ``max_accuracy_drop``: accuracy-controlled quantization against the ``val`` split.
    - ``measure``: FP32 vs INT8 on the ``val`` split (up to 66 clips; a dataset without a
      val split uses all its videos).
    - ``motion`` (flow / RGB-difference models): calibrated on real motion stacks of the
      videos (``frames + L`` consecutive frames at ``stride``), as the runtime computes them.
    """
    from edgevid.compress import calibration as cal
    from edgevid.compress.evaluate import agreement, predict
    from edgevid.compress.quantize import quantize_onnx, quantize_with_accuracy_control
    from edgevid.export.onnx import check
    from edgevid.export.validate import ValidationInputs

    size = calib_size if calib_size is not None else cal.DEFAULT_CALIB_CLIPS
    clips = cal.load_clips(calib, "train", preprocess, frames, size, motion=motion, stride=stride)
    samples = cal.stream_samples(streaming, states, clips) if mode == "stream" else cal.clip_samples(clips)
    val = cal.load_clips(calib, "val", preprocess, frames, cal.DEFAULT_VAL_CLIPS if measure else VALIDATION_CLIPS,
                         strict=False, motion=motion, stride=stride)
    if max_accuracy_drop is not None:
        result = quantize_with_accuracy_control(proto, samples, val, mode=mode, states=states, target=target,
                                                max_drop=max_accuracy_drop)
    else:
        result = quantize_onnx(proto, samples, target=target, states=states if mode == "stream" else ())
    check(result.model)
    if target == "tensorrt":
        # Export checked the FP32 graph; quantization adds Q/DQ and may re-type tensors (e.g. uint8
        # states), so the graph TensorRT will parse is the INT8 one: check it before measuring it.
        from edgevid.export.tensorrt import check_tensorrt_ready

        check_tensorrt_ready(result.model)
    info = result.info
    int8_states = result.states if result.states is not None else states
    if measure:
        fp32 = predict(proto, val.graph_clips, mode, states)
        int8 = predict(result.model, val.graph_clips, mode, int8_states)
        info["accuracy"] = {"clips": val.source, "fp32_top1": fp32.top1(val.labels),
                            "int8_top1": int8.top1(val.labels), **agreement(fp32, int8)}
    held_out = val.head(VALIDATION_CLIPS)
    inputs = ValidationInputs(held_out.torch_clips, held_out.graph_clips, f"held-out {held_out.source}")
    return Int8Result(result.model, info, inputs, result.states)

