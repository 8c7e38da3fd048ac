"""The runtime trusts an artifact only as far as its manifest is checked.

- Every manifest value is validated at load: a corrupt value is one ManifestError naming
  its field path (``manifest.json: preprocess.std[1] must be > 0, got 0``), never a
  TypeError later or a silent pass (and never a 41 GiB allocation).
- Every file a manifest names is a plain name resolving inside the artifact folder, and
  every file a backend loads (ONNX, OpenVINO .xml and .bin, engine) is hash-checked.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgevid.errors import EdgevidError
from edgevid.manifest import Manifest, ManifestError, sha256_file
from edgevid.runtime import load, open_session
from edgevid.runtime.artifact import ArtifactError, open_artifact

# A small, valid stream manifest (the shape of what `edgevid export` writes).
BASE = {
    "schema_version": 1, "edgevid_version": "0.1.0", "model": "tsm-mobilenetv2-online", "family": "tsm",
    "mode": "stream",
    "inputs": [{"name": "frame", "shape": ["N", 3, 64, 64], "dtype": "float32", "layout": "NCHW"}],
    "outputs": [{"name": "logits", "shape": ["N", 5], "dtype": "float32", "layout": "NC"}],
    "preprocess": {"resize": 73, "crop": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                   "channel_order": "RGB", "uint8_input": False},
    "sampling": {"frames": 8, "stride": 1},
    "labels": ["a", "b", "c", "d", "e"],
    "states": [{"path": "features.3", "shape": [1, 3, 16, 16], "dtype": "float32", "init": 0.0}],
    "precision": "fp32", "target": "openvino", "device": "generic",
    "files": {"onnx": "model.onnx", "openvino_xml": "model.xml", "openvino_bin": "model.bin"},
    "provenance": {"onnx_sha256": "0" * 64, "checkpoint_sha256": None, "tools": {"numpy": "2"}},
    "validation": {"skipped": True},
    "build": {"opset": 17, "batch": "dynamic", "openvino": {"inference_precision": "f32"}},
}


def _set(path: str, value):
    """An edit setting a dotted field path (``preprocess.std.1``) of the manifest dict."""

    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return edit


def _delete(path: str):
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        del d[last]

    return edit


# name -> (edit of BASE, expected message after "manifest.json: "). Today most of these pass
# silently (and fail later, or never), or raise TypeError / AttributeError.
CORRUPTIONS = {
    # states
    "state init string": (_set("states.0.init", "zero"), 'states[0].init must be a finite number, got "zero"'),
    "state init nan": (_set("states.0.init", float("nan")), "states[0].init must be a finite number"),
    "state not object": (_set("states.0", 5), "states[0] must be an object, got a number"),
    "states not list": (_set("states", {"a": 1}), "states must be a list"),
    "state unknown field": (_set("states.0.bogus", 1), "states[0] has unknown fields ['bogus']"),
    "state shape dynamic": (_set("states.0.shape.0", "N"), "states[0].shape[0] must be one of positive integers"),
    "state shape zero": (_set("states.0.shape.1", 0), "states[0].shape[1] must be one of positive integers"),
    "state shape float": (_set("states.0.shape.1", 3.0), "states[0].shape[1] must be one of positive integers"),
    "state shape huge": (_set("states.0.shape", [1, 100000, 100000]), "states[0].shape has more than 67108864"),
    "state dtype unknown": (_set("states.0.dtype", "float8"), "states[0].dtype must be one of float32"),
    "state path empty": (_set("states.0.path", ""), "states[0].path must not be empty"),
    # sampling
    "frames 1e9": (_set("sampling.frames", 1e9), "sampling.frames must be an integer, got 1000000000.0"),
    "frames huge int": (_set("sampling.frames", 10**9), "sampling.frames must be between 1 and 1024"),
    "frames float": (_set("sampling.frames", 8.0), "sampling.frames must be an integer, got 8.0"),
    "frames bool": (_set("sampling.frames", True), "sampling.frames must be an integer, got true"),
    "frames zero": (_set("sampling.frames", 0), "sampling.frames must be between 1 and 1024, got 0"),
    "stride huge": (_set("sampling.stride", 1000), "sampling.stride must be between 1 and 64"),
    "stride string": (_set("sampling.stride", "2"), 'sampling.stride must be an integer, got "2"'),
    "sampling not object": (_set("sampling", 8), "sampling must be an object"),
    # preprocess
    "std zero": (_set("preprocess.std.1", 0), "preprocess.std[1] must be > 0, got 0"),
    "std negative": (_set("preprocess.std.2", -0.2), "preprocess.std[2] must be > 0, got -0.2"),
    "std two values": (_set("preprocess.std", [0.2, 0.2]), "preprocess.std must have 3 elements, got 2"),
    "mean string": (_set("preprocess.mean.0", "x"), 'preprocess.mean[0] must be a finite number, got "x"'),
    "mean inf": (_set("preprocess.mean.0", float("inf")), "preprocess.mean[0] must be a finite number"),
    "mean not list": (_set("preprocess.mean", 0.5), "preprocess.mean must be a list"),
    "crop zero": (_set("preprocess.crop", 0), "preprocess.crop must be between 1 and 4096, got 0"),
    "crop huge": (_set("preprocess.crop", 100000), "preprocess.crop must be between 1 and 4096"),
    "resize below crop": (_set("preprocess.resize", 32), "preprocess.resize must be >= crop (64), got 32"),
    "resize huge": (_set("preprocess.resize", 10**6), "preprocess.resize must be between 1 and 8192"),
    "resize float": (_set("preprocess.resize", 73.5), "preprocess.resize must be an integer"),
    "channel order": (_set("preprocess.channel_order", "RGBA"), "preprocess.channel_order must be one of RGB, BGR"),
    "uint8_input string": (_set("preprocess.uint8_input", "yes"), "preprocess.uint8_input must be true or false"),
    "preprocess unknown field": (_set("preprocess.gamma", 2.2), "preprocess has unknown fields ['gamma']"),
    # tensors
    "tensor shape not list": (_set("inputs.0.shape", 64), "inputs[0].shape must be a list, got a number"),
    "tensor shape negative": (_set("inputs.0.shape.2", -64), "inputs[0].shape[2] must be one of positive"),
    "tensor shape empty name": (_set("inputs.0.shape.0", ""), "inputs[0].shape[0] must not be empty"),
    "tensor shape huge": (_set("inputs.0.shape", ["N", 3, 65536, 65536]), "inputs[0].shape has more than"),
    "tensor dtype unknown": (_set("outputs.0.dtype", "complex128"), "outputs[0].dtype must be one of"),
    "tensor name missing": (_delete("inputs.0.name"), "inputs[0].name is missing"),
    "tensor not object": (_set("inputs.0", "frame"), "inputs[0] must be an object, got a string"),
    "inputs empty": (_set("inputs", []), "inputs must not be empty"),
    # labels
    "labels string": (_set("labels", "abcde"), "labels must be a list, got a string"),
    "labels numbers": (_set("labels.0", 1), "labels[0] must be a string, got a number"),
    "labels empty": (_set("labels", []), "labels must not be empty"),
    # objects
    "files not object": (_set("files", ["model.onnx"]), "files must be an object, got a list"),
    "provenance not object": (_set("provenance", "x"), "provenance must be an object, got a string"),
    "validation not object": (_set("validation", [1]), "validation must be an object, got a list"),
    "build not object": (_set("build", 3), "build must be an object, got a number"),
    "build.openvino not object": (_set("build.openvino", "f32"), "build.openvino must be an object"),
    "hash not string": (_set("provenance.onnx_sha256", 5), "provenance.onnx_sha256 must be a string"),
    "model not string": (_set("model", ["x"]), "model must be a string"),
    "mode unknown": (_set("mode", "batch"), 'mode must be one of clip, stream, got "batch"'),
    "schema true": (_set("schema_version", True), None),  # message: schema version not supported
    # file names
    "onnx absolute": (_set("files.onnx", "/etc/passwd"), "files.onnx must be a plain file name"),
    "onnx dotdot": (_set("files.onnx", "../../x/model.onnx"), "files.onnx must be a plain file name"),
    "onnx subfolder": (_set("files.onnx", "sub/model.onnx"), "files.onnx must be a plain file name"),
    "onnx backslash": (_set("files.onnx", "..\\x\\model.onnx"), "files.onnx must be a plain file name"),
    "onnx is dotdot": (_set("files.onnx", ".."), "files.onnx must be a plain file name"),
    "onnx empty": (_set("files.onnx", ""), "files.onnx must not be empty"),
    "onnx number": (_set("files.onnx", 5), "files.onnx must be a string"),
    "xml outside": (_set("files.openvino_xml", "../../other/model.onnx"), "files.openvino_xml must be a plain"),
    "engine outside": (_set("files.engine", "../../victim.txt"), "files.engine must be a plain file name"),
}


def test_base_manifest_is_valid():
    manifest = Manifest.from_dict(copy.deepcopy(BASE))
    assert manifest.sampling.frames == 8 and manifest.preprocess.std == [0.229, 0.224, 0.225]
    assert Manifest.from_dict(manifest.to_dict()).to_dict() == manifest.to_dict()


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupt_manifest_is_one_clear_manifest_error(name):
    edit, expected = CORRUPTIONS[name]
    data = copy.deepcopy(BASE)
    edit(data)
    with pytest.raises(ManifestError) as err:
        Manifest.from_dict(data)
    message = str(err.value)
    assert "\n" not in message
    if expected is None:
        assert "schema version" in message
    else:
        assert message == f"manifest.json: {expected}" or message.startswith(f"manifest.json: {expected}"), message


def test_load_names_the_manifest_file(tmp_path):
    data = copy.deepcopy(BASE)
    data["preprocess"]["std"][1] = 0
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"manifest\.json: preprocess\.std\[1\] must be > 0, got 0$") as err:
        Manifest.load(tmp_path)
    assert str(tmp_path) in str(err.value)


# -- files on disk ----------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(artifact: Path, edit) -> Path:
    path = artifact / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return artifact


def test_no_hash_of_a_file_outside_is_printed(runtime_stream_artifact, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours to hash")
    art = _edit(_copy(runtime_stream_artifact, tmp_path / "art"), _set("files.onnx", "../secret.txt"))
    with pytest.raises(ManifestError) as err:
        load(art, "onnxruntime")
    assert "files.onnx must be a plain file name" in str(err.value)
    assert sha256_file(secret)[:12] not in str(err.value)


def test_a_symlink_out_of_the_artifact_is_refused(runtime_stream_artifact, tmp_path):
    # Same bytes, so the hash matches: only the containment check can refuse it.
    art = _copy(runtime_stream_artifact, tmp_path / "art")
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(art / "model.onnx", outside)
    (art / "model.onnx").unlink()
    (art / "model.onnx").symlink_to(outside)
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        load(art, "onnxruntime")


def test_a_symlink_inside_the_artifact_is_fine(runtime_stream_artifact, tmp_path):
    art = _copy(runtime_stream_artifact, tmp_path / "art")
    (art / "model.onnx").rename(art / "real.onnx")
    (art / "model.onnx").symlink_to("real.onnx")
    load(art, "onnxruntime").close()


def test_openvino_artifact_pointing_outside_is_refused(runtime_stream_artifact, tmp_path):
    # Only manifest.json, its IR entry pointing at another folder's ONNX (today: run unchecked).
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(runtime_stream_artifact / "model.onnx", other / "model.onnx")
    art = tmp_path / "art"
    art.mkdir()
    shutil.copy(runtime_stream_artifact / "manifest.json", art / "manifest.json")
    _edit(art, _set("files", {"openvino_xml": "../other/model.onnx"}))
    with pytest.raises(ManifestError, match="files.openvino_xml must be a plain file name"):
        load(art, "openvino")


@pytest.mark.parametrize("edit, message", [
    (_delete("provenance.openvino_xml_sha256"), "records no provenance.openvino_xml_sha256"),
    (_delete("provenance.openvino_bin_sha256"), "records no provenance.openvino_bin_sha256"),
    (_delete("files.openvino_bin"), "lists no 'openvino_bin' file"),
], ids=["xml hash missing", "bin hash missing", "bin not listed"])
def test_every_openvino_file_is_hash_checked(runtime_stream_artifact, tmp_path, edit, message):
    art = _edit(_copy(runtime_stream_artifact, tmp_path / "art"), edit)
    (art / "model.bin").write_bytes(bytes(len((art / "model.bin").read_bytes())))  # zeroed weights
    with pytest.raises(ArtifactError, match=message):
        load(art, "openvino")


def test_openvino_reads_the_checked_weights(runtime_stream_artifact, tmp_path):
    # The IR renamed: OpenVINO would by default read "net.bin" (tampered, unchecked) next to
    # "net.xml"; it must read the manifest's checked model.bin instead.
    art = _copy(runtime_stream_artifact, tmp_path / "art")
    (art / "model.xml").rename(art / "net.xml")
    (art / "net.bin").write_bytes(bytes(len((art / "model.bin").read_bytes())))
    _edit(art, _set("files.openvino_xml", "net.xml"))
    frame = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    outs = []
    for directory in (runtime_stream_artifact, art):
        with load(directory, "openvino", stateful=False) as runner, runner.open_stream() as stream:
            outs.append(stream.step(frame))
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-6)


# -- TensorRT engines: never written into the artifact, never read from outside it (fake TensorRT) ----


def _shipped_engine_artifact(src: Path, dst: Path, monkeypatch) -> Path:
    """A copy of ``src`` with an engine built "on this device" by the fake TensorRT, as export ships it."""
    from fakes.tensorrt_fake import install

    from edgevid.export.tensorrt import build_engine_now

    install(monkeypatch, "10.3.0.30")
    art = dst
    shutil.copytree(src, art)
    facts = build_engine_now(art / "model.onnx", art / "model.engine", precision="fp32", fp16_kernels=False)
    data = json.loads((art / "manifest.json").read_text())
    data["files"]["engine"] = "model.engine"
    data["provenance"]["engine_sha256"] = sha256_file(art / "model.engine")
    data["build"]["tensorrt"] = facts
    (art / "manifest.json").write_text(json.dumps(data))
    return art


def test_engines_built_at_load_never_go_into_the_artifact(runtime_stream_artifact, tmp_path, monkeypatch):
    from edgevid.runtime import load

    monkeypatch.setenv("EDGEVID_CACHE", str(tmp_path / "cache"))
    art = tmp_path / "art"
    shutil.copytree(runtime_stream_artifact, art)
    before = sorted(p.name for p in art.iterdir())
    _shipped_engine_artifact(runtime_stream_artifact, tmp_path / "unused", monkeypatch)  # installs the fake
    with load(art, "tensorrt") as runner:
        assert runner.engine_source == "built" and runner.engine_path.is_relative_to(tmp_path / "cache")
    assert sorted(p.name for p in art.iterdir()) == before


def test_a_shipped_engine_is_read_only_from_inside_the_artifact(runtime_stream_artifact, tmp_path, monkeypatch):
    from edgevid.runtime import load

    monkeypatch.setenv("EDGEVID_CACHE", str(tmp_path / "cache"))
    art = _shipped_engine_artifact(runtime_stream_artifact, tmp_path / "art", monkeypatch)
    with load(art, "tensorrt") as runner:
        assert runner.engine_source == "shipped"
    victim = tmp_path / "victim.engine"
    shutil.copyfile(art / "model.engine", victim)  # the very same bytes, outside the artifact
    data = json.loads((art / "manifest.json").read_text())
    data["files"]["engine"] = "../victim.engine"
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="files.engine must be a plain file name"):
        load(art, "tensorrt")
    data["files"]["engine"] = "model.engine"
    (art / "manifest.json").write_text(json.dumps(data))
    (art / "model.engine").unlink()
    (art / "model.engine").symlink_to(victim)
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        load(art, "tensorrt")
    (art / "model.engine").unlink()
    (art / "model.engine").write_bytes(victim.read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="does not match manifest.json"):
        load(art, "tensorrt")


# -- session bounds -------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["smooth", "every"])
def test_session_options_are_bounded(runtime_stream_artifact, option):
    with load(runtime_stream_artifact, "onnxruntime") as runner:
        with pytest.raises(EdgevidError, match=f"{option} must be <= 10000, got 1000000000"):
            open_session(runner, **{option: 10**9})
        open_session(runner, **{option: 10_000})


def test_exported_manifest_loads(runtime_stream_artifact, runtime_clip_artifact):
    for directory in (runtime_stream_artifact, runtime_clip_artifact):
        art = open_artifact(directory)
        assert art.verified_file("onnx").name == "model.onnx"
