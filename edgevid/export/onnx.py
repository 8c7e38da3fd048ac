"""torch -> ONNX: the graphs we export (clip, stream, optional uint8 input), and the pipeline
that turns a module into a checked ONNX model at the requested opset.

Pipeline (``export_onnx``):

1. ``torch.onnx.export(..., dynamo=True)`` at opset ``max(opset, 18)``. The torch.export-based
   exporter is the supported one in current torch and captures the shift exactly (it is built
   from slices and concats, see ``edgevid.models.temporal_shift``). It only implements opset
   >= 18: asked for 17 it exports 18 and tries to down-convert *before* constant folding, where
   ``onnx.version_converter`` fails on ReduceMean ("axes_input_to_attribute ... No initializer
   or constant input") and silently keeps opset 18.
2. ``onnxslim.slim``: constant folding, shape folding, dead-code removal. After it every
   ``axes`` input is an initializer, so
3. ``onnx.version_converter.convert_version`` down-converts cleanly to opsets 15-17. The
   converter leaves attributes that the older schema does not have (ReduceMean-18's
   ``noop_with_empty_axes``); ``_drop_newer_attributes`` removes them when they hold their
   default (the only value the older op can express) and refuses otherwise.
4. IR version set to the oldest one that carries the opset (onnx 1.23 writes IR 14 by default,
   which no deployed runtime reads; TensorRT 8.5's parser, built on onnx 1.12, reads IR 8).
5. ``onnx.checker.check_model(full_check=True)`` and strict shape inference.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import onnx
import torch
from onnx import helper
from torch import nn

from edgevid.errors import EdgevidError
from edgevid.manifest import Preprocess, TensorSpec

EXPORTER_OPSET = 18  # the oldest opset torch's dynamo exporter implements
BATCH_DIM = "N"  # name of the dynamic batch axis, as in the manifest
METADATA_PREFIX = "edgevid."

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
}


class Uint8Normalize(nn.Module):
    """uint8 RGB crops, channels last -> normalised float32, channels first, in the graph.

    ``(x / 255 - mean) / std`` is folded into one multiply-add, ``x * a + b``, which is what
    the host preprocessing computes up to float rounding (tested against it).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32)
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(3, 1, 1))
        self.register_buffer("shift", (-mean_t / std_t).view(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT takes uint8 only as a network input feeding a Cast, so the
        # channels-last -> channels-first transpose must run on float32, not on uint8.
        x = x.to(torch.float32).movedim(-1, -3)  # (..., H, W, 3) -> (..., 3, H, W)
        return x * self.scale + self.shift


class ClipGraph(nn.Module):
    """Clip mode: ``frames`` (N, T, 3, H, W) float, or (N, T, H, W, 3) uint8 -> ``logits`` (N, K)."""

    def __init__(self, model: nn.Module, normalize: Uint8Normalize | None = None) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            frames = self.normalize(frames)
        return self.model(frames)


class StreamGraph(nn.Module):
    """Stream mode: ``frame`` + states in -> ``logits`` + next states out (a ``StreamingModel``)."""

    def __init__(self, streaming: nn.Module, normalize: Uint8Normalize | None = None) -> None:
        super().__init__()
        self.streaming = streaming
        self.normalize = normalize

    def forward(self, frame: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.normalize is not None:
            frame = self.normalize(frame)
        return self.streaming(frame, *states)


def export_onnx(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], input_names: list[str],
                output_names: list[str], *, opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    """Export ``module`` to a checked ONNX model at exactly ``opset`` (see the module docstring).

    With ``dynamic_batch`` the first axis of every input and output is the symbolic ``N``; the
    example inputs must then have a batch larger than 1 (a size-1 axis gets specialised).
    """
    proto = _torch_export(module, example_inputs, input_names, output_names,
                          max(opset, EXPORTER_OPSET), dynamic_batch)
    proto = simplify(proto)
    if _opset_of(proto) != opset:
        proto = convert_opset(proto, opset)
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    check(proto)
    return proto


def _torch_export(module: nn.Module, args: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    with _out_of_place_activations(module):
        return _run_exporter(module, args, input_names, output_names, opset, dynamic_batch)


@contextlib.contextmanager
def _out_of_place_activations(module: nn.Module):
    """Temporarily set ``inplace=False`` on activations (torchvision builds ReLU(inplace=True)).

    The graph is the same; torch.export just has to functionalize every in-place op, which
    with a symbolic batch axis costs about a third of the export time of a MobileNetV2.
    """
    flipped = [m for m in module.modules() if getattr(m, "inplace", False) is True]
    for m in flipped:
        m.inplace = False
    try:
        yield
    finally:
        for m in flipped:
            m.inplace = True


def _run_exporter(module: nn.Module, args: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    dynamic_shapes = None
    if dynamic_batch:
        n = torch.export.Dim(BATCH_DIM, min=1)
        # The structure must mirror forward's signature: (frames,) or (frame, (*states)).
        per_input = [{0: n} for _ in args]
        dynamic_shapes = (per_input[0],) if len(args) == 1 else (per_input[0], tuple(per_input[1:]))
    module.eval()
    chatter = io.StringIO()
    try:
        # The exporter reports its steps and internal warnings on stdout / warnings / logging;
        # the CLI prints its own status lines instead. On failure the chatter is kept for the error.
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(chatter), \
                _quiet_logger("torch.onnx"), _quiet_logger("torch.export"), _quiet_logger("onnxscript"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, args, None, input_names=input_names, output_names=output_names,
                opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False,
                external_data=False, optimize=True,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevidError(f"torch.onnx.export failed for {type(module).__name__}: {first}") from exc
    if program is None:  # pragma: no cover - only the TorchScript path returns None
        raise EdgevidError("torch.onnx.export returned no program")
    return program.model_proto


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and shapes with onnxslim (names of graph inputs/outputs are kept)."""
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        slimmed = onnxslim.slim(proto)
    if slimmed is None:
        raise EdgevidError("onnxslim could not simplify the exported graph")
    return slimmed


def _opset_of(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise EdgevidError("the exported model imports no default ONNX opset")


def convert_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Down-convert a simplified model to ``opset`` with ``onnx.version_converter``."""
    from onnx import version_converter

    source = _opset_of(proto)
    try:
        converted = version_converter.convert_version(proto, opset)
    except Exception as exc:  # noqa: BLE001 - the C++ converter raises RuntimeError with a long text
        first = str(exc).strip().splitlines()[0]
        raise EdgevidError(f"cannot convert the model from opset {source} to {opset}: {first}") from exc
    _drop_newer_attributes(converted, source, opset)
    return converted


def _drop_newer_attributes(proto: onnx.ModelProto, source: int, target: int) -> None:
    """Remove attributes the target-opset schema lacks, if they hold the newer schema's default."""
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        old = onnx.defs.get_schema(node.op_type, target, node.domain)
        new = onnx.defs.get_schema(node.op_type, source, node.domain)
        keep = []
        for attr in node.attribute:
            if attr.name in old.attributes:
                keep.append(attr)
                continue
            default = new.attributes[attr.name].default_value if attr.name in new.attributes else None
            if default is None or helper.get_attribute_value(attr) != helper.get_attribute_value(default):
                raise EdgevidError(
                    f"{node.op_type} node {node.name!r} uses {attr.name}, which opset {target} cannot "
                    f"express; export with --opset {source}"
                )
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)


def check(proto: onnx.ModelProto) -> None:
    """Full ONNX checker plus strict shape inference; a failure is an EdgevidError."""
    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise EdgevidError(f"the exported ONNX model is invalid: {first}") from exc


def _used_names(graph: onnx.GraphProto, used: set[str]) -> set[str]:
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:  # If/Loop/Scan bodies read outer-scope tensors by name
            for sub in [attr.g, *attr.graphs] if attr.type in (onnx.AttributeProto.GRAPH,
                                                                 onnx.AttributeProto.GRAPHS) else []:
                _used_names(sub, used)
    used.update(o.name for o in graph.output)
    return used


def remove_unused_initializers(proto: onnx.ModelProto) -> int:
    """Drop initializers no node (or graph output) reads, in place; returns how many went."""
    used = _used_names(proto.graph, set())
    keep = [init for init in proto.graph.initializer if init.name in used]
    removed = len(proto.graph.initializer) - len(keep)
    if removed:
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(keep)
    return removed


def set_metadata(proto: onnx.ModelProto, fields: dict[str, Any]) -> None:
    """Write ``fields`` into ``metadata_props`` as ``edgevid.<key>`` (JSON values)."""
    props = {p.key: p.value for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)}
    props.update({METADATA_PREFIX + k: json.dumps(v) for k, v in fields.items()})
    helper.set_model_props(proto, props)


def read_metadata(proto: onnx.ModelProto) -> dict[str, Any]:
    """The ``edgevid.*`` metadata of a model, JSON-decoded, prefix stripped."""
    return {p.key[len(METADATA_PREFIX):]: json.loads(p.value)
            for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}


def graph_io(proto: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs as ``TensorSpec`` (symbolic dims as their names)."""
    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dims: list[int | str] = [d.dim_param if d.HasField("dim_param") else int(d.dim_value)
                                 for d in tensor.shape.dim]
        return TensorSpec(value.name, dims, _DTYPES.get(tensor.elem_type, str(tensor.elem_type)))

    initializers = {i.name for i in proto.graph.initializer}
    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in proto.graph.output]


def normalizer_for(preprocess: Preprocess) -> Uint8Normalize:
    """The in-graph normalisation matching ``preprocess`` (mean/std on the 0-1 scale)."""
    return Uint8Normalize(preprocess.mean, preprocess.std)
