"""Where a non-local block's attention should stay in float for INT8: latency and fidelity per backend.

One run: ``i3d-nl-resnet50`` (clip mode, random weights with BatchNorm statistics from real clips of
the built-in set, each block's output BatchNorm made non-zero so the blocks are not the identity),
exported once, quantized by NNCF once per placement of the attention's two MatMuls
(``edgevid.compress.attention``; the rest of the recipe is edgevid's):

- ``int8 all``: NNCF's default. It puts Q/DQ on q, k (the theta / phi conv outputs), on v (the g
  conv output) and on the Softmax output; MatMul(q, k)'s output (the Softmax input) stays float.
- ``float qk+av``: both attention MatMuls in NNCF's IgnoredScope (no Q/DQ on q, k, v, Softmax).
- ``float qk`` / ``float av``: only one of them.

Then each placement finalized for ONNX Runtime and for OpenVINO (``quantize.finalize``), and, in one
process, interleaved: latency per clip (ONNX Runtime; OpenVINO at strict f32 and at the CPU
plugin's default precision, bf16 on AVX512-BF16 CPUs), fidelity against FP32 ONNX Runtime on
held-out clips (max / mean |logit diff| relative to the FP32 peak, top-1 agreement), and the time
share of the attention (its MatMuls and Softmax) from each backend's profiler. The machine is
watched while latency is measured (``edgevid.report.noise``).

    python benchmarks/bench_nonlocal_int8.py [--frames 16] [--size 112] [--clips 36] [--calib 8]
                                             [--rounds 12] [--work DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

MODEL = "i3d-nl-resnet50"
THREADS = 2
PLACEMENTS = {"int8 all": (), "float qk+av": ("qk", "av"), "float qk": ("qk",), "float av": ("av",)}
TARGETS = ("onnxruntime", "openvino")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _preprocess(size: int):
    from edgevid.manifest import Preprocess
    from edgevid.models import get_config

    cfg = get_config(MODEL)
    return Preprocess(resize=round(size * 256 / 224), crop=size, mean=list(cfg.mean), std=list(cfg.std))


def make_checkpoint(work: Path, frames: int, size: int) -> Path:
    """Random NL-I3D, BatchNorm statistics from 8 real clips, every block's output BatchNorm non-zero;
    writes ``attention_stats.json`` beside it (``attention_stats``)."""
    import torch

    from edgevid.compress.calibration import load_clips
    from edgevid.models import build_model
    from edgevid.models.batchnorm import recalibrate_batchnorm
    from edgevid.models.non_local import NonLocal3d
    from edgevid.models.weights import save_checkpoint

    path = work / "nl.pt"
    if path.is_file():
        return path
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=11)
    clips = load_clips(None, "train", _preprocess(size), frames, 8)
    recalibrate_batchnorm(model, [torch.from_numpy(clips.torch_clips[i:i + 2]) for i in range(0, len(clips), 2)])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # zero-initialised, the blocks would add nothing: give them a trained-like gain
        for block in model.modules():
            if isinstance(block, NonLocal3d):
                bn = block.conv_out.bn
                bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.5, 1.5, generator=gen))
    model.eval()
    (work / "attention_stats.json").write_text(json.dumps(attention_stats(model, clips.torch_clips[:1])))
    save_checkpoint(path, model, MODEL, clips.classes, {"num_classes": 11})
    return path


def attention_stats(model, clip: np.ndarray) -> list[dict]:
    """Per block, on one clip: query positions, keys, mean top attention weight, entropy / log(keys)
    (1 = uniform attention: the block adds a global average; near 0 = each query picks one key)."""
    import torch

    from edgevid.models.non_local import NonLocal3d

    rows: list[dict] = []

    def hook(block, inputs, _):
        x = inputs[0]
        q = block.queries(x).flatten(2).transpose(1, 2)
        p = torch.matmul(q, block.phi(x).flatten(2)).softmax(-1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
        rows.append({"queries": q.shape[1], "keys": p.shape[-1], "top_weight": round(float(p.max(-1).values.mean()), 3),
                     "entropy": round(float(entropy / np.log(p.shape[-1])), 3)})

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, NonLocal3d)]
    with torch.no_grad():
        model(torch.from_numpy(clip))
    for h in handles:
        h.remove()
    return rows


def prepare(work: Path, frames: int, size: int, calib: int) -> dict:
    """FP32 export and the INT8 models (cached in ``work``); returns their paths and what NNCF placed."""
    from dataclasses import replace

    import nncf
    import onnx

    from edgevid.compress import attention
    from edgevid.compress import quantize as q
    from edgevid.compress.calibration import clip_samples, load_clips
    from edgevid.export.api import export_model
    from edgevid.manifest import Manifest

    checkpoint = make_checkpoint(work, frames, size)
    fp32 = work / "fp32"
    if not (fp32 / "manifest.json").is_file():
        log("exporting FP32 ...")
        export_model(MODEL, fp32, checkpoint=checkpoint, mode="clip", target="onnxruntime", frames=frames, size=size,
                     validate=False, force=True, progress=False)
    src = onnx.load(str(fp32 / "model.onnx"))
    found = attention.find_attention(src)
    samples = None
    out: dict = {"fp32": str(fp32 / "model.onnx"), "int8": {}, "placement": {}, "seconds": {},
                 "attention": [a.__dict__ for a in found]}
    for name, roles in PLACEMENTS.items():
        paths = {t: work / f"int8_{name.replace(' ', '_').replace('+', '_')}_{t}.onnx" for t in TARGETS}
        if not all(p.is_file() for p in paths.values()):
            if samples is None:
                samples = clip_samples(load_clips(None, "train", Manifest.load(fp32).preprocess, frames, calib))
            log(f"quantizing: {name} ...")
            started = time.perf_counter()
            recipe = replace(q.recipe_for("openvino"), float_attention=roles)

            def run(r, proto=src, samples=samples):
                with q._quiet():
                    return nncf.quantize(proto, nncf.Dataset(samples.samples), **q._nncf_args(nncf, proto, samples, r, ()))

            model, used = q.with_range_fallback(run, recipe)
            out["seconds"][name] = round(time.perf_counter() - started, 1)
            for target, path in paths.items():  # NNCF's run is the same for both; only the QDQ rewrites differ
                copy = onnx.ModelProto.FromString(model.SerializeToString())
                q.finalize(copy, replace(q.recipe_for(target), float_attention=roles,
                                         activation_range=used.activation_range))
                onnx.save(copy, str(path))
        out["int8"][name] = {t: str(p) for t, p in paths.items()}
        out["placement"][name] = attention.placement(onnx.load(str(paths["openvino"])), found)
    out["attention_stats"] = json.loads((work / "attention_stats.json").read_text())
    return out


# ---------------------------------------------------------------- runners


def ort_session(path: str, profile_prefix: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Several sessions take turns on 2 cores: a pool spinning after its run steals the next one's cores.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def ov_request(path: str, frames: int, size: int, hint: str | None, perf: bool = False):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({"frames": ov.PartialShape([1, frames, 3, size, size])})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(THREADS), "NUM_STREAMS": "1"}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    if perf:
        config["PERF_COUNT"] = "YES"
    return core.compile_model(model, "CPU", config).create_infer_request()


def runners(paths: dict, frames: int, size: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Variant name -> clip (1, T, 3, H, W) float32 -> logits."""
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def ort_runner(path: str):
        session = ort_session(path)
        return lambda x: session.run(None, {"frames": x})[0]

    def ov_runner(path: str, hint: str | None):
        request = ov_request(path, frames, size, hint)
        return lambda x: request.infer({"frames": x})[0]

    out["ort fp32"] = ort_runner(paths["fp32"])
    for name in PLACEMENTS:
        out[f"ort {name}"] = ort_runner(paths["int8"][name]["onnxruntime"])
    for hint, tag in (("f32", "f32"), (None, "default")):
        out[f"ov {tag} fp32"] = ov_runner(paths["fp32"], hint)
        for name in PLACEMENTS:
            out[f"ov {tag} {name}"] = ov_runner(paths["int8"][name]["openvino"], hint)
    return out


def fidelity(run: dict[str, Callable], clips: np.ndarray) -> dict[str, dict[str, float]]:
    """Each variant against FP32 ONNX Runtime: max / mean |logit diff| over the FP32 peak, top-1 agreement."""
    ref = np.concatenate([run["ort fp32"](c[None]) for c in clips])
    peak = float(np.abs(ref).max())
    out = {}
    for name, f in run.items():
        got = np.concatenate([f(c[None]) for c in clips])
        diff = np.abs(got - ref)
        out[name] = {"max_rel": float(diff.max() / peak), "mean_rel": float(diff.mean() / peak),
                     "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean())}
    return out


def _dq_params(model, tensor: str) -> tuple[float, int, np.dtype] | None:
    """(scale, zero point, integer type) of the DequantizeLinear ``tensor`` comes from through movement ops
    (quantizing before Reshape / Transpose / MaxPool is quantizing after them), None if it stays float."""
    from onnx import numpy_helper

    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    for _ in range(16):
        node = producer.get(tensor)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear":
            zp = numpy_helper.to_array(inits[node.input[2]])
            return float(numpy_helper.to_array(inits[node.input[1]])), int(zp), zp.dtype
        if node.op_type not in ("Reshape", "Transpose", "MaxPool", "Flatten", "Squeeze", "Unsqueeze"):
            return None
        tensor = node.input[0]
    return None


def _fake_quant(x: np.ndarray, params: tuple[float, int, np.dtype] | None) -> np.ndarray:
    if params is None:
        return x
    scale, zp, dtype = params
    info = np.iinfo(dtype)
    return (np.clip(np.round(x / scale) + zp, info.min, info.max) - zp) * scale


def attention_error(fp32: str, int8: str, attention: list[dict], clips: np.ndarray) -> list[float]:
    """Per block: mean |diff| / mean |FP32| of softmax(q k) v computed with the INT8 model's quantizers on q, k,
    the Softmax output and v (NumPy fake-quant, the integer kernels' arithmetic) on the FP32 model's own q, k, v.

    Only the attention's own quantization: the logits (and an attention output taken from the INT8 model) mix
    it with the error of every INT8 layer before the block, which on these random weights is 8-50% by res4.
    """
    import onnx
    import onnxruntime as ort

    model, quantized = onnx.load(fp32), onnx.load(int8)
    nodes = {n.name: n for n in model.graph.node}
    taps, params = [], []
    for a in attention:
        q, k = nodes[a["qk"]].input
        w, v = nodes[a["av"]].input
        taps += [q, k, v]
        qnodes = {n.name: n for n in quantized.graph.node}
        params.append([_dq_params(quantized, t) for t in (*qnodes[a["qk"]].input, *qnodes[a["av"]].input)])
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in taps)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    err, size = np.zeros(len(attention)), np.zeros(len(attention))
    for c in clips:
        got = session.run(taps, {"frames": c[None]})
        for i, (pq, pk, pw, pv) in enumerate(params):
            q, k, v = (x.astype(np.float64) for x in got[3 * i:3 * i + 3])
            want = _softmax(q @ k) @ v
            mixed = _fake_quant(_softmax(_fake_quant(q, pq) @ _fake_quant(k, pk)), pw) @ _fake_quant(v, pv)
            err[i] += np.abs(mixed - want).mean()
            size[i] += np.abs(want).mean()
    return [float(e / s) for e, s in zip(err, size)]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def latency(run: dict[str, Callable], x: np.ndarray, rounds: int, calls: int = 2) -> tuple[dict, dict]:
    """Median ms per clip of each variant over interleaved rounds, and what the noise monitor saw."""
    from edgevid.report.noise import NoiseMonitor

    for f in run.values():
        f(x), f(x)
    monitor = NoiseMonitor().start()
    times: dict[str, list[float]] = {k: [] for k in run}
    for _ in range(rounds):
        for name, f in run.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                f(x)
            times[name].append((time.perf_counter() - t0) * 1e3 / calls)
        monitor.probe()
    block = max(2, rounds // 3)
    return {k: float(np.median(v)) for k, v in times.items()}, monitor.summary(times, block)


def ort_attention_share(path: str, attention_nodes: set[str], x: np.ndarray, calls: int = 8) -> dict[str, float]:
    """From ONNX Runtime's profiler: the share of the attention MatMuls + Softmax, and their kernels."""
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(path, str(Path(tmp) / "ort"))
        for _ in range(calls):
            session.run(None, {"frames": x})
        trace = json.loads(Path(session.end_profiling()).read_text())
    total, attn, kernels = 0.0, 0.0, set()
    for event in trace:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")].split("_token_")[0]
        total += event["dur"]
        op = event["args"]["op_name"]
        # ORT keeps the node name, or derives the fused node's from it (QDQ fusion appends suffixes)
        if node in attention_nodes or any(node.startswith(n + "_") and not node[len(n) + 1:].isdigit()
                                          for n in attention_nodes) or op == "Softmax":
            attn += event["dur"]
            kernels.add(op)
    return {"share": attn / total if total else 0.0, "kernels": ", ".join(sorted(kernels))}


def ov_attention_share(path: str, frames: int, size: int, hint: str | None, x: np.ndarray, calls: int = 8) -> dict:
    """From OpenVINO's PERF_COUNT: the share of MatMul + Softmax layers (this network has no other MatMul:
    its classifier is a FullyConnected), and their kernels."""
    request = ov_request(path, frames, size, hint, perf=True)
    total, attn, kernels = 0.0, 0.0, set()
    for _ in range(calls):
        request.infer({"frames": x})
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            t = info.real_time.total_seconds()
            total += t
            if info.node_type in ("MatMul", "Softmax"):
                attn += t
                kernels.add(f"{info.node_type}:{info.exec_type}")
    return {"share": attn / total if total else 0.0, "kernels": ", ".join(sorted(kernels))}


def _cpu() -> str:
    from edgevid.report.machine import _cpuinfo

    return _cpuinfo()[0] or platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16, help="clip length (default 16)")
    p.add_argument("--size", type=int, default=112, help="crop size in pixels (default 112)")
    p.add_argument("--clips", type=int, default=36, help="held-out clips for fidelity (default 36)")
    p.add_argument("--calib", type=int, default=8, help="calibration clips (default 8)")
    p.add_argument("--rounds", type=int, default=12, help="interleaved latency rounds of 2 calls (default 12)")
    p.add_argument("--work", help="folder for the models (reused between runs)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_nl_int8_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        (work / "paths.json").write_text(json.dumps(prepare(work, args.frames, args.size, args.calib), default=str))
        return 0
    log(f"preparing models in {work} (a child process: NNCF leaves thread pools behind) ...")
    subprocess.run([sys.executable, __file__, "--prepare-only", "--work", str(work), "--frames", str(args.frames),
                    "--size", str(args.size), "--calib", str(args.calib)], check=True)
    paths = json.loads((work / "paths.json").read_text())

    from edgevid.compress.calibration import load_clips
    from edgevid.manifest import Manifest

    preprocess = Manifest.load(Path(paths["fp32"]).parent).preprocess
    clips = load_clips(None, "val", preprocess, args.frames, args.clips, strict=False)
    log(f"fidelity on {clips.source} ...")
    run = runners(paths, args.frames, args.size)
    fid = fidelity(run, clips.graph_clips)
    nodes = {n for a in paths["attention"] for n in (a["qk"], a["av"])}
    attn_err = {name: attention_error(paths["fp32"], paths["int8"][name]["openvino"], paths["attention"],
                                      clips.graph_clips[:8]) for name in PLACEMENTS}
    log(f"latency ({args.rounds} interleaved rounds, {THREADS} threads) ...")
    x = np.ascontiguousarray(clips.graph_clips[:1])
    ms, noise = latency(run, x, args.rounds)
    del run
    log("profiling ...")
    share = {"ort fp32": ort_attention_share(paths["fp32"], nodes, x)}
    for name in PLACEMENTS:
        share[f"ort {name}"] = ort_attention_share(paths["int8"][name]["onnxruntime"], nodes, x)
    for hint, tag in (("f32", "f32"), (None, "default")):
        share[f"ov {tag} fp32"] = ov_attention_share(paths["fp32"], args.frames, args.size, hint, x)
        for name in PLACEMENTS:
            share[f"ov {tag} {name}"] = ov_attention_share(paths["int8"][name]["openvino"], args.frames, args.size,
                                                           hint, x)

    import onnxruntime
    import openvino

    lines = [f"{MODEL} clip {args.frames} x {args.size} px (random weights, active blocks), {THREADS} threads, "
             f"CPU: {_cpu()}; onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}",
             "attention per block (query positions, keys, mean top weight, entropy / log keys): "
             + "; ".join(f"{s['queries']}x{s['keys']} {s['top_weight']:.2f} {s['entropy']:.2f}"
                         for s in paths["attention_stats"]),
             f"fidelity vs FP32 ONNX Runtime on {clips.source}; latency: median of {args.rounds} interleaved rounds",
             "", f"  {'variant':<26} {'ms/clip':>8} {'vs fp32':>8} {'max|d|/pk':>10} {'mean|d|/pk':>10} {'top-1 agr':>9}"
             f" {'attn share':>10}  attention kernels"]
    for name in ms:
        base = ms[" ".join(name.split()[:2]) + " fp32"] if name.startswith("ov") else ms["ort fp32"]
        f = fid[name]
        lines.append(f"  {name:<26} {ms[name]:8.1f} {ms[name] / base:8.2f} {f['max_rel']:10.4f} {f['mean_rel']:10.4f} "
                     f"{f['top1_agreement']:9.1%} {share[name]['share']:10.1%}  {share[name]['kernels']}")
    lines += ["", "the attention's own INT8 error per block: mean |diff| / mean |FP32| of softmax(q k) v with NNCF's "
              "quantizers, on FP32 q, k, v (8 clips; blocks in graph order, keys "
              + ", ".join(str(a["keys"]) for a in paths["attention"]) + "):"]
    lines += [f"  {name:<12} " + "  ".join(f"{e:.4f}" for e in errs) for name, errs in attn_err.items()]
    lines += ["", "what NNCF placed (per placement: blocks whose MatMul is int8 [qk, av]; Softmax output quantized):"]
    for name, rows in paths["placement"].items():
        lines.append(f"  {name:<12} qk int8 {sum(r['qk']['int8'] for r in rows)}/{len(rows)}, av int8 "
                     f"{sum(r['av']['int8'] for r in rows)}/{len(rows)}, softmax output quantized "
                     f"{sum(bool(r['softmax_output_quantized']) for r in rows)}/{len(rows)}")
    lines += ["", f"machine: {noise['summary']}" + (f" (NOISY: {noise['advice']})" if noise["noisy"] else "")]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"ms": ms, "fidelity": fid, "attention_share": share, "noise": noise,
                                               "attention_error": attn_err,
                                               "paths": paths, "cpu": _cpu()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
