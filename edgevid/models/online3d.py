"""The streaming ("-online") forms of the 3D families: each clip entry made causal by ``edgevid.models.continual``.

``x3d-xs-online`` is ``x3d-xs`` with causal temporal convolutions, pools and window averages:
it loads ``x3d-xs`` checkpoints (PyTorchVideo's included) unchanged, trains on clips like any
entry, and streams one frame per step with every temporal state as explicit I/O. Its clip
output is the causal model's (the last window), so a stream needs no smoothing of its own
(``stream_smooth=1``). SlowFast (its slow path takes frames at linspace positions) and S3D
have no streaming form here.
"""

from __future__ import annotations

from dataclasses import replace

from edgevid.models.registry import _REGISTRY, ModelConfig, get_config, register, resolve_builder

ONLINE = ("mc3-18", "r3d-18", "r2plus1d-18", "c3d", "i3d-resnet50", "i3d-nl-resnet50", "x3d-xs", "x3d-s", "x3d-m", "t3d-densenet121")


def build_online(config: ModelConfig):
    """The base entry's network, rewritten into its causal streaming form."""
    from edgevid.models.continual import to_continual

    base = get_config(config.name.removesuffix("-online"))
    model = resolve_builder(base)(replace(config, name=base.name, builder=base.builder))
    model.name = config.name
    return to_continual(model, frames=config.frames, size=config.input_size)


# Total temporal stride, where it exceeds the clip entry's min_frames: the causal form keeps each
# stride's last input, so a clip shorter than the stride has no output (checked for every entry:
# tests/test_stream_regime.py, test_min_frames_is_the_fewest_frames_the_network_takes).
_STRIDE = {"r3d-18": 8, "r2plus1d-18": 8, "i3d-nl-resnet50": 8}

for _name in ONLINE:
    _base = _REGISTRY[_name]  # registered by the families imported before this module
    register(replace(
        _base, min_frames=max(_base.min_frames, _STRIDE.get(_name, 1)),
        # max_frames=None: the causal model answers for its last window, so a clip of any length
        # past the minimum fits even a fixed-size classifier (C3D's fc6 takes 16-31 frames as a clip).
        name=f"{_name}-online", builder="edgevid.models.online3d:build_online", can_stream=True,
        stream_smooth=1, stream_training=True, weights=(), max_frames=None,
        description=f"{_name}, causal: streams frame by frame with its temporal states as explicit I/O "
                    "(Continual 3D CNNs, Hedegaard & Iosifidis 2022)"))
