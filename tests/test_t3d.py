"""T3D-121 (Diba et al. 2017): Table 1's network, its Temporal Transition Layers, its causal stream, its exports.

The registry-wide tests (test_zoo3d.py, test_streaming3d.py) build, cost, export and stream
``t3d-densenet121`` and its ``-online`` twin like every 3D entry; here: what is T3D's own.
The network is big (244 GMACs per 32 x 224 x 224 clip), so the checks run at 64 px, and its
exports are ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevid.models import build_model

# Table 1 of the paper (T3D-121): the TTL branch kernels as (T, H, W), the bold numbers being
# the temporal depths, and the output sizes (side, frames) each dense block runs at for a
# 32 x 224 x 224 clip. 128 channels per branch: the authors' code (the table gives none).
TABLE1_TTL = (((1, 1, 1), (3, 3, 3), (6, 3, 3)),
              ((1, 1, 1), (3, 3, 3), (4, 3, 3)),
              ((1, 1, 1), (3, 3, 3), (4, 3, 3)))
TABLE1_BLOCKS = ((6, 56, 16), (12, 28, 8), (24, 14, 4), (16, 7, 2))  # (layers, side, frames)
TTL_BRANCH = 128


def _table1_cost(classes: int = 400) -> tuple[int, int]:
    """(parameters, multiply-accumulates per clip) of T3D-121, counted by hand from Table 1.

    Convs and the classifier count MACs (what FlopCounterMode sees; BN, ReLU and pools are
    not counted there either); parameters include the BatchNorms' weight and bias.
    """
    params = 3 * 64 * 3 * 7 * 7 + 2 * 64  # conv0 (7x7x3, 64: DenseNet-121's stem), norm0
    macs = 3 * 64 * 3 * 7 * 7 * (112 * 112 * 16)
    channels = 64
    for i, (layers, side, frames) in enumerate(TABLE1_BLOCKS):
        voxels = side * side * frames
        for j in range(layers):
            c = channels + 32 * j  # growth 32, bottleneck 4 x 32 = 128
            params += 2 * c + c * 128 + 2 * 128 + 128 * 32 * 27
            macs += (c * 128 + 128 * 32 * 27) * voxels
        channels += 32 * layers
        if i < len(TABLE1_TTL):  # a TTL runs at its dense block's size (the pool follows it)
            for t, h, w in TABLE1_TTL[i]:
                params += 2 * channels + channels * TTL_BRANCH * t * h * w
                macs += channels * TTL_BRANCH * t * h * w * voxels
            channels = TTL_BRANCH * len(TABLE1_TTL[i])
    params += 2 * channels + channels * classes + classes  # norm5, classifier
    macs += channels * classes
    return params, macs


def test_parameters_and_macs_are_table_1s():
    """Params exactly, MACs to cost.measure's 3 decimals (GMACs), against the count derived from Table 1.

    The paper states no parameter or FLOP figure for T3D: the reference is Table 1's layers and
    output sizes (with the authors' code's 128 channels per TTL branch), counted by hand above.
    A wrong stride (pool0 halving time, as the authors' DenseNet3D.py does) or padding (an
    even-depth branch computing one frame too many) changes the MACs.
    """
    from edgevid.models.cost import measure

    params, macs = _table1_cost()
    cost = measure("t3d-densenet121")
    assert cost["params"] == params == sum(p.numel() for p in build_model("t3d-densenet121").parameters())
    assert cost["gmacs_per_clip"] == pytest.approx(macs / 1e9, abs=1e-3)
    assert 29e6 < params < 31e6 and 240 < macs / 1e9 < 250  # the figures quoted in the report


def _impulse_support(branch: torch.nn.Module, channels: int, frames: int, at: int) -> list[int]:
    """The output frames of ``branch`` that a single non-zero input frame ``at`` reaches."""
    x = torch.zeros(1, channels, frames, 4, 4)
    x[:, :, at] = torch.rand(1, channels, 4, 4) + 0.5  # positive: through the ReLU
    with torch.no_grad():
        y = branch(x)
    assert y.shape[2] == frames  # every branch keeps the clip length: the concat lines up
    return [t for t in range(frames) if y[:, :, t].abs().max() > 0]


def test_each_ttl_concatenates_branches_of_table_1s_temporal_depths():
    clip = build_model("t3d-densenet121").eval()
    online = build_model("t3d-densenet121-online").eval()
    ttls = clip.net.ttls
    assert [tuple(tuple(b.conv.kernel_size) for b in ttl.branches) for ttl in ttls] == list(TABLE1_TTL)
    assert [ttl.branches[0].conv.in_channels for ttl in ttls] == [256, 768, 1152]  # DenseNet-121's growth
    assert all(b.conv.out_channels == TTL_BRANCH for ttl in ttls for b in ttl.branches)
    ttl, frames, at = ttls[0], 12, 5
    # The concat is b1, b2, b3 in that order, then the 2x2x2 average pool.
    x = torch.randn(1, 256, frames, 4, 4)
    with torch.no_grad():
        y = ttl(x)
        assert y.shape == (1, 384, frames // 2, 2, 2)
        for i, branch in enumerate(ttl.branches):
            want = torch.nn.functional.avg_pool3d(branch(x), 2)
            assert torch.allclose(y[:, 128 * i: 128 * (i + 1)], want, atol=1e-5), i
    # Each branch's temporal reach is its depth d: "same" in the clip model ((d - 1) // 2 frames
    # before the input frame... d // 2 after: an even depth reaches one further ahead), causal in
    # the streaming twin (the input frame and the d - 1 after it: no branch answers early).
    for branch, causal, (d, _, _) in zip(ttl.branches, online.net.ttls[0].branches, TABLE1_TTL[0]):
        assert _impulse_support(branch, 256, frames, at) == list(range(at - d // 2, at + (d - 1) // 2 + 1)), d
        assert _impulse_support(causal, 256, frames, at) == list(range(at, at + d)), d


def _online_model(classes: int = 5) -> torch.nn.Module:
    """The streaming twin with random BatchNorm affines and statistics of random clips (as test_streaming3d)."""
    from edgevid.models.batchnorm import recalibrate_batchnorm

    torch.manual_seed(0)
    model = build_model("t3d-densenet121-online", num_classes=classes, global_rng=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return recalibrate_batchnorm(model, [torch.randn(2, 16, 3, 64, 64)]).eval()


def test_stepping_the_online_model_equals_its_causal_clip_model():
    """16 frames at 64 px, one by one: the first prediction (step 15, total temporal stride 16) is the causal clip's.

    Every state is in that path; the depth-6 branch's (an even kernel, 5 frames) is dropped
    once to show it is used. The full contract (34 frames, every step, states dropped) is
    test_streaming3d's, ``slow`` for this network.
    """
    from test_streaming3d import _rel, _step

    from edgevid.models.streaming import to_streaming

    model = _online_model()
    assert (model.hold.period, model.hold.offset) == (16, 15)
    clip = torch.randn(1, 16, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    streaming = to_streaming(model).eval()
    assert "net.features.ttl1.b3.conv" in streaming.state_paths
    outs = _step(streaming, clip)
    with torch.no_grad():
        want = model(clip)
    assert _rel(outs[15], want) < 1e-4, _rel(outs[15], want)
    assert all(float(o.abs().max()) == 0.0 for o in outs[:15])  # held: nothing predicted before the first window
    lost = _step(streaming, clip, drop=streaming.state_paths.index("net.features.ttl1.b3.conv"))
    assert _rel(lost[15], want) > 1e-4


def _calibrated_clip_model(classes: int, frames: int, size: int) -> torch.nn.Module:
    from edgevid.models.batchnorm import recalibrate_batchnorm

    torch.manual_seed(0)
    model = build_model("t3d-densenet121", num_classes=classes, global_rng=True)
    return recalibrate_batchnorm(model, [torch.randn(2, frames, 3, size, size)]).eval()


@pytest.mark.slow  # 34 s here: the export and its ONNX Runtime / OpenVINO validations
def test_clip_export_matches_torch_in_onnxruntime_and_openvino(tmp_path):
    from edgevid.export.api import export_model
    from edgevid.export.openvino import openvino_runner
    from edgevid.models.weights import save_checkpoint
    from edgevid.runtime.crosscheck import onnxruntime_runner

    frames, size = 16, 64
    model = _calibrated_clip_model(6, frames, size)
    save_checkpoint(tmp_path / "m.pt", model, "t3d-densenet121", [f"c{i}" for i in range(6)], {"num_classes": 6})
    manifest = export_model("t3d-densenet121", tmp_path / "art", checkpoint=tmp_path / "m.pt", mode="clip",
                            target="openvino", frames=frames, size=size, progress=False)
    assert {b: v["passed"] for b, v in manifest.validation.items()} == {"onnxruntime": True, "openvino": True}
    clip = torch.randn(2, frames, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(clip).numpy()
    for run in (onnxruntime_runner(tmp_path / "art" / "model.onnx"), openvino_runner(tmp_path / "art" / "model.xml")):
        got = run({"frames": clip.numpy()})["logits"]
        assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-3


@pytest.mark.slow  # 54 s here: NNCF calibration, then the INT8 accuracy check on 66 synthetic clips
def test_int8_export_runs_with_its_accuracy_check(tmp_path):
    from edgevid.models.weights import save_checkpoint
    from edgevid.pipeline import export
    from edgevid.runtime.crosscheck import onnxruntime_runner

    frames, size = 16, 64
    model = _calibrated_clip_model(11, frames, size)
    save_checkpoint(tmp_path / "m.pt", model, "t3d-densenet121", [f"c{i}" for i in range(11)], {"num_classes": 11})
    manifest = export("t3d-densenet121", tmp_path / "int8", checkpoint=tmp_path / "m.pt", mode="clip",
                      precision="int8", frames=frames, size=size, calib_size=4, progress=False)
    int8 = manifest.build["int8"]
    # Every conv (the TTL branches' behind their zero-frame padding too) and the classifier run in INT8.
    layers = sum(isinstance(m, (torch.nn.Conv3d, torch.nn.Linear)) for m in model.modules())
    assert int8["int8_layers"] == layers == 127 and int8["float_layers"] == []
    assert 0.0 <= int8["accuracy"]["clip_top1_agreement"] <= 1.0 and int8["accuracy"]["clips"]
    out = onnxruntime_runner(tmp_path / "int8" / "model.onnx")({"frames": np.zeros((1, frames, 3, size, size), np.float32)})
    assert out["logits"].shape == (1, 11) and np.isfinite(out["logits"]).all()
