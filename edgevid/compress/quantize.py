"""Post-training INT8 of an exported ONNX graph with NNCF, arranged so the backends run it fast.

The result is standard QDQ ONNX (QuantizeLinear/DequantizeLinear, INT8 weights stored as
int8 initializers), which ONNX Runtime, OpenVINO and TensorRT all read.

What made INT8 slower than FP32, and the per-target recipe that fixes it
(measurements: streaming TSM-MobileNetV2 at 224 on this AVX512-VNNI/AVX512-BF16 CPU;
``benchmarks/bench_compress.py`` reproduces them):

- ONNX Runtime, naive ``nncf.quantize``: 2.3x SLOWER than FP32 (9.8 vs 4.2 ms/frame, one
  thread). Only 13 of 52 convs ran as QLinearConv; the rest ran as float convs between
  Q/DQ pairs. The four causes and their fixes are in ``edgevid.compress.qdq``: per-tensor
  activation quantizers (NNCF's CPU config picks per-channel ones for depthwise inputs),
  Concat ignored by NNCF so each shift's quantizer stays on the conv input, the state taps
  routed through the residual quantizer, and one activation integer type (uint8). With
  them every conv, add and concat is an integer kernel: 2.3 ms, 1.8x faster than FP32.
  Then, with every conv an integer kernel, ORT's profiler showed the glue around the shift
  (Transposes, Q/DQ of float states) and the 3-channel stem (off MLAS's fast int8 conv) as
  what kept the stream step above half the FP32 time: stream exports for ONNX Runtime carry
  their states as the graph's uint8 tensors in NHWC (``integer_states``; the manifest's
  ``build.int8.integer_states`` says how to decode them) and the stem gets a zero 4th input
  channel (``pad_channels``). Stream INT8 / FP32 at 2 threads, 224 px, over six runs on a
  shared 2-core EPYC: 0.56-0.64 before, 0.53-0.59 after (README, "INT8: where the time goes").
- OpenVINO: an FP32 IR on this CPU runs in **bf16** unless told otherwise (the CPU
  plugin's default ``INFERENCE_PRECISION_HINT`` on AVX512-BF16/AMX hardware), which is
  already 1.9x faster than true f32 (2.4 vs 4.6 ms), so "INT8 vs FP32" there is INT8 vs
  bf16: 1.14x (2.1 ms; 1.27x when the non-quantized rest also runs at the default) while
  INT8 vs f32 is 2.2x. edgevid's runtime pins fp32 artifacts to f32 (they were validated in
  f32), so 2.2x is the ratio its users see; oneDNN's int8 1x1 convs are only ~1.3x faster
  than bf16 here and its int8 depthwise convs no faster. OpenVINO keeps NNCF's symmetric
  activation types (zero point 0 is oneDNN's fast path; a uint8 zero point of 128 made its
  1x1 convs ~1.8x slower in PERF_COUNT). NNCF's OpenVINO-native path (quantizing the
  ``openvino.Model``) was measured too and is SLOWER here (2.3 vs 2.1 ms: it leaves the
  depthwise convs in bf16 with reorders around them), so the OpenVINO target quantizes
  the ONNX and converts the QDQ graph; ``quantize_openvino`` keeps the native path for
  comparison.
  Separately, OpenVINO 2026.4's low-precision pass crashes when compiling a stateful
  (ReadValue/Assign) INT8 model whose ReadValue has no initializer; the runtime builds the
  variables with a zero initializer for that reason.
- TensorRT accepts only symmetric signed INT8: PERFORMANCE preset, int8 activations.

Attention (non-local blocks; ``edgevid.compress.attention`` finds MatMul(q, k) -> Softmax ->
MatMul(weights, v) by that pattern, so convs, the classifier and weight MatMuls are never touched).
NNCF's default quantizes all of it: Q/DQ on q, k and v (the theta / phi / g conv outputs) and on the
Softmax output; the scores entering the Softmax stay float. ``benchmarks/bench_nonlocal_int8.py``,
``i3d-nl-resnet50`` with random weights and active blocks, 2-core AMD EPYC (AVX512-VNNI/BF16, no AMX),
2 threads, each placement from one NNCF run. The error the attention's own INT8 adds (mean |diff| /
mean |FP32| of softmax(q k) v with NNCF's quantizers on FP32 q, k, v; per block, res3 then res4) and
latency per clip at 32 x 224 (784 keys in res3, 196 in res4; a quiet run, medians of 6 interleaved
rounds; INT8 with all of it quantized = 1.00):

    kept in float              attention error, 5 blocks   ORT     OpenVINO f32   OpenVINO default
    nothing (NNCF's default)   0.22 0.03 0.03 0.02 0.05    1.00    1.00           1.00
    MatMul(weights, v)         0.03 0.02 0.02 0.01 0.03    1.05    1.07           1.03
    MatMul(q, k)               0.22 0.02 0.01 0.01 0.02    1.11    1.07           0.98
    both                       0 (by definition)           1.13    1.15           1.09

(1.00 = 547, 121 and 128 ms per clip.) The Softmax output is what breaks: its one per-tensor scale
follows the sharpest queries' top weights, so in a block whose attention is spread (res3's first: 784
keys, mean top weight 0.07) most weights (~1/784) fall below one quantization step, 22% error.
Keeping MatMul(weights, v) in float (its weights and v unquantized) takes that block to 3%; what is
left is q and k's quantization, 1-3%. The logits do not show it
on random weights (max |logit diff| / peak 0.24-0.34 and top-1 agreement 75-100% on 12 clips for every
placement, equal within their noise: the rest of the network's INT8 error dominates). At 16 x 112
(98 / 18 keys, attention 1-2% of the time) the errors are 0.02-0.08 all quantized, 0.02-0.06 with
MatMul(weights, v) float, and latency moved by 0-5% (ORT 0.95 -> 1.00 of FP32; OpenVINO within 3%; a
busy machine). So ONNX Runtime and OpenVINO keep MatMul(weights, v) in float
(``float_attention=("av",)``), for 3-7% of the clip time at 224 px; keeping both costs 9-15%. (ONNX
Runtime's INT8 of this I3D is barely faster than its FP32 at 224 px, 0.97 in the same run: that is
the rest of the graph, the attention being 4% of its time.)

TensorRT (not measured here) follows NVIDIA's rule for it: TensorRT fuses MatMul -> Softmax -> MatMul
built from plain layers into one attention kernel ("Fused Attention", TensorRT docs) and, in explicit
quantization, runs in INT8 exactly what the Q/DQ placement says ("Explicit Quantization"); NVIDIA's
Model Optimizer, which writes Q/DQ ONNX for TensorRT, quantizes both attention MatMuls (inputs and
Softmax output) for INT8 when the attention has at most 512 keys and neither above
(``TENSORRT_INT8_ATTENTION_MAX_KEYS``). That rule also keeps the long spread attention above, 784
keys, out of INT8. The manifest's ``build.int8.attention`` counts the attention MatMuls kept in float
and names their blocks.

The first conv and the classifier stay quantized by default: on the shipped checkpoint
(132 held-out clips) INT8 top-1 equals FP32 (0.909) with 98.0-98.1% per-frame top-1
agreement; keeping either in float did not raise the agreement. ``ignore`` keeps named layers
in float, and ``--max-accuracy-drop`` lets NNCF choose them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from edgevid.compress import attention, qdq, schedule
from edgevid.compress.calibration import CalibrationSet, LabelledClips
from edgevid.errors import EdgevidError, EdgevidWarning, require
from edgevid.manifest import StatePair

TARGETS = ("onnxruntime", "openvino", "tensorrt")
PRESETS = ("performance", "mixed")
DEFAULT_MAX_ITERATIONS = 12  # accuracy control reverts at most this many quantizer groups
# NVIDIA's TensorRT Model Optimizer, the ONNX quantizer that "generates QDQ nodes following TensorRT rules",
# gives an attention's two MatMuls Q/DQ for INT8 only up to this many keys (NVIDIA/Model-Optimizer,
# modelopt/onnx/quantization/graph_utils.py, ``find_nodes_from_mha_to_exclude``: "when quantize_mode ==
# int8, if seq_len > 512, don't add Q/DQ layers to MatMuls in MHA pattern").
TENSORRT_INT8_ATTENTION_MAX_KEYS = 512


class AccuracyDropError(EdgevidError):
    """The requested maximum accuracy drop could not be reached."""


class DegenerateRangeWarning(EdgevidWarning):
    """Calibration fell back to min-max ranges: some activation is (nearly) constant."""


_T = TypeVar("_T")


@dataclass(frozen=True)
class Recipe:
    """How one target gets quantized (see the module docstring for why)."""

    target: str
    preset: str = "performance"  # symmetric weights and activations
    activation_dtype: str = "as-is"  # "uint8" (ONNX Runtime), "int8" (TensorRT), "as-is" (OpenVINO)
    ignored_types: tuple[str, ...] = ("Concat",)
    per_channel_activations: bool = False
    # NNCF's HISTOGRAM estimator (ranges that minimise the quantization error over a histogram
    # of all calibration samples). NNCF's default, the mean of per-sample extremes, clips the
    # rare large activations of the residual stream and the states. Measured on the shipped
    # TSM (132 val clips, stream mode), mean |logit error| vs FP32 / per-frame top-1 agreement:
    # default 0.48 / 96.0%, MINMAX 0.163 / 97.9%, HISTOGRAM 0.151 / 98.0%.
    activation_range: str = "HISTOGRAM"
    # ONNX Runtime only (measured on OpenVINO: slower, see benchmarks/bench_int8.py): stream
    # states carried as the graph's own integers in NHWC, and narrow conv inputs padded to
    # the channel multiple of MLAS's symmetric int8 kernels (``edgevid.compress.qdq``).
    integer_states: bool = False
    pad_channels: bool = False
    # Attention (non-local blocks, ``edgevid.compress.attention``): which of its MatMuls stay in float,
    # "qk" = MatMul(q, k), "av" = MatMul(weights, v); and, where set, attention over more keys than
    # this keeps both in float (see the module docstring for the measurements and TensorRT's rule).
    float_attention: tuple[str, ...] = ()
    int8_attention_max_keys: int | None = None


def recipe_for(target: str, preset: str | None = None) -> Recipe:
    """The per-target defaults; ``preset`` overrides the NNCF preset where the target allows it."""
    from edgevid.export.targets import get_target

    name = get_target(target).name
    if preset is not None and preset not in PRESETS:
        raise EdgevidError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if name == "tensorrt":
        if preset == "mixed":
            raise EdgevidError("TensorRT supports only symmetric INT8: use the performance preset")
        # NVIDIA's rule, not measured here (see the module docstring): attention INT8 up to 512 keys.
        return Recipe(name, "performance", "int8", int8_attention_max_keys=TENSORRT_INT8_ATTENTION_MAX_KEYS)
    if name == "onnxruntime":
        return Recipe(name, preset or "performance", "uint8", integer_states=True, pad_channels=True,
                      float_attention=("av",))
    return Recipe(name, preset or "performance", "as-is", float_attention=("av",))


@dataclass
class QuantizationResult:
    """The INT8 model and what was done to it (JSON-ready ``info`` for the manifest)."""

    model: onnx.ModelProto
    info: dict[str, Any]
    states: list[StatePair] | None = None  # the graph's states when the recipe changed them (integer_states)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path``."""
        onnx.save_model(self.model, str(path))
        return Path(path)


def _load(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return onnx.ModelProto.FromString(model.SerializeToString())  # never edit the caller's copy
    if not Path(model).is_file():
        raise EdgevidError(f"ONNX model {model} not found")
    return onnx.load(str(model))


@contextlib.contextmanager
def _quiet():
    """NNCF prints progress bars and INFO lines; the CLI prints its own status instead."""
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        nncf_log.setLevel(level)


def _ignored_scope(nncf: Any, model: onnx.ModelProto, recipe: Recipe, ignore: Sequence[str]) -> Any:
    """NNCF IgnoredScope: the recipe's op types and attention MatMuls, a stream's step-counter arithmetic, plus
    the nodes of the named layers."""
    names = []
    for layer in ignore:
        hits = [n.name for n in model.graph.node if n.op_type in qdq.WEIGHTED_OPS and len(n.input) > 1
                and qdq.module_path(n.input[1]) == layer]
        if not hits:
            raise EdgevidError(f"--ignore {layer!r} names no layer of the model (use a module path such as "
                               "backbone.features.0.0)")
        names += hits
    names += attention.float_matmuls(attention.find_attention(model), recipe.float_attention,
                                     recipe.int8_attention_max_keys)
    names += schedule.counter_nodes(model)  # a strided stream's step counter and gates count in float
    return nncf.IgnoredScope(names=names, types=list(recipe.ignored_types), validate=False)


def _nncf_args(nncf: Any, model: onnx.ModelProto, calibration: CalibrationSet, recipe: Recipe,
               ignore: Sequence[str]) -> dict[str, Any]:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if not len(calibration):
        raise EdgevidError("the calibration set is empty")
    advanced = AdvancedQuantizationParameters(
        activations_quantization_params=QuantizationParameters(per_channel=recipe.per_channel_activations),
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, recipe.activation_range))
    return {
        "preset": nncf.QuantizationPreset.PERFORMANCE if recipe.preset == "performance" else nncf.QuantizationPreset.MIXED,
        "subset_size": len(calibration),
        "ignored_scope": _ignored_scope(nncf, model, recipe, ignore),
        "advanced_parameters": advanced,
    }


def finalize(model: onnx.ModelProto, recipe: Recipe) -> dict[str, int]:
    """Apply the QDQ rewrites of ``edgevid.compress.qdq`` for ``recipe.target`` in place."""
    steps = {"rewired_state_taps": qdq.route_taps_through_quantizer(model),
             "requantized_concat_inputs": qdq.requantize_concat_inputs(model)}
    if recipe.activation_dtype == "uint8":
        steps["activations_to_uint8"] = qdq.activations_to_uint8(model)
    elif recipe.activation_dtype == "int8":
        steps["activations_to_int8"] = qdq.activations_to_int8(model)
    if recipe.pad_channels:
        steps["padded_conv_inputs"] = qdq.pad_narrow_conv_inputs(model)
    onnx.checker.check_model(model)
    return steps


def with_integer_states(result: QuantizationResult, recipe: Recipe, states: Sequence[StatePair]) -> QuantizationResult:
    """Apply the recipe's ``integer_states`` rewrite to a finished result (a stream model's last step).

    Rewritten states get the integer dtype, NHWC shape and zero-point initial value in
    ``result.states``; their encodings are recorded under ``info["integer_states"]``.
    """
    if not (recipe.integer_states and states):
        return result
    encodings = qdq.integer_states(result.model, states)
    if not encodings:  # no state of this model has the shift's pattern (3D caches, LSTM states)
        return result
    onnx.checker.check_model(result.model)
    result.states = [StatePair(s.path, [s.shape[0], s.shape[2], s.shape[3], s.shape[1]], e["dtype"], float(e["zero_point"]))
                     if (e := encodings.get(s.path)) else s for s in states]
    result.info["integer_states"] = encodings
    return result


def quantize_onnx(model: onnx.ModelProto | str | os.PathLike, calibration: CalibrationSet, *,
                  target: str = "onnxruntime", preset: str | None = None, ignore: Sequence[str] = (),
                  states: Sequence[StatePair] = (), out_path: str | os.PathLike | None = None) -> QuantizationResult:
    """Post-training INT8 of an ONNX model for ``target`` (QDQ ONNX; see the module docstring).

    ``calibration`` holds graph feeds (``edgevid.compress.calibration``); ``ignore`` names
    layers (module paths) to keep in float; ``states`` (stream models) lets the recipe change
    how states are carried (``result.states``). Writes ``out_path`` if given.
    """
    nncf = require("nncf", "export")
    proto = _load(model)

    def run(recipe: Recipe) -> onnx.ModelProto:
        with _quiet():
            return nncf.quantize(proto, nncf.Dataset(calibration.samples),
                                 **_nncf_args(nncf, proto, calibration, recipe, ignore))

    quantized, recipe = with_range_fallback(run, recipe_for(target, preset))
    steps = finalize(quantized, recipe)
    result = with_integer_states(QuantizationResult(quantized, _info(quantized, recipe, calibration, steps, proto)),
                                 recipe, states)
    if out_path is not None:
        result.save(out_path)
    return result


def with_range_fallback(run: Callable[[Recipe], _T], recipe: Recipe) -> tuple[_T, Recipe]:
    """``run(recipe)``, or, where NNCF's histogram cannot bin an activation, ``run`` with min-max ranges.

    A (nearly) constant activation (random weights behind a zero-initialised BatchNorm, as
    PyTorchVideo's X3D blocks have) spans a few float ulps: NNCF's HISTOGRAM estimator then
    fails with numpy's "Too many bins for data range". It fails on the first sample that has
    such a range, so the retry costs little; MINMAX copes with any range. Returns the result
    and the recipe that made it (the manifest records that one).
    """
    try:
        return run(recipe), recipe
    except ValueError as exc:
        if recipe.activation_range == "MINMAX" or "finite-sized bins" not in str(exc):
            raise
    warnings.warn("some activations are constant over the calibration data (random weights?), too narrow for "
                  "histogram ranges: calibrated with min-max ranges instead", DegenerateRangeWarning, stacklevel=3)
    fallback = replace(recipe, activation_range="MINMAX")
    return run(fallback), fallback


def _info(model: onnx.ModelProto, recipe: Recipe, calibration: CalibrationSet, steps: dict[str, int],
          source: onnx.ModelProto) -> dict[str, Any]:
    info = {"method": "nncf.quantize (post-training, QDQ)", "nncf": _version("nncf"), "recipe": asdict(recipe),
            "calibration": calibration.describe(), "qdq_rewrites": steps,
            "int8_layers": len(qdq.quantized_weighted_layers(model)),
            "float_layers": qdq.float_weighted_layers(model)}
    found = attention.find_attention(source)
    if found:  # which attention MatMuls stayed in float, named by the FP32 graph's modules
        info["attention"] = attention.summary(model, found)
    return info


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def validation_function(mode: str, states: Sequence[StatePair], recipe: Recipe):
    """NNCF ``validation_fn``: top-1 of the model on labelled clips, as the target will run it.

    The model NNCF hands in is first given the same QDQ rewrites as the final artifact, so
    accuracy control measures exactly what ships. Each data item is (graph clip, label).
    """
    from edgevid.compress.evaluate import predict, session

    # NNCF's ranking calls this once per item with the same model object: build its session once.
    cache: list[Any] = [None, None]

    def validate(model: onnx.ModelProto, items) -> tuple[float, list[float]]:
        if cache[0] is not model:
            candidate = onnx.ModelProto.FromString(model.SerializeToString())
            if any(n.op_type == qdq.Q for n in candidate.graph.node):
                finalize(candidate, recipe)
            cache[0], cache[1] = model, session(candidate)
        items = list(items)
        clips = np.stack([clip for clip, _ in items])
        labels = np.asarray([label for _, label in items])
        logits = predict(None, clips, mode, states, sess=cache[1]).clip_logits
        hits = (logits.argmax(-1) == labels).astype(float)
        return float(hits.mean()), hits.tolist()

    return validate


def quantize_with_accuracy_control(model: onnx.ModelProto | str | os.PathLike, calibration: CalibrationSet,
                                   validation: LabelledClips, *, mode: str, states: Sequence[StatePair] = (),
                                   target: str = "onnxruntime", max_drop: float = 0.01, preset: str | None = None,
                                   ignore: Sequence[str] = (), max_iterations: int = DEFAULT_MAX_ITERATIONS
                                   ) -> QuantizationResult:
    """``nncf.quantize_with_accuracy_control``: keep the fewest layers in float so that the
    clip top-1 on ``validation`` drops by at most ``max_drop`` (absolute, 0.01 = 1 point).

    NNCF ranks quantizer groups by how much each costs and reverts the worst ones, at most
    ``max_iterations`` of them. If the limit is still not met, ``AccuracyDropError`` says
    the best drop reached and with which layers in float.
    """
    from edgevid.compress.evaluate import predict

    nncf = require("nncf", "export")
    if not 0.0 <= max_drop < 1.0:
        raise EdgevidError(f"--max-accuracy-drop must be in [0, 1) (0.01 = 1 point of top-1), got {max_drop}")
    proto = _load(model)
    items = list(zip(validation.graph_clips, validation.labels.tolist()))
    restorer = nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=max_iterations, num_ranking_workers=1)

    def run(recipe: Recipe) -> onnx.ModelProto:
        args = _nncf_args(nncf, proto, calibration, recipe, ignore)
        with _quiet():
            return nncf.quantize_with_accuracy_control(
                proto, nncf.Dataset(calibration.samples), nncf.Dataset(items),
                validation_function(mode, states, recipe), max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
                preset=args["preset"], subset_size=args["subset_size"], ignored_scope=args["ignored_scope"],
                advanced_quantization_parameters=args["advanced_parameters"],
                advanced_accuracy_restorer_parameters=restorer)

    quantized, recipe = with_range_fallback(run, recipe_for(target, preset))
    steps = finalize(quantized, recipe)
    fp32_top1 = predict(proto, validation.graph_clips, mode, states).top1(validation.labels)
    int8_top1 = predict(quantized, validation.graph_clips, mode, states).top1(validation.labels)
    info = _info(quantized, recipe, calibration, steps, proto)
    info["accuracy_control"] = {"max_drop": max_drop, "validation": validation.source, "fp32_top1": fp32_top1,
                                "int8_top1": int8_top1, "drop": fp32_top1 - int8_top1,
                                "kept_in_float": info["float_layers"], "max_iterations": max_iterations}
    check_drop(fp32_top1, int8_top1, max_drop, info["float_layers"], validation.source)
    return with_integer_states(QuantizationResult(quantized, info), recipe, states)


def check_drop(fp32_top1: float, int8_top1: float, max_drop: float, kept: Sequence[str], source: str) -> None:
    """``AccuracyDropError`` with the best drop reached if it is above ``max_drop``."""
    drop = fp32_top1 - int8_top1
    if drop <= max_drop + 1e-9:
        return
    shown = ", ".join(kept[:4]) + (", ..." if len(kept) > 4 else "")
    raise AccuracyDropError(
        f"cannot keep the INT8 top-1 drop within {max_drop:.3f}: the best reached is {drop:.3f} "
        f"(FP32 {fp32_top1:.3f} -> INT8 {int8_top1:.3f} on {source}) with {len(kept)} layers in float"
        f"{f' ({shown})' if kept else ''}; allow a larger --max-accuracy-drop, or calibrate on more data "
        "(--calib-size)")


def quantize_openvino(model: Any, calibration: CalibrationSet, *, preset: str | None = None) -> Any:
    """NNCF's OpenVINO-native PTQ of an ``openvino.Model`` (measured slower here, see above).

    Kept so the benchmark can show the comparison; the openvino target does not use it.
    """
    nncf = require("nncf", "export")
    recipe = recipe_for("openvino", preset)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    with _quiet():
        return nncf.quantize(
            model, nncf.Dataset(calibration.samples), subset_size=len(calibration),
            preset=nncf.QuantizationPreset.PERFORMANCE if recipe.preset == "performance" else nncf.QuantizationPreset.MIXED,
            advanced_parameters=AdvancedQuantizationParameters(
                activations_quantization_params=QuantizationParameters(per_channel=False)))
