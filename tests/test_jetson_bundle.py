"""Issue 24: a deploy bundle installs from the folder that holds it, as the README says, and runs without torch.

- Bug 2: requirements.txt listed ``./edgevid-<v>-py3-none-any.whl``, which pip resolves against
  the current folder, so ``pip install -r tsm-orin/requirements.txt`` (the README's command, run
  from the parent folder) failed. Now it says ``--find-links .`` (pip resolves that against
  the requirements file's folder) and asks for edgevid by its local version.
- The README's "Deploying on a Jetson" commands run verbatim: a fresh venv, a bundle,
  ``pip install -r`` from the parent folder (packages from PyPI), ``edgevid run`` without torch.
  On this x86 machine the bundle is an x86-cpu one (ONNX Runtime, pip's OpenCV) placed where the
  README puts the Jetson's, and the ``sudo apt`` line is left out (no root; it installs the venv
  module, which this Python has, and TensorRT, which an ONNX Runtime bundle does not use).
- A Jetson bundle's requirements resolve for JetPack 6 (aarch64, Python 3.10) to no pip OpenCV,
  which would shadow JetPack's GStreamer build (pip asks PyPI for the metadata only: 2 s here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgevid.deploy import install_commands, pack_bundle, requirements, wheel_version, write_runtime_wheel
from edgevid.devices.profiles import get_profile

README = Path(__file__).parents[1] / "README.md"
FOLDER = "tsm-orin"  # the bundle folder the README's commands name


def _bundle(artifact: Path, parent: Path, profile: str) -> Path:
    """A bundle for ``profile`` around a copy of ``artifact`` in ``parent/tsm-orin`` (``pack_bundle``: no export)."""
    from edgevid.runtime import open_artifact

    work = parent / FOLDER
    shutil.copytree(artifact, work / "artifact")
    pack_bundle(work, work / "artifact", get_profile(profile), open_artifact(work / "artifact").manifest)
    return work


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def readme_jetson_block(path: Path | None = None) -> list[str]:
    """The lines of the first bash block under "## Deploying on a Jetson" in ``path`` (default: README.md)."""
    text = (path or README).read_text()
    section = text[text.index("## Deploying on a Jetson"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no bash block under '## Deploying on a Jetson'"
    return [line for line in block.group(1).splitlines() if line.strip()]


# ---------------------------------------------------------------- bug 2, fast: pip's own resolution, offline


def test_bug2_pip_installs_the_bundle_from_its_parent_folder(runtime_clip_artifact, tmp_path):
    """`pip install -r tsm-orin/requirements.txt` from the parent folder finds the bundle's wheel (dry run, no index:
    the other requirements are installed in this venv already)."""
    bundle = _bundle(runtime_clip_artifact, tmp_path, "x86-cpu")
    wheel = next(bundle.glob("edgevid-*.whl"))
    proc = _pip("install", "--dry-run", "--no-index", "--quiet", "--report", "report.json", "-r",
                f"{FOLDER}/requirements.txt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    [edgevid] = [item for item in report["install"] if item["metadata"]["name"] == "edgevid"]
    assert edgevid["metadata"]["version"] == wheel_version(wheel.name)
    assert edgevid["download_info"]["url"] == wheel.resolve().as_uri()


def test_the_wheel_has_a_local_version_that_follows_its_code(tmp_path):
    """No index can serve a local version (so pip never takes a same-named project from PyPI), and other code is
    another version (so pip replaces an installed bundle instead of keeping it)."""
    import edgevid

    first = wheel_version(write_runtime_wheel(tmp_path).name)
    assert re.fullmatch(re.escape(edgevid.__version__) + r"\+bundle\.[0-9a-f]{12}", first)
    assert wheel_version(write_runtime_wheel(tmp_path).name) == first  # the same code, the same version


def test_a_jetson_bundle_leaves_opencv_and_tensorrt_to_jetpack():
    """Ubuntu 22.04 needs python3-venv; OpenCV (GStreamer) and TensorRT come from JetPack, never from pip."""
    from edgevid.deploy import _WHEEL_DEPS

    orin = get_profile("orin-nano")
    text = requirements(orin, "0.1.0+bundle.0", "tensorrt")
    lines = [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]
    assert lines[:2] == ["--find-links .", "edgevid==0.1.0+bundle.0"]
    assert not [line for line in lines if "opencv" in line or line.startswith(("tensorrt", "torch"))], lines
    assert not [dep for dep in _WHEEL_DEPS if "opencv" in dep]
    assert "sudo apt install python3-venv python3-libnvinfer" in text and "do not add one" in text
    commands = install_commands(orin, FOLDER)
    assert commands[0].startswith("sudo apt install python3-venv python3-libnvinfer")
    assert f"pip install -r {FOLDER}/requirements.txt" in commands
    assert "python3 -m venv --system-site-packages .venv && . .venv/bin/activate" in commands


def test_the_readme_shows_the_bundle_install_commands():
    """README.md's Jetson block is the bundle README's install commands for tsm-orin (the next test runs it)."""
    block = readme_jetson_block()
    for line in install_commands(get_profile("orin-nano"), FOLDER):
        assert line in block, f"README.md's Jetson block lacks: {line}"
    assert f"edgevid run {FOLDER} --video clip.mp4" in block


# ---------------------------------------------------------------- the README, verbatim (pip downloads from PyPI)


def _device_lines(block: list[str]) -> list[str]:
    """The README lines that run on the device, less ``sudo`` (see the module docstring)."""
    skip = ("edgevid deploy ", "scp ", "sudo ")
    return [line for line in block if not line.lstrip().startswith(skip)]


_REFUSE = "#!/bin/sh\necho \"$(basename \"$0\") outside a venv: the README must activate one first\" >&2\nexit 3\n"


def run_readme_block(block: list[str], workdir: Path) -> subprocess.CompletedProcess:
    """Run the device lines of ``block`` in bash in ``workdir``, never touching this machine's environments.

    The PATH starts with a folder whose ``python3`` is this Python's base interpreter (what a
    device's system python3 is) and whose ``pip``, ``pip3``, ``python`` and ``edgevid`` refuse to
    run: until the README's commands activate their own venv, nothing can install into or run
    from another one (``PIP_REQUIRE_VIRTUALENV`` as well).
    """
    tools = workdir / "device-bin"
    tools.mkdir()
    (tools / "python3").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    for name in ("pip", "pip3", "python", "edgevid"):
        (tools / name).write_text(_REFUSE)
        (tools / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=os.pathsep.join([str(tools), "/usr/bin", "/bin"]), PIP_REQUIRE_VIRTUALENV="1")
    script = "set -euo pipefail\n" + "\n".join(_device_lines(block)) + "\n"
    return subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def test_the_readme_jetson_commands_install_a_bundle_and_run_it_without_torch(runtime_clip_artifact, runtime_video,
                                                                                tmp_path):
    """A fresh venv, `pip install -r tsm-orin/requirements.txt` from the parent folder, `edgevid run`: no torch.

    Measured here: 7.5 s with pip's cache cold (onnxruntime and opencv-python-headless, 92 MB, from PyPI),
    so it stays in the default suite; it needs PyPI (reachable here and in CI).
    """
    _bundle(runtime_clip_artifact, tmp_path, "x86-cpu")
    shutil.copy(runtime_video, tmp_path / "clip.mp4")
    start = time.monotonic()
    proc = run_readme_block(readme_jetson_block(), tmp_path)
    assert proc.returncode == 0, (proc.stdout[-1500:], proc.stderr[-3000:])
    assert "OK" in proc.stdout and "FAILED" not in proc.stdout  # sha256sum -c
    assert [line for line in proc.stdout.splitlines() if line.startswith("result: ")], proc.stdout[-1500:]
    python = tmp_path / ".venv" / "bin" / "python"
    torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, cwd=tmp_path)
    assert "No module named 'torch'" in torch.stderr  # so `edgevid run` above ran without it
    where = subprocess.run([str(python), "-c", "import edgevid; print(edgevid.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path).stdout.strip()
    assert where.startswith(str(tmp_path / ".venv")), where  # the bundle's wheel, not this repository
    print(f"README commands: {time.monotonic() - start:.0f} s")


def test_a_jetson_bundle_resolves_for_jetpack_6_without_a_pip_opencv(tmp_path):
    """pip's resolution of an Orin TensorRT bundle for JetPack 6 (aarch64, Python 3.10), from the parent folder."""
    bundle = tmp_path / FOLDER
    bundle.mkdir()
    version = wheel_version(write_runtime_wheel(bundle).name)
    (bundle / "requirements.txt").write_text(requirements(get_profile("orin-nano"), version, "tensorrt"))
    # Ubuntu 22.04's glibc is 2.35; pip does not widen a manylinux_2_35 tag to the older ones it runs, so list them.
    platforms = [arg for glibc in range(35, 16, -1) for arg in ("--platform", f"manylinux_2_{glibc}_aarch64")]
    proc = _pip("install", "--dry-run", "--target", str(tmp_path / "target"), "--quiet", "--only-binary=:all:",
                *platforms, "--python-version", "3.10", "--implementation", "cp",
                "--report", "report.json", "-r", f"{FOLDER}/requirements.txt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {i["metadata"]["name"].lower(): i["metadata"]["version"]
           for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert got["edgevid"] == version and "onnxruntime" in got and got["numpy"].startswith("1.")
    assert got["cuda-python"].startswith("12."), got
    assert not [name for name in got if "opencv" in name or name.startswith(("torch", "tensorrt"))], got
