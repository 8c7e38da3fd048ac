"""Non-local blocks: mmcv's block in its three modes, the zero start, and the causal (streaming) form.

The whole NL-I3D recognizers are checked against MMAction2's own in ``test_mmaction_3d.py``
(registered in its ``CONFIGS``: logits to 1e-4 in torch, ONNX Runtime and OpenVINO, parameters
and FLOPs against the metafile) and the ``-online`` entry's stream against its causal clip
model in ``test_streaming3d.py``. Here: the block alone (small tensors, milliseconds).
"""

from __future__ import annotations

import pytest
import torch
from mmaction_ref import randomize_batchnorm
from torch import nn

from edgevid.models import build_model
from edgevid.models.clip3d import Clip3DClassifier
from edgevid.models.continual import to_continual
from edgevid.models.non_local import MODES, NonLocal3d
from edgevid.models.streaming import to_streaming


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def _active(block: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, the output BatchNorm included (a zero-initialized block is the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return randomize_batchnorm(block, seed=seed)


@pytest.mark.parametrize("sub_sample", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_block_equals_mmcvs_non_local3d(mode, sub_sample):
    """Same keys and shapes as mmcv's NonLocal3d (MMAction2's block), and the same output on the same weights."""
    pytest.importorskip("mmcv")
    from mmcv.cnn import NonLocal3d as MmcvNonLocal3d

    ref = _active(MmcvNonLocal3d(16, sub_sample=sub_sample, use_scale=mode == "embedded_gaussian",
                                 norm_cfg={"type": "BN3d"}, mode=mode))
    ours = NonLocal3d(16, mode=mode, sub_sample=sub_sample, use_scale=mode == "embedded_gaussian").eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert _rel(got - x, want - x) < 1e-5  # the block's own contribution, not the identity path
    other = NonLocal3d(16, mode=next(m for m in MODES if m != mode), sub_sample=sub_sample).eval()
    other.load_state_dict(ref.state_dict(), strict=False)  # gaussian has no theta / phi: the mode must matter
    with torch.no_grad():
        assert _rel(other(x) - x, want - x) > 1e-2


def test_a_new_block_starts_as_the_identity_and_leaves_i3d_unchanged():
    """NL-I3D built from a plain MMAction2 I3D's weights (the non-local blocks new, zero at the output) gives the
    I3D's logits exactly; once the blocks' output BatchNorm moves, it does not."""
    torch.manual_seed(0)
    i3d = build_model("i3d-r50-mmaction2", num_classes=5, global_rng=True)
    randomize_batchnorm(i3d, seed=3)
    nl = build_model("i3d-nl-resnet50", num_classes=5).eval()
    missing, unexpected = nl.load_state_dict(i3d.state_dict(), strict=False)
    assert not unexpected and missing and all(".non_local_block." in k for k in missing)
    assert len({k.split(".non_local_block.")[0] for k in missing}) == 5  # res3: 2 blocks, res4: 3
    clip = torch.randn(2, 16, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = i3d(clip)
        assert torch.equal(nl(clip), want)
        for m in nl.modules():
            if isinstance(m, NonLocal3d):
                m.conv_out.bn.weight.fill_(1.0)
        assert _rel(nl(clip), want) > 1e-3


class _Tiny(nn.Module):
    """conv -> non-local -> global pool -> classifier: the block inside a network ``to_continual`` rewrites."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 16, (1, 3, 3), padding=(0, 1, 1))
        self.block = NonLocal3d(16, mode=mode)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


def _causal_tiny(mode: str, window: int) -> Clip3DClassifier:
    model = Clip3DClassifier(_Tiny(mode), "fc", name="tiny")
    _active(model.net.block, seed=4)
    return to_continual(model, frames=window, size=16).eval()


@pytest.mark.parametrize("mode", MODES)
def test_streaming_the_causal_block_equals_the_masked_clip(mode):
    """Frame by frame with keys / values as state == the causal-masked clip block, to 1e-4, well past the window
    (frames leave it); the clip's first frames only see themselves (the "filled" flag masks the empty slots)."""
    window, frames = 3, 9
    model = _causal_tiny(mode, window)
    (block,) = [m for m in model.modules() if isinstance(m, NonLocal3d)]
    assert block.window == window and type(block).__name__ == "CoNonLocal3d"
    streaming = to_streaming(model)
    assert streaming.state_paths == ["net.block", "net.pool"]
    clip = torch.randn(1, frames, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    states, worst, outs = None, 0.0, []
    with torch.no_grad():
        for t in range(frames):
            logits, *states = streaming(clip[:, t]) if states is None else streaming(clip[:, t], *states)
            outs.append(logits)
            worst = max(worst, _rel(logits, model(clip[:, : t + 1])))
        assert worst < 1e-4, worst
        # The state is used: a stream whose block forgets its keys / values after every step differs.
        states, forgetful = None, []
        for t in range(frames):
            if states is not None:
                states[0] = torch.zeros_like(states[0])
            logits, *states = streaming(clip[:, t]) if states is None else streaming(clip[:, t], *states)
            forgetful.append(logits)
        assert max(_rel(f, o) for f, o in zip(forgetful[1:], outs[1:])) > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_the_causal_block_sees_exactly_its_window(mode):
    """In a clip, a frame's output depends on the frames t - W + 1 .. t and on no other; the offline block's on all."""
    window = 3
    model = _causal_tiny(mode, window)
    (block,) = [m for m in model.modules() if isinstance(m, NonLocal3d)]
    x = torch.randn(1, 16, 8, 8, 8, generator=torch.Generator().manual_seed(6))
    changed = x.clone()
    changed[:, :, 2] += 1.0  # frame 2 changes
    with torch.no_grad():
        diff = (block(changed) - block(x)).abs().amax(dim=(0, 1, 3, 4))
        offline = NonLocal3d.forward(block, changed) - NonLocal3d.forward(block, x)
    seen = [t for t in range(8) if diff[t] > 1e-6]
    assert seen == [2, 3, 4]  # frame 2 itself and the W - 1 frames after it
    assert bool((offline.abs().amax(dim=(0, 1, 3, 4)) > 1e-6).all())
