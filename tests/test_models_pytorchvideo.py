"""X3D and SlowFast (4x16 and the hub's 8x8) against PyTorchVideo itself: same state-dict keys and shapes, same logits.

PyTorchVideo (a test-only dependency) builds the reference with the model zoo's hyperparameters
at a small test size; its BatchNorms get random affine parameters and statistics from one
train-mode pass (at init every bottleneck's last BN is zero, which would hide the residual
branches). Its ``{"model_state": ...}`` checkpoint goes through ``build_model(..., checkpoint=)``
and through the real ONNX exporter. The references are built with ``head_activation=None``:
PyTorchVideo's X3D head applies a softmax by default, edgevid models return raw logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("pytorchvideo")

import edgevid.models.slowfast  # noqa: E402,F401  (registers the entries until _FAMILY_MODULES lists them)
import edgevid.models.x3d  # noqa: E402,F401
from edgevid.models import build_model, get_config  # noqa: E402

SIZE = 64  # final feature map 2x2: the pooling still has something to average
BATCH = 2
TOL = 1e-4  # max |difference| relative to the output's peak (issue 25: 1e-4)
X3D_FRAMES = {"x3d-xs": 4, "x3d-s": 13, "x3d-m": 16}
SF_FRAMES = 16  # Fast path; Slow gets 16 // alpha = 2 (4x16) or 4 (8x8) frames
SF_ALPHA = {"slowfast-r50-4x16": 8, "slowfast-r50-8x8": 4}
SLOWFAST = list(SF_ALPHA)


def x3d_reference(frames: int, size: int) -> nn.Module:
    """PyTorchVideo's X3D-XS/S/M (the hub passes only the clip length and crop size)."""
    from pytorchvideo.models.x3d import create_x3d

    return create_x3d(input_clip_length=frames, input_crop_size=size, head_activation=None)


def slowfast_reference(frames: int, size: int, name: str = "slowfast-r50-4x16") -> nn.Module:
    """PyTorchVideo's SlowFast: 4x16 as the SlowFast repo's PTVSlowFast builds SLOWFAST_4x16_R50, 8x8 the hub's
    ``slowfast_r50`` itself (only the head's pooling kernels follow the small test clip)."""
    pool = ((frames // SF_ALPHA[name], size // 32, size // 32), (frames, size // 32, size // 32))
    if name == "slowfast-r50-8x8":
        from pytorchvideo.models.hub import slowfast_r50

        return slowfast_r50(pretrained=False, head_pool_kernel_sizes=pool)
    from pytorchvideo.models.slowfast import create_slowfast

    return create_slowfast(
        model_depth=50, slowfast_channel_reduction_ratio=(8,), slowfast_conv_channel_fusion_ratio=2,
        slowfast_fusion_conv_kernel_size=(5, 1, 1), slowfast_fusion_conv_stride=(8, 1, 1),
        head_pool_kernel_sizes=pool, head_activation=None)


def _reference(name: str, frames: int, size: int) -> nn.Module:
    return x3d_reference(frames, size) if name.startswith("x3d") else slowfast_reference(frames, size, name)


def pack_pathway(clip: torch.Tensor, alpha: int = 8, official: bool = True) -> list[torch.Tensor]:
    """(N, T, 3, H, W) -> [slow, fast] in (N, 3, T, H, W); ``official``: PackPathway's linspace."""
    fast = clip.transpose(1, 2)
    t = fast.shape[2]
    index = torch.linspace(0, t - 1, t // alpha).long() if official else torch.arange(0, t, alpha)
    return [torch.index_select(fast, 2, index), fast]


@dataclass
class Case:
    name: str
    frames: int
    reference: nn.Module  # eval mode, calibrated
    run_reference: object  # clip (N, T, 3, H, W) -> logits
    checkpoint: Path
    clip: torch.Tensor


def _calibrate(ref: nn.Module, feed, frames: int, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm3d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
            m.momentum = None  # the running stats become exactly this pass's statistics
            m.reset_running_stats()
    ref.train()
    with torch.no_grad():
        ref(feed(torch.randn(BATCH, frames, 3, SIZE, SIZE, generator=gen)))
    return ref.eval()


def _case(name: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
    torch.manual_seed(0)
    if name.startswith("x3d"):
        frames = X3D_FRAMES[name]
        ref, feed = x3d_reference(frames, SIZE), (lambda clip: clip.transpose(1, 2))
    else:
        frames = SF_FRAMES
        ref = slowfast_reference(frames, SIZE, name)
        feed = lambda clip: pack_pathway(clip, SF_ALPHA[name])  # noqa: E731
    _calibrate(ref, feed, frames, seed=1)
    path = tmp_path_factory.mktemp(name) / f"{name}_ptv.pt"
    torch.save({"model_state": ref.state_dict()}, path)

    def run(clip: torch.Tensor, model: nn.Module = ref) -> torch.Tensor:
        with torch.no_grad():
            return model(feed(clip))

    clip = torch.randn(BATCH, frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    return Case(name, frames, ref, run, path, clip)


_CASES: dict[str, Case] = {}


@pytest.fixture(scope="module")
def case(request, tmp_path_factory) -> Case:
    if request.param not in _CASES:
        _CASES[request.param] = _case(request.param, tmp_path_factory)
    return _CASES[request.param]


def _ours(c: Case) -> nn.Module:
    return build_model(c.name, checkpoint=c.checkpoint, input_size=SIZE, frames=c.frames).eval()


def _rel(a: torch.Tensor | np.ndarray, ref: torch.Tensor) -> float:
    return float((torch.as_tensor(a) - ref).abs().max() / ref.abs().max())


def test_zoo_entries_follow_the_published_settings():
    """Frames / stride / crop from the SlowFast repo's PyTorchVideo configs (and MODELS.md)."""
    for name, frames, stride, size, resize in (("x3d-xs", 4, 12, 160, 182), ("x3d-s", 13, 6, 160, 182),
                                               ("x3d-m", 16, 5, 224, 256), ("slowfast-r50-4x16", 32, 2, 224, 256),
                                               ("slowfast-r50-8x8", 32, 2, 224, 256)):
        c = get_config(name)
        got = (c.frames, c.frame_stride, c.input_size, c.resize, c.num_classes)
        assert got == (frames, stride, size, resize, 400)
        assert c.mean == (0.45,) * 3 and c.std == (0.225,) * 3 and not c.can_stream
    # The old name still works: the 4x16 model it always was.
    assert get_config("slowfast-r50") == get_config("slowfast-r50-4x16")


def test_public_weights_are_pytorchvideos_model_zoo():
    """URL, source and published top-1 / top-5 (10 clips x 3 crops) of docs/source/model_zoo.md."""
    zoo = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/"
    for name, file, top1, top5 in (("x3d-xs", "X3D_XS.pyth", 69.12, 88.63), ("x3d-s", "X3D_S.pyth", 73.33, 91.27),
                                   ("x3d-m", "X3D_M.pyth", 75.94, 92.72),
                                   ("slowfast-r50-4x16", "SLOWFAST_4x16_R50.pyth", 75.34, 91.89),
                                   ("slowfast-r50-8x8", "SLOWFAST_8x8_R50.pyth", 76.94, 92.69)):
        c = get_config(name)
        (w,) = c.weights
        published = dict(w.published)
        assert (w.name, w.url, w.file, w.source, w.labels_name) == ("kinetics400", zoo + file, file, "pytorchvideo",
                                                                    "kinetics400")
        assert (published["top1"], published["top5"]) == (top1, top5)
        assert published["views"] == f"10 clips of {c.frames} frames x 3 crops"  # 3 spatial x 10 temporal
        assert (w.num_classes, w.frames, w.input_size) == (400, c.frames, c.input_size)
        assert w.sha256 == w.hash_prefix == ""  # PyTorchVideo publishes no checksum


def test_hub_slowfast_r50_is_the_8x8_entry():
    """The hub's slowfast_r50 (the 8x8 model) loads into slowfast-r50-8x8; into the 4x16 entry it is
    refused by name, not with a list of shape mismatches."""
    from pytorchvideo.models.hub import slowfast_r50

    from edgevid.errors import EdgevidError
    from edgevid.models.weights import load_state

    state = slowfast_r50(pretrained=False).state_dict()
    load_state(build_model("slowfast-r50-8x8"), state)
    with pytest.raises(EdgevidError, match="slowfast-r50-8x8 checkpoint .* use --model slowfast-r50-8x8"):
        load_state(build_model("slowfast-r50"), state)


@pytest.mark.parametrize("name", ["x3d-xs", "x3d-s", "x3d-m", *SLOWFAST])
def test_state_dict_layout_is_pytorchvideos_at_the_zoo_size(name):
    """The zoo checkpoints' layout: PyTorchVideo built at the config's own clip (no forward)."""
    c = get_config(name)
    ref = _reference(name, c.frames, c.input_size)
    ours = {k.removeprefix("net."): v.shape for k, v in build_model(name).state_dict().items()}
    assert ours == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("case", ["x3d-xs", "x3d-s", "x3d-m", *SLOWFAST], indirect=True)
def test_pytorchvideo_checkpoint_gives_the_same_logits(case):
    ours = _ours(case)
    assert {k.removeprefix("net.") for k in ours.state_dict()} == set(case.reference.state_dict())
    expected = case.run_reference(case.clip)
    with torch.no_grad():
        got = ours(case.clip)
    assert got.shape == (BATCH, 400)
    assert _rel(got, expected) < TOL
    # The comparison can fail: one changed conv (for SlowFast, a lateral Fast->Slow one) is seen.
    key = ("blocks.3.res_blocks.1.branch2.conv_b.weight" if case.name.startswith("x3d")
           else "blocks.2.multipathway_fusion.conv_fast_to_slow.weight")
    perturbed = _reference(case.name, case.frames, SIZE)
    state = {k: v.clone() for k, v in case.reference.state_dict().items()}
    state[key][0] += 0.05
    perturbed.load_state_dict(state)
    assert _rel(got, case.run_reference(case.clip, perturbed.eval())) > TOL


@pytest.mark.parametrize("case", SLOWFAST, indirect=True)
def test_slowfast_samples_the_slow_path_like_packpathway(case):
    """One input: the graph picks linspace(0, T-1, T/alpha) (here frames 0 and 15, or 0, 5, 10, 15), not every alpha-th."""
    from edgevid.models.slowfast import slow_indices

    alpha = SF_ALPHA[case.name]
    # the zoo clip: PackPathway's choice
    assert slow_indices(32, alpha).tolist() == {8: [0, 10, 20, 31], 4: [0, 4, 8, 13, 17, 22, 26, 31]}[alpha]
    with torch.no_grad():
        got = _ours(case)(case.clip)
        strided = case.reference([t.contiguous() for t in pack_pathway(case.clip, alpha, official=False)])
    assert _rel(got, case.run_reference(case.clip)) < TOL
    assert _rel(got, strided) > TOL


# SlowFast 4x16 exports like 8x8 (12-14 s each here): 8x8, the hub's, by default; 4x16 with -m slow.
@pytest.mark.parametrize("case", ["x3d-xs", *[s if s == "slowfast-r50-8x8" else pytest.param(s, marks=pytest.mark.slow)
                                              for s in SLOWFAST]], indirect=True)
def test_onnx_export_matches_pytorchvideo(case, tmp_path):
    from edgevid.export.api import export_model
    from edgevid.runtime.crosscheck import onnxruntime_runner

    out = tmp_path / "out"
    export_model(case.name, out, checkpoint=case.checkpoint, mode="clip", size=SIZE, frames=case.frames,
                 validate=True, progress=False)
    logits = onnxruntime_runner(out / "model.onnx")({"frames": case.clip.numpy()})["logits"]
    assert logits.shape == (BATCH, 400)
    assert _rel(logits, case.run_reference(case.clip)) < TOL
