"""ONNX -> OpenVINO IR (``model.xml`` / ``model.bin``) and an OpenVINO runner for validation.

The state pairs stay explicit, named inputs/outputs in the IR; the runtime turns them into
internal variables (make-stateful) by those names, so conversion must keep every name. It is
checked here rather than trusted.

Precision: OpenVINO's own fp16 is weight compression (``save_model(compress_to_fp16=True)``),
with the compute precision chosen by the device at compile time. An fp32 export keeps fp32
weights. The CPU plugin's default inference precision is bf16 on CPUs with AVX512-BF16/AMX,
which would make validation measure bf16 rounding, so validation compiles with an explicit
f32 hint; the manifest records the hint the figures were measured with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError, require
from edgevid.export.validate import RunFn

VALIDATION_HINT = "f32"


def convert_to_ir(onnx_path: str | Path, xml_path: str | Path, *, compress_to_fp16: bool,
                  metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Convert ``onnx_path`` to IR at ``xml_path`` (+ ``.bin``); returns both paths."""
    ov = require("openvino", "openvino")
    model = ov.convert_model(str(onnx_path))
    _check_names(model, onnx_path)
    for key, value in (metadata or {}).items():
        # rt_info travels inside model.xml, so the IR alone says what it is (like metadata_props)
        model.set_rt_info(str(value), ["edgevid", key])
    xml_path = Path(xml_path)
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)
    return xml_path, xml_path.with_suffix(".bin")


def _check_names(model: Any, onnx_path: str | Path) -> None:
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    want_in = [v.name for v in proto.graph.input if v.name not in initializers]
    want_out = [v.name for v in proto.graph.output]
    got_in = [p.get_any_name() for p in model.inputs]
    got_out = [p.get_any_name() for p in model.outputs]
    for kind, want, got, ports in (("input", want_in, got_in, model.inputs), ("output", want_out, got_out, model.outputs)):
        missing = [n for n in want if not any(n in p.get_names() for p in ports)]
        if missing:
            raise EdgevidError(f"OpenVINO conversion lost the {kind} names {missing[:3]} (it has {got[:3]}...)")


def openvino_runner(xml_path: str | Path, inference_precision: str = VALIDATION_HINT) -> RunFn:
    """Compile ``xml_path`` on the CPU with an explicit inference precision; return a runner."""
    ov = require("openvino", "openvino")
    import openvino.properties.hint as hints

    core = ov.Core()
    compiled = core.compile_model(str(xml_path), "CPU", {hints.inference_precision: getattr(ov.Type, inference_precision)})
    request = compiled.create_infer_request()
    ports = [(p, p.get_any_name()) for p in compiled.outputs]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = request.infer(feeds)
        # copy: the request reuses its output buffers on the next call
        return {name: np.array(results[port]) for port, name in ports}

    return run


def version() -> str:
    """The installed OpenVINO version."""
    return str(require("openvino", "openvino").__version__)
