"""What a zoo entry costs, measured from its graph: parameters, and multiply-accumulates per clip and per streamed frame.

The model is built on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) and
run once under ``torch.utils.flop_counter.FlopCounterMode``, which counts the convolutions and
matrix products the graph really executes at the entry's input size and clip length. Papers
call multiply-accumulates "FLOPs" (C3D: 38.5 G here, "about 39.5 GFLOPs" in its paper), so
the figures are MACs = counted FLOPs / 2. A streaming entry's per-frame cost is one step of
its streaming form.
"""

from __future__ import annotations

import functools
from typing import Any


def _config(name: str, overrides: tuple[tuple[str, Any], ...]) -> Any:
    from dataclasses import replace

    from edgevid.models.registry import get_config

    return replace(get_config(name), **dict(overrides))


def measure(name: str, **overrides: Any) -> dict[str, Any]:
    """``{"params": n, "gmacs_per_clip": x, "gmacs_per_frame": y | None}`` of zoo entry ``name``, and
    for a streaming entry when its stream makes outputs (``output_every``, ``first_output``: steps),
    with config fields replaced by ``overrides`` (e.g. the architecture its shipped weights build:
    input_size, frames, width_mult, num_classes).

    Kept in the user cache (``cost.json``), keyed by the config, edgevid's and torch's versions:
    `edgevid zoo list` measures each model once.
    """
    return _measure_cached(name, tuple(sorted(overrides.items())))


@functools.cache
def _measure_cached(name: str, overrides: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    import hashlib
    import json

    import torch

    from edgevid import __version__
    from edgevid.cache import cache_dir

    config = _config(name, overrides)
    key = hashlib.sha256(f"{config!r}|{__version__}|{torch.__version__}".encode()).hexdigest()[:16]
    path = cache_dir() / "cost.json"
    try:
        cached = json.loads(path.read_text()).get(f"{name}:{key}")
    except (OSError, ValueError, AttributeError):
        cached = None
    if isinstance(cached, dict):
        return cached
    result = _measure(config)
    try:
        from edgevid.manifest import atomic_write_text

        data = json.loads(path.read_text()) if path.is_file() else {}
        data[f"{name}:{key}"] = result
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except Exception:  # noqa: BLE001 - the cache only saves time
        pass
    return result


def _measure(config: Any) -> dict[str, Any]:
    """Build ``config``'s model on the meta device and count its multiply-accumulates (see the module docstring)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgevid.models.registry import resolve_builder

    with torch.device("meta"):
        model = resolve_builder(config)(config).eval()
    # A two-stream model (``.streams``: RGB and flow TSN) takes a clip per stream and steps each.
    streams = list(getattr(model, "streams", {"": model}).values())
    size = config.input_size
    with torch.device("meta"):  # C channels per frame: 3 (RGB), or the motion stack's (flow: 2L)
        clips = [torch.empty(1, config.frames, _channels(s), size, size) for s in streams]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*clips)
    per_frame, timing = None, {}
    if config.can_stream:
        from edgevid.models.continual import emission
        from edgevid.models.streaming import to_streaming

        every, first = emission(model)
        timing = {"output_every": every, "first_output": first}
        per_frame = 0.0
        for stream in streams:
            streaming = to_streaming(stream)
            with torch.device("meta"):
                frame = torch.empty(1, _channels(stream), size, size)
                with torch.no_grad():
                    _, *states = streaming(frame)  # zero states' shapes: one probe step
            with FlopCounterMode(display=False) as step, torch.no_grad():
                streaming(frame, *states)
            per_frame += step.get_total_flops() / 2e9
        per_frame = round(per_frame, 3)
    return {"params": int(sum(p.numel() for p in model.parameters())),
            "gmacs_per_clip": round(counter.get_total_flops() / 2e9, 3), "gmacs_per_frame": per_frame, **timing}


def _channels(model: Any) -> int:
    """Channels of one input frame: a frame backbone's first conv (RGB 3, flow 2L, RGB differences 3L), else 3."""
    return getattr(model, "in_channels", 3)
