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

import importlib.util
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
    if problems:
        raise EdgevidError("the graph is not TensorRT-ready: " + "; ".join(problems[:4]))


def engine_available() -> tuple[bool, str]:
    """(True, "") when an engine can be built here, else (False, why not)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "tensorrt is not installed here"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU here"
    except ImportError:  # pragma: no cover - export always has torch
        return False, "cannot query the GPU"
    if importlib.util.find_spec("edgevid.runtime.backends.tensorrt") is None:
        return False, "the TensorRT runtime backend is not available"
    return True, ""


def build_engine_now(onnx_path: str | Path, engine_path: str | Path, *, fp16: bool) -> dict[str, Any]:
    """Build ``engine_path`` from ``onnx_path`` with the runtime's builder; returns manifest facts."""
    import tensorrt

    from edgevid.runtime.backends.tensorrt import build_engine

    # fp16 is already in the ONNX types; the flag lets a TensorRT 8.x (weakly typed) builder
    # pick fp16 kernels for them. TensorRT 10+ strongly typed builds ignore it.
    build_engine(str(onnx_path), str(engine_path), fp16=fp16, workspace_mib=1024, profile_shapes=None)
    return {"engine": "built", "tensorrt_version": tensorrt.__version__}


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or None."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    import tensorrt

    return str(tensorrt.__version__)
