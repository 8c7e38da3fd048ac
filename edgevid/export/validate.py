"""Export-time validation: run the exported model and the torch model on the same frames.

Inputs are clips of the built-in synthetic dataset (``edgevid.data.synth``: textured
backgrounds, moving shapes) pushed through the shared host preprocessing
(``edgevid.runtime.preprocess``), so the check covers the artifact exactly as the runtime
will feed it, in-graph uint8 normalisation included:

- clip mode: a batch of clips through ``frames`` vs ``model(clip)``;
- stream mode: every stream stepped T frames from the zero state vs the torch
  ``StreamingModel`` stepped the same way; every output (logits and each ``state_out.*``)
  is compared at every step.

Pass rule, per output: ``max |exported - torch| <= tolerance * max |torch|`` (relative to the
output's peak; ``edgevid.runtime.crosscheck`` says why), and no NaN or inf on either side.
A failure is an ``EdgevidError`` naming the backend, the output and the largest difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import Preprocess, StatePair
from edgevid.runtime.crosscheck import (  # noqa: F401 - part of this module's API
    DEFAULT_TOLERANCE,
    RunFn,
    compare,
    decode_states,
    float_states,
    onnxruntime_runner,
    run_clip,
    run_stream,
)
from edgevid.runtime.preprocess import preprocess_clip

DEFAULT_CLIPS = 2


@dataclass(frozen=True)
class ValidationInputs:
    """The same clips as torch input (float, NCHW) and as graph input (float or uint8 NHWC)."""

    torch_clips: np.ndarray  # (C, T, 3, H, W) float32
    graph_clips: np.ndarray  # (C, T, 3, H, W) float32, or (C, T, H, W, 3) uint8
    source: str  # where the frames came from, for the manifest


def make_inputs(preprocess: Preprocess, frames: int, clips: int = DEFAULT_CLIPS, seed: int = 0,
                motion: Any = None) -> ValidationInputs:
    """``clips`` clips of the built-in synthetic data, preprocessed for torch and for the graph.

    Each clip is a different class, rendered 25% larger than the resize so the host resize
    and centre crop are part of what is compared. With ``motion`` (a flow / RGB-difference
    model) each clip is ``frames`` motion stacks computed by ``edgevid.runtime.motion`` from
    ``frames + L`` rendered frames, as the runtime computes them.
    """
    from edgevid.data.synth import CLASSES, clip_rng, render_clip

    size = int(round(preprocess.resize * 1.25))
    labels = [CLASSES[i % len(CLASSES)] for i in range(clips)]
    extra = motion.length if motion is not None else 0
    videos = [render_clip(label, clip_rng(seed, i, 0), size=size, frames=frames + extra)[0]
              for i, label in enumerate(labels)]
    if motion is not None:
        from edgevid.runtime.motion import motion_inputs

        stacks = np.stack([motion_inputs(list(v), motion, preprocess) for v in videos])
        return ValidationInputs(stacks, stacks, f"{clips} built-in synthetic clips ({', '.join(labels)}), {frames} "
                                f"{motion.kind} stacks of {motion.length} from {frames + extra} frames, seed {seed}")
    float_spec = replace(preprocess, uint8_input=False)
    torch_clips = np.stack([preprocess_clip(v, float_spec) for v in videos])
    graph_clips = np.stack([preprocess_clip(v, preprocess) for v in videos]) if preprocess.uint8_input else torch_clips
    return ValidationInputs(torch_clips, graph_clips,
                            f"{clips} built-in synthetic clips ({', '.join(labels)}), {frames} frames, seed {seed}")


def reference_clip(model: Any, torch_clips: np.ndarray) -> dict[str, np.ndarray]:
    """Torch clip logits (C, K)."""
    import torch

    with torch.no_grad():
        return {"logits": model(torch.from_numpy(torch_clips)).numpy()}


def reference_stream(streaming: Any, states: Sequence[StatePair], torch_clips: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Torch streaming outputs for every step: a list over T of {name: (C, ...)}."""
    import torch

    count, steps = torch_clips.shape[:2]
    state = [torch.full((count, *s.shape[1:]), s.init) for s in states]
    out = []
    with torch.no_grad():
        for t in range(steps):
            logits, *state = streaming(torch.from_numpy(torch_clips[:, t]), *state)
            out.append({"logits": logits.numpy(), **{s.output: v.numpy() for s, v in zip(states, state)}})
    return out


def validate_run(backend: str, run: RunFn, *, mode: str, model: Any, streaming: Any | None,
                 states: Sequence[StatePair], inputs: ValidationInputs, batch: int | None,
                 tolerance: float, encodings: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Validate one backend's ``run`` against torch; returns the figures for the manifest.

    ``encodings``: integer states of an INT8 graph (``build.int8.integer_states``), decoded to
    the float tensors torch computes before comparing.
    """
    if mode == "clip":
        got = [run_clip(run, inputs.graph_clips, batch)]
        want = [reference_clip(model, inputs.torch_clips)]
    else:
        encodings = encodings or {}
        got = [decode_states(step, states, encodings) for step in run_stream(run, states, inputs.graph_clips, batch)]
        want = reference_stream(streaming, float_states(states, encodings), inputs.torch_clips)
    require_finite(backend, got, want)
    result = compare(backend, got, want, tolerance)
    result["inputs"] = inputs.source
    return result


def require_finite(backend: str, got: Sequence[dict[str, np.ndarray]], want: Sequence[dict[str, np.ndarray]]) -> None:
    """Fail validation on NaN or inf, from torch or from the export.

    A model whose outputs are NaN must not pass: in a max over differences a NaN reads as
    no difference at all (a diverged checkpoint exported "with max diff 0, 100% agreement").
    """
    for who, runs in (("the torch model", want), (f"the exported model on {backend}", got)):
        for step in runs:
            for name, value in step.items():
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    raise EdgevidError(f"validation failed on {backend}: {who} gives NaN or inf in output {name!r} on "
                                       "the validation clips (are its weights finite?)")
