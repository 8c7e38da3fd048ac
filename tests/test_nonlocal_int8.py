"""INT8 of non-local attention: where NNCF's Q/DQ go around the attention MatMuls, per target.

The placement per target and its measurements are in ``edgevid/compress/quantize.py``'s docstring
(``benchmarks/bench_nonlocal_int8.py``). Here: a tiny network with two non-local blocks, one attending
over more keys than TensorRT's INT8 attention limit and one over fewer, quantized for each target by
the real NNCF; then the zoo's NL-I3D (8 x 64 px) through ``edgevid.pipeline.export(precision="int8")`` (23 s here).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgevid.compress import attention, qdq
from edgevid.compress.calibration import CalibrationSet
from edgevid.compress.quantize import quantize_onnx, recipe_for
from edgevid.export.onnx import export_onnx
from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.continual import to_continual
from edgevid.models.non_local import NonLocal3d

FRAMES, SIZE = 4, 24  # nl1 attends over 4 x 12 x 12 = 576 keys, nl2 over 4 x 6 x 6 = 144

# The decision (quantize.py's docstring): per target, whether each block's (MatMul(q, k), MatMul(weights, v))
# runs in INT8. TensorRT: both in float above 512 keys.
EXPECTED = {"onnxruntime": {"net.nl1": (True, False), "net.nl2": (True, False)},
            "openvino": {"net.nl1": (True, False), "net.nl2": (True, False)},
            "tensorrt": {"net.nl1": (False, False), "net.nl2": (True, True)}}


class _TwoBlocks(nn.Module):
    """(N, 3, T, H, W): stem -> non-local -> strided conv -> non-local -> pool -> classifier (a Gemm, never attention)."""

    def __init__(self, mode: str = "embedded_gaussian") -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 16, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU())
        self.nl1 = NonLocal3d(16, mode=mode)
        self.down = nn.Sequential(nn.Conv3d(16, 32, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.ReLU())
        self.nl2 = NonLocal3d(32, mode=mode)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(32, 5)
        with torch.no_grad():  # a zero-initialised output BatchNorm makes a block the identity
            for block in (self.nl1, self.nl2):
                block.conv_out.bn.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.nl2(self.down(self.nl1(self.stem(x))))).flatten(1))


def _export(mode: str, causal: bool = False) -> onnx.ModelProto:
    """The clip model as export writes it; ``causal``: the streaming twin's clip form (keys masked by Where)."""
    torch.manual_seed(0)
    model = Clip3DClassifier(_TwoBlocks(mode), "fc", name="tiny")
    if causal:
        model = to_continual(model, frames=FRAMES, size=SIZE)
    return export_onnx(model.eval(), (torch.randn(2, FRAMES, 3, SIZE, SIZE),), ["frames"], ["logits"],
                       opset=17, dynamic_batch=True)


@pytest.fixture(scope="module")
def tiny() -> onnx.ModelProto:
    return _export("embedded_gaussian")


def _calibration(count: int = 4) -> CalibrationSet:
    rng = np.random.default_rng(0)
    samples = [{"frames": rng.standard_normal((1, FRAMES, 3, SIZE, SIZE)).astype(np.float32)} for _ in range(count)]
    return CalibrationSet(samples, count, "random frames", "none")


def test_softmax_dot_product_and_masked_attention_are_found_and_nothing_else(tiny):
    """MatMul -> Softmax -> MatMul (embedded gaussian), MatMul -> Div -> MatMul (dot product) and the causal block's
    MatMul -> Where -> Softmax -> MatMul, with the keys each attends over and its block; the classifier's Gemm and
    the convs are not attention."""
    cases = ((tiny, True, False), (_export("dot_product"), False, False), (_export("embedded_gaussian", True), True, True))
    for model, softmax, masked in cases:
        found = attention.find_attention(model)
        assert [(a.label, a.keys, a.softmax) for a in found] == [("net.nl1", 576, softmax), ("net.nl2", 144, softmax)]
        ops = {n.name: n.op_type for n in model.graph.node}
        assert ("Where" in ops.values()) == masked
        assert all(ops[a.qk] == ops[a.av] == "MatMul" for a in found)
        assert len({a.qk for a in found} | {a.av for a in found}) == 4
        assert sum(op == "MatMul" for op in ops.values()) == 4 and "Gemm" in ops.values()


def test_float_matmuls_follows_the_roles_and_the_key_limit(tiny):
    found = attention.find_attention(tiny)
    (a1, a2) = found
    assert attention.float_matmuls(found, ()) == []
    assert attention.float_matmuls(found, ("qk",)) == [a1.qk, a2.qk]
    assert attention.float_matmuls(found, (), max_int8_keys=512) == [a1.qk, a1.av]
    assert attention.float_matmuls(found, ("av",), max_int8_keys=512) == [a1.qk, a1.av, a2.av]
    with pytest.raises(ValueError, match="roles"):
        attention.float_matmuls(found, ("softmax",))


@pytest.mark.parametrize("target", sorted(EXPECTED))
def test_the_quantized_graph_places_the_attention_as_the_target_recipe_says(tiny, target):
    """In the QDQ graph: an attention MatMul is INT8 exactly when both its inputs come from DequantizeLinear, as
    decided per target; every conv and the classifier still have INT8 weights; the info the manifest records
    counts the float MatMuls and names their blocks."""
    result = quantize_onnx(tiny, _calibration(), target=target)
    rows = {r["label"]: r for r in attention.placement(result.model, attention.find_attention(tiny))}
    assert {label: (r["qk"]["int8"], r["av"]["int8"]) for label, r in rows.items()} == EXPECTED[target]
    for r in rows.values():  # a float MatMul has no DequantizeLinear input at all: NNCF's scope, not a half
        for role in attention.ROLES:
            assert r[role]["dq_inputs"] == [r[role]["int8"]] * 2, (target, r)
        assert r["softmax_output_quantized"] == r["av"]["int8"]
    weighted = [n for n in result.model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(qdq.quantized_weighted_layers(result.model)) == len(weighted) == 11  # stem, down, 2 x (g, theta, phi, conv_out), fc
    assert result.info["float_layers"] == []
    recipe = recipe_for(target)
    floats = {role: sum(not r[role]["int8"] for r in rows.values()) for role in attention.ROLES}
    assert result.info["attention"]["blocks"] == 2 and result.info["attention"]["float"] == floats
    assert list(result.info["recipe"]["float_attention"]) == list(recipe.float_attention)
    named = {s.split(" ")[0] for s in result.info["attention"]["float_in"]}
    assert named == {label for label, r in rows.items() if not (r["qk"]["int8"] and r["av"]["int8"])}


@pytest.mark.slow  # 25-45 s: NNCF on an R50; the placement itself is checked above on a small graph
def test_nl_i3d_int8_export_runs_with_its_accuracy_check_and_records_the_float_attention(tmp_path):
    from edgevid.models import build_model
    from edgevid.models.batchnorm import recalibrate_batchnorm
    from edgevid.models.weights import save_checkpoint
    from edgevid.pipeline import export
    from edgevid.runtime.crosscheck import onnxruntime_runner

    frames, size = 8, 64
    torch.manual_seed(0)
    model = build_model("i3d-nl-resnet50", num_classes=11)
    recalibrate_batchnorm(model, [torch.randn(2, frames, 3, size, size)])
    for block in model.modules():
        if isinstance(block, NonLocal3d):
            with torch.no_grad():
                block.conv_out.bn.weight.fill_(1.0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model.eval(), "i3d-nl-resnet50", [f"c{i}" for i in range(11)], {"num_classes": 11})
    manifest = export("i3d-nl-resnet50", tmp_path / "int8", checkpoint=ckpt, mode="clip", precision="int8",
                      frames=frames, size=size, calib_size=4, progress=False)
    int8 = manifest.build["int8"]
    assert int8["int8_layers"] > 0 and "clip_top1_agreement" in int8["accuracy"]
    expected = EXPECTED["onnxruntime"]["net.nl1"]  # the same for every block
    assert int8["attention"]["blocks"] == 5
    assert int8["attention"]["float"] == {"qk": 5 * (not expected[0]), "av": 5 * (not expected[1])}
    assert len(int8["attention"]["float_in"]) == 5
    assert all(".non_local_block (" in s for s in int8["attention"]["float_in"])
    out = onnxruntime_runner(tmp_path / "int8" / "model.onnx")({"frames": np.zeros((1, frames, 3, size, size), np.float32)})
    assert np.isfinite(out["logits"]).all()
