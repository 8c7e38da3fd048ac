"""``export_model``: the one public entry point of export (CLI, tests, runtime and compression).

zoo model (+ checkpoint) -> plan (``edgevid.export.plan``: every choice resolved and checked)
-> the torch model built -> its files written (``edgevid.export.write``: ONNX at the requested
opset, target files, validation against torch, ``manifest.json``), all in a staged directory
renamed into place at the end.
"""

from __future__ import annotations

import os
from typing import Any

from edgevid.errors import EdgevidError
from edgevid.export.plan import (
    MAX_BATCH,
    MAX_TOLERANCE,
    MAX_WIDTH_MULT,
    MIN_WIDTH_MULT,
    ExportPlan,
    RandomWeightsWarning,
    default_output_dir,
    plan_export,
    plan_input,
    resolve_checkpoint,
)
from edgevid.export.write import GraphQuantizer, Status, write_export
from edgevid.manifest import Manifest, sha256_file
from edgevid.staging import staged_directory

# What callers import from here: the CLI's bounds and default folder, the warning to filter, the types.
__all__ = ["MAX_BATCH", "MAX_TOLERANCE", "MAX_WIDTH_MULT", "MIN_WIDTH_MULT", "ExportPlan", "GraphQuantizer",
           "RandomWeightsWarning", "default_output_dir", "export_model"]


def export_model(model: str, out_dir: str | os.PathLike | None = None, *, checkpoint: str | os.PathLike | None = None,
                 mode: str | None = None, target: str | None = None, precision: str | None = None,
                 frames: int | None = None, size: int | None = None, opset: int | None = None,
                 uint8_input: bool = False, force: bool = False, num_classes: int | None = None,
                 width_mult: float | None = None, batch: int | None = None, validate: bool = True,
                 tolerance: float | None = None, progress: bool = True,
                 quantizer: GraphQuantizer | None = None, device: str | None = None,
                 announce: bool = True) -> Manifest:
    """Export a zoo model to ``out_dir`` (default ``exports/<model>-<mode>-<target>``); return its manifest.

    - ``checkpoint``: a path, ``"default"`` (the shipped one), or None: the shipped checkpoint
      if the entry has one, else random weights (``RandomWeightsWarning``, recorded).
    - ``mode``: ``"clip"`` or ``"stream"``; default stream for models that can stream.
    - ``target``: ``onnxruntime`` (alias ``onnx``), ``openvino`` or ``tensorrt``; default the
      device profile's backend, else ``onnxruntime``.
    - ``precision``: ``fp32`` or ``fp16`` (fp16 compute in the ONNX with fp32 I/O; for OpenVINO,
      fp16 weight compression in the IR); default the device profile's, else ``fp32``.
    - ``device``: a device profile (``edgevid devices list``): picks target, precision and opset
      and refuses what the device cannot run; recorded as the manifest's ``device``.
    - ``frames`` / ``size``: clip length and crop size (default: the model's).
    - ``batch``: fix the batch size; default dynamic, or 1 for static-shape targets.
    - ``validate``: run the artifact on every backend of the target against torch; a
      difference above ``tolerance`` (default per precision) fails the export.
    - ``progress``: print one status line per stage to stderr; ``announce``: and the closing
      "wrote <out_dir>" line (False for a caller that exports into a folder of its own staging,
      such as ``deploy``, whose path the user never sees).
    - ``quantizer`` (``precision="int8"`` only): the graph quantizer; ``edgevid.pipeline.export``
      supplies NNCF's, calibrated on real video (see ``edgevid.compress``).

    A failure of any kind leaves nothing on disk; an existing ``out_dir`` needs ``force``.
    """
    from edgevid.models import get_config

    config = get_config(model)
    plan = plan_export(config, out_dir, mode=mode, target=target, precision=precision, opset=opset,
                       uint8_input=uint8_input, force=force, frames=frames, size=size, batch=batch,
                       num_classes=num_classes, width_mult=width_mult, tolerance=tolerance,
                       quantized=quantizer is not None, device=device)

    status = Status(progress)
    checkpoint, weights = resolve_checkpoint(config.name, checkpoint)  # here: its warning names our caller
    with status.stage(f"building {config.name}"):
        net = _build(config.name, checkpoint, weights, num_classes=num_classes, width_mult=width_mult)
    frames, size, preprocess = plan_input(plan, net.config, frames, size)
    streaming = None
    if plan.mode == "stream":
        from edgevid.models.streaming import to_streaming

        streaming = to_streaming(net).eval()  # clear error for a bi-directional model

    with staged_directory(plan.out_dir, force) as work:
        manifest = write_export(work, plan, net, streaming, weights, frames, size, preprocess, status,
                                validate=validate, tolerance=tolerance, quantizer=quantizer)
    if announce:
        status.done(plan.out_dir)
    return manifest


def _build(name: str, checkpoint: Any, weights: dict[str, Any], **overrides: Any) -> Any:
    """The eval-mode model; hashes a user checkpoint once it has loaded (so it is readable).

    Public weights (a name such as ``kinetics400``, or the source's file) are recorded with their
    source, URL, sha256, how that hash was checked, and the source's published accuracy.
    """
    from edgevid.models import build_model

    try:
        net = build_model(name, checkpoint=checkpoint, **overrides)
    except ValueError as exc:  # builder argument errors (e.g. a width multiplier on ResNet-50)
        raise EdgevidError(str(exc)) from exc
    public = getattr(net, "weights_info", None)
    if public is not None:
        weights.update(public)
    elif weights["weights"] == "checkpoint":
        weights["checkpoint_sha256"] = sha256_file(checkpoint)
    return net.eval()
