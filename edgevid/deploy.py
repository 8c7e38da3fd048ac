"""``edgevid deploy``: a self-contained bundle to copy to a device and run there without torch.

A bundle is a folder::

    bundle.json                      what it holds: model, device profile, artifacts, edgevid version
    <artifact>/                      an export for the device (manifest.json, model.onnx, ...)
    edgevid-<version>-py3-none-any.whl   edgevid itself (pure Python; the runtime needs no torch)
    requirements.txt                 the runtime's packages for that device (no torch)
    README.md                        install, run on a video / CSI or USB camera, bench, power modes

The wheel is written from the installed package (no build tools, no source tree needed) and
declares only numpy and tqdm: the rest depends on the device (JetPack brings TensorRT and an
OpenCV with GStreamer that a pip OpenCV would shadow), so requirements.txt says it per device.
The export is the one ``edgevid export --device`` makes (validated against torch); the bundle
is staged and renamed into place like an export, and ``--force`` replaces only a bundle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from edgevid import __version__
from edgevid.errors import EdgevidError

BUNDLE_FILE = "bundle.json"
BUNDLE_SCHEMA = 1
_WHEEL_DEPS = ("numpy>=1.24", "tqdm>=4.66")
_SKIP_SUFFIXES = (".pt", ".pyc")  # shipped training checkpoints and bytecode: the runtime needs neither


def deploy(model: str, device: str, out: str | os.PathLike, *, checkpoint: str | None = None,
           precision: str | None = None, mode: str | None = None, size: int | None = None,
           force: bool = False, progress: bool = True, **export_options: Any) -> dict[str, Any]:
    """Export ``model`` for ``device`` into a new bundle folder ``out``; returns bundle.json's content."""
    from edgevid.devices.profiles import get_profile, require_supported
    from edgevid.export.staging import staged_directory
    from edgevid.pipeline import export

    profile = require_supported(get_profile(device))
    with staged_directory(out, force, marker=BUNDLE_FILE) as work:
        manifest = export(model, work / "artifact", checkpoint=checkpoint, precision=precision, mode=mode,
                          size=size, device=profile.name, progress=progress, **export_options)
        name = f"{manifest.model}-{manifest.mode}-{manifest.target}-{manifest.precision}"
        (work / "artifact").rename(work / name)
        wheel = write_runtime_wheel(work)
        (work / "requirements.txt").write_text(requirements(profile, wheel.name, manifest.target))
        (work / "README.md").write_text(readme(profile, manifest, name, wheel.name))
        info = {"schema": "edgevid.bundle", "schema_version": BUNDLE_SCHEMA, "edgevid_version": __version__,
                "model": manifest.model, "device": profile.name, "description": profile.description,
                "artifacts": [{"path": name, "mode": manifest.mode, "target": manifest.target,
                               "precision": manifest.precision}],
                "wheel": wheel.name}
        (work / BUNDLE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def bundle_artifact(folder: str | os.PathLike) -> Path | None:
    """The artifact of a bundle folder (``edgevid run BUNDLE``), or None if ``folder`` is not a bundle.

    Paths from bundle.json must stay inside the bundle, like every path from a manifest.
    """
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        rel = info["artifacts"][0]["path"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise EdgevidError(f"{path} is not a valid bundle file ({exc}); redeploy the model") from exc
    from edgevid.manifest import check_file_name

    check_file_name(rel, "bundle.json artifacts[0].path")
    artifact = folder / rel
    if not artifact.resolve().is_relative_to(folder.resolve()):
        raise EdgevidError(f"{path} names an artifact outside the bundle; redeploy the model")
    if not (artifact / "manifest.json").is_file():
        raise EdgevidError(f"the bundle {folder} is incomplete: {rel}/manifest.json is missing; redeploy the model")
    return artifact


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_runtime_wheel(folder: Path) -> Path:
    """A pure-Python wheel of the installed edgevid package (its .py files and data, no checkpoints)."""
    import edgevid

    package = Path(edgevid.__file__).parent
    dist = f"edgevid-{__version__}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(_SKIP_SUFFIXES):
            files[f"edgevid/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    metadata = ["Metadata-Version: 2.1", "Name: edgevid", f"Version: {__version__}",
                "Summary: edgevid runtime (torch-free) for a deploy bundle", "Requires-Python: >=3.10",
                *[f"Requires-Dist: {d}" for d in _WHEEL_DEPS]]
    files[f"{dist}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: edgevid deploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}/entry_points.txt"] = b"[console_scripts]\nedgevid = edgevid.cli:main\n"
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"edgevid-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def requirements(profile: Any, wheel: str, target: str) -> str:
    """requirements.txt for ``profile``: the runtime's packages only (never torch)."""
    lines = [f"# edgevid runtime for {profile.name} ({profile.description}); no torch is needed.",
             f"./{wheel}"]
    if profile.jetson:
        lines[1:1] = [
            "# Install into a venv that sees JetPack's own packages:",
            "#   python3 -m venv --system-site-packages .venv && . .venv/bin/activate && pip install -r requirements.txt",
            "# TensorRT: JetPack's (sudo apt install python3-libnvinfer); pip's tensorrt wheels are not for Jetson.",
            "# OpenCV: JetPack's, built with GStreamer for CSI cameras: do not pip install opencv-python here",
            "#   (it would shadow JetPack's and has no GStreamer).",
            "# ONNX Runtime: the CPU wheel below runs anywhere; NVIDIA builds onnxruntime-gpu for JetPack",
            "#   (Jetson AI Lab index) if you want its CUDA / TensorRT execution providers.",
        ]
        lines += ["numpy>=1.24,<2  # JetPack's OpenCV is built against numpy 1.x",
                  "onnxruntime>=1.17", "tqdm>=4.66"]
        if target == "tensorrt":
            lines.append("cuda-python>=12.6,<13  # 13.x needs a CUDA 13 driver; JetPack 6 has CUDA 12")
    else:
        lines += ["numpy>=1.24", "onnxruntime>=1.17", "opencv-python-headless>=4.8", "tqdm>=4.66"]
        if target == "openvino" or "openvino" in profile.backends:
            lines.append("openvino>=2024.4")
        if target == "tensorrt":
            lines += ["tensorrt>=10", "cuda-python>=12.6  # match your driver: <13 for a CUDA 12 driver"]
    return "\n".join(lines) + "\n"


def readme(profile: Any, manifest: Any, artifact: str, wheel: str) -> str:
    """The bundle's README: install, run on video and cameras, bench, power and engine notes."""
    run = f"edgevid run {artifact}"
    lines = [f"# {manifest.model} for {profile.name}", "",
             f"{profile.description}. Made by `edgevid deploy` (edgevid {__version__}): `{artifact}/` is a "
             f"{manifest.mode}-mode {manifest.precision.upper()} export for {manifest.target} "
             f"({len(manifest.labels)} classes, {manifest.preprocess.crop} px, {manifest.sampling.frames} frames, "
             f"stride {manifest.sampling.stride}), validated against torch at export (see its manifest.json).", "",
             "## Install (no torch)", "", "```bash"]
    if profile.jetson:
        lines += ["sudo apt install python3-libnvinfer   # TensorRT's Python bindings (JetPack)",
                  "python3 -m venv --system-site-packages .venv && . .venv/bin/activate",
                  "pip install -r requirements.txt", "```", "",
                  f"JetPack {' / '.join(profile.jetpack)} (Python {profile.python}, TensorRT "
                  f"{' / '.join(profile.tensorrt)}). The venv sees JetPack's TensorRT and its OpenCV, which is built "
                  "with GStreamer (CSI cameras); pip's OpenCV is not, so requirements.txt leaves it out."]
    else:
        lines += ["python3 -m venv .venv && . .venv/bin/activate", "pip install -r requirements.txt", "```"]
    lines += ["", "## Run", "", "```bash", f"{run} --video clip.mp4", f"{run} --camera 0            # a USB camera (V4L2)"]
    if profile.jetson:
        csi = ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
               "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")
        lines += [f"{run} --video '{csi}'   # a CSI camera",
                  f"{run} --video 'v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1'"]
    lines += [f"edgevid bench {artifact}            # latency per step on this device", "```", ""]
    if manifest.target == "tensorrt":
        fp16 = " with fp16 kernels" if profile.fp16_kernels and manifest.precision == "fp32" else ""
        lines += ["The first run builds the TensorRT engine on the device" + fp16 + " (minutes on a Jetson), checks it "
                  "against ONNX Runtime, and caches it in `~/.cache/edgevid/tensorrt` (or `$EDGEVID_CACHE`); later "
                  "runs load it in seconds. A new JetPack (TensorRT) rebuilds it."]
        if profile.dla_cores:
            lines += ["", f"This device has DLA: `{run} --video clip.mp4 --dla-core 0` builds for DLA core 0 (layers "
                      "DLA cannot run fall back to the GPU, and are listed)."]
        lines += [""]
    if profile.jetson:
        lines += ["## Power and clocks", "", "```bash", "sudo nvpmodel -q        # the current power mode",
                  "sudo nvpmodel -m 0      # the maximum power mode (mode numbers differ per module)",
                  "sudo jetson_clocks      # pin the clocks at their maximum: stable latency for bench",
                  "tegrastats              # GPU / CPU load, memory and power while it runs", "```", "",
                  "Measure with `edgevid bench` after `jetson_clocks`: without it, clocks scale with load and the "
                  "first seconds are slow.", ""]
    return "\n".join(lines)
