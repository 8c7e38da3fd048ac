"""Writing one planned export into its staged directory: every file of the artifact, then its manifest.

Torch graph -> checked ONNX (fp16 cast, INT8 through the given quantizer) -> target files
(OpenVINO IR, TensorRT engine) -> validation of every backend against torch -> ``manifest.json``.
What to write was decided before (``edgevid.export.plan``); the directory is staged and renamed
into place by the caller (``edgevid.export.api``).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from edgevid.errors import EdgevidError
from edgevid.export.plan import ExportPlan
from edgevid.manifest import Manifest, Preprocess, Sampling, StatePair, TensorSpec, sha256_file

ONNX_FILE = "model.onnx"
XML_FILE = "model.xml"
ENGINE_FILE = "model.engine"


class GraphQuantizer(Protocol):
    """Turns the checked FP32 ONNX graph into an INT8 one, for ``precision="int8"``.

    Export knows nothing of how: the orchestration layer (``edgevid.pipeline.export``)
    passes one built from ``edgevid.compress``. The result has ``model`` (the INT8
    ``onnx.ModelProto``), ``info`` (recorded as ``build.int8``) and ``validation_inputs``
    (real clips the torch-vs-artifact validation runs on, or None for synthetic frames).
    """

    def __call__(self, proto: Any, *, streaming: Any, states: list[StatePair], mode: str, preprocess: Preprocess,
                 frames: int, target: str, motion: Any = None, stride: int = 1) -> Any: ...


def _sampling(mode: str, net: Any, frames: int) -> Sampling:
    """The manifest's sampling: the stream's smoothing and, for a time-strided one, when it makes outputs."""
    if mode != "stream":
        return Sampling(frames=frames, stride=net.config.frame_stride)
    from edgevid.models.continual import emission

    every, first = emission(net)
    return Sampling(frames=frames, stride=net.config.frame_stride, smooth=net.config.stream_smooth,
                    output_every=every, first_output=first)


def write_export(work: Path, plan: ExportPlan, net: Any, streaming: Any, weights: dict[str, Any], frames: int,
                 size: int, preprocess: Preprocess, status: Status, *, validate: bool,
                 tolerance: float | None, quantizer: GraphQuantizer | None = None) -> Manifest:
    """Write every file of ``plan`` into ``work`` (the staged directory), ``manifest.json`` last; return it.

    ``frames``/``size``/``preprocess`` come from ``plan_input``. ``validate``: run every backend of
    the target against ``net`` (``tolerance``: default per precision); else recorded as skipped.
    """
    import onnx

    from edgevid.export import onnx as onnx_export

    states = [] if streaming is None else [
        StatePair(s.path, list(s.shape), str(s.dtype).removeprefix("torch."), s.init) for s in streaming.state_specs(size)]
    motion = getattr(net.config, "motion", None)  # flow / RGB-difference stacks: the graph's frame input
    inputs, outputs = _graph_io(plan, frames, size, net.num_classes, states, motion.channels if motion else 3)
    manifest = Manifest(
        model=plan.model, family=net.config.family, mode=plan.mode, inputs=inputs, outputs=outputs,
        preprocess=preprocess, sampling=_sampling(plan.mode, net, frames),
        labels=list(net.labels),
        states=states, precision=plan.precision, target=plan.target.name, device=plan.device,
        files={"onnx": ONNX_FILE}, motion=motion,
    )
    fp16_in_graph = plan.precision == "fp16" and plan.target.name != "openvino"
    proto = _onnx_graph(plan, manifest, net, streaming, frames, size, fp16_in_graph, status)
    int8_result = None
    if quantizer is not None:
        with status.stage(f"quantizing to INT8 for {plan.target.name} (NNCF, calibrated on real video)"):
            int8_result = quantizer(proto, streaming=streaming, states=manifest.states, mode=plan.mode,
                                    preprocess=manifest.preprocess, frames=frames, target=plan.target.name,
                                    **({"motion": motion, "stride": manifest.sampling.stride} if motion else {}))
        proto = int8_result.model
        if int8_result.states is not None:  # the INT8 graph carries its states differently (integer, NHWC)
            manifest.states = int8_result.states
            _check_graph_matches(manifest, proto)
    # Graph rewrites (QDQ folding, fp16 casts) can orphan initializers; ONNX Runtime warns
    # about each one on every load, so the saved file carries none.
    onnx_export.remove_unused_initializers(proto)
    metadata = _metadata(manifest, weights, plan)
    onnx_export.set_metadata(proto, metadata)
    onnx.save_model(proto, str(work / ONNX_FILE))

    manifest.build = {"opset": plan.opset, "ir_version": int(proto.ir_version),
                      "batch": plan.batch if plan.batch is not None else "dynamic",
                      "static_shapes": plan.target.static_shapes, "fp16_in_graph": fp16_in_graph,
                      "exporter": "torch.onnx.export(dynamo=True) + onnxslim"}
    if int8_result is not None:
        manifest.build["int8"] = int8_result.info
    manifest.provenance = {**weights, "onnx_sha256": sha256_file(work / ONNX_FILE),
                           "tools": _tool_versions(plan.target.name)}
    if plan.target.name == "openvino":
        _add_openvino(work, manifest, plan, status, metadata)
    if plan.target.name == "tensorrt":
        _add_tensorrt(work, manifest, plan, status, fp16_in_graph)
    if validate:
        _validate_all(work, manifest, plan, net, streaming, tolerance, fp16_in_graph, status,
                      inputs=int8_result.validation_inputs if int8_result is not None else None)
    else:
        manifest.validation = {"skipped": True}
    manifest.save(work)
    return manifest


def _graph_io(plan: ExportPlan, frames: int, size: int, classes: int, states: list[StatePair],
              channels: int = 3) -> tuple[list[TensorSpec], list[TensorSpec]]:
    n: int | str = plan.batch if plan.batch is not None else "N"
    dtype = "uint8" if plan.uint8_input else "float32"
    image = [size, size, 3] if plan.uint8_input else [channels, size, size]
    layout = "HWC" if plan.uint8_input else "CHW"
    if plan.mode == "clip":
        inputs = [TensorSpec("frames", [n, frames, *image], dtype, "NT" + layout)]
    else:
        inputs = [TensorSpec("frame", [n, *image], dtype, "N" + layout)]
    return inputs, [TensorSpec("logits", [n, classes], "float32", "NC")]


def _example_inputs(plan: ExportPlan, frames: int, size: int, states: list[StatePair],
                    channels: int = 3) -> tuple[Any, ...]:
    import torch

    # A dynamic batch is traced with 2: torch.export specialises a size-1 axis to a constant.
    b = plan.batch or 2
    gen = torch.Generator().manual_seed(0)
    lead = (b, frames) if plan.mode == "clip" else (b,)
    if plan.uint8_input:
        x = torch.randint(0, 256, (*lead, size, size, 3), dtype=torch.uint8, generator=gen)
    else:
        x = torch.randn(*lead, channels, size, size, generator=gen)
    return (x, *[torch.full((b, *s.shape[1:]), s.init) for s in states])


def _onnx_graph(plan: ExportPlan, manifest: Manifest, net: Any, streaming: Any, frames: int, size: int,
                fp16_in_graph: bool, status: Status) -> Any:
    """The checked ONNX model for the plan: export, fp16 cast, target checks, I/O vs manifest."""
    from edgevid.export import onnx as onnx_export

    normalize = onnx_export.normalizer_for(manifest.preprocess) if plan.uint8_input else None
    graph = onnx_export.ClipGraph(net, normalize) if plan.mode == "clip" else onnx_export.StreamGraph(streaming, normalize)
    input_names = [t.name for t in manifest.inputs] + manifest.state_input_names
    output_names = [t.name for t in manifest.outputs] + manifest.state_output_names
    with status.stage(f"exporting {plan.mode} graph to ONNX opset {plan.opset} (torch.onnx dynamo + onnxslim)"):
        channels = manifest.motion.channels if manifest.motion else 3
        proto = onnx_export.export_onnx(graph, _example_inputs(plan, frames, size, manifest.states, channels), input_names,
                                        output_names, opset=plan.opset, dynamic_batch=plan.batch is None)
    if fp16_in_graph:
        from edgevid.export.precision import convert_to_fp16

        with status.stage("casting weights and compute to fp16 (fp32 inputs/outputs)"):
            proto = convert_to_fp16(proto)
            onnx_export.check(proto)
    if plan.target.name == "tensorrt":
        from edgevid.export.tensorrt import check_tensorrt_ready

        check_tensorrt_ready(proto)
    _check_graph_matches(manifest, proto)
    return proto


def _validate_all(work: Path, manifest: Manifest, plan: ExportPlan, net: Any, streaming: Any,
                  tolerance: float | None, fp16_in_graph: bool, status: Status, inputs: Any = None) -> None:
    """Run every backend of the target against torch; the figures go into the manifest.

    ``inputs``: clips to validate on (INT8: held-out real clips from the quantizer); default
    synthetic frames.
    """
    from edgevid.export import validate as check
    from edgevid.runtime.crosscheck import state_encodings

    inputs = inputs or check.make_inputs(manifest.preprocess, manifest.sampling.frames, motion=manifest.motion)
    backends = list(plan.target.validate_with) + (["tensorrt"] if "engine" in manifest.files else [])
    for backend in backends:
        # An fp32 ONNX keeps the fp32 tolerance even in an fp16 OpenVINO export (whose IR is fp16).
        fp16_here = fp16_in_graph or (plan.precision == "fp16" and backend == "openvino") or \
            (backend == "tensorrt" and plan.fp16_kernels)
        key = "fp16" if fp16_here else ("int8" if plan.precision == "int8" else "fp32")
        tol = tolerance if tolerance is not None else check.DEFAULT_TOLERANCE[key]
        with status.stage(f"validating in {backend} against torch"), _runner(backend, work, manifest) as run:
            manifest.validation[backend] = check.validate_run(
                backend, run, mode=plan.mode, model=net, streaming=streaming,
                states=manifest.states, inputs=inputs, batch=plan.batch, tolerance=tol,
                encodings=state_encodings(manifest))


def _check_graph_matches(manifest: Manifest, proto: Any) -> None:
    """The exported graph must have exactly the manifest's I/O, in the declared order."""
    from edgevid.export.onnx import graph_io
    from edgevid.runtime.artifact import check_io, expected_io

    got_in, got_out = graph_io(proto)
    want_in, want_out = expected_io(manifest)
    if [t.name for t in got_in] != [t.name for t in want_in] or [t.name for t in got_out] != [t.name for t in want_out]:
        raise EdgevidError("the exported graph's inputs/outputs are not in the declared order "
                           f"(got {[t.name for t in got_in][:3]}...; this is a bug in edgevid export)")
    check_io(manifest, got_in, got_out, ONNX_FILE)


def _metadata(manifest: Manifest, weights: dict[str, Any], plan: ExportPlan) -> dict[str, Any]:
    """The manifest fields copied into ONNX metadata_props / IR rt_info (self-describing files)."""
    data = manifest.to_dict()
    keys = ("schema_version", "edgevid_version", "model", "family", "mode", "inputs", "outputs", "states",
            "preprocess", "sampling", "labels", "precision", "target")
    return {**{k: data[k] for k in keys}, "opset": plan.opset, "checkpoint_sha256": weights["checkpoint_sha256"]}


def _add_openvino(work: Path, manifest: Manifest, plan: ExportPlan, status: Status,
                  metadata: dict[str, Any]) -> None:
    import json

    from edgevid.export import openvino as ov_export

    compress = plan.precision == "fp16"
    with status.stage("converting to OpenVINO IR (openvino.convert_model)"):
        xml, binf = ov_export.convert_to_ir(work / ONNX_FILE, work / XML_FILE, compress_to_fp16=compress,
                                            metadata={k: json.dumps(v) for k, v in metadata.items()})
    manifest.files.update({"openvino_xml": xml.name, "openvino_bin": binf.name})
    manifest.provenance.update({"openvino_xml_sha256": sha256_file(xml), "openvino_bin_sha256": sha256_file(binf)})
    manifest.build["openvino"] = {"compress_to_fp16": compress, "inference_precision": ov_export.VALIDATION_HINT}


def _add_tensorrt(work: Path, manifest: Manifest, plan: ExportPlan, status: Status, fp16: bool) -> None:
    from edgevid.export import tensorrt as trt_export

    ok, why = trt_export.engine_available()
    if ok:
        with status.stage("building the TensorRT engine on this GPU"):
            facts = trt_export.build_engine_now(work / ONNX_FILE, work / ENGINE_FILE, precision=plan.precision,
                                                fp16_kernels=plan.fp16_kernels)
        manifest.files["engine"] = ENGINE_FILE
        manifest.provenance["engine_sha256"] = sha256_file(work / ENGINE_FILE)
    else:
        facts = {"engine": "on_first_load", "reason": why}
    manifest.build["tensorrt"] = {**facts, "fp16": fp16, "parser_opset_limit": plan.target.max_opset}


@contextmanager
def _runner(backend: str, work: Path, manifest: Manifest) -> Iterator[Any]:
    """A ``feeds -> outputs`` function running the staged artifact on ``backend`` (closed afterwards)."""
    if backend == "onnxruntime":
        from edgevid.export.validate import onnxruntime_runner

        yield onnxruntime_runner(work / manifest.files["onnx"])
    elif backend == "openvino":
        from edgevid.export.openvino import VALIDATION_HINT, openvino_runner

        yield openvino_runner(work / manifest.files["openvino_xml"], VALIDATION_HINT)
    elif backend == "tensorrt":  # the engine just built, loaded as the runtime will (manifest staged first)
        from edgevid.runtime import load

        manifest.save(work)
        with load(work, "tensorrt", validate=False) as runner:
            yield runner.infer
    else:  # pragma: no cover - targets are static data
        raise EdgevidError(f"no validation runner for {backend}")


def _tool_versions(target: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "torchvision", "onnx", "onnxscript", "onnxslim", "onnxruntime", "numpy"]
    names += {"openvino": ["openvino"], "tensorrt": ["tensorrt"]}.get(target, [])
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _show(held: list[warnings.WarningMessage]) -> None:
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


class Status:
    """One status line per stage on stderr (``progress=True``), with its duration."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    @contextmanager
    def stage(self, text: str) -> Iterator[None]:
        """Print ``text``, run the block, then its duration (or "failed")."""
        t0 = time.perf_counter()
        if not self.enabled:
            yield
            return
        print(f"  {text} ...", end="", file=sys.stderr, flush=True)
        # A warning raised inside the stage would land mid-line ("quantizing ...warning: ... 12.0s"):
        # held back until the line is finished, then shown as it would have been.
        with warnings.catch_warnings(record=True) as held:  # the filters in force stay in force
            try:
                yield
            except BaseException:
                print(" failed", file=sys.stderr, flush=True)
                _show(held)
                raise
        print(f" {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        _show(held)

    def done(self, out: Path) -> None:
        """The closing line: where the artifact is and the whole export's time."""
        if self.enabled:
            print(f"  wrote {out} in {time.perf_counter() - self.start:.1f}s", file=sys.stderr, flush=True)
