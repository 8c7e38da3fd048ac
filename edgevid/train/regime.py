"""Training regimes: what a training step shows the model, and where the loss sits.

- ``clip``: a T-frame clip, the loss on its one output (TSN, TSM, the clip 3D CNNs).
- ``stream``: the regime a causal model is deployed in. A stream's output at step t is the
  causal clip model on *every* frame since the stream began (``edgevid.models.continual``),
  not on the last T: stacked causal convolutions (or an LSTM) keep looking further back, and
  a model trained on T-frame clips, each starting from the zero state, never saw that input.
  So a step takes ``stream_frames`` S > T consecutive frames, lets a stream begin at a random
  one of them, and puts the loss on its outputs after a warm-up of T frames:

  - a model with per-frame outputs (LRCN's ``forward_frames``): every output from the stream's
    T-th frame on;
  - a causal 3D CNN: the output after L frames, L uniform in [T, S] per batch (its clip form
    answers for the last frame only, and by the streaming contract that is the stream's output
    after L steps).

  L = T is the clip the model answers for as a clip model, L = S a stream S steps old: one
  checkpoint, trained for both. ``benchmarks/bench_stream_accuracy.py`` measures both regimes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REGIMES = ("clip", "stream")


def default_regime(config) -> str:
    """``stream`` for the entries whose stream outgrows their clip (``ModelConfig.stream_training``)."""
    return "stream" if config.stream_training else "clip"


def default_stream_frames(frames: int) -> int:
    """S: twice the clip, at least 16 frames (the built-in videos' length)."""
    return max(16, 2 * frames)


def stream_loss(model: nn.Module, clip: torch.Tensor, labels: torch.Tensor, warmup: int) -> torch.Tensor:
    """Cross-entropy of a (N, S, C, H, W) batch of consecutive frames in the stream regime.

    The stream begins at a random frame a of the S (a camera is switched on anywhere in an action).
    With per-frame outputs the loss is on every output from the stream's ``warmup``-th frame on (a in
    [0, S - warmup]); otherwise on the output after L frames (L in [warmup, S], then a in [0, S - L]).
    Drawn from torch's generator (seeded by ``--seed``), once per batch.
    """
    frames = clip.shape[1]
    if hasattr(model, "forward_frames"):
        start = int(torch.randint(0, frames - warmup + 1, ()).item())
        out = model.forward_frames(clip[:, start:])[:, warmup - 1:]  # (N, S - start - warmup + 1, classes)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), labels.repeat_interleave(out.shape[1]))
    length = int(torch.randint(warmup, frames + 1, ()).item())
    start = int(torch.randint(0, frames - length + 1, ()).item())
    return F.cross_entropy(model(clip[:, start:start + length]), labels)
