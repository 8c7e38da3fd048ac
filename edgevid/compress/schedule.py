"""The step counter's arithmetic in a streaming graph: what INT8 must leave in float.

A strided causal 3D stream (``edgevid.models.continual``) carries a step counter as a state
(``state_in.step_counter``): each step adds one modulo the longest period, and every strided
layer compares ``(t - offset) mod period`` with zero to know whether this step brings it a
real input. These are small integers in float tensors; NNCF treats the Adds and Subs like
activations and quantizes them, and a counter rounded by one step gates the wrong frames
(the validation caught ``state_out.step_counter`` off by up to a whole period). So every node
computed from the counter and constants alone stays out of quantization.
"""

from __future__ import annotations

import onnx

COUNTER_INPUT = "state_in.step_counter"


def counter_nodes(model: onnx.ModelProto, source: str = COUNTER_INPUT) -> list[str]:
    """Names of the nodes whose every input is ``source``, a constant, or the output of another such node."""
    graph = model.graph
    if source not in {i.name for i in graph.input}:
        return []
    derived = {source}
    constants = {i.name for i in graph.initializer}
    names: list[str] = []
    for node in graph.node:  # topological order: an input's producer comes first
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        inputs = [i for i in node.input if i]
        if inputs and any(i in derived for i in inputs) and all(i in derived or i in constants for i in inputs):
            derived.update(node.output)
            names.append(node.name)
    return names
