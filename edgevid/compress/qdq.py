"""Rewrites of NNCF's QDQ ONNX so that backends run it as integer kernels (why INT8 was slow).

Measured on streaming TSM-MobileNetV2 at 224 (AVX512-VNNI CPU, ONNX Runtime 1.31, one
thread, ``benchmarks/bench_compress.py``): the naive NNCF INT8 model ran 2.3x SLOWER than FP32
(9.8 vs 4.2 ms per frame); with the rewrites below INT8 takes 2.3 ms (1.8x faster than FP32;
1.65x with two threads). ORT's profiler showed why the naive graph was slow: only 13 of the 52 convolutions became ``QLinearConv``; the other
39 ran as float ``Conv`` wrapped in 108 DequantizeLinear + 66 QuantizeLinear nodes, and the
float convs lost the NCHWc layout the FP32 graph gets, so they were slower than in FP32.
ORT fuses ``DQ -> Conv -> Q`` only when (onnxruntime ``qdq_selectors.cc``)
``ConvNodeGroupSelector``: the input DQ and the output Q have the same integer type, the
activation scales are scalars, and the Conv's only consumer is that one Q. Four things in
the naive graph broke that:

1. Per-channel activation quantizers in front of every depthwise conv (NNCF's CPU hardware
   config allows them for DepthwiseConvolution). A per-channel activation scale cannot be
   a QLinearConv input, nor the output of the 1x1 conv before it: 34 convs unfused.
   Fix: per-tensor activations (``quantize.py``).
2. The temporal shift's Concat(state_in, x[:, fold:]). NNCF propagates the conv's input
   quantizer up through the Concat onto each of its inputs, so the shifted conv reads a
   plain float Concat: 10 convs unfused. Fix: NNCF ignores Concat (the quantizer stays on
   the conv input), and ``requantize_concat_inputs`` below gives every Concat input a
   Q/DQ with the Concat's own parameters, which ORT turns into ``QLinearConcat``.
3. The shift's state tap: the block output x feeds the residual Add through a quantizer,
   but also ``Slice(x)[:, :fold] -> state_out`` and ``Slice(x)[:, fold:] -> Concat`` in
   float, so the producing conv/add has non-Q consumers: 5 convs + 5 adds unfused.
   Fix: ``route_taps_through_quantizer`` makes those Slices read the dequantized x. The
   state output then carries x's quantization, which costs nothing: the next step
   quantizes the state with the same parameters anyway (unified in step 2).
4. Mixed integer types: NNCF emits uint8 for non-negative activations (after ReLU6) and
   int8 for signed ones (the residual stream), but QLinearConv needs input and output of
   the same type. ORT's own S8->U8 pass fixes this only for single-consumer Q/DQ pairs.
   Fix for ONNX Runtime: ``activations_to_uint8`` (int8 zp z -> uint8 zp z + 128, exact).
   TensorRT instead accepts only signed symmetric INT8: ``activations_to_int8`` maps uint8
   (zero point 0) to int8 with scale x 255/127 (one bit less for ReLU outputs, the same
   grid TensorRT's own calibrator would use). OpenVINO keeps NNCF's types: its oneDNN
   kernels are fastest with symmetric (zero point 0) activations, and a uint8 shift of
   128 made its 1x1 convs ~1.8x slower in PERF_COUNT.

After all four, ORT fuses all 52 convs, 10 adds and 10 concats (``fusion_report``).

Two more for ONNX Runtime, found with its profiler once every conv was an integer kernel
(``benchmarks/bench_int8.py``; each exact, the logits are bit-identical):

5. ``integer_states``: ORT runs the QLinearConvs channels-last, but the shift's states entered
   and left the graph as float NCHW, so every shift kept three Transposes and a Q/DQ pair (30
   Transposes, 20 Q/DQ per TSM step). The states now travel as the graph's own uint8 tensors,
   NHWC: ORT's layout pass cancels the Transposes and no Q/DQ is left at the boundary.
6. ``pad_narrow_conv_inputs``: the 3-channel stem missed MLAS's symmetric int8 conv (input
   channels must be a multiple of 4); a zero 4th channel puts it on that kernel.
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

Q, DQ = "QuantizeLinear", "DequantizeLinear"
# Ops that only move or select values: quantizing before or after them is the same thing.
MOVEMENT_OPS = frozenset({"Slice", "Split", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat"})
# Ops with weights: after quantization their weight input comes from a DequantizeLinear.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


class _Graph:
    """Producer/consumer maps over an ONNX graph, rebuilt after each structural edit."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.refresh()

    def refresh(self) -> None:
        self.inits = {i.name: i for i in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = collections.defaultdict(list)
        for n in self.graph.node:
            for i, name in enumerate(n.input):
                self.consumers[name].append((n, i))
        self.outputs = {o.name for o in self.graph.output}

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def params(self, node: onnx.NodeProto) -> tuple[bytes, bytes, int]:
        """Value identity of a Q/DQ node's (scale, zero point) for comparisons."""
        scale, zp = self.array(node.input[1]), self.array(node.input[2])
        return scale.tobytes(), zp.tobytes(), zp.dtype.num

    def is_activation_qdq(self, node: onnx.NodeProto) -> bool:
        """A Q/DQ on a runtime tensor (not a weight or bias initializer)."""
        return node.op_type in (Q, DQ) and node.input[0] not in self.inits and len(node.input) == 3 \
            and node.input[1] in self.inits and node.input[2] in self.inits

    def unique_name(self, base: str) -> str:
        taken = set(self.producer) | set(self.inits) | {n.name for n in self.graph.node} | \
            {i.name for i in self.graph.input}
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        return name


def route_taps_through_quantizer(model: onnx.ModelProto) -> int:
    """Let data-movement consumers of a quantized tensor read its dequantized copy (fix 3).

    For a tensor with exactly one QuantizeLinear consumer whose output feeds exactly one
    DequantizeLinear, every other consumer that only moves data (Slice, Concat, ...) is
    rewired to the DequantizeLinear's output. Returns the number of rewired inputs.
    """
    g = _Graph(model)
    rewired = 0
    for tensor, users in list(g.consumers.items()):
        if tensor in g.inits or tensor in g.outputs:
            continue
        quantizers = [n for n, _ in users if n.op_type == Q and g.is_activation_qdq(n)]
        others = [(n, i) for n, i in users if n.op_type != Q]
        if len(quantizers) != 1 or not others or any(n.op_type not in MOVEMENT_OPS for n, _ in others):
            continue
        after_q = g.consumers[quantizers[0].output[0]]
        if len(after_q) != 1 or after_q[0][0].op_type != DQ:
            continue
        dequantized = after_q[0][0].output[0]
        for node, i in others:
            node.input[i] = dequantized
            rewired += 1
    return rewired


def _trace_back(g: _Graph, tensor: str) -> onnx.NodeProto | None:
    """The DequantizeLinear a tensor comes from through data-movement ops, if any."""
    seen = 0
    while tensor in g.producer and seen < 16:
        node = g.producer[tensor]
        if node.op_type == DQ and g.is_activation_qdq(node):
            return node
        if node.op_type not in MOVEMENT_OPS or node.op_type == "Concat":
            return None
        tensor, seen = node.input[0], seen + 1
    return None


def _trace_forward(g: _Graph, tensor: str) -> onnx.NodeProto | None:
    """The QuantizeLinear a tensor reaches through single-consumer data-movement ops, if any."""
    for _ in range(16):
        users = g.consumers.get(tensor, [])
        if len(users) != 1 or tensor in g.outputs:
            return None
        node = users[0][0]
        if node.op_type == Q and g.is_activation_qdq(node):
            return node
        if node.op_type not in MOVEMENT_OPS or node.op_type == "Concat":
            return None
        tensor = node.output[0]
    return None


def requantize_concat_inputs(model: onnx.ModelProto) -> int:
    """Give every input of a quantized Concat a Q/DQ with the Concat's parameters (fix 2).

    A Concat whose output reaches a QuantizeLinear (through data-movement ops) takes that
    quantizer's parameters; when all its inputs that come from quantized tensors share one
    set of parameters (the temporal shift: state and x both belong to the residual stream),
    the Concat's quantizer is switched to those, so the inserted requantization is exact.
    Inputs that already come from an identical DequantizeLinear are left alone. Returns the
    number of Q/DQ pairs inserted.
    """
    inserted = 0
    changed = True
    while changed:  # nested concats: an outer one's new quantizers make the inner one eligible
        changed = False
        g = _Graph(model)
        for concat in [n for n in g.graph.node if n.op_type == "Concat"]:
            q_out = _trace_forward(g, concat.output[0])
            if q_out is None:
                continue
            sources = [_trace_back(g, name) for name in concat.input]
            distinct = {g.params(s) for s in sources if s is not None}
            if len(distinct) == 1:
                ref = next(s for s in sources if s is not None)
                _set_params(g, q_out, ref.input[1], ref.input[2])
            todo = [j for j, name in enumerate(concat.input)
                    if not (name in g.producer and g.producer[name].op_type == DQ
                            and g.is_activation_qdq(g.producer[name]) and g.params(g.producer[name]) == g.params(q_out))]
            new_nodes = []
            for j in todo:
                base = g.unique_name(f"{concat.name or 'concat'}_in{j}")
                q_name, dq_name = f"{base}_q", f"{base}_dq"
                new_nodes.append(helper.make_node(Q, [concat.input[j], q_out.input[1], q_out.input[2]], [q_name],
                                                  name=f"{base}_Q"))
                new_nodes.append(helper.make_node(DQ, [q_name, q_out.input[1], q_out.input[2]], [dq_name],
                                                  name=f"{base}_DQ"))
                concat.input[j] = dq_name
            if new_nodes:
                g.graph.node.extend(new_nodes)
                inserted += len(todo)
                changed = True
                break  # maps are stale: start over
    topological_sort(model)
    return inserted


def _set_params(g: _Graph, q: onnx.NodeProto, scale: str, zero_point: str) -> None:
    """Point a QuantizeLinear and its DequantizeLinear consumers at other parameters."""
    q.input[1], q.input[2] = scale, zero_point
    # The new zero point may be of the other integer type (OpenVINO keeps NNCF's mix of uint8 after a ReLU and
    # int8 elsewhere): the recorded type of the quantized tensor would then contradict it (T3D's dense concats).
    for stale in [v for v in g.graph.value_info if v.name == q.output[0]]:
        g.graph.value_info.remove(stale)
    for node, _ in g.consumers[q.output[0]]:
        if node.op_type == DQ:
            node.input[1], node.input[2] = scale, zero_point


def _activation_params(g: _Graph) -> list[tuple[str, str]]:
    """(scale, zero point) initializer names used by activation Q/DQ nodes."""
    pairs = {(n.input[1], n.input[2]) for n in g.graph.node if g.is_activation_qdq(n)}
    weight_params = {name for n in g.graph.node if n.op_type == DQ and n.input[0] in g.inits for name in n.input[1:]}
    shared = sorted({name for pair in pairs for name in pair} & weight_params)
    if shared:
        raise ValueError(f"quantization parameters {shared[:3]} are shared by weights and activations")
    return sorted(pairs)


def activations_to_uint8(model: onnx.ModelProto) -> int:
    """int8 activation Q/DQ -> uint8 with the zero point moved by 128 (exact; fix 4, ONNX Runtime)."""
    g = _Graph(model)
    converted = set()
    for _, zp_name in _activation_params(g):
        zp = g.array(zp_name)
        if zp.dtype == np.int8 and zp_name not in converted:
            g.inits[zp_name].CopyFrom(numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), zp_name))
            converted.add(zp_name)
    _reinfer(model)
    return len(converted)


def activations_to_int8(model: onnx.ModelProto) -> int:
    """uint8 activation Q/DQ (zero point 0) -> int8 symmetric, scale x 255/127 (fix 4, TensorRT)."""
    g = _Graph(model)
    converted = 0
    renamed: dict[tuple[str, str], tuple[str, str]] = {}
    for scale_name, zp_name in _activation_params(g):
        zp = g.array(zp_name)
        if zp.dtype != np.uint8:
            continue
        if np.any(zp != 0):
            raise ValueError(f"TensorRT needs symmetric INT8 but {zp_name} has a non-zero zero point; "
                             "quantize with the PERFORMANCE (symmetric) preset")
        new_scale, new_zp = g.unique_name(scale_name + "_s8"), g.unique_name(zp_name + "_s8")
        scale = g.array(scale_name).astype(np.float32) * np.float32(255.0 / 127.0)
        g.graph.initializer.extend([numpy_helper.from_array(scale, new_scale),
                                    numpy_helper.from_array(np.zeros_like(zp, dtype=np.int8), new_zp)])
        g.inits = {i.name: i for i in g.graph.initializer}
        renamed[(scale_name, zp_name)] = (new_scale, new_zp)
        converted += 1
    for node in g.graph.node:
        if g.is_activation_qdq(node) and (node.input[1], node.input[2]) in renamed:
            node.input[1], node.input[2] = renamed[(node.input[1], node.input[2])]
    _drop_unused_initializers(model)
    _reinfer(model)
    return converted


def topological_sort(model: onnx.ModelProto) -> None:
    """Reorder nodes so every input is produced before use (ONNX requires it)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"the graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _reinfer(model: onnx.ModelProto) -> None:
    # Integer types of Q outputs changed; let shape inference recompute every value type.
    del model.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.value_info.extend(inferred.graph.value_info)


def float_weighted_layers(model: onnx.ModelProto) -> list[str]:
    """Weighted layers (Conv/Gemm/MatMul) whose weights are still float, named by their weight.

    Names are the weight initializers' module paths (``backbone.features.3.conv.0.0.net``),
    so they can be matched against the torch model and ``--ignore``.
    """
    g = _Graph(model)
    kept = []
    for node in g.graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in g.inits:
            kept.append(module_path(node.input[1]))
    return kept


def quantized_weighted_layers(model: onnx.ModelProto) -> list[str]:
    """Weighted layers whose weights come from a DequantizeLinear (INT8)."""
    g = _Graph(model)
    names = []
    for node in g.graph.node:
        src = g.producer.get(node.input[1]) if node.op_type in WEIGHTED_OPS and len(node.input) > 1 else None
        if src is not None and src.op_type == DQ and src.input[0] in g.inits:
            names.append(module_path(src.input[0]))
    return names


def module_path(weight_name: str) -> str:
    """``streaming.model.backbone.x.weight`` (or an NNCF-suffixed copy) -> ``backbone.x``."""
    name = weight_name
    for prefix in ("streaming.model.", "model.", "streaming."):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    for suffix in (".weight", ".bias"):
        if suffix in name:
            name = name[: name.rindex(suffix)]
    return name


def fusion_report(model: onnx.ModelProto | str | os.PathLike, level: str = "extended") -> dict[str, Any]:
    """What ONNX Runtime's CPU provider makes of a model: integer vs float compute nodes.

    Runs ORT's graph optimizer at the EXTENDED level (where QDQ groups are fused into
    QLinear*/QGemm kernels), or at ``level="all"`` (ORT's default: the NHWC layout pass too,
    which adds the Transposes around ops it cannot run channels-last) and counts the result;
    ``float_compute`` lists weighted ops left in float, the sign of an unfusable quantizer
    placement.
    """
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.onnx")
        if data is not None:
            with open(src, "wb") as fh:
                fh.write(data)
        else:
            src = str(model)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                         "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
        opts.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath)
    counts = collections.Counter(n.op_type for n in optimized.graph.node)
    integer = {k: v for k, v in counts.items() if k.startswith(("QLinear", "QGemm", "MatMulInteger", "ConvInteger"))}
    floating = {k: v for k, v in counts.items() if k in WEIGHTED_OPS or k in ("FusedConv", "FusedGemm", "Add")}
    return {"integer_ops": integer, "float_compute": floating,
            "quantize_nodes": counts.get(Q, 0), "dequantize_nodes": counts.get(DQ, 0),
            "transpose_nodes": counts.get("Transpose", 0)}


def count_ops(model: onnx.ModelProto, types: Iterable[str]) -> int:
    """How many nodes of the given op types a model has."""
    wanted = set(types)
    return sum(1 for n in model.graph.node if n.op_type in wanted)


def pad_narrow_conv_inputs(model: onnx.ModelProto, multiple: int = 4) -> int:
    """Zero-pad the input channels of quantized convs to a multiple of ``multiple`` (ONNX Runtime).

    ORT's fast symmetric int8 convolution (MLAS ``ConvSym``, taken for QLinearConv with
    symmetric weights) needs the input channels to be a multiple of 4; the 3-channel stem falls
    back to im2col + a generic int8 GEMM, slower than the same conv in FP32 (ORT profiler,
    TSM-MobileNetV2 224 px: 241 vs 214 us). One more channel (a Pad of the quantized input with
    its zero point, between its QuantizeLinear and DequantizeLinear, and a zero slice in the
    weights) makes it eligible: exact, since the padded channel meets zero weights. 2-D convs
    only (ORT runs only those channels-last). Padding the uint8 tensor rather than the float
    one moves a quarter of the bytes (measured: the stream step 2% faster). Returns the number
    of convs padded.
    """
    g = _Graph(model)
    padded = 0
    for conv in [n for n in g.graph.node if n.op_type == "Conv"]:
        w_dq, x_dq = g.producer.get(conv.input[1]), g.producer.get(conv.input[0])
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if group != 1 or w_dq is None or w_dq.op_type != DQ or w_dq.input[0] not in g.inits \
                or x_dq is None or x_dq.op_type != DQ or not g.is_activation_qdq(x_dq):
            continue
        x_q = g.producer.get(x_dq.input[0])
        weight = g.array(w_dq.input[0])
        extra = -weight.shape[1] % multiple
        if not extra or weight.ndim != 4 or x_q is None or x_q.op_type != Q or not g.is_activation_qdq(x_q) \
                or g.array(x_q.input[2]).ndim != 0 \
                or len(g.consumers[x_q.output[0]]) != 1 \
                or len(g.consumers[x_dq.output[0]]) != 1 or len(g.consumers[w_dq.input[0]]) != 1:
            continue
        zeros = np.zeros((weight.shape[0], extra, *weight.shape[2:]), weight.dtype)
        g.inits[w_dq.input[0]].CopyFrom(numpy_helper.from_array(np.concatenate([weight, zeros], axis=1), w_dq.input[0]))
        rank = weight.ndim
        pads = np.zeros(2 * rank, np.int64)
        pads[rank + 1] = extra  # end of the channel axis
        pads_name, out = g.unique_name(f"{conv.name}_channel_pads"), g.unique_name(f"{x_q.output[0]}_channel_padded")
        g.graph.initializer.append(numpy_helper.from_array(pads, pads_name))
        g.graph.node.append(helper.make_node("Pad", [x_q.output[0], pads_name, x_q.input[2]], [out], name=f"{out}_Pad"))
        x_dq.input[0] = out
        padded += 1
        g.refresh()
    if padded:
        topological_sort(model)
        _reinfer(model)
    return padded


def integer_states(model: onnx.ModelProto, states: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Carry the shift states across steps as the integers the graph computes on, channels last.

    In the QDQ graph a state enters as float, is quantized, and joins the conv input through a
    QLinearConcat; it leaves as a slice of a dequantized tensor. ONNX Runtime runs the convs
    in NHWC, so each shift also costs three Transposes (the state, the slice of x, the concat
    back) plus a Quantize and a Dequantize: 30 Transposes and 20 Q/DQ nodes per TSM step,
    a sixth of the INT8 step. Rewritten: ``state_in`` is the quantized tensor itself (NHWC),
    read by a Transpose that ORT's layout pass cancels against its own, and ``state_out`` is
    the slice of the quantized x, transposed to NHWC. The values are the same integers
    the float graph computed (the state's quantizer has x's parameters, see
    ``requantize_concat_inputs``), so the logits are bit-identical.

    Only 4-D states whose pattern is exactly that are rewritten. Returns, per rewritten state
    path, its encoding: dtype, NHWC layout, ``scale`` and ``zero_point`` (the float value is
    ``(q - zero_point) * scale``, and the zero state is ``zero_point``).
    """
    g = _Graph(model)
    inputs = {i.name: i for i in g.graph.input}
    outputs = {o.name: o for o in g.graph.output}
    encodings: dict[str, dict[str, Any]] = {}
    for pair in states:
        if len(pair.shape) != 4 or pair.input not in inputs or pair.output not in outputs:
            continue
        users = g.consumers.get(pair.input, [])
        q_in = users[0][0] if len(users) == 1 else None
        tap = g.producer.get(pair.output)
        dq = g.producer.get(tap.input[0]) if tap is not None and tap.op_type == "Slice" else None
        if q_in is None or q_in.op_type != Q or not g.is_activation_qdq(q_in) or dq is None or dq.op_type != DQ \
                or not g.is_activation_qdq(dq) or g.params(dq) != g.params(q_in) or pair.output in g.consumers:
            continue
        zero_point = g.array(q_in.input[2])
        elem = helper.np_dtype_to_tensor_dtype(zero_point.dtype)
        raw = g.unique_name(f"{pair.output}_nchw")
        tap.input[0], tap.output[0] = dq.input[0], raw  # slice the integers, not their float copy
        g.graph.node.append(helper.make_node("Transpose", [raw], [pair.output], perm=[0, 2, 3, 1],
                                             name=f"{raw}_to_nhwc"))
        g.graph.node.remove(q_in)
        g.graph.node.append(helper.make_node("Transpose", [pair.input], [q_in.output[0]], perm=[0, 3, 1, 2],
                                             name=f"{pair.input}_to_nchw"))
        for value in (inputs[pair.input], outputs[pair.output]):
            tensor = value.type.tensor_type
            dims = [onnx.TensorShapeProto.Dimension() for _ in range(4)]
            for k, j in enumerate((0, 2, 3, 1)):
                dims[k].CopyFrom(tensor.shape.dim[j])
            tensor.elem_type = elem
            del tensor.shape.dim[:]
            tensor.shape.dim.extend(dims)
        encodings[pair.path] = {"dtype": zero_point.dtype.name, "layout": "NHWC",
                                "scale": float(g.array(q_in.input[1])), "zero_point": int(zero_point)}
        g.refresh()
    if encodings:
        topological_sort(model)
        _reinfer(model)
    return encodings
