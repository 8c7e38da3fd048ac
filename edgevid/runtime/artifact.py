"""An exported artifact on disk, and the checks that its manifest and model files agree.

The runtime trusts nothing but ``manifest.json``: every file it names must be a plain file
name resolving inside the artifact folder; before a backend runs a file (ONNX, OpenVINO IR
``.xml`` and ``.bin``, a shipped engine), the file's sha256 must equal the one recorded at
export (``provenance.<role>_sha256``, mandatory), and the graph's inputs and outputs, as
the backend itself reports them, must have the names, shapes and dtypes the manifest
promises. Any mismatch is refused with one line naming the file and the first differences.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgevid.manifest import Manifest, ManifestError, TensorSpec, check_file_name, sha256_file


class ArtifactError(ManifestError):
    """An artifact directory is incomplete, corrupt, or does not match its manifest."""


_SHOW = 3  # how many differences a mismatch message lists


@dataclass(frozen=True)
class Artifact:
    """An artifact directory and its parsed manifest."""

    directory: Path
    manifest: Manifest

    def path_of(self, role: str, default: str | None = None) -> Path:
        """Where the ``role`` file is (it need not exist yet), never outside the artifact folder.

        The manifest must name it with a plain file name, and the path must resolve (symlinks
        followed) to a file inside the resolved folder: a manifest can neither make the
        runtime read a file elsewhere nor make the TensorRT cache write one.
        """
        name = self.manifest.files.get(role, default)
        if not name:
            raise ArtifactError(f"{self.directory}/manifest.json lists no {role!r} file")
        return self.path_in(name, f"files.{role}")

    def path_in(self, name: str, what: str) -> Path:
        """``directory / name`` after checking that ``name`` is a plain file name and that the
        path resolves inside the folder (``what`` names it in messages)."""
        check_file_name(name, what)
        path = self.directory / name
        try:
            root, real = self.directory.resolve(), path.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise ArtifactError(f"{path} cannot be resolved ({exc}); re-export the model") from exc
        if real == root or not real.is_relative_to(root):
            raise ArtifactError(f"{path} is a link to a file outside the artifact folder; refusing to use it "
                                "(copy the file into the artifact, or re-export the model)")
        return path

    def file(self, role: str) -> Path:
        """Path of the file with ``role`` (``onnx``, ``openvino_xml``, ...); it must exist."""
        path = self.path_of(role)
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the artifact is incomplete; re-export the model")
        return path

    def has_file(self, role: str) -> bool:
        """True if the manifest lists a ``role`` file and it exists (an unsafe name raises)."""
        return bool(self.manifest.files.get(role)) and self.path_of(role).is_file()

    def verified_file(self, role: str) -> Path:
        """The ``role`` file after checking its sha256 against ``provenance.<role>_sha256``.

        Every file a backend loads is checked, so the hash must be recorded: a file the export
        did not hash (or a manifest edited to point elsewhere) is refused, never run.
        """
        path = self.file(role)
        expected = self.manifest.provenance.get(f"{role}_sha256")
        if not expected:
            raise ArtifactError(
                f"{self.directory}/manifest.json records no provenance.{role}_sha256, so {path.name} "
                "cannot be checked; re-export the model"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"{path} does not match manifest.json (sha256 {actual[:12]}... != {str(expected)[:12]}...): "
                "the file was changed or corrupted after export; re-export the model"
            )
        return path


def open_artifact(directory: str | os.PathLike) -> Artifact:
    """Read and sanity-check the manifest of an artifact directory."""
    directory = Path(directory)
    if not directory.exists():
        raise ArtifactError(f"artifact {directory} does not exist")
    manifest = Manifest.load(directory)
    if not manifest.inputs or not manifest.outputs:
        raise ArtifactError(f"{directory}/manifest.json lists no inputs or no outputs")
    # A stream manifest may have no states: a stateless model (TSN) streams as per-frame scoring.
    classes = manifest.outputs[0].shape[-1] if manifest.outputs[0].shape else None
    if isinstance(classes, int) and classes != len(manifest.labels):
        raise ArtifactError(
            f"{directory}/manifest.json has {len(manifest.labels)} labels for {classes} model outputs"
        )
    return Artifact(directory, manifest)


def expected_io(manifest: Manifest) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph inputs and outputs the manifest promises, state pairs included (in order)."""
    ins = list(manifest.inputs) + [TensorSpec(s.input, list(s.shape), s.dtype) for s in manifest.states]
    outs = list(manifest.outputs) + [TensorSpec(s.output, list(s.shape), s.dtype) for s in manifest.states]
    return ins, outs


def _dims_agree(expected: Sequence[int | str], actual: Sequence[int | str]) -> bool:
    # A string dim is symbolic on either side (the manifest's "N", or the graph's own name
    # for a dynamic axis): it accepts any size. Two fixed sizes must be equal.
    if len(expected) != len(actual):
        return False
    return all(isinstance(e, str) or isinstance(a, str) or e == a for e, a in zip(expected, actual))


def _fmt(shape: Sequence[int | str]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _compare(kind: str, expected: list[TensorSpec], actual: list[TensorSpec]) -> list[str]:
    problems: list[str] = []
    have = {t.name: t for t in actual}
    want = {t.name: t for t in expected}
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    if missing:
        problems.append(f"{kind}s {missing[:_SHOW]} are in the manifest but not in the model")
    if extra:
        problems.append(f"model {kind}s {extra[:_SHOW]} are not in the manifest")
    for name, spec in want.items():
        got = have.get(name)
        if got is None:
            continue
        if got.dtype != spec.dtype:
            problems.append(f"{kind} {name!r} is {got.dtype} in the model, {spec.dtype} in the manifest")
        if not _dims_agree(spec.shape, got.shape):
            problems.append(
                f"{kind} {name!r} has shape {_fmt(got.shape)} in the model, {_fmt(spec.shape)} in the manifest"
            )
    return problems


def check_io(manifest: Manifest, inputs: list[TensorSpec], outputs: list[TensorSpec], label: str) -> None:
    """Refuse a model whose reflected I/O differs from the manifest (names, dtypes, shapes)."""
    want_in, want_out = expected_io(manifest)
    problems = _compare("input", want_in, inputs) + _compare("output", want_out, outputs)
    if problems:
        shown = "; ".join(problems[:_SHOW]) + ("; ..." if len(problems) > _SHOW else "")
        raise ArtifactError(f"{label} does not match manifest.json: {shown}; re-export the model")
