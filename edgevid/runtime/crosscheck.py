"""Comparing two runs of one artifact's graph, output by output (torch-free: numpy only).

Used by export validation (the exported graph against torch, ``edgevid.export.validate``)
and by the TensorRT backend (an engine it built against ONNX Runtime on the same inputs).
A run is a function ``feeds -> outputs`` over every graph input explicitly, states included.

Pass rule, per output: ``max |got - reference| <= tolerance * max |reference|`` (relative to
the output's peak). An absolute rule would be meaningless at both ends: trained logits reach
tens, while randomly initialised heads give logits around 1e-3, where an absolute 1e-3 would
pass a graph that computes something else. A failure is an ``EdgevidError`` naming the
backend, the output and the largest difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import StatePair

# Default tolerance per precision, relative to each output's peak (see the pass rule above).
# fp32 graphs differ from torch by float reordering only; fp16 keeps ~3 significant digits
# through ~50 layers. Measured figures are in the report of the export issue.
# int8 is loose on purpose: it catches a broken graph, while the INT8 accuracy and top-1
# agreement against FP32 are measured on labelled clips by edgevid.compress (build.int8).
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8": 1.0}
_TINY = 1e-12  # peak used for an all-zero output, so any difference from zero fails

# feeds by input name -> outputs by output name
RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


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
            tolerance: float, reference: str = "torch") -> dict[str, Any]:
    """Max abs difference per output and top-1 agreement; raises past the tolerance.

    ``got`` / ``want``: per step (one entry for a clip), outputs by name; ``reference`` names
    what ``want`` came from, in the error message.
    """
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    agree = total = 0
    for g, w in zip(got, want):
        for name, ref in w.items():
            if name not in g:
                raise EdgevidError(f"{backend}: the exported model has no output {name!r}")
            if g[name].shape != ref.shape:
                raise EdgevidError(f"{backend}: output {name!r} has shape {g[name].shape}, {reference} gives {ref.shape}")
            diff = float(np.max(np.abs(g[name].astype(np.float64) - ref.astype(np.float64)), initial=0.0))
            # np.maximum keeps a NaN (Python's max drops it: NaN weights "agreed" with difference 0).
            diffs[name] = float(np.maximum(diffs.get(name, 0.0), diff))
            scales[name] = float(np.maximum(scales.get(name, 0.0), np.max(np.abs(ref), initial=0.0)))
        agree += int(np.sum(np.argmax(g["logits"], -1) == np.argmax(w["logits"], -1)))
        total += int(np.prod(w["logits"].shape[:-1]))
    not_finite = [n for n in diffs if not np.isfinite(diffs[n])]
    worst = not_finite[0] if not_finite else max(diffs, key=lambda n: diffs[n] / max(scales[n], _TINY))
    allowed = tolerance * max(scales[worst], _TINY)
    if not diffs[worst] <= allowed:  # "not <=" also catches NaN
        raise EdgevidError(
            f"validation failed on {backend}: output {worst!r} differs from {reference} by up to {diffs[worst]:.3g} "
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


def state_encodings(manifest: Any) -> dict[str, dict[str, Any]]:
    """How an INT8 artifact encodes its integer states (``build.int8.integer_states``), by state path."""
    return dict(((manifest.build or {}).get("int8") or {}).get("integer_states") or {})


def float_states(states: Sequence[StatePair], encodings: dict[str, dict[str, Any]]) -> list[StatePair]:
    """The float NCHW states the model computes, for an artifact whose states may be integer NHWC."""
    out = []
    for s in states:
        if s.path in encodings:
            n, h, w, c = s.shape
            s = StatePair(s.path, [n, c, h, w], "float32", 0.0)
        out.append(s)
    return out


def decode_states(outputs: dict[str, np.ndarray], states: Sequence[StatePair],
                  encodings: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """``outputs`` with every integer state output turned into the float NCHW tensor it encodes."""
    out = dict(outputs)
    for s in states:
        enc = encodings.get(s.path)
        if enc is not None and s.output in out:
            value = (out[s.output].astype(np.float32) - np.float32(enc["zero_point"])) * np.float32(enc["scale"])
            out[s.output] = np.ascontiguousarray(value.transpose(0, 3, 1, 2))
    return out
