"""fp16 in the ONNX graph itself: fp16 weights and compute, fp32 inputs and outputs.

TensorRT 10+ builds strongly typed networks, where the ONNX types *are* the precision (there is
no FP16 builder flag any more), so an fp16 artifact must carry fp16 in the graph. Inputs and
outputs stay fp32 (a Cast at each boundary) so the host code and the state buffers do not
change with the precision.

onnxslim's ``dtype="fp16"`` and the usual ``onnxconverter_common.float16`` need
onnxconverter-common, which edgevid does not depend on; the pass is small enough to own. It
covers what our graphs contain: float initializers, ``Constant`` / ``ConstantOfShape`` values,
``Cast`` to float, and the value types (recomputed by shape inference). The checker and strict
shape inference run afterwards, so an op that needs an fp32 input fails loudly here.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = float(np.finfo(np.float16).max)
_FP16_SUFFIX = ".fp16"


def _to_fp16_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    # Values beyond the fp16 range would become inf; clip them to the largest finite value.
    array = np.clip(numpy_helper.to_array(tensor), -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(array, tensor.name)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in fp16, with its fp32 graph inputs/outputs kept fp32."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph

    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(_to_fp16_tensor(init))

    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_to_fp16_tensor(attr.t))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16

    float_inputs = [v for v in graph.input if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    float_outputs = [v for v in graph.output if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    renames = {v.name: v.name + _FP16_SUFFIX for v in float_inputs + float_outputs}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    head = [helper.make_node("Cast", [v.name], [renames[v.name]], to=TensorProto.FLOAT16,
                             name=f"cast_in_{v.name}") for v in float_inputs]
    tail = [helper.make_node("Cast", [renames[v.name]], [v.name], to=TensorProto.FLOAT,
                             name=f"cast_out_{v.name}") for v in float_outputs]
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)

    # Intermediate types changed; let shape inference recompute them.
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
