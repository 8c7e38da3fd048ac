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


@pytest.mark.slow  # 50 s: one epoch of X3D-XS-online at 32 px in each regime, and their eval
def test_bench_stream_accuracy_runs_tiny(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_stream_accuracy.py"), "--tiny", "--work", str(tmp_path / "w"),
         "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["regime"]) for r in rows] == [("x3d-xs-online", "stream"), ("x3d-xs-online", "clip")]
    assert all(0 <= r["clip_top1"] <= 1 and 0 <= r["stream_top1"] <= 1 and r["test_videos"] == 22 for r in rows)
    assert "| x3d-xs-online | 8 | 32 | stream |" in proc.stdout
