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
output's peak). An absolute rule would be meaningless at both ends: trained logits reach tens,
while randomly initialised heads give logits around 1e-3, where an absolute 1e-3 would pass a
graph that computes something else. A failure is an ``EdgevidError`` naming the backend, the
output and the largest difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import Preprocess, StatePair
from edgevid.runtime.preprocess import preprocess_clip

# Default tolerance per precision, relative to each output's peak (see the pass rule above).
# fp32 graphs differ from torch by float reordering only; fp16 keeps ~3 significant digits
# through ~50 layers. Measured figures are in the report of the export issue.
# int8 is loose on purpose: it catches a broken graph, while the INT8 accuracy and top-1
# agreement against FP32 are measured on labelled clips by edgevid.compress (build.int8).
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8": 1.0}
DEFAULT_CLIPS = 2
_TINY = 1e-12  # peak used for an all-zero output, so any difference from zero fails

# feeds by input name -> outputs by output name
RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ValidationInputs:
    """The same clips as torch input (float, NCHW) and as graph input (float or uint8 NHWC)."""

    torch_clips: np.ndarray  # (C, T, 3, H, W) float32
    graph_clips: np.ndarray  # (C, T, 3, H, W) float32, or (C, T, H, W, 3) uint8
    source: str  # where the frames came from, for the manifest


def make_inputs(preprocess: Preprocess, frames: int, clips: int = DEFAULT_CLIPS, seed: int = 0) -> ValidationInputs:
    """``clips`` clips of the built-in synthetic data, preprocessed for torch and for the graph.

    Each clip is a different class, rendered 25% larger than the resize so the host resize
    and centre crop are part of what is compared.
    """
    from edgevid.data.synth import CLASSES, clip_rng, render_clip

    size = int(round(preprocess.resize * 1.25))
    labels = [CLASSES[i % len(CLASSES)] for i in range(clips)]
    videos = [render_clip(label, clip_rng(seed, i, 0), size=size, frames=frames)[0] for i, label in enumerate(labels)]
    float_spec = replace(preprocess, uint8_input=False)
    torch_clips = np.stack([preprocess_clip(v, float_spec) for v in videos])
    graph_clips = np.stack([preprocess_clip(v, preprocess) for v in videos]) if preprocess.uint8_input else torch_clips
    return ValidationInputs(torch_clips, graph_clips,
                            f"{clips} built-in synthetic clips ({', '.join(labels)}), {frames} frames, seed {seed}")


def onnxruntime_runner(onnx_path: str | Path) -> RunFn:
    """Run ``onnx_path`` on the ONNX Runtime CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feeds)))

    return run


def _chunks(count: int, batch: int | None) -> list[slice]:
    """Batches of clips/streams: all at once for a dynamic batch, else ``batch`` at a time."""
    size = count if batch is None else batch
    return [slice(i, i + size) for i in range(0, count, size)]


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


def run_clip(run: RunFn, graph_clips: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    """Exported clip logits (C, K), in batches the graph accepts."""
    parts = [run({"frames": np.ascontiguousarray(graph_clips[s])})["logits"] for s in _chunks(len(graph_clips), batch)]
    return {"logits": np.concatenate(parts)}


def run_stream(run: RunFn, states: Sequence[StatePair], graph_clips: np.ndarray, batch: int | None) -> list[dict[str, np.ndarray]]:
    """Exported streaming outputs for every step, every stream starting from the initial state."""
    count, steps = graph_clips.shape[:2]
    per_step: list[dict[str, list[np.ndarray]]] = [{} for _ in range(steps)]
    for sl in _chunks(count, batch):
        clips = graph_clips[sl]
        state = {s.input: np.full((len(clips), *s.shape[1:]), s.init, dtype=np.dtype(s.dtype)) for s in states}
        for t in range(steps):
            outs = run({"frame": np.ascontiguousarray(clips[:, t]), **state})
            state = {s.input: outs[s.output] for s in states}
            for name, value in outs.items():
                per_step[t].setdefault(name, []).append(value)
    return [{k: np.concatenate(v) for k, v in step.items()} for step in per_step]


def compare(backend: str, got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]],
            tolerance: float) -> dict[str, Any]:
    """Max abs difference per output and top-1 agreement; raises past the tolerance."""
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    agree = total = 0
    for g, w in zip(got, want):
        for name, ref in w.items():
            if name not in g:
                raise EdgevidError(f"{backend}: the exported model has no output {name!r}")
            if g[name].shape != ref.shape:
                raise EdgevidError(f"{backend}: output {name!r} has shape {g[name].shape}, torch gives {ref.shape}")
            diff = float(np.max(np.abs(g[name].astype(np.float64) - ref.astype(np.float64)), initial=0.0))
            diffs[name] = max(diffs.get(name, 0.0), diff)
            scales[name] = max(scales.get(name, 0.0), float(np.max(np.abs(ref), initial=0.0)))
        agree += int(np.sum(np.argmax(g["logits"], -1) == np.argmax(w["logits"], -1)))
        total += int(np.prod(w["logits"].shape[:-1]))
    worst = max(diffs, key=lambda n: diffs[n] / max(scales[n], _TINY))
    allowed = tolerance * max(scales[worst], _TINY)
    if not diffs[worst] <= allowed:  # "not <=" also catches NaN
        raise EdgevidError(
            f"validation failed on {backend}: output {worst!r} differs from torch by up to {diffs[worst]:.3g} "
            f"(allowed {allowed:.3g} = tolerance {tolerance:g} x its peak |value| {scales[worst]:.3g})"
        )
    return {
        "max_abs_diff": max(diffs.values()),
        "max_rel_diff": diffs[worst] / max(scales[worst], _TINY),
        "max_abs_diff_logits": diffs["logits"],
        "worst_output": worst,
        "per_output": diffs if len(diffs) <= 4 else {worst: diffs[worst], "logits": diffs["logits"]},
        "top1_agreement": agree / total if total else 1.0,
        "compared": total,
        "tolerance": tolerance,
        "passed": True,
    }


def validate_run(backend: str, run: RunFn, *, mode: str, model: Any, streaming: Any | None,
                 states: Sequence[StatePair], inputs: ValidationInputs, batch: int | None,
                 tolerance: float) -> dict[str, Any]:
    """Validate one backend's ``run`` against torch; returns the figures for the manifest."""
    if mode == "clip":
        got = [run_clip(run, inputs.graph_clips, batch)]
        want = [reference_clip(model, inputs.torch_clips)]
    else:
        got = run_stream(run, states, inputs.graph_clips, batch)
        want = reference_stream(streaming, states, inputs.torch_clips)
    result = compare(backend, got, want, tolerance)
    result["inputs"] = inputs.source
    return result
