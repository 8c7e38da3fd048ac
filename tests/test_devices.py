"""Device profiles, detection, `export --device` and `edgevid deploy` bundles.

- The profiles file is valid: every profile checks, names its sources, and the supported
  Jetsons are JetPack 6 (Python 3.10) boards.
- Detection works here (this machine: x86, no GPU) and on Jetson files laid out in a temp
  folder (L4T release, device-tree module part numbers, board names).
- `export --device` picks the profile's target, precision and opset and refuses what the
  device cannot run.
- A deploy bundle for a Jetson runs with ONNX Runtime on this machine in a subprocess where
  torch cannot be imported, from the bundle's own wheel, with the outputs of the export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevid.cli import main
from edgevid.devices.detect import CPU_FLAGS, detect, l4t_release
from edgevid.devices.profiles import find_profile, get_profile, load_profiles
from edgevid.errors import EdgevidError

# --------------------------------------------------------------------------- profiles


def test_every_profile_is_valid_and_names_its_sources():
    profiles = load_profiles()
    names = {p.name for p in profiles}
    assert {"jetson-nano", "xavier-nx", "agx-xavier", "orin-nano", "orin-nx", "agx-orin", "x86-cpu",
            "x86-nvidia-gpu"} <= names
    for p in profiles:
        assert p.sources and all(isinstance(v, str) and v for v in p.sources.values()), p.name
        assert p.default_backend in p.backends and p.default_precision in p.precisions
        assert p.supported != bool(p.unsupported_reason)
        if p.jetson:
            assert p.modules and all(m.part.startswith("p") for m in p.modules)
            assert p.supported == (p.python == "3.10"), p.name  # JetPack 6 boards only: Python >= 3.10
            assert p.fp16_kernels
    assert get_profile("orin-nx").module("p3767-0000").dla_cores == 2
    assert get_profile("orin-nano").dla_cores == 0 and get_profile("agx-orin").dla_cores == 2
    assert "int8" not in get_profile("jetson-nano").precisions
    assert find_profile("generic") is None


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(EdgevidError, match="unknown device 'tx2'; known devices: jetson-nano, xavier-nx"):
        get_profile("tx2")


# --------------------------------------------------------------------------- detection


def _jetson_root(tmp_path: Path, release: str, model: str, compatible: list[str] | None) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(release + "\n# KERNEL_VARIANT: oot\n")
    tree = root / "proc" / "device-tree"
    tree.mkdir(parents=True)
    (tree / "model").write_bytes(model.encode() + b"\x00")
    if compatible is not None:
        (tree / "compatible").write_bytes(b"".join(c.encode() + b"\x00" for c in compatible))
    return root


@pytest.mark.parametrize(("release", "model", "compatible", "profile", "module", "jetpack"), [
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025",
     "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
     ["nvidia,p3768-0000+p3767-0005-super", "nvidia,p3767-0005", "nvidia,tegra234"], "orin-nano", "p3767-0005", "6.2"),
    ("# R36 (release), REVISION: 2.0, GCID: 35084178, BOARD: generic, EABI: aarch64, DATE: Tue Dec 19 05:55:03 UTC 2023",
     "NVIDIA Jetson AGX Orin Developer Kit", ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"],
     "agx-orin", "p3701-0005", "6.0 DP"),
    ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024",
     "NVIDIA Jetson Orin NX Engineering Reference Developer Kit", ["nvidia,p3768-0000+p3767-0001", "nvidia,tegra234"],
     "orin-nx", "p3767-0001", "6.1"),
    ("# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: Sun Mar 19 15:19:21 UTC 2023",
     "NVIDIA Jetson Xavier NX Developer Kit", ["nvidia,p3509-0000+p3668-0001", "nvidia,tegra194"],
     "xavier-nx", "p3668-0001", "5.1.1"),
    ("# R32 (release), REVISION: 7.6, GCID: 38171779, BOARD: t210ref, EABI: aarch64, DATE: Tue Nov  5 07:46:14 UTC 2024",
     "NVIDIA Jetson Nano Developer Kit", None, "jetson-nano", None, "4.6.6"),  # no compatible: the board name
])
def test_detect_reads_a_jetsons_files(tmp_path, release, model, compatible, profile, module, jetpack):
    found = detect(_jetson_root(tmp_path, release, model, compatible), machine="aarch64")
    assert (found.profile, found.module, found.jetpack) == (profile, module, jetpack)
    assert found.board == model and any("nv_tegra_release" in e for e in found.evidence)


def test_detect_an_unknown_jetson_and_an_unknown_machine(tmp_path):
    found = detect(_jetson_root(tmp_path, "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic",
                                "NVIDIA Jetson Thor", ["nvidia,p3834-0008"]), machine="aarch64")
    assert found.profile is None and "no profile" in found.reason and found.l4t == "36.4.3"
    plain = detect(tmp_path / "nothing", machine="aarch64")
    assert plain.profile is None and "not a Jetson" in plain.reason
    assert l4t_release("garbage") is None


def test_detect_here_and_on_an_x86_gpu_machine(tmp_path):
    here = detect()
    gpu = Path("/dev/nvidia0").exists()
    assert here.profile == ("x86-nvidia-gpu" if gpu else "x86-cpu")
    assert here.cpu and set(here.cpu_flags) <= set(CPU_FLAGS)
    root = tmp_path / "gpu"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "nvidia0").write_text("")
    assert detect(root, machine="x86_64").profile == "x86-nvidia-gpu"


def test_devices_cli(tmp_path, capsys):
    assert main(["devices", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listed] == [p.name for p in load_profiles()] and all(p["sources"] for p in listed)
    assert main(["devices", "list"]) == 0
    text = capsys.readouterr().out
    assert "xavier-nx: not supported: JetPack 5.1 ships Python 3.8" in text
    root = _jetson_root(tmp_path, "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic",
                        "NVIDIA Jetson AGX Orin Developer Kit", ["nvidia,p3701-0005"])
    assert main(["devices", "detect", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"] == "agx-orin"
    assert main(["devices", "detect", "--root", str(tmp_path / "none"), "-q"]) in (0, 1)


# --------------------------------------------------------------------------- export --device


@pytest.fixture(scope="module")
def tiny_checkpoint(runtime_model):
    return runtime_model[1]


def _export(ckpt, out, **kw):
    from edgevid.export.api import export_model

    return export_model("tsm-mobilenetv2-online", out, checkpoint=ckpt, size=64, num_classes=5, width_mult=0.5,
                        frames=4, validate=False, progress=False, **kw)


def test_export_for_a_device_takes_its_target_and_records_it(tiny_checkpoint, tmp_path):
    m = _export(tiny_checkpoint, tmp_path / "orin", device="orin-nano")
    assert (m.target, m.precision, m.device, m.build["opset"]) == ("tensorrt", "fp32", "orin-nano", 17)
    assert m.inputs[0].shape[0] == 1  # TensorRT target: static shapes
    cpu = _export(tiny_checkpoint, tmp_path / "cpu", device="x86-cpu")
    assert (cpu.target, cpu.device) == ("openvino", "x86-cpu") and "openvino_xml" in cpu.files


@pytest.mark.parametrize(("kw", "message"), [
    ({"device": "jetson-nano"}, "jetson-nano (Jetson Nano 4GB (Maxwell)) is not supported: JetPack 4.6 ships Python 3.6"),
    ({"device": "agx-xavier", "precision": "int8"}, "agx-xavier (Jetson AGX Xavier"),
    ({"device": "x86-cpu", "target": "tensorrt"}, "x86-cpu runs openvino, onnxruntime, not tensorrt"),
    ({"device": "orin-nx", "opset": 18}, "opset 18 is too new for orin-nx"),
    ({"device": "pi5"}, "unknown device 'pi5'"),
])
def test_export_refuses_what_the_device_cannot_run(kw, message, tiny_checkpoint, tmp_path):
    with pytest.raises(EdgevidError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _export(tiny_checkpoint, tmp_path / "x", **kw)
    assert not (tmp_path / "x").exists()


def test_a_precision_outside_the_profile_is_refused():
    from edgevid.export.plan import check_for_device

    with pytest.raises(EdgevidError, match="jetson-nano cannot run int8: it runs fp32, fp16 .*Int8 support: 0"):
        check_for_device(get_profile("jetson-nano"), "tensorrt", "int8", 13)


# --------------------------------------------------------------------------- deploy


_BLOCK_TORCH = "raise ImportError('torch is not available on this device (test)')\n"


def _torch_free_env(tmp_path: Path, wheel: Path) -> dict[str, str]:
    """PYTHONPATH: a folder where torch & co. fail to import, the bundle's wheel, then the other packages.

    Run with ``python -S``: the venv's own (editable) edgevid install is not on the path.
    """
    import sysconfig

    blocked = tmp_path / "blocked"
    for name in ("torch", "torchvision", "nncf", "onnx", "onnxscript"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(_BLOCK_TORCH)
    paths = [str(blocked), str(wheel), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONNOUSERSITE": "1"}


def test_a_jetson_bundle_runs_without_torch_and_gives_the_exports_outputs(runtime_model, runtime_video, tmp_path):
    import edgevid
    from edgevid import runtime
    from edgevid.deploy import deploy

    bundle = tmp_path / "bundle"
    info = deploy("tsm-mobilenetv2-online", "orin-nano", bundle, checkpoint=str(runtime_model[1]), size=64,
                  progress=False, num_classes=5, width_mult=0.5)
    art = bundle / info["artifacts"][0]["path"]
    assert info["device"] == "orin-nano" and runtime.open_artifact(art).manifest.device == "orin-nano"
    assert runtime.open_artifact(art).manifest.validation["onnxruntime"]["passed"]
    reqs = [line.split("#")[0].strip() for line in (bundle / "requirements.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r]
    version = info["wheel"].split("-")[1]
    assert "cuda-python>=12.2,<13" in reqs and "--find-links ." in reqs and f"edgevid=={version}" in reqs
    assert version.startswith(f"{edgevid.__version__}+bundle.")  # a local version: no index can serve it
    assert not [r for r in reqs if "torch" in r or "opencv" in r or r.startswith("tensorrt")], reqs
    readme = (bundle / "README.md").read_text()
    for text in ("nvarguscamerasrc", "--camera 0", "jetson_clocks", "nvpmodel", "tegrastats", "edgevid bench",
                 "python3-libnvinfer", "python3-venv", "pip install -r bundle/requirements.txt", "grep GStreamer"):
        assert text in readme, text
    wheel = bundle / info["wheel"]
    env = _torch_free_env(tmp_path, wheel)
    probe = subprocess.run([sys.executable, "-S", "-c", "import edgevid, torch"], env=env, capture_output=True,
                           text=True, cwd=tmp_path)
    assert "torch is not available on this device" in probe.stderr  # the block works
    proc = subprocess.run([sys.executable, "-S", "-m", "edgevid.cli", "run", str(bundle), "--backend", "onnxruntime",
                           "--video", str(runtime_video), "--json"], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # not the repository: its edgevid/ would be imported
    assert proc.returncode == 0, proc.stderr[-2000:]
    where = subprocess.run([sys.executable, "-S", "-c", "import edgevid; print(edgevid.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(wheel)), where  # the bundle's own edgevid, not the development tree
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    remote = [x for x in lines if "frame" in x]
    # The same artifact in this process (torch available, but not used by the runtime): same predictions.
    with runtime.load(art, "onnxruntime") as runner:
        session = runtime.open_session(runner)
        local = [p for p in (session.push(f) for f in runtime.open_source(str(runtime_video))) if p is not None]
    assert len(remote) == len(local) > 0
    for r, p in zip(remote, local):
        assert r["label"] == p.label and r["frame"] == p.frame
        assert np.isclose(r["score"], p.score, atol=1e-6)
    assert lines[-1]["result"]["label"] == local[-1].label


def test_deploy_refuses_an_unsupported_device_and_replaces_only_a_bundle(runtime_model, tmp_path, capsys):
    from edgevid.deploy import bundle_artifact

    assert main(["deploy", "--model", "tsm", "--device", "xavier-nx", "-o", str(tmp_path / "b"), "-q"]) == 2
    assert "xavier-nx (Jetson Xavier NX 8GB / 16GB (Volta)) is not supported" in capsys.readouterr().err
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["deploy", "--model", "tsm", "--device", "x86-cpu", "-o", str(foreign), "--force", "-q"]) == 2
    assert "is not an edgevid output (no bundle.json); refusing to replace it" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    # A bundle whose artifact lost its manifest: one clear line from `run`.
    broken = tmp_path / "broken"
    (broken / "art").mkdir(parents=True)
    (broken / "bundle.json").write_text(json.dumps({"artifacts": [{"path": "art"}]}))
    with pytest.raises(EdgevidError, match="the bundle .* is incomplete: art/manifest.json is missing"):
        bundle_artifact(broken)
    (broken / "bundle.json").write_text(json.dumps({"artifacts": [{"path": "../elsewhere"}]}))
    with pytest.raises(EdgevidError, match="must be a plain file name"):
        bundle_artifact(broken)
