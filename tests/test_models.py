"""Foundation: the zoo, the temporal shift definitions, streaming, checkpoint loading."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from edgevid.cli import main
from edgevid.errors import EdgevidError
from edgevid.models import build_model, get_config, list_models
from edgevid.models.batchnorm import recalibrate_batchnorm
from edgevid.models.streaming import to_streaming
from edgevid.models.temporal_shift import TemporalShift, shift_bidirectional, shift_causal, shift_online

SIZE, FRAMES, CLASSES = 64, 4, 5
# The frame-backbone families (per-frame scores); the causal 3D CNNs and LRCN: test_streaming3d.py.
STREAMING = [c.name for c in list_models() if c.can_stream and c.family in ("tsm", "tsn")]


def small(name: str, **kw):
    """A zoo model at test size (narrow MobileNetV2, few classes) whose outputs depend on its input."""
    width = 0.5 if get_config(name).backbone == "mobilenetv2" else None
    torch.manual_seed(0)
    model = build_model(name, num_classes=CLASSES, width_mult=width, global_rng=True, **kw)
    return recalibrate_batchnorm(model, [torch.randn(2, FRAMES, _channels(name), SIZE, SIZE) for _ in range(2)]).eval()


def _channels(name: str) -> int:
    """Input channels per frame: 3 (RGB), or a flow / RGB-difference stack's."""
    motion = get_config(name).motion
    return motion.channels if motion is not None else 3


def reference_bidirectional(x: torch.Tensor, t: int, div: int = 8) -> torch.Tensor:
    """The paper's definition, written loop by loop (no shared code with the module)."""
    nt, c, h, w = x.shape
    v = x.view(nt // t, t, c, h, w)
    fold = c // div
    out = torch.zeros_like(v)
    for i in range(t):
        if i + 1 < t:
            out[:, i, :fold] = v[:, i + 1, :fold]
        if i > 0:
            out[:, i, fold:2 * fold] = v[:, i - 1, fold:2 * fold]
        out[:, i, 2 * fold:] = v[:, i, 2 * fold:]
    return out.view(nt, c, h, w)


def test_offline_shift_matches_the_definition():
    torch.manual_seed(1)
    x = torch.randn(2 * 5, 16, 3, 3)
    assert torch.equal(shift_bidirectional(x, 5, 2), reference_bidirectional(x, 5))
    v, out = x.view(2, 5, 16, 3, 3), shift_bidirectional(x, 5, 2).view(2, 5, 16, 3, 3)
    assert torch.equal(out[:, 0, :2], v[:, 1, :2])  # block 0 <- next frame
    assert torch.equal(out[:, 3, 2:4], v[:, 2, 2:4])  # block 1 <- previous frame
    assert torch.count_nonzero(out[:, -1, :2]) == 0 and torch.count_nonzero(out[:, 0, 2:4]) == 0  # borders
    assert torch.equal(out[:, :, 4:], v[:, :, 4:])  # the rest untouched


def test_causal_shift_only_looks_back_and_online_form_agrees():
    torch.manual_seed(2)
    x = torch.randn(3 * 4, 16, 2, 2)
    out = shift_causal(x, 4, 2).view(3, 4, 16, 2, 2)
    v = x.view(3, 4, 16, 2, 2)
    assert torch.equal(out[:, 1:, :2], v[:, :-1, :2]) and torch.count_nonzero(out[:, 0, :2]) == 0
    assert torch.equal(out[:, :, 2:], v[:, :, 2:])
    state = torch.zeros(3, 2, 2, 2)
    for t in range(4):
        y, state = shift_online(v[:, t], state, 2)
        assert torch.equal(y, out[:, t])


def test_shift_sits_on_residual_branches_with_official_counts():
    resnet = build_model("tsm-resnet50", num_classes=CLASSES)
    mbv2 = build_model("tsm-mobilenetv2-online", num_classes=CLASSES)
    assert sum(isinstance(m, TemporalShift) for m in resnet.modules()) == 16  # every Bottleneck
    shapes = [s.shape for s in to_streaming(mbv2).state_specs(224)]
    # the official online demo's ten shift buffers at 224x224
    assert shapes == [(1, 3, 56, 56)] + [(1, 4, 28, 28)] * 2 + [(1, 8, 14, 14)] * 3 \
        + [(1, 12, 14, 14)] * 2 + [(1, 20, 7, 7)] * 2
    shifted = [k for k in mbv2.state_dict() if k.endswith(".net.weight")]
    assert len(shifted) == 10 and all(".conv.0.0.net." in k for k in shifted)  # the expansion conv


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_equals_causal_clip_per_frame(name):
    model = small(name)
    stream = to_streaming(model)
    torch.manual_seed(3)
    clip = torch.randn(2, FRAMES, _channels(name), SIZE, SIZE)
    with torch.no_grad():
        reference = model.forward_frames(clip)
        states = stream.initial_states(SIZE, batch=2)
        steps = []
        for t in range(FRAMES):
            logits, *states = stream(clip[:, t], *states)
            steps.append(logits)
    got = torch.stack(steps, dim=1)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    if get_config(name).shift == "causal":  # the state really carries the past
        with torch.no_grad():
            fresh = stream(clip[:, -1], *stream.initial_states(SIZE, batch=2))[0]
        assert (fresh - got[:, -1]).abs().max() > 1e-4


@pytest.mark.parametrize("name", [c.name for c in list_models() if c.shift == "bidirectional"])
def test_bidirectional_models_refuse_to_stream(name):
    with pytest.raises(EdgevidError, match="future frames.*online"):
        to_streaming(small(name))


def test_clip_score_is_average_of_frame_scores():
    model = small("tsn-mobilenetv2")
    clip = torch.randn(1, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), model.forward_frames(clip).mean(1))


def _official_key(key: str, model) -> str:
    """Our key -> the official TSM repository's key layout (module.base_model, new_fc, flat MBv2)."""
    if key.startswith("fc."):
        return "module.new_fc." + key[3:]
    key = key[len("backbone."):]
    parts = key.split(".")
    if parts[0] == "features" and len(parts) > 3 and parts[2] == "conv":
        block = model.backbone.features[int(parts[1])]
        expand = len(block.conv) == 4
        nested = {("0", "0"): "0", ("0", "1"): "1", ("1", "0"): "3", ("1", "1"): "4"}
        rest = parts[3:]
        if rest[0] == "0":
            idx, rest = nested[(rest[0], rest[1])], rest[2:]
        elif expand and rest[0] == "1":
            idx, rest = nested[(rest[0], rest[1])], rest[2:]
        else:
            idx = {True: {"2": "6", "3": "7"}, False: {"1": "3", "2": "4"}}[expand][rest[0]]
            rest = rest[1:]
        key = ".".join(parts[:3] + [idx] + rest)
    return "module.base_model." + key


@pytest.mark.parametrize("name", ["tsm-mobilenetv2", "tsm-resnet50"])
def test_official_checkpoint_layout_loads(tmp_path, name):
    source = small(name)
    official = {_official_key(k, source): v for k, v in source.state_dict().items()}
    assert any(".net." in k for k in official) and "module.new_fc.weight" in official
    if "mobilenet" in name:
        assert any(k.endswith("conv.7.running_var") for k in official)  # the flat layout
    torch.save({"state_dict": official, "epoch": 3}, tmp_path / "official.pth.tar")
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    width = 0.5 if "mobilenet" in name else None
    a = build_model(name, checkpoint=tmp_path / "official.pth.tar", width_mult=width).eval()
    b = build_model(name, checkpoint=tmp_path / "plain.pt", width_mult=width).eval()
    assert a.num_classes == CLASSES  # follows the checkpoint's classifier, not the zoo's 400
    clip = torch.randn(1, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(a(clip), b(clip), rtol=0, atol=0)
        torch.testing.assert_close(a(clip), source(clip), rtol=0, atol=0)


def test_online_demo_checkpoint_layout_loads(tmp_path):
    source = small("tsm-mobilenetv2-online")
    demo = {}
    for k, v in source.state_dict().items():
        if k.startswith("fc."):
            demo["classifier." + k[3:]] = v  # the demo's MobileNetV2 has a bare Linear head
        else:  # plain features.* in the flat layout, no shift wrapper
            demo[_official_key(k, source)[len("module.base_model."):].replace(".net.", ".")] = v
    torch.save(demo, tmp_path / "online_demo.pth")
    loaded = build_model("tsm-mobilenetv2-online", checkpoint=tmp_path / "online_demo.pth", width_mult=0.5).eval()
    clip = torch.randn(1, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip), source(clip), rtol=0, atol=0)


def test_checkpoint_of_other_shapes_names_the_keys(tmp_path):
    torch.save(small("tsm-mobilenetv2").state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(EdgevidError, match=r"shape mismatches \(e.g. backbone\.features"):
        build_model("tsm-mobilenetv2", checkpoint=tmp_path / "narrow.pt")  # full width
    torch.save(small("tsn-mobilenetv2").state_dict(), tmp_path / "tsn.pt")
    with pytest.raises(EdgevidError, match="does not fit"):
        build_model("tsm-resnet50", checkpoint=tmp_path / "tsn.pt")


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(EdgevidError, match="not found"):
        build_model("tsm", checkpoint=tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EdgevidError, match="cannot read checkpoint"):
        build_model("tsm", checkpoint=tmp_path / "garbage.pt")


def test_unknown_model_lists_the_known_names(capsys):
    with pytest.raises(EdgevidError, match="known models: .*tsm-mobilenetv2-online"):
        get_config("tsm-resnet18")


def test_cli_zoo_list_and_help(capsys):
    assert main(["zoo", "list"]) == 0
    table = capsys.readouterr().out
    for config in list_models():
        assert config.name in table
    assert "(tsm)" in table  # the alias is shown
    proc = subprocess.run([sys.executable, "-m", "edgevid.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for verb in ("zoo", "export", "run"):
        assert verb in proc.stdout, proc.stdout


def test_console_script_is_installed():
    proc = subprocess.run(["edgevid", "zoo", "list", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "tsm-mobilenetv2-online" in proc.stdout


def test_our_checkpoint_of_another_family_is_refused(tmp_path):
    from edgevid.models.weights import save_checkpoint

    source = small("tsm-mobilenetv2-online")
    save_checkpoint(tmp_path / "tsm.pt", source, "tsm-mobilenetv2-online", [f"c{i}" for i in range(CLASSES)],
                    {"width_mult": 0.5, "num_classes": CLASSES})
    # the keys would fit (TSN is TSM without the shift): only the recorded model name tells
    with pytest.raises(EdgevidError, match="is a tsm-mobilenetv2-online checkpoint, not tsn-mobilenetv2"):
        build_model("tsn-mobilenetv2", checkpoint=tmp_path / "tsm.pt")
    offline = build_model("tsm-mobilenetv2", checkpoint=tmp_path / "tsm.pt")  # online -> offline init is fine
    assert offline.labels == [f"c{i}" for i in range(CLASSES)]
