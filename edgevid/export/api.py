"""``export_model``: the one public entry point of export (CLI, tests, runtime and compression).

zoo model (+ checkpoint) -> torch graph (clip or stream, optional uint8 input) -> checked ONNX at
the requested opset -> target files (fp16 cast, OpenVINO IR, TensorRT checks/engine) ->
validation against torch -> ``manifest.json``, all in a staged directory renamed into place
at the end.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgevid.errors import EdgevidError, EdgevidWarning
from edgevid.export.targets import DEFAULT_OPSET, Target, check_opset, check_precision, get_target
from edgevid.manifest import (
    MAX_CROP,
    MAX_ELEMENTS,
    MAX_FRAMES,
    Manifest,
    Preprocess,
    Sampling,
    StatePair,
    TensorSpec,
    sha256_file,
)
from edgevid.staging import check_destination, staged_directory

ONNX_FILE = "model.onnx"
XML_FILE = "model.xml"
ENGINE_FILE = "model.engine"
MODES = ("clip", "stream")
# Bounds on what an export may be asked for (the CLI's argument types use the same): a typo
# must be one line, not a MemoryError deep in torch. Frames and crop size share the
# manifest's ceilings, and the input tensor its per-tensor ceiling: the runtime would refuse
# an artifact past them.
MAX_BATCH = 1024
MIN_WIDTH_MULT, MAX_WIDTH_MULT = 0.05, 8.0  # what a checkpoint's config may say (edgevid.models)
MAX_TOLERANCE = 1.0  # relative to each output's peak: above 1 nothing is compared any more


class RandomWeightsWarning(EdgevidWarning):
    """The exported model has random weights (no checkpoint given and none shipped)."""


class GraphQuantizer(Protocol):
    """Turns the checked FP32 ONNX graph into an INT8 one, for ``precision="int8"``.

    Export knows nothing of how: the orchestration layer (``edgevid.pipeline.export``)
    passes one built from ``edgevid.compress``. The result has ``model`` (the INT8
    ``onnx.ModelProto``), ``info`` (recorded as ``build.int8``) and ``validation_inputs``
    (real clips the torch-vs-artifact validation runs on, or None for synthetic frames).
    """

    def __call__(self, proto: Any, *, streaming: Any, states: list[StatePair], mode: str, preprocess: Preprocess,
                 frames: int, target: str) -> Any: ...


@dataclass(frozen=True)
class ExportPlan:
    """Every resolved choice of one export, checked before any heavy work."""

    model: str
    mode: str
    target: Target
    precision: str
    opset: int
    batch: int | None  # None: dynamic batch axis "N"
    uint8_input: bool
    out_dir: Path
    device: str = "generic"  # the device profile (manifest ``device``)
    fp16_kernels: bool = False  # a TensorRT engine of this fp32 ONNX uses fp16 kernels (Jetson profiles)


def default_output_dir(model: str, mode: str, target: str, precision: str = "fp32", uint8_input: bool = False,
                       device: str = "generic") -> Path:
    """``exports/<model>-<mode>-<target>[-fp16][-uint8][-<device>]`` under the current directory."""
    suffix = (f"-{precision}" if precision != "fp32" else "") + ("-uint8" if uint8_input else "") + \
        (f"-{device}" if device != "generic" else "")
    return Path("exports") / f"{model}-{mode}-{target}{suffix}"


def export_model(model: str, out_dir: str | os.PathLike | None = None, *, checkpoint: str | os.PathLike | None = None,
                 mode: str | None = None, target: str | None = None, precision: str | None = None,
                 frames: int | None = None, size: int | None = None, opset: int | None = None,
                 uint8_input: bool = False, force: bool = False, num_classes: int | None = None,
                 width_mult: float | None = None, batch: int | None = None, validate: bool = True,
                 tolerance: float | None = None, progress: bool = True,
                 quantizer: GraphQuantizer | None = None, device: str | None = None) -> Manifest:
    """Export a zoo model to ``out_dir`` (default ``exports/<model>-<mode>-<target>``); return its manifest.

    - ``checkpoint``: a path, ``"default"`` (the shipped one), or None: the shipped checkpoint
      if the entry has one, else random weights (``RandomWeightsWarning``, recorded).
    - ``mode``: ``"clip"`` or ``"stream"``; default stream for models that can stream.
    - ``target``: ``onnxruntime`` (alias ``onnx``), ``openvino`` or ``tensorrt``; default the
      device profile's backend, else ``onnxruntime``.
    - ``precision``: ``fp32`` or ``fp16`` (fp16 compute in the ONNX with fp32 I/O; for OpenVINO,
      fp16 weight compression in the IR); default the device profile's, else ``fp32``.
    - ``device``: a device profile (``edgevid devices list``): picks target, precision and opset
      and refuses what the device cannot run; recorded as the manifest's ``device``.
    - ``frames`` / ``size``: clip length and crop size (default: the model's).
    - ``batch``: fix the batch size; default dynamic, or 1 for static-shape targets.
    - ``validate``: run the artifact on every backend of the target against torch; a
      difference above ``tolerance`` (default per precision) fails the export.
    - ``progress``: print one status line per stage to stderr.
    - ``quantizer`` (``precision="int8"`` only): the graph quantizer; ``edgevid.pipeline.export``
      supplies NNCF's, calibrated on real video (see ``edgevid.compress``).

    A failure of any kind leaves nothing on disk; an existing ``out_dir`` needs ``force``.
    """
    from edgevid.models import get_config

    config = get_config(model)
    profile = _device_profile(device)
    target_spec = get_target(target or (profile.default_backend if profile else "onnxruntime"))
    precision = check_precision(precision or (profile.default_precision if profile else "fp32"))
    opset = DEFAULT_OPSET if opset is None else opset
    if profile is not None:
        _check_for_device(profile, target_spec.name, precision, opset)
    if precision == "int8" and quantizer is None:
        raise EdgevidError("an int8 export needs a quantizer: use edgevid.pipeline.export "
                           "(what `edgevid export --precision int8` calls)")
    if precision != "int8" and quantizer is not None:
        raise EdgevidError(f"a quantizer only applies to precision int8, not {precision}")
    check_opset(target_spec, opset)
    mode = mode or ("stream" if config.can_stream else "clip")
    if mode not in MODES:
        raise EdgevidError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    _check_numbers(frames, size, batch, num_classes, width_mult, tolerance)
    if batch is None and target_spec.static_shapes:
        batch = 1
    if mode == "stream" and batch not in (None, 1):
        raise EdgevidError("a streaming export runs one stream per call: use batch 1 (or a dynamic batch)")
    out = check_destination(
        out_dir if out_dir is not None
        else default_output_dir(config.name, mode, target_spec.name, precision, uint8_input,
                                profile.name if profile else "generic"), force)
    plan = ExportPlan(config.name, mode, target_spec, precision, opset, batch, uint8_input, out,
                      device=profile.name if profile else "generic",
                      fp16_kernels=bool(profile and profile.fp16_kernels and precision == "fp32"))

    status = _Status(progress)
    checkpoint, weights = _resolve_checkpoint(config.name, checkpoint)
    with status.stage(f"building {config.name}"):
        net = _build(config.name, checkpoint, weights, num_classes=num_classes, width_mult=width_mult)
    frames = frames or net.config.frames
    size = size or net.config.input_size
    net.config.check_input(frames, size)
    _check_input_size(mode, frames, size, batch)
    preprocess = _preprocess_for(net.config, size, uint8_input)
    streaming = None
    if mode == "stream":
        from edgevid.models.streaming import to_streaming

        streaming = to_streaming(net).eval()  # clear error for a bi-directional model

    with staged_directory(out, force) as work:
        manifest = _export_into(work, plan, net, streaming, weights, frames, size, preprocess, status,
                                validate=validate, tolerance=tolerance, quantizer=quantizer)
    status.done(out)
    return manifest


def _check_numbers(frames: int | None, size: int | None, batch: int | None, num_classes: int | None,
                   width_mult: float | None, tolerance: float | None) -> None:
    """Refuse a count out of range or a number that is not finite, before any model is built."""
    for name, value, hi in (("frames", frames, MAX_FRAMES), ("size", size, MAX_CROP), ("batch", batch, MAX_BATCH),
                            ("num_classes", num_classes, 100_000)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi):
            raise EdgevidError(f"{name} must be an integer between 1 and {hi}, got {value}")
    if width_mult is not None and not MIN_WIDTH_MULT <= width_mult <= MAX_WIDTH_MULT:  # also refuses nan
        raise EdgevidError(f"width_mult must be in [{MIN_WIDTH_MULT:g}, {MAX_WIDTH_MULT:g}], got {width_mult}")
    if tolerance is not None and not 0.0 <= tolerance <= MAX_TOLERANCE:
        raise EdgevidError(f"tolerance must be in [0, {MAX_TOLERANCE:g}], got {tolerance}")


def _check_input_size(mode: str, frames: int, size: int, batch: int | None) -> None:
    """Refuse an input tensor past the manifest's per-tensor ceiling (the runtime would refuse it),
    before torch allocates the example inputs and the validation clips."""
    per_call = (batch or 1) * (frames if mode == "clip" else 1) * 3 * size * size
    if per_call > MAX_ELEMENTS:
        what = f"{frames} frames" if mode == "clip" else "one frame"
        raise EdgevidError(f"a {mode} input of {what} at {size}x{size} px{f' x batch {batch}' if batch else ''} has "
                           f"{per_call} values, more than the {MAX_ELEMENTS} a manifest allows per tensor; use fewer "
                           "--frames, a smaller --size or --batch")


def _device_profile(device: str | None) -> Any:
    """The supported profile called ``device`` (None: no device given)."""
    if device is None:
        return None
    from edgevid.devices.profiles import get_profile, require_supported

    return require_supported(get_profile(device))


def _check_for_device(profile: Any, target: str, precision: str, opset: int) -> None:
    """Refuse a target, precision or opset the device cannot run (one line, before any work)."""
    if target not in profile.backends:
        raise EdgevidError(f"{profile.name} runs {', '.join(profile.backends)}, not {target}")
    if precision not in profile.precisions:
        why = f" ({profile.sources['precisions']})" if "precisions" in profile.sources else ""
        raise EdgevidError(f"{profile.name} cannot run {precision}: it runs {', '.join(profile.precisions)}{why}")
    if opset > profile.max_opset:
        raise EdgevidError(f"opset {opset} is too new for {profile.name}: its TensorRT parses up to opset "
                           f"{profile.max_opset}; use --opset {profile.max_opset}")


def _resolve_checkpoint(name: str, checkpoint: str | os.PathLike | None) -> tuple[Any, dict[str, Any]]:
    """Which weights to load, and their provenance; warns when they are random."""
    from edgevid.models import DEFAULT_CHECKPOINT, get_config

    spec = get_config(name).default_weights
    if checkpoint is None and spec is not None:
        checkpoint = DEFAULT_CHECKPOINT
    if checkpoint is None:
        public = [w.name for w in get_config(name).weights if w.url]
        hint = f"pass --weights {public[0]} (its public weights) or --checkpoint PATH" if public else \
            "pass --checkpoint PATH"
        warnings.warn(RandomWeightsWarning(
            f"{name} ships no checkpoint and none was given: exporting RANDOM weights "
            f"(fine to test the pipeline, useless for predictions); {hint}"), stacklevel=3)
        return None, {"weights": "random-init", "checkpoint": None, "checkpoint_sha256": None}
    if checkpoint == DEFAULT_CHECKPOINT:
        if spec is None:
            raise EdgevidError(f"{name} ships no checkpoint; pass --checkpoint PATH")
        return checkpoint, {"weights": f"shipped:{spec.name}", "checkpoint": spec.file, "checkpoint_sha256": spec.sha256}
    return checkpoint, {"weights": "checkpoint", "checkpoint": str(checkpoint), "checkpoint_sha256": None}


def _build(name: str, checkpoint: Any, weights: dict[str, Any], **overrides: Any) -> Any:
    """The eval-mode model; hashes a user checkpoint once it has loaded (so it is readable).

    Public weights (a name such as ``kinetics400``, or the source's file) are recorded with their
    source, URL, sha256, how that hash was checked, and the source's published accuracy.
    """
    from edgevid.models import build_model

    try:
        net = build_model(name, checkpoint=checkpoint, **overrides)
    except ValueError as exc:  # builder argument errors (e.g. a width multiplier on ResNet-50)
        raise EdgevidError(str(exc)) from exc
    public = getattr(net, "weights_info", None)
    if public is not None:
        weights.update(public)
    elif weights["weights"] == "checkpoint":
        weights["checkpoint_sha256"] = sha256_file(checkpoint)
    return net.eval()


def _preprocess_for(config: Any, size: int, uint8_input: bool) -> Preprocess:
    # The model's resize belongs to its input size (256 for 224: the usual 0.875 crop);
    # another crop size keeps that ratio.
    resize = config.resize if size == config.input_size else round(size * config.resize / config.input_size)
    return Preprocess(resize=resize, crop=size, mean=list(config.mean), std=list(config.std),
                      channel_order="RGB", uint8_input=uint8_input)


def _graph_io(plan: ExportPlan, frames: int, size: int, classes: int,
              states: list[StatePair]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    n: int | str = plan.batch if plan.batch is not None else "N"
    dtype = "uint8" if plan.uint8_input else "float32"
    image = [size, size, 3] if plan.uint8_input else [3, size, size]
    layout = "HWC" if plan.uint8_input else "CHW"
    if plan.mode == "clip":
        inputs = [TensorSpec("frames", [n, frames, *image], dtype, "NT" + layout)]
    else:
        inputs = [TensorSpec("frame", [n, *image], dtype, "N" + layout)]
    return inputs, [TensorSpec("logits", [n, classes], "float32", "NC")]


def _example_inputs(plan: ExportPlan, frames: int, size: int, states: list[StatePair]) -> tuple[Any, ...]:
    import torch

    # A dynamic batch is traced with 2: torch.export specialises a size-1 axis to a constant.
    b = plan.batch or 2
    gen = torch.Generator().manual_seed(0)
    lead = (b, frames) if plan.mode == "clip" else (b,)
    if plan.uint8_input:
        x = torch.randint(0, 256, (*lead, size, size, 3), dtype=torch.uint8, generator=gen)
    else:
        x = torch.randn(*lead, 3, size, size, generator=gen)
    return (x, *[torch.full((b, *s.shape[1:]), s.init) for s in states])


def _export_into(work: Path, plan: ExportPlan, net: Any, streaming: Any, weights: dict[str, Any], frames: int,
                 size: int, preprocess: Preprocess, status: _Status, *, validate: bool,
                 tolerance: float | None, quantizer: GraphQuantizer | None = None) -> Manifest:
    import onnx

    from edgevid.export import onnx as onnx_export

    states = [] if streaming is None else [
        StatePair(s.path, list(s.shape), str(s.dtype).removeprefix("torch."), s.init) for s in streaming.state_specs(size)]
    inputs, outputs = _graph_io(plan, frames, size, net.num_classes, states)
    manifest = Manifest(
        model=plan.model, family=net.config.family, mode=plan.mode, inputs=inputs, outputs=outputs,
        preprocess=preprocess, sampling=Sampling(frames=frames, stride=net.config.frame_stride,
                                                      smooth=net.config.stream_smooth if plan.mode == "stream" else 0),
        labels=list(net.labels),
        states=states, precision=plan.precision, target=plan.target.name, device=plan.device,
        files={"onnx": ONNX_FILE},
    )
    fp16_in_graph = plan.precision == "fp16" and plan.target.name != "openvino"
    proto = _onnx_graph(plan, manifest, net, streaming, frames, size, fp16_in_graph, status)
    int8_result = None
    if quantizer is not None:
        with status.stage(f"quantizing to INT8 for {plan.target.name} (NNCF, calibrated on real video)"):
            int8_result = quantizer(proto, streaming=streaming, states=manifest.states, mode=plan.mode,
                                    preprocess=manifest.preprocess, frames=frames, target=plan.target.name)
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


def _onnx_graph(plan: ExportPlan, manifest: Manifest, net: Any, streaming: Any, frames: int, size: int,
                fp16_in_graph: bool, status: _Status) -> Any:
    """The checked ONNX model for the plan: export, fp16 cast, target checks, I/O vs manifest."""
    from edgevid.export import onnx as onnx_export

    normalize = onnx_export.normalizer_for(manifest.preprocess) if plan.uint8_input else None
    graph = onnx_export.ClipGraph(net, normalize) if plan.mode == "clip" else onnx_export.StreamGraph(streaming, normalize)
    input_names = [t.name for t in manifest.inputs] + manifest.state_input_names
    output_names = [t.name for t in manifest.outputs] + manifest.state_output_names
    with status.stage(f"exporting {plan.mode} graph to ONNX opset {plan.opset} (torch.onnx dynamo + onnxslim)"):
        proto = onnx_export.export_onnx(graph, _example_inputs(plan, frames, size, manifest.states), input_names,
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
                  tolerance: float | None, fp16_in_graph: bool, status: _Status, inputs: Any = None) -> None:
    """Run every backend of the target against torch; the figures go into the manifest.

    ``inputs``: clips to validate on (INT8: held-out real clips from the quantizer); default
    synthetic frames.
    """
    from edgevid.export import validate as check
    from edgevid.runtime.crosscheck import state_encodings

    inputs = inputs or check.make_inputs(manifest.preprocess, manifest.sampling.frames)
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


def _add_openvino(work: Path, manifest: Manifest, plan: ExportPlan, status: _Status,
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


def _add_tensorrt(work: Path, manifest: Manifest, plan: ExportPlan, status: _Status, fp16: bool) -> None:
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


class _Status:
    """One status line per stage on stderr (``progress=True``), with its duration."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    @contextmanager
    def stage(self, text: str) -> Iterator[None]:
        t0 = time.perf_counter()
        if self.enabled:
            print(f"  {text} ...", end="", file=sys.stderr, flush=True)
        try:
            yield
        except BaseException:
            if self.enabled:
                print(" failed", file=sys.stderr, flush=True)
            raise
        if self.enabled:
            print(f" {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

    def done(self, out: Path) -> None:
        if self.enabled:
            print(f"  wrote {out} in {time.perf_counter() - self.start:.1f}s", file=sys.stderr, flush=True)
