"""Classification metrics over logits (numpy, torch-free): train, compress, eval and the report share them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top1_accuracy(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Fraction of rows whose argmax equals the label."""
    labels = np.asarray(labels)
    return float((np.asarray(logits).argmax(axis=1) == labels).mean()) if len(labels) else float("nan")


def order_pair_accuracy(logits: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                        pairs: Sequence[tuple[str, str]]) -> float:
    """Accuracy at telling each order pair apart (chance is 0.5).

    For every clip whose class belongs to a pair (moving_left / moving_right, ...), the
    prediction is the pair member with the higher logit. A model blind to frame order,
    such as TSN averaging frames, cannot beat 0.5 here; a temporal model can reach 1.0.
    """
    index = {name: i for i, name in enumerate(classes)}
    partner = {}
    for a, b in pairs:
        if a in index and b in index:
            partner[index[a]], partner[index[b]] = index[b], index[a]
    logits, labels = np.asarray(logits), np.asarray(labels)
    hits = [logits[i, y] > logits[i, partner[y]] for i, y in enumerate(labels) if y in partner]
    return float(np.mean(hits)) if hits else float("nan")


def per_class_accuracy(logits: np.ndarray, labels: Sequence[int], classes: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy of each class that has samples."""
    labels = np.asarray(labels)
    pred = np.asarray(logits).argmax(axis=1)
    return {name: float((pred[labels == i] == i).mean()) for i, name in enumerate(classes) if (labels == i).any()}


def known_order_pairs(classes: Sequence[str]) -> list[tuple[str, str]]:
    """The built-in synthetic set's order pairs that ``classes`` contains (empty otherwise)."""
    from edgevid.data.synth import ORDER_PAIRS

    names = set(classes)
    return [(a, b) for a, b in ORDER_PAIRS if a in names and b in names]
