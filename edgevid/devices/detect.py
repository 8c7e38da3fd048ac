"""Which device profile this machine is: Jetson files, NVIDIA GPU presence, CPU architecture and flags.

Reads only files (no GPU library, no torch), under ``root`` so tests can lay out a Jetson's
files in a temp folder:

- ``/etc/nv_tegra_release``: present on every Jetson (L4T); its first line gives the L4T
  release, e.g. ``# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ...``.
- ``/proc/device-tree/compatible``: NUL-separated; names the module part number
  (``nvidia,p3767-0005``), the reliable way to tell modules apart.
- ``/proc/device-tree/model``: the board's name (it changes between L4T releases, so it is
  only a fallback).
- ``/dev/nvidia0`` or ``/proc/driver/nvidia/gpus/*``: an NVIDIA GPU with its driver (x86).
- ``/proc/cpuinfo``: CPU model and the flags that decide INT8 / bf16 kernels.
"""

from __future__ import annotations

import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevid.devices.profiles import DeviceProfile, load_profiles

# L4T release -> JetPack version (rbonghi/jetson_stats, jtop/core/jetson_variables.py).
L4T_TO_JETPACK = {
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
             "asimd", "asimddp")
_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


@dataclass
class Detection:
    """What ``detect`` found; ``profile`` is None when no profile fits (with ``reason``)."""

    profile: str | None
    reason: str = ""
    arch: str = ""
    l4t: str | None = None
    jetpack: str | None = None
    board: str | None = None
    module: str | None = None
    nvidia_gpu: bool = False
    cpu: str = ""
    cpu_flags: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def is_jetson(root: str | Path = "/") -> bool:
    """True on a Jetson (L4T writes ``/etc/nv_tegra_release``)."""
    return (Path(root) / "etc" / "nv_tegra_release").is_file()


def l4t_release(text: str) -> str | None:
    """``"36.4.3"`` from the first line of ``/etc/nv_tegra_release`` (None if it is not that format)."""
    match = _RELEASE.search(text.splitlines()[0] if text else "")
    if not match:
        return None
    revision = match.group(2).split(".")
    revision += ["0"] * (2 - len(revision))
    return ".".join([match.group(1), *revision[:2]])


def _jetson_profile(compatible: list[str], board: str) -> tuple[DeviceProfile | None, str | None]:
    """(profile, module part) from the device tree: part numbers first, board names second."""
    for profile in load_profiles():
        for module in profile.modules:
            if any(module.part in entry for entry in compatible):
                return profile, module.part
    lowered = board.lower()
    # Longest names first: "AGX Orin" before "Orin", "Xavier NX" before "Nano" never clash then.
    candidates = sorted(((n, p) for p in load_profiles() for n in p.model_names), key=lambda t: -len(t[0]))
    for name, profile in candidates:
        if name.lower() in lowered:
            return profile, None
    return None, None


def _cpu(root: Path) -> tuple[str, list[str]]:
    text = _read(root / "proc" / "cpuinfo") or ""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, [f for f in CPU_FLAGS if f in flags]


def detect(root: str | Path = "/", machine: str | None = None) -> Detection:
    """This machine's profile (``root``: where its files are; ``machine``: ``platform.machine()``)."""
    root = Path(root)
    arch = machine or platform.machine()
    cpu, flags = _cpu(root)
    found = Detection(profile=None, arch=arch, cpu=cpu, cpu_flags=flags)
    release = _read(root / "etc" / "nv_tegra_release")
    if release is not None:
        found.l4t = l4t_release(release)
        found.jetpack = L4T_TO_JETPACK.get(found.l4t or "")
        found.evidence.append(f"/etc/nv_tegra_release: L4T R{found.l4t or '?'}"
                              + (f" (JetPack {found.jetpack})" if found.jetpack else ""))
        compatible = [c for c in (_read(root / "proc" / "device-tree" / "compatible") or "").split("\x00") if c]
        found.board = (_read(root / "proc" / "device-tree" / "model") or "").strip("\x00 \n") or None
        if found.board:
            found.evidence.append(f"/proc/device-tree/model: {found.board}")
        profile, found.module = _jetson_profile(compatible, found.board or "")
        if found.module:
            found.evidence.append(f"/proc/device-tree/compatible: module {found.module}")
        if profile is None:
            found.reason = "a Jetson whose module is in no profile (see edgevid devices list)"
        else:
            found.profile = profile.name
        return found
    gpus = root / "proc" / "driver" / "nvidia" / "gpus"
    found.nvidia_gpu = (root / "dev" / "nvidia0").exists() or (gpus.is_dir() and any(gpus.iterdir()))
    if found.nvidia_gpu:
        found.evidence.append("NVIDIA GPU: /dev/nvidia0 or /proc/driver/nvidia/gpus")
    if arch in ("x86_64", "AMD64"):
        found.profile = "x86-nvidia-gpu" if found.nvidia_gpu else "x86-cpu"
        found.evidence.append(f"CPU {cpu or arch}" + (f" ({', '.join(flags)})" if flags else ""))
    else:
        found.reason = f"a {arch} machine that is not a Jetson: no profile (use --target onnxruntime)"
    return found
