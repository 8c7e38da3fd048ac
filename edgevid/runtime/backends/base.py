"""The runner interface every backend implements (Polygraphy style: load, specs, infer, close).

A ``Runner`` owns one loaded model. It reports the graph's inputs and outputs as the backend
sees them (its own reflection, never the ``onnx`` package), runs one stateless call with
every input explicit (``infer``), and opens any number of independent streams
(``open_stream``) for streaming models. A ``BackendStream`` keeps the temporal states where
its backend keeps them cheapest (bound device buffers, internal variables), so a step takes
one frame in and gives logits out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.manifest import Manifest, StatePair, TensorSpec
from edgevid.runtime.artifact import Artifact, check_io


class BackendError(EdgevidError):
    """A backend cannot load or run the artifact."""


class BackendStream(ABC):
    """One stream's temporal state inside a backend: ``step(frame) -> logits``, ``reset()``."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @abstractmethod
    def step(self, frame: np.ndarray) -> np.ndarray:
        """Run one time step on a batch-1 frame (the graph's frame input); returns (1, K) logits.

        The returned array is owned by the caller (it is not overwritten by the next step).
        """

    @abstractmethod
    def reset(self) -> None:
        """Set every state back to its initial value from the manifest."""

    @abstractmethod
    def close(self) -> None:
        """Release per-stream resources (device buffers, infer requests)."""

    def __enter__(self) -> BackendStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner(ABC):
    """One loaded model on one backend; create it with ``edgevid.runtime.load``."""

    name: ClassVar[str]  # registry name, e.g. "onnxruntime"
    extra: ClassVar[str]  # the pip extra that installs the backend, e.g. "openvino"

    def __init__(self, artifact: Artifact, **options: Any) -> None:
        self.artifact = artifact
        self.options = options
        self._loaded = False
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []

    @property
    def manifest(self) -> Manifest:
        """The artifact's manifest."""
        return self.artifact.manifest

    @property
    def is_loaded(self) -> bool:
        """True between ``load()`` and ``close()``."""
        return self._loaded

    def load(self) -> Runner:
        """Load the model and check its I/O against the manifest; idempotent, returns self."""
        if self._loaded:
            return self
        try:
            self._load()
        except EdgevidError:
            raise
        except Exception as exc:  # backend libraries raise their own types; give one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{self.name} cannot load {self.artifact.directory}: {first}") from exc
        self._loaded = True
        try:
            check_io(self.manifest, self.input_specs(), self.output_specs(), self.model_label)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def model_label(self) -> str:
        """Which file this runner runs, for messages."""
        return self.artifact.directory.name + "/" + self.artifact.manifest.files.get("onnx", "model.onnx")

    @abstractmethod
    def _load(self) -> None:
        """Backend-specific loading (sessions, compiled models, engines); sets ``_inputs`` and
        ``_outputs`` to the specs the backend reports for the model file."""

    def input_specs(self) -> list[TensorSpec]:
        """Every graph input (state inputs included) as the backend reports it."""
        self._require_loaded()
        return list(self._inputs)

    def output_specs(self) -> list[TensorSpec]:
        """Every graph output (state outputs included) as the backend reports it."""
        self._require_loaded()
        return list(self._outputs)

    @abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One stateless call: every graph input given by name, every output returned by name."""

    @abstractmethod
    def open_stream(self) -> BackendStream:
        """A new independent stream with states at their initial values (stream mode only)."""

    def open_batch(self) -> Any:
        """Many independent streams stepped in one call (``edgevid.runtime.backends.batch``).

        This default keeps the states in numpy buffers and steps them with ``infer``; a backend
        overrides it where it can bind the buffers in place.
        """
        from edgevid.runtime.backends.batch import NumpyStreamBatch

        return NumpyStreamBatch(self)

    def close(self) -> None:
        """Release the model; the runner can be loaded again."""
        self._loaded = False

    def __enter__(self) -> Runner:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers shared by the backends ------------------------------------------------------

    def _require_loaded(self) -> None:
        if not self._loaded:
            raise BackendError(f"{self.name} runner is not loaded; call load() or use it in a with-block")

    def _require_stream_mode(self) -> None:
        self._require_loaded()
        if self.manifest.mode != "stream":
            raise BackendError(
                f"{self.manifest.model} was exported in {self.manifest.mode} mode: it has no temporal "
                "states to stream; use ClipSession (or re-export with --mode stream)"
            )

    @property
    def frame_input(self) -> TensorSpec:
        """The non-state input a step or clip feeds (``frame`` / ``frames``)."""
        return self.manifest.inputs[0]

    @property
    def logits_output(self) -> TensorSpec:
        """The non-state output with the class scores."""
        return self.manifest.outputs[0]


def initial_state(pair: StatePair) -> np.ndarray:
    """The batch-1 initial value of a state as a fresh numpy array."""
    return np.full(pair.shape, pair.init, dtype=np.dtype(pair.dtype))


def batch1_shape(spec: TensorSpec) -> list[int]:
    """A manifest shape with its dynamic batch dim (``"N"``) set to 1, for batch-1 buffers."""
    dims = list(spec.shape)
    if dims and isinstance(dims[0], str):
        dims[0] = 1
    if any(isinstance(d, str) for d in dims):
        raise BackendError(f"{spec.name} has dynamic dims other than the batch: {spec.shape}")
    return [int(d) for d in dims]
