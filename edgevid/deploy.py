"""``edgevid deploy``: a self-contained bundle to copy to a device and run there without torch.

A bundle is a folder::

    bundle.json                      what it holds: model, device profile, artifacts, edgevid version,
                                     and the sha256 of every other file
    SHA256SUMS                       the same hashes (bundle.json's too) for ``sha256sum -c SHA256SUMS``
    <artifact>/                      an export for the device (manifest.json, model.onnx, ...)
    edgevid-<version>+bundle.<hash>-py3-none-any.whl   edgevid itself (pure Python; the runtime needs no torch)
    requirements.txt                 the runtime's packages for that device (no torch)
    README.md                        install, run on a video / CSI or USB camera, bench, power modes

The wheel is written from the installed package (no build tools, no source tree needed) and
declares only numpy and tqdm: the rest depends on the device (JetPack brings TensorRT and an
OpenCV with GStreamer that a pip OpenCV would shadow), so requirements.txt says it per device.

``pip install -r <bundle>/requirements.txt`` works from any folder: pip resolves a local path
(``./x.whl``) against the current folder, but a ``--find-links`` folder against the
requirements file's own, so requirements.txt says ``--find-links .`` and asks for edgevid by
its exact version. That version carries a local label (``+bundle.<hash of the package
files>``): no package index can serve a local version (PyPI refuses them), so pip takes the
wheel next to the file and never a same-named project from an index, and a bundle with other
code is another version (pip replaces an installed one instead of keeping it).
The export is the one ``edgevid export --device`` makes (validated against torch); the bundle
is staged and renamed into place like an export, and ``--force`` replaces only a bundle.

A copied bundle is checked before it is trusted: the README has the device check the hashes
with ``sha256sum -c SHA256SUMS`` before ``pip install`` (a tampered wheel would install and
then run as edgevid itself), and ``edgevid run BUNDLE`` / ``bench BUNDLE`` verify every file
bundle.json lists, the wheel and each file of the artifact included. pip's own
``--hash`` mode is not used: it demands a hash for every requirement, JetPack's included.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
import time
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edgevid import __version__
from edgevid.errors import EdgevidError

BUNDLE_FILE = "bundle.json"
SUMS_FILE = "SHA256SUMS"
BUNDLE_SCHEMA = 2  # 2: bundle.json records the sha256 of every file
_WHEEL_DEPS = ("numpy>=1.24", "tqdm>=4.66")
_SKIP_SUFFIXES = (".pt", ".pyc")  # shipped training checkpoints and bytecode: the runtime needs neither


def deploy(model: str, device: str, out: str | os.PathLike, *, checkpoint: str | None = None,
           precision: str | None = None, mode: str | None = None, size: int | None = None,
           force: bool = False, progress: bool = True, **export_options: Any) -> dict[str, Any]:
    """Export ``model`` for ``device`` into a new bundle folder ``out``; returns bundle.json's content."""
    from edgevid.devices.profiles import get_profile, require_supported
    from edgevid.pipeline import export
    from edgevid.staging import staged_directory

    profile = require_supported(get_profile(device))
    start = time.perf_counter()
    with staged_directory(out, force, marker=BUNDLE_FILE) as work:
        # announce=False: the export's own "wrote" line would name this staging folder, renamed away
        # a moment later; the bundle's final path is printed below instead.
        manifest = export(model, work / "artifact", checkpoint=checkpoint, precision=precision, mode=mode,
                          size=size, device=profile.name, progress=progress, announce=False, **export_options)
        info = pack_bundle(work, work / "artifact", profile, manifest, folder=Path(out).name)
    if progress:
        print(f"  wrote {Path(out).expanduser().absolute()} in {time.perf_counter() - start:.1f}s", file=sys.stderr,
              flush=True)
    return info


def pack_bundle(work: Path, artifact: Path, profile: Any, manifest: Any, *, folder: str | None = None) -> dict[str, Any]:
    """Fill the staged bundle folder ``work`` around its ``artifact`` folder; returns bundle.json's content.

    The artifact is renamed after what it is; then the wheel, requirements.txt, README.md,
    bundle.json (with the sha256 of every file written before it) and SHA256SUMS.
    ``folder``: the bundle's final folder name, which the README's commands use (default ``work``'s).
    """
    name = f"{manifest.model}-{manifest.mode}-{manifest.target}-{manifest.precision}"
    artifact.rename(work / name)
    wheel = write_runtime_wheel(work)
    (work / "requirements.txt").write_text(requirements(profile, wheel_version(wheel.name), manifest.target))
    (work / "README.md").write_text(readme(profile, manifest, name, folder or work.name))
    info = {"schema": "edgevid.bundle", "schema_version": BUNDLE_SCHEMA, "edgevid_version": __version__,
            "model": manifest.model, "device": profile.name, "description": profile.description,
            "artifacts": [{"path": name, "mode": manifest.mode, "target": manifest.target,
                           "precision": manifest.precision}],
            "wheel": wheel.name, "files": file_hashes(work)}
    (work / BUNDLE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    sums = {**info["files"], BUNDLE_FILE: _sha256(work / BUNDLE_FILE)}
    (work / SUMS_FILE).write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(sums.items())))
    return info


def _sha256(path: Path) -> str:
    from edgevid.manifest import sha256_file

    return sha256_file(path)


def file_hashes(folder: Path) -> dict[str, str]:
    """``{posix path relative to folder: sha256}`` of every file under ``folder`` but bundle.json, SHA256SUMS
    and the staging marker (removed when the staged bundle is renamed into place)."""
    from edgevid.staging import OWNER_FILE

    skip = (BUNDLE_FILE, SUMS_FILE, OWNER_FILE)
    return {path.relative_to(folder).as_posix(): _sha256(path) for path in sorted(folder.rglob("*"))
            if path.is_file() and path.relative_to(folder).as_posix() not in skip}


def bundle_artifact(folder: str | os.PathLike) -> Path | None:
    """The artifact of a bundle folder (``edgevid run BUNDLE``), or None if ``folder`` is not a bundle.

    Paths from bundle.json must stay inside the bundle, like every path from a manifest, and
    every file it lists must still have the sha256 recorded at deploy (``verify_bundle``).
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
    _plain_name(rel, "artifacts[0].path", path)
    artifact = folder / rel
    if not artifact.resolve().is_relative_to(folder.resolve()):
        raise EdgevidError(f"{path} names an artifact outside the bundle; redeploy the model")
    if not (artifact / "manifest.json").is_file():
        raise EdgevidError(f"the bundle {folder} is incomplete: {rel}/manifest.json is missing; redeploy the model")
    verify_bundle(folder, info, rel)
    return artifact


def _plain_name(value: Any, where: str, path: Path) -> str:
    """``value`` if it is one plain name (no folder, no '..', not absolute), else one line naming bundle.json."""
    plain = (isinstance(value, str) and value not in ("", ".", "..") and "\x00" not in value
             and PurePosixPath(value).name == value and PureWindowsPath(value).name == value)
    if not plain:
        raise EdgevidError(f"{path}: {where} must be a plain file name inside the bundle folder (no folder, no "
                           f"'..', not absolute), got {str(value)[:200]!r}; redeploy the model")
    return value


def verify_bundle(folder: Path, info: dict[str, Any], artifact: str) -> None:
    """Check every file bundle.json lists against its sha256; the wheel and each artifact file must be listed."""
    path = folder / BUNDLE_FILE
    files = info.get("files")
    if not isinstance(files, dict) or not files:
        raise EdgevidError(f"{path} records no file hashes (a bundle of an edgevid before {__version__}?), so the "
                           "bundle cannot be checked; redeploy the model")
    wheel = info.get("wheel")
    needed = [p.relative_to(folder).as_posix() for p in sorted((folder / artifact).rglob("*"))
              if p.is_file() or p.is_symlink()] + ([wheel] if isinstance(wheel, str) else [])
    unlisted = [name for name in needed if name not in files]
    if unlisted:
        raise EdgevidError(f"the bundle {folder} has files bundle.json does not list ({', '.join(unlisted[:3])}): "
                           "added or changed after deploy; redeploy the model")
    for rel, digest in files.items():
        _verify_file(folder, rel, digest, path)


def _verify_file(folder: Path, rel: Any, digest: Any, path: Path) -> None:
    """One listed file: a plain relative path, a regular file inside the bundle (no link), its sha256."""
    parts = rel.split("/") if isinstance(rel, str) else [None]
    for part in parts:
        _plain_name(part, f"files[{str(rel)[:100]!r}]", path)
    target = folder.joinpath(*parts)
    try:
        st = os.lstat(target)
        inside = target.resolve().is_relative_to(folder.resolve())
    except OSError:
        raise EdgevidError(f"the bundle {folder} is incomplete: {rel} is missing; redeploy the model") from None
    if not stat.S_ISREG(st.st_mode) or not inside:
        raise EdgevidError(f"the bundle {folder} was changed: {rel} is not a plain file inside it (a link?); "
                           "redeploy the model")
    actual = _sha256(target)
    if actual != digest:
        raise EdgevidError(f"the bundle {folder} was changed after deploy: {rel} has sha256 {actual[:16]}..., "
                           f"bundle.json records {str(digest)[:16]}... (check: cd {folder} && sha256sum -c "
                           f"{SUMS_FILE}); redeploy the model")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_runtime_wheel(folder: Path) -> Path:
    """A pure-Python wheel of the installed edgevid package (its .py files and data, no checkpoints).

    Its version is ``<edgevid version>+bundle.<12 hex of the package files' sha256>`` (see the
    module docstring: a local version no index serves, different for different code).
    """
    import edgevid

    package = Path(edgevid.__file__).parent
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(_SKIP_SUFFIXES):
            files[f"edgevid/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    version = f"{__version__}+bundle.{digest.hexdigest()[:12]}"
    dist = f"edgevid-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", "Name: edgevid", f"Version: {version}",
                "Summary: edgevid runtime (torch-free) for a deploy bundle", "Requires-Python: >=3.10",
                *[f"Requires-Dist: {d}" for d in _WHEEL_DEPS]]
    files[f"{dist}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: edgevid deploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}/entry_points.txt"] = b"[console_scripts]\nedgevid = edgevid.cli:main\n"
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"edgevid-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


# 12.2: what NVIDIA pins for JetPack 6 (TensorRT 10.3 samples); 13.x needs a CUDA 13 driver (JetPack 6: CUDA 12).
CUDA_PYTHON = "cuda-python>=12.2,<13"


def wheel_version(wheel: str) -> str:
    """The version in a wheel file name, ``edgevid-<version>-py3-none-any.whl``."""
    return wheel.split("-")[1]


def requirements(profile: Any, version: str, target: str) -> str:
    """requirements.txt for ``profile``: the runtime's packages only (never torch), edgevid at ``version``."""
    from edgevid.runtime._opencv import OPENCV_FOR_NUMPY1

    lines = [f"# edgevid runtime for {profile.name} ({profile.description}); no torch is needed.",
             "# pip reads --find-links relative to this file, so `pip install -r <bundle>/requirements.txt` works from",
             "# any folder; edgevid's local version (+bundle.<hash>) is the wheel next to this file, which no index has.",
             "--find-links .", f"edgevid=={version}"]
    if profile.jetson:
        lines[1:1] = [
            "# On the Jetson (JetPack 6, Ubuntu 22.04): sudo apt install python3-venv python3-libnvinfer, then a venv",
            "#   that sees JetPack's own packages: python3 -m venv --system-site-packages .venv && . .venv/bin/activate",
            "# TensorRT: JetPack's (python3-libnvinfer); pip's tensorrt wheels are not for Jetson.",
            "# OpenCV: JetPack's, built with GStreamer for CSI cameras. Nothing below installs or depends on",
            "#   opencv-python(-headless), which would shadow it without GStreamer: do not add one. Off a Jetson (a",
            f"#   PC without JetPack's OpenCV): pip install '{OPENCV_FOR_NUMPY1}', the newest wheels that keep the",
            "#   numpy<2 below (a plain `pip install opencv-python-headless` moves numpy to 2.x).",
            "# ONNX Runtime: the CPU wheel below runs anywhere; NVIDIA builds onnxruntime-gpu for JetPack",
            "#   (Jetson AI Lab index) if you want its CUDA / TensorRT execution providers.",
        ]
        lines += ["numpy>=1.24,<2  # JetPack's OpenCV is built against numpy 1.x", "onnxruntime>=1.17", "tqdm>=4.66"]
        if target == "tensorrt":
            lines.append(f"{CUDA_PYTHON}  # 13.x needs a CUDA 13 driver; JetPack 6.0 (CUDA 12.2): ==12.2.* if CUDA "
                         "calls fail with error 35")
    else:
        lines += ["numpy>=1.24", "onnxruntime>=1.17", "opencv-python-headless>=4.8", "tqdm>=4.66"]
        if target == "openvino":
            lines.append("openvino>=2024.4")
        if target == "tensorrt":
            lines += ["tensorrt-cu12>=10  # TensorRT for CUDA 12 (pip's plain tensorrt is now the CUDA 13 build)",
                      f"{CUDA_PYTHON}  # 13.x needs a CUDA 13 driver"]
    return "\n".join(lines) + "\n"


def install_commands(profile: Any, folder: str) -> list[str]:
    """The shell lines that install the bundle ``folder`` on ``profile``'s device, run from the folder holding it.

    The README of the bundle shows them, and so does edgevid's README for ``tsm-orin``
    (tests/test_jetson_bundle.py runs them).
    """
    lines = []
    if profile.jetson:
        lines.append("sudo apt install python3-venv python3-libnvinfer   # the venv module (Ubuntu 22.04), TensorRT's "
                     "Python bindings")
    venv = "python3 -m venv --system-site-packages .venv" if profile.jetson else "python3 -m venv .venv"
    return lines + [f"(cd {folder} && sha256sum -c {SUMS_FILE})   # every file as deployed",
                    f"{venv} && . .venv/bin/activate", f"pip install -r {folder}/requirements.txt"]


def readme(profile: Any, manifest: Any, artifact: str, folder: str) -> str:
    """The bundle's README: install, run on video and cameras, bench, power and engine notes.

    Its commands run from the folder that holds the bundle folder ``folder``.
    """
    from edgevid.runtime._opencv import OPENCV_FOR_NUMPY1

    run = f"edgevid run {folder}"
    lines = [f"# {manifest.model} for {profile.name}", "",
             f"{profile.description}. Made by `edgevid deploy` (edgevid {__version__}): `{artifact}/` is a "
             f"{manifest.mode}-mode {manifest.precision.upper()} export for {manifest.target} "
             f"({len(manifest.labels)} classes, {manifest.preprocess.crop} px, {manifest.sampling.frames} frames, "
             f"stride {manifest.sampling.stride}), validated against torch at export (see its manifest.json).", "",
             "## Install (no torch)", "",
             f"From the folder that holds `{folder}/`. First check the bundle: `sha256sum -c {SUMS_FILE}` in it must "
             "say OK for every file (a changed wheel would install and then run as edgevid itself). "
             f"`{BUNDLE_FILE}` records the same hashes, and `edgevid run` / `edgevid bench` on the bundle folder check "
             "them at every start.", "", "```bash", *install_commands(profile, folder), "```", ""]
    if profile.jetson:
        lines += [f"JetPack {' / '.join(profile.jetpack)} (Ubuntu 22.04, Python {profile.python}, TensorRT "
                  f"{' / '.join(profile.tensorrt)}). Ubuntu's python3 has no venv module until `python3-venv` is "
                  "installed. The venv sees JetPack's TensorRT and its OpenCV, which is built with GStreamer (CSI "
                  "cameras): check with `python3 -c \"import cv2; print(cv2.getBuildInformation())\" | grep GStreamer`. "
                  "requirements.txt leaves OpenCV out and nothing it installs depends on a pip OpenCV, so pip never "
                  "puts one (without GStreamer) over JetPack's; do not install opencv-python in this venv. To try the "
                  f"bundle off a Jetson, in a venv without JetPack's OpenCV: `pip install '{OPENCV_FOR_NUMPY1}'` (the "
                  "newest OpenCV wheels that accept the numpy<2 that requirements.txt pins; a plain `pip install "
                  "opencv-python-headless` would move numpy to 2.x).", ""]
        if manifest.target == "tensorrt":
            lines += [f"CUDA calls go through cuda-python 12.x (`{CUDA_PYTHON}`). On JetPack 6.0 (CUDA 12.2), if the "
                      "first run fails with `cudaErrorInsufficientDriver (35)`: `pip install 'cuda-python==12.2.*'`.",
                      ""]

    lines += ["## Run", "", "```bash", f"{run} --video clip.mp4", f"{run} --camera 0            # a USB camera (V4L2)"]
    if profile.jetson:
        csi = ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
               "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")
        lines += [f"{run} --video '{csi}'   # a CSI camera",
                  f"{run} --video 'v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1'"]
    lines += [f"edgevid bench {folder}            # latency per step on this device", "```", ""]
    if manifest.target == "tensorrt":
        fp16 = " with fp16 kernels" if profile.fp16_kernels and manifest.precision == "fp32" else ""
        lines += ["The first run builds the TensorRT engine on the device" + fp16 + " (minutes on a Jetson), checks it "
                  "against ONNX Runtime, and caches it in `~/.cache/edgevid/tensorrt` (or `$EDGEVID_CACHE`); later "
                  "runs load it in seconds. A new JetPack (TensorRT) rebuilds it. Without TensorRT (a PC without an "
                  f"NVIDIA GPU), the same validated ONNX runs on the CPU: `{run} --video clip.mp4 --backend "
                  "onnxruntime`."]
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
