"""TensorRT-ready ONNX: checks that TensorRT 8.5's ONNX parser accepts the graph, and the engine.

What "ready" means here (the target's other half, fp16 in the graph, is
``edgevid.export.precision``):

- static shapes: every graph input and output fully fixed, so the engine needs no
  optimisation profile and TensorRT can pick kernels for exactly that shape;
- opset <= 17 (``edgevid.export.targets``) and only operators TensorRT 8.5 supports, from
  onnx-tensorrt ``docs/operators.md`` at release/8.5-GA ("Supported: Y" rows);
- inputs that this parser requires to be initializers are initializers (the "Restrictions"
  column: Slice/Squeeze ``axes``, Unsqueeze ``axes``, TopK ``K``, CumSum ``axis``).

The engine is device-specific (GPU, TensorRT version), so it is built here only when
TensorRT imports and a GPU is present, through the runtime's ``build_engine``; otherwise the
manifest says the engine is built on the target on first load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgevid.errors import EdgevidError

# onnx-tensorrt release/8.5-GA docs/operators.md, rows marked "Y".
TRT85_OPERATORS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GRU HardSwish HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN
RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# op -> input positions the TensorRT 8.5 parser needs as initializers/constants
_CONSTANT_INPUTS = {"Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,), "CumSum": (1,)}


def check_tensorrt_ready(proto: onnx.ModelProto) -> None:
    """Refuse a graph TensorRT 8.5 could not parse into a static engine (all problems at once)."""
    problems: list[str] = []
    initializers = {i.name for i in proto.graph.initializer}
    constants = initializers | {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    for value in list(proto.graph.input) + list(proto.graph.output):
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            problems.append(f"{value.name} has a dynamic shape")
    unsupported = sorted({n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx")} - TRT85_OPERATORS)
    if unsupported:
        problems.append(f"operators TensorRT 8.5 cannot parse: {', '.join(unsupported)}")
    custom = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        problems.append(f"custom-domain operators: {', '.join(custom)}")
    for node in proto.graph.node:
        for pos in _CONSTANT_INPUTS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos] and node.input[pos] not in constants:
                problems.append(f"{node.op_type} {node.name!r} input {pos} must be a constant for TensorRT")
    problems += _uint8_problems(proto)
    if problems:
        raise EdgevidError("the graph is not TensorRT-ready: " + "; ".join(problems[:4]))


def _uint8_problems(proto: onnx.ModelProto) -> list[str]:
    """uint8 anywhere but a graph input that feeds only Casts: TensorRT has no uint8 layers."""
    u8 = onnx.TensorProto.UINT8
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    inputs = {v.name for v in proto.graph.input if v.type.tensor_type.elem_type == u8}
    problems = []
    for node in proto.graph.node:
        fed = [i for i in node.input if i in inputs]
        if fed and node.op_type != "Cast":
            problems.append(f"uint8 input {fed[0]!r} feeds {node.op_type} {node.name!r} (TensorRT takes a uint8 "
                            "input only into a Cast)")
        made = [o for o in node.output if types.get(o) == u8]
        if made:
            problems.append(f"{node.op_type} {node.name!r} makes the uint8 tensor {made[0]!r} (TensorRT has no "
                            "uint8 layers)")
    return problems


def engine_available() -> tuple[bool, str]:
    """(True, "") when an engine can be built here (TensorRT imports and CUDA sees a GPU), else (False, why)."""
    try:
        from edgevid.runtime.backends import tensorrt as rt

        trt, cudart = rt._tensorrt(), rt._cudart()
        err, count = cudart.cudaGetDeviceCount()
    except EdgevidError as exc:
        return False, str(exc).split(";")[0]
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop a CPU export
        return False, f"TensorRT cannot start here ({type(exc).__name__}: {exc})"
    if int(err) != 0:
        return False, f"CUDA cannot see a GPU: {rt.cuda_error_text(cudart, err)}"
    if count == 0:
        return False, "no CUDA GPU here"
    del trt
    return True, ""


def build_engine_now(onnx_path: str | Path, engine_path: str | Path, *, precision: str,
                     fp16_kernels: bool) -> dict[str, Any]:
    """Build ``engine_path`` from ``onnx_path`` on this GPU; returns the manifest's ``build.tensorrt`` facts.

    The facts record the TensorRT version and GPU the engine was built by: the runtime uses
    a shipped engine only where they are its own.
    """
    from dataclasses import asdict

    from edgevid.manifest import atomic_write_bytes
    from edgevid.runtime.backends import tensorrt as rt
    from edgevid.runtime.backends import tensorrt_engine as te

    trt, cudart = rt._tensorrt(), rt._cudart()
    facts = te.device_facts(trt, cudart, rt._check)
    opts = te.BuildOptions(precision=precision, fp16_kernels=fp16_kernels)
    data = te.build_engine(trt, onnx_path, opts, timing_cache=te.timing_cache_path(facts))
    atomic_write_bytes(engine_path, data)
    return {"engine": "built", "tensorrt_version": str(trt.__version__), "device": asdict(facts), "options": asdict(opts)}
