"""The attention inside an ONNX graph (non-local blocks): which MatMuls, and whether INT8 quantized them.

An attention is two MatMuls between activations (neither has a weight initializer): the scores
``MatMul(q, k)`` ("qk"), then, through element-wise steps (scale ``Div``/``Mul``, mask ``Where``/
``Add``, ``Softmax``, movement ops), the mix ``MatMul(weights, v)`` ("av"). That covers the three
non-local modes as exported (embedded gaussian / gaussian: MatMul -> Softmax -> MatMul; dot product:
MatMul -> Div -> MatMul) and the causal block's ``Where(-inf)`` masking. A Conv, the classifier's
Gemm or a MatMul with a weight is never part of one. ``edgevid.compress.quantize`` keeps the
MatMuls its recipe names in float by listing them in NNCF's IgnoredScope; ``placement`` reads back
what a QDQ graph did with them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import onnx

from edgevid.compress import qdq

ROLES = ("qk", "av")
# Steps allowed between the two MatMuls of one attention (Q/DQ: a quantized graph's).
_BETWEEN = frozenset({"Softmax", "Div", "Mul", "Add", "Sub", "Where", "Cast", qdq.Q, qdq.DQ}) | qdq.MOVEMENT_OPS - {"Concat"}
# Steps a MatMul input may come through from its DequantizeLinear (quantizing before or after is the same).
_PASS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool"})


@dataclass(frozen=True)
class Attention:
    """One attention: its two MatMul nodes, the keys each query attends over, and a readable label."""

    qk: str  # node name of MatMul(q, k)
    av: str  # node name of MatMul(weights, v)
    keys: int | None  # the scores' last dimension (None: not static)
    softmax: bool
    label: str  # the module the attention belongs to (common prefix of the layers around it)

    def node(self, role: str) -> str:
        return self.qk if role == "qk" else self.av


class _Maps(qdq._Graph):
    """qdq's producer / consumer maps, plus what counts as a constant here."""

    def constant(self, tensor: str) -> bool:
        node = self.producer.get(tensor)
        return tensor in self.inits or (node is not None and node.op_type in ("Constant", qdq.DQ)
                                        and all(self.constant(i) for i in node.input if i))


def _is_bmm(m: _Maps, node: onnx.NodeProto) -> bool:
    return node.op_type == "MatMul" and len(node.input) == 2 and not any(m.constant(i) for i in node.input)


def _mix_of(m: _Maps, scores: onnx.NodeProto) -> tuple[onnx.NodeProto, bool] | None:
    """The MatMul that takes ``scores``' output (through element-wise steps) as its weights, and whether a Softmax was on the way."""
    frontier, seen, softmax = [scores.output[0]], set(), False
    while frontier:
        tensor = frontier.pop()
        for node, i in m.consumers.get(tensor, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if _is_bmm(m, node) and i == 0:
                return node, softmax
            if node.op_type in _BETWEEN:
                softmax |= node.op_type == "Softmax"
                frontier.extend(node.output)
    return None


def _weighted_layer(m: _Maps, tensor: str, up: bool) -> str | None:
    """Module path of the first weighted layer reached from ``tensor`` (up: its producers, else its consumers)."""
    frontier, seen = [tensor], set()
    while frontier and len(seen) < 64:
        t = frontier.pop(0)
        if up:
            nodes = [m.producer[t]] if t in m.producer else []
        else:
            nodes = [n for n, _ in m.consumers.get(t, [])]
        for node in nodes:
            if node.name in seen:
                continue
            seen.add(node.name)
            weight = node.input[1] if node.op_type in qdq.WEIGHTED_OPS and len(node.input) > 1 else None
            if weight is not None and m.constant(weight):
                src = m.producer.get(weight)
                return qdq.module_path(src.input[0] if src is not None and src.op_type == qdq.DQ else weight)
            frontier.extend(node.input[:1] if up else node.output)
    return None


def _label(m: _Maps, qk: onnx.NodeProto, av: onnx.NodeProto) -> str:
    paths = [p for p in (_weighted_layer(m, qk.input[1], up=True), _weighted_layer(m, av.output[0], up=False)) if p]
    if len(paths) < 2:
        return qk.name
    common = []
    for a, b in zip(*(p.split(".") for p in paths)):
        if a != b:
            break
        common.append(a)
    return ".".join(common) or qk.name


def _static_last_dims(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes only label the attention; an exotic graph still quantizes
        return {}
    out = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value"):
            out[vi.name] = dims[-1].dim_value
    return out


def find_attention(model: onnx.ModelProto) -> list[Attention]:
    """Every attention of ``model`` (FP32 or QDQ), in graph order."""
    m = _Maps(model)
    dims: dict[str, int] | None = None
    found = []
    for node in model.graph.node:
        if not _is_bmm(m, node):
            continue
        mix = _mix_of(m, node)
        if mix is None:
            continue
        if dims is None:
            dims = _static_last_dims(model)
        found.append(Attention(node.name, mix[0].name, dims.get(node.output[0]), mix[1], _label(m, node, mix[0])))
    return found


def float_matmuls(attentions: Iterable[Attention], roles: Iterable[str], max_int8_keys: int | None = None) -> list[str]:
    """Node names to keep in float: the ``roles`` of every attention, and both MatMuls of one attending over
    more than ``max_int8_keys`` keys (or over a number the graph does not fix)."""
    roles = tuple(roles)
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"attention roles are {ROLES}, not {unknown}")
    names = []
    for a in attentions:
        too_long = max_int8_keys is not None and (a.keys is None or a.keys > max_int8_keys)
        names += [a.node(r) for r in ROLES if (r in roles or too_long) and a.node(r)]
    return names


def _from_dq(m: _Maps, tensor: str) -> bool:
    for _ in range(16):
        node = m.producer.get(tensor)
        if node is None:
            return False
        if node.op_type == qdq.DQ:
            return True
        if node.op_type not in _PASS:
            return False
        tensor = node.input[0]
    return False


def placement(model: onnx.ModelProto, attentions: Iterable[Attention] | None = None) -> list[dict[str, Any]]:
    """What a QDQ graph does with each attention: per MatMul, which inputs come from a DequantizeLinear
    (through movement ops), ``int8`` when both do; and whether the Softmax output is quantized.

    ``attentions``: found on the FP32 graph (their labels name the modules; NNCF keeps node names),
    by default found on ``model`` itself.
    """
    m = _Maps(model)
    nodes = {n.name: n for n in model.graph.node}
    rows = []
    for a in find_attention(model) if attentions is None else attentions:
        row: dict[str, Any] = {"label": a.label, "keys": a.keys}
        for role in ROLES:
            inputs = [_from_dq(m, i) for i in nodes[a.node(role)].input]
            row[role] = {"node": a.node(role), "dq_inputs": inputs, "int8": all(inputs)}
        row["softmax_output_quantized"] = a.softmax and row["av"]["dq_inputs"][0]
        rows.append(row)
    return rows


def summary(model: onnx.ModelProto, attentions: Iterable[Attention] | None = None) -> dict[str, Any]:
    """For the manifest (``build.int8.attention``): how many attentions, how many of each MatMul stayed in
    float, and where (``placement``'s arguments)."""
    rows = placement(model, attentions)
    return {"blocks": len(rows),
            "float": {role: sum(not r[role]["int8"] for r in rows) for role in ROLES},
            "float_in": [f"{r['label']} ({'+'.join(role for role in ROLES if not r[role]['int8'])})" for r in rows
                         if not (r["qk"]["int8"] and r["av"]["int8"])]}
