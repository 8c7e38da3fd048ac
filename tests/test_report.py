"""`edgevid report`: a small report end to end, its schema, its numbers, its HTML in a real browser.

One report is built per module (the shipped TSM exported at 64 px, stream mode, FP32, on
ONNX Runtime and OpenVINO, TensorRT requested and skipped here) on a tiny synthetic
held-out set, through the real CLI; the tests read its three files.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

SIZE = 64
ROUNDS, BLOCK = 2, 4


def _report_argv(data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return ["report", "--model", "tsm", "--precisions", "fp32", "--modes", "stream",
            "--backends", "onnxruntime,openvino,tensorrt", "--size", str(SIZE), "--data", str(data),
            "--videos", "5", "--cache", str(cache), "-o", str(out), *extra]


@pytest.fixture(scope="module")
def small(tmp_path_factory, report_cache):
    """(data dir, cache dir, output dir) of one small report built through the CLI."""
    from edgevid.cli import main
    from edgevid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    # 16 frames at stride 2: 8 stream steps per video, as many as the model's clip length.
    generate_dataset(data, seed=1, videos_per_class=2, frames=16, size=SIZE, val_fraction=0.5, progress=False)
    rc = main(_report_argv(data, report_cache, root / "out", "--rounds", str(ROUNDS), "--block", str(BLOCK),
                           "--streams", "3", "-q"))
    assert rc == 0
    return data, report_cache, root / "out"


@pytest.fixture(scope="module")
def report(small):
    return json.loads((small[2] / "report.json").read_text())


def _expected_rows(report):
    """The rows of the module's report: OpenVINO FP32 at the CPU plugin's default precision, and
    at strict f32 as a row of its own where that default is not f32 (bf16 on AVX512-BF16/AMX)."""
    strict = report["machine"]["openvino_default_precision"] not in (None, "f32")
    return ["torch/stream/fp32", "onnxruntime/stream/fp32", "openvino/stream/fp32"] + \
        (["openvino/stream/fp32-strict"] if strict else [])


def test_many_cameras_section_times_every_stream_variant_each_way(report, small):
    many = {m["variant"]: m for m in report["many_cameras"]}
    assert set(many) == set(_expected_rows(report)[1:])  # every stream variant, not torch
    for name, m in many.items():
        assert m["streams"] == 3 and m["ticks_per_way"] >= 40
        assert list(m["ways"]) == (["independent", "batched", "requests"] if name.startswith("openvino")
                                   else ["independent", "batched"])
        for way in m["ways"].values():
            assert way["tick_ms"]["count"] == m["ticks_per_way"]
            assert way["frames_per_s"] == pytest.approx(3000.0 / way["tick_ms"]["mean"], rel=1e-3)
        assert m["ways"]["independent"]["vs_independent"] == 1.0
        assert m["fastest"] == max(m["ways"], key=lambda w: m["ways"][w]["frames_per_s"])
    text = (small[2] / "report.md").read_text()
    assert "## Many cameras" in text and "batched, one call per tick" in text


def _numbers(obj, path=""):
    """Every (path, value) leaf of a JSON object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    else:
        yield path, obj


def test_report_json_matches_schema_and_every_figure_is_measured(report):
    from edgevid.report.schema import validate

    validate(report, "report")
    assert report["complete"] is True and report["interrupted_during"] is None
    names = [r["variant"] for r in report["rows"]]
    assert names == _expected_rows(report)
    skipped = {s["variant"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"tensorrt/stream/fp32"} and skipped["tensorrt/stream/fp32"]
    for row in report["rows"]:
        lat = row["latency_ms"]
        # ABBA blocks: every variant got exactly rounds x block timed calls, all positive and ordered.
        assert lat["count"] == ROUNDS * BLOCK
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert sum(row["latency_distribution"]["counts"]) == ROUNDS * BLOCK
        assert row["accuracy"]["videos"] == 5 and row["accuracy"]["no_prediction"] == 0
    for row in report["rows"][1:]:
        assert row["ratios"]["speedup_vs_torch"] == pytest.approx(
            report["rows"][0]["latency_ms"]["p50"] / row["latency_ms"]["p50"], rel=1e-2)
        assert row["agreement"]["predictions"] == 5 * 8
        if row["backend"] == "openvino" and not row["strict"] and row["what_ran"]["inference_precision"] != "f32":
            # OpenVINO at its default precision (bf16 here): what its users get, not bit-exact.
            assert row["agreement"]["prediction_top1"] >= 0.9
            assert 0 < row["agreement"]["max_abs_logit_diff"] < 1.0
            continue
        # FP32 graphs compute what torch computes: same top-1 everywhere, logits within float noise.
        assert row["agreement"]["prediction_top1"] == 1.0
        assert 0 < row["agreement"]["max_abs_logit_diff"] < 1e-3
        assert row["artifact"]["file_mb"] > 0 and row["load_ms"] > 0
    assert report["rows"][2]["what_ran"]["inference_precision"] in ("f32", "bf16", "f16")
    # No placeholders: every number is finite, every string non-empty where it is a figure.
    for path, value in _numbers(report):
        if isinstance(value, float):
            assert math.isfinite(value), path
    assert report["findings"] and all(re.search(r"\d", s) for s in report["findings"])


def test_report_accuracy_equals_an_independent_runtime_evaluation(report, small):
    """The ONNX Runtime row's top-1/top-5, recomputed here with edgevid.runtime alone."""
    from edgevid import runtime

    data = small[0]
    row = next(r for r in report["rows"] if r["variant"] == "onnxruntime/stream/fp32")
    hits1 = hits5 = 0
    with runtime.load(row["artifact"]["path"], "onnxruntime") as runner:
        labels = runner.manifest.labels
        for video in report["data"]["videos"]:
            session = runtime.open_session(runner)
            for frame in runtime.open_source(str(data / video["label"] / video["name"])):
                session.push(frame)
            scores = session.last.scores
            order = np.argsort(-scores, kind="stable")
            truth = labels.index(video["label"])
            hits1 += int(order[0] == truth)
            hits5 += int(truth in order[:5])
            session.close()
    n = len(report["data"]["videos"])
    assert n == 5
    assert row["accuracy"]["top1"] == pytest.approx(hits1 / n)
    assert row["accuracy"]["top5"] == pytest.approx(hits5 / n)


def test_report_markdown_has_the_measured_table(report, small):
    md = (small[2] / "report.md").read_text()
    for row in report["rows"]:
        line = next(x for x in md.splitlines() if x.startswith(f"| {row['label']} |"))
        assert f"{row['latency_ms']['p50']:.2f}" in line
        assert f"{100 * row['accuracy']['top1']:.1f}" in line
    for sentence in report["findings"]:
        assert sentence in md
    assert "TensorRT stream FP32" in md and "Skipped" in md


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Trap:
    """A local TCP listener used as the browser's proxy: any network request lands here."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


def test_report_html_is_offline_and_draws_its_charts_in_chromium(small, tmp_path, tmp_path_factory):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium package; apt-get install chromium)")
    page = small[2] / "report.html"
    text = page.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text, re.I)
    assert "<script" not in text.lower()
    trap = _Trap()
    shot = tmp_path / "report.png"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-domain-reliability", f"--user-data-dir={tmp_path / 'profile'}",
             f"--proxy-server=http://127.0.0.1:{trap.port}", "--proxy-bypass-list=<-loopback>",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,2400"]
    try:
        dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        snap = subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                              timeout=120)
    finally:
        trap.close()
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert trap.connections == 0, "the page made a network request"
    svgs = re.findall(r"<svg\b.*?</svg>", dom.stdout, re.S)
    assert len(svgs) == 4  # accuracy vs latency, latency distributions: each drawn for a desktop and a phone
    for svg in svgs:  # drawn: markers / histogram paths, not an empty frame
        assert len(re.findall(r"<path\b", svg)) > 10
    assert "ONNX Runtime stream FP32" in dom.stdout
    assert shot.is_file() and shot.stat().st_size > 20_000
    # The screenshot stays in the test's tmp dir; a copy goes to the run's base temp dir.
    shutil.copyfile(shot, tmp_path_factory.getbasetemp() / "report-screenshot.png")


def test_report_ctrl_c_keeps_the_finished_rows(small, tmp_path):
    """A real SIGINT during the latency phase: exit 130, a valid partial report with every accuracy row.

    Same inputs as the module's report, so its artifacts are reused from the cache (no export).
    """
    from edgevid.report.schema import validate

    data, cache, _ = small
    cached = sorted(p.name for p in cache.iterdir())
    out = tmp_path / "partial"
    argv = _report_argv(data, cache, out, "--rounds", "100000", "--block", "5")
    # SIGINT back to its default in the child: a test run started in the background by a shell
    # without job control inherits SIGINT ignored, and Python keeps an inherited SIG_IGN (no Ctrl-C).
    proc = subprocess.Popen([sys.executable, "-m", "edgevid.cli", *argv], stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = []
    try:
        for line in proc.stderr:  # cached artifacts: a few seconds to get here
            err.append(line)
            if "measuring latency:" in line:
                break
        time.sleep(2.0)  # a few ABBA rounds
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = "".join(err) + rest
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    partial = json.loads((out / "report.json").read_text())
    validate(partial, "report")
    assert partial["complete"] is False and partial["interrupted_during"] == "measuring latency"
    assert [r["variant"] for r in partial["rows"]] == _expected_rows(partial)
    assert all(r["accuracy"]["videos"] == 5 for r in partial["rows"])
    timed = [r for r in partial["rows"] if r["latency_ms"]]
    assert timed and all(r["latency_ms"]["count"] % 5 == 0 for r in timed)
    assert "incomplete" in (out / "report.md").read_text().lower()
    assert all(r["artifact"]["reused"] for r in partial["rows"] if not r["reference"])
    assert sorted(p.name for p in cache.iterdir()) == cached
    assert (out / "report.html").is_file()


def test_findings_are_computed_from_the_numbers():
    """INT8-vs-FP32 and streaming sentences come from the rows' own figures."""
    from edgevid.report.findings import findings

    def row(backend, mode, precision, p50, top1, ratios):
        return {"variant": f"{backend}/{mode}/{precision}", "label": f"{backend} {mode} {precision}",
                "backend": backend, "mode": mode, "precision": precision, "reference": False,
                "unit": "stream step (1 frame)", "latency_ms": {"p50": p50},
                "accuracy": {"top1": top1, "videos": 10},
                "agreement": {"prediction_top1": 0.98, "predictions": 80, "max_abs_logit_diff": 0.4},
                "what_ran": {"inference_precision": "f32"} if backend == "openvino" else {}, "ratios": ratios}

    rows = [row("openvino", "stream", "fp32", 3.4, 0.912, {"speedup_vs_torch": 5.0, "clip_rerun_over_stream_step": 6.0}),
            row("openvino", "stream", "int8", 2.0, 0.909, {"speedup_vs_fp32": 1.7, "speedup_vs_torch": 8.5}),
            row("openvino", "clip", "fp32", 20.4, 0.95, {})]
    text = findings({"complete": True, "rows": rows, "skipped": []})
    assert "INT8 on OpenVINO (stream) is 1.7x faster than FP32 with 0.3 points lower top-1 (90.9% vs 91.2%)." in text
    assert any("re-running the clip model 20.40 ms (6.0x more)" in s for s in text)
    assert any(s.startswith("Fastest: openvino stream int8, median 2.00 ms") for s in text)
    assert not any("too short" in s for s in text)
    rows[2]["accuracy"]["no_prediction"] = 4  # videos shorter than one clip: their scores are uniform
    text = findings({"complete": True, "rows": rows, "skipped": []})
    assert "4 of 10 videos are too short for any prediction of openvino clip fp32: they count as uniform " \
           "scores (chance) in its accuracy." in text


def test_report_has_gating_and_salient_rows_measured_on_still_stretches(report, small):
    """The efficiency rows: network calls actually made and wall time, against final-label accuracy."""
    rows = {e["method"]: e for e in report["efficiency"]}
    assert set(rows) == {"every step", "delta gate (defer)", "delta gate (repeat)", "every window",
                         "salient windows (K=2)"}
    assert all(e["variant"] == "onnxruntime/stream/fp32" and e["videos"] == 5 for e in rows.values())
    assert rows["every step"]["calls_fraction"] == 1.0 == rows["every window"]["calls_fraction"]
    assert rows["delta gate (defer)"]["calls_fraction"] < 0.5  # 48 of 68 frames are still
    assert rows["delta gate (repeat)"]["network_calls"] > rows["delta gate (defer)"]["network_calls"]
    assert rows["salient windows (K=2)"]["network_calls"] < rows["every window"]["network_calls"]
    md = (small[2] / "report.md").read_text()
    assert "## Compute where the video changes" in md and "| delta gate (defer) |" in md
    assert any(s.startswith("Frame-delta gating") for s in report["findings"])


def test_report_files_are_published_like_any_other_output(small):
    """R12 (issue 23): report files get the permissions a plain open gives (0644 under umask 022), not 0600."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("report.json", "report.md", "report.html"):
        assert (small[2] / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_report_write_is_all_or_nothing_on_a_full_disk(small, tmp_path):
    """R10 (issue 23): a write that fails midway (report.html over the file-size limit, as on a full
    disk) leaves the previous report whole: no new report.json beside an old report.html, no temp file."""
    out = tmp_path / "out"
    shutil.copytree(small[2], out)
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    report = json.loads(old["report.json"])
    report["findings"] = ["a new report"] + report["findings"]
    (tmp_path / "new.json").write_text(json.dumps(report))
    sizes = {n: len(b) for n, b in old.items()}
    assert sizes["report.html"] > 2 * max(sizes["report.json"], sizes["report.md"])
    limit = 2 * max(sizes["report.json"], sizes["report.md"])  # json and md fit, html does not
    code = ("import json, resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            "from edgevid.errors import EdgevidError\n"
            "from edgevid.report.output import write_report\n"
            "try:\n"
            f"    write_report(json.load(open({str(tmp_path / 'new.json')!r})), {str(out)!r})\n"
            "except EdgevidError as exc:\n"
            "    print(exc); sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot write" in proc.stdout and "too large" in proc.stdout.lower(), proc.stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
