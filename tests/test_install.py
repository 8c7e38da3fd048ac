"""The CPU-only install route of the README works and pulls no CUDA libraries.

PyPI's Linux torch wheel is the CUDA build: `pip install -e '.[all]'` on a CPU machine makes a
~6 GB environment, most of it nvidia-* libraries that never load. The README's CPU-only route
installs torch's +cpu build first (from PyTorch's CPU wheel index); pip then keeps it, since
it satisfies edgevid's `torch>=2.4`. This test walks that route in a fresh virtual environment.
PyTorch's index cannot be reached from this workplace, so the +cpu wheel comes from the local
wheel folder pip is configured with (the same file the CPU index serves); the test skips when
no +cpu wheel can be found. Slow (a full install): run with `python -m pytest -m slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
def test_cpu_only_install_route(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # What `--index-url https://download.pytorch.org/whl/cpu torch torchvision` resolves to for this torch.
    first = subprocess.run([*pip, "torch==2.13.0+cpu", "torchvision==0.28.0"], capture_output=True, text=True)
    if first.returncode != 0:
        pytest.skip(f"no +cpu torch wheel reachable from here: {first.stderr.strip().splitlines()[-1:]}")
    subprocess.run([*pip, "-e", f"{ROOT}[all]"], check=True, capture_output=True, text=True)
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                            check=True, capture_output=True, text=True)
    names = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert names["torch"].endswith("+cpu"), names["torch"]  # pip kept the CPU build
    assert not [n for n in names if n.startswith("nvidia")], sorted(n for n in names if n.startswith("nvidia"))
    print(f"CPU-only environment: {_size(venv) / 2**30:.2f} GiB")
    smoke = ("import torch, torchvision, onnxruntime, openvino, nncf; from edgevid.models import build_model; "
             "m = build_model('tsm', checkpoint='default').eval(); "
             "print(m.forward_frames(torch.zeros(1, 8, 3, 112, 112)).shape)")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", smoke], capture_output=True, text=True)
    if "torchvision::nms does not exist" in out.stderr:
        # Measured here: PyPI's torchvision 0.28.0 is built for the CUDA torch and its ops do not
        # load on torch+cpu; the CPU index serves the matching torchvision+cpu, unreachable here.
        pytest.skip("the +cpu torchvision build is only on PyTorch's CPU index, which this machine cannot reach")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.Size([1, 11])" in out.stdout
