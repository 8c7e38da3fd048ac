"""The benchmark scripts run (tiny settings: their figures mean nothing here, only that they work).

benchmarks/bench_runtime.py has its own test next to the runtime hardening tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # 31 s: compress + export + bench of a tiny model; the verbs each have their own tests
def test_bench_compress_runs_tiny(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_compress.py"), "--size", "64", "--width", "0.5",
         "--rounds", "2", "--calib-clips", "2", "--work", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "FP32/this" in proc.stdout and "Channel pruning 0.5" in proc.stdout
    import json

    figures = json.loads(out.read_text())
    for backend in ("onnxruntime_ms", "openvino_ms"):
        assert figures[backend] and all(v > 0 for v in figures[backend].values()), figures[backend]
    assert figures["pruning"]["macs_after"] < figures["pruning"]["macs_before"]
