"""The checkpoints that ship with the zoo: intact, loadable, and the TSM-over-TSN gap holds
on synthetic videos neither model was trained on."""

from __future__ import annotations

import pytest

from edgevid.data.synth import CLASSES, generate_dataset
from edgevid.models import build_model, list_models
from edgevid.models.registry import SYNTH_LABELS
from edgevid.models.weights import sha256_of
from edgevid.train.evaluate import evaluate_checkpoint

SHIPPED = [c for c in list_models() if c.default_weights is not None]


def test_the_embedded_defaults_ship():
    assert {c.name for c in SHIPPED} >= {"tsm-mobilenetv2-online", "tsn-mobilenetv2"}
    assert SYNTH_LABELS == CLASSES  # the registry's copy of the class names is the generator's


@pytest.mark.parametrize("config", SHIPPED, ids=lambda c: c.name)
def test_shipped_checkpoint_is_intact_and_self_describing(config):
    spec = config.default_weights
    assert sha256_of(spec.path) == spec.sha256
    assert spec.path.stat().st_size < 8 * 2**20  # small enough to live in git
    model = build_model(config.name, checkpoint="default")
    assert model.labels == list(spec.labels)
    assert (model.config.input_size, model.config.frames, model.config.width_mult) == \
        (spec.input_size, spec.frames, spec.width_mult)
    assert spec.command.startswith("edgevid data synth")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """A synthetic set from a seed no shipped checkpoint saw (they were trained on seed 0)."""
    root = tmp_path_factory.mktemp("heldout") / "synth"
    generate_dataset(root, seed=7, videos_per_class=5, val_fraction=0.4, progress=False)
    return root


def test_tsm_beats_tsn_on_time_reversed_pairs(heldout):
    tsm = evaluate_checkpoint("tsm", str(heldout), "default", split="val", workers=0, progress=False)
    tsn = evaluate_checkpoint("tsn-mobilenetv2", str(heldout), "default", split="val", workers=0, progress=False)
    assert tsm.clips == tsn.clips == 2 * len(CLASSES)
    # TSN averages frames, so a time-reversed pair looks the same to it; TSM sees the order.
    assert tsn.order_pair <= 0.75
    assert tsm.order_pair >= 0.75
    assert tsm.order_pair - tsn.order_pair >= 0.25
    assert tsm.top1 > tsn.top1


@pytest.fixture(scope="module")
def heldout_pairs(tmp_path_factory):
    """A larger unseen set (44 val clips, 4 per class): 22 clips put a pair class at 2 clips, too few
    to compare two models' order-pair accuracy."""
    root = tmp_path_factory.mktemp("heldout-pairs") / "synth"
    generate_dataset(root, seed=8, videos_per_class=8, val_fraction=0.5, progress=False)
    return root


def test_the_flow_stream_sees_the_order_tsn_cannot(heldout_pairs):
    """Issue 26: the shipped temporal stream (optical flow) tells time-reversed pairs apart; the two-stream
    fusion of it with the RGB TSN keeps most of that (the order-blind RGB stream pulls it down)."""
    data = str(heldout_pairs)
    tsn = evaluate_checkpoint("tsn-mobilenetv2", data, "default", split="val", workers=0, progress=False)
    flow = evaluate_checkpoint("tsn-flow-mobilenetv2", data, "default", split="val", workers=0, progress=False)
    both = evaluate_checkpoint("two-stream-mobilenetv2", data, "default", split="val", workers=0, progress=False)
    print(f"order-pair: TSN {tsn.order_pair:.3f}, flow {flow.order_pair:.3f}, two-stream {both.order_pair:.3f}; "
          f"top-1: {tsn.top1:.3f}, {flow.top1:.3f}, {both.top1:.3f}")
    assert flow.clips == both.clips == tsn.clips
    assert flow.order_pair - tsn.order_pair >= 0.15
    assert both.order_pair > tsn.order_pair and both.top1 > tsn.top1
