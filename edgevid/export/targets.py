"""What each export target accepts: opset range, static shapes, precisions, validating backends.

Torch-free plain data, so argument checks run (and fail) before any heavy import.

Opset ceilings are those of the *oldest* runtime edgevid supports for the target, because the
artifact runs on the device, not on the machine that exports it:

- ``onnxruntime``: ONNX Runtime 1.17 (``onnxruntime>=1.17`` in pyproject; the JetPack 5
  wheels) implements opset 20 (onnxruntime.ai, "Compatibility", ONNX opset support table).
- ``openvino``: the IR is converted here, but ``model.onnx`` ships too and is validated in
  ONNX Runtime, so the ONNX Runtime ceiling applies. OpenVINO's ONNX frontend does not fail
  on an opset newer than the ONNX release it was built with: it warns and falls back to its
  newest one, which is a silent semantic risk, not a limit we can rely on.
- ``tensorrt``: TensorRT 8.5 (JetPack 5) parses "operators up to Opset 17"
  (onnx-tensorrt ``docs/operators.md``, release/8.5). TensorRT 10+ parses newer opsets, but an
  artifact for a JetPack 5 device must stay at 17.

The floor is edgevid's own: the exporter emits opset >= 18 and ``onnx.version_converter`` has
no adapter below Shape-15 (dynamic-batch graphs compute shapes) or Reshape-14, so 15 is the
oldest opset we can produce. Every target above parses 15.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgevid.errors import EdgevidError

MIN_OPSET = 15  # onnx.version_converter has no adapter below Shape-15 (dynamic-batch graphs use Shape)
DEFAULT_OPSET = 17  # the newest opset TensorRT 8.5 on JetPack 5 parses
PRECISIONS = ("fp32", "fp16", "int8")  # int8: NNCF post-training quantization (edgevid.compress)


@dataclass(frozen=True)
class Target:
    """An export target and its constraints."""

    name: str
    max_opset: int
    opset_reason: str  # why the ceiling is what it is, for the error message
    static_shapes: bool  # every dim fixed (TensorRT builds fastest engines from static shapes)
    validate_with: tuple[str, ...]  # backends that run the artifact at export time
    description: str


TARGETS: dict[str, Target] = {
    "onnxruntime": Target(
        "onnxruntime", 20, "ONNX Runtime 1.17, the oldest edgevid supports, implements opsets up to 20",
        static_shapes=False, validate_with=("onnxruntime",),
        description="model.onnx, dynamic batch, validated in ONNX Runtime",
    ),
    "openvino": Target(
        "openvino", 20, "model.onnx ships with the IR and must load in ONNX Runtime 1.17 (opsets up to 20)",
        static_shapes=False, validate_with=("onnxruntime", "openvino"),
        description="model.onnx + OpenVINO IR (model.xml/.bin), validated in ONNX Runtime and OpenVINO",
    ),
    "tensorrt": Target(
        "tensorrt", 17, "TensorRT 8.5 (JetPack 5), the oldest edgevid supports, parses opsets up to 17",
        static_shapes=True, validate_with=("onnxruntime",),
        description="TensorRT-ready model.onnx (static shapes, fp16 in-graph), engine built now or on first load",
    ),
}
# "onnx" is the plain ONNX artifact; ONNX Runtime is the runtime that validates it, so the two
# names give the same artifact (manifest target "onnxruntime").
ALIASES: dict[str, str] = {"onnx": "onnxruntime", "ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}


def target_names() -> list[str]:
    """Names accepted by ``--target`` (canonical first, then aliases)."""
    return list(TARGETS) + list(ALIASES)


def get_target(name: str) -> Target:
    """The target called ``name`` (or an alias); a clear error for an unknown one."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TARGETS:
        raise EdgevidError(f"unknown target {name!r}; known targets: {', '.join(target_names())}")
    return TARGETS[key]


def check_opset(target: Target, opset: int) -> None:
    """Refuse an opset the target cannot parse or edgevid cannot produce."""
    if opset < MIN_OPSET:
        raise EdgevidError(
            f"opset {opset} is too old: edgevid exports opset {MIN_OPSET} to {target.max_opset} for "
            f"{target.name} (the ONNX version converter cannot go below Shape-15)"
        )
    if opset > target.max_opset:
        raise EdgevidError(
            f"opset {opset} is too new for target {target.name}: {target.opset_reason}; "
            f"use --opset {target.max_opset} or lower"
        )


def check_precision(precision: str) -> str:
    """Normalise and check ``--precision``."""
    p = precision.lower()
    if p not in PRECISIONS:
        raise EdgevidError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return p
