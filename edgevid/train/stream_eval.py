"""Streamed accuracy in torch: every video of a split stepped frame by frame from the zero state,
as a deployed stream runs it, and scored by its final output (the final label).

The stream sees every ``frame_stride``-th frame from the first to the last (the runtime's
default step), so a 16-frame video is 16 steps of a stride-1 model, whatever its clip length.
Videos of one length are stepped together as a batch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from edgevid.errors import EdgevidError


def _decode(path: str, stride: int, spec: Any) -> np.ndarray:
    """(L, C, H, W) float32: every ``stride``-th frame of the video, preprocessed as the runtime does."""
    from edgevid.runtime import open_source
    from edgevid.runtime.preprocess import preprocess_frame

    source = open_source(path)
    try:
        frames = [preprocess_frame(f, spec) for i, f in enumerate(source) if i % stride == 0]
    finally:
        source.close()
    if not frames:
        raise EdgevidError(f"{path} has no readable frames")
    return np.stack(frames)


@torch.no_grad()
def streamed_logits(model: Any, data: str, split: str, spec: Any, stride: int, on_error: str = "raise",
                    progress: bool = False, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, int]:
    """(final logits (V, K), labels (V,), videos skipped) of every video of ``split`` streamed through ``model``."""
    from tqdm import tqdm

    from edgevid.data.sources import resolve_split
    from edgevid.models.streaming import to_streaming

    samples = resolve_split(data, split)
    streaming = to_streaming(model.eval()).eval()
    videos: dict[int, list[tuple[np.ndarray, int]]] = {}
    skipped = 0
    for s in tqdm(samples.samples, desc="decode", leave=False, disable=not progress, file=sys.stderr):
        try:
            clip = _decode(str(s.path), stride, spec)
        except EdgevidError:
            if on_error != "skip":
                raise
            skipped += 1
            continue
        videos.setdefault(len(clip), []).append((clip, s.label))
    logits, labels = [], []
    batches = [group[i:i + batch_size] for group in videos.values() for i in range(0, len(group), batch_size)]
    for batch in tqdm(batches, desc="stream", leave=False, disable=not progress, file=sys.stderr):
        x = torch.from_numpy(np.stack([clip for clip, _ in batch]))
        states: list[torch.Tensor] = []
        for t in range(x.shape[1]):
            out, *states = streaming(x[:, t], *states)
        logits.append(out.numpy())
        labels.extend(label for _, label in batch)
    if not logits:
        raise EdgevidError(f"no readable videos in {data} [{split}]")
    return np.concatenate(logits), np.asarray(labels, np.int64), skipped
