"""A Triton-served stream model as a runner: sessions over a server instead of a local backend.

``connect(url, model)`` reads the model's manifest from its Triton config (the
``edgevid_manifest`` parameter ``edgevid triton`` writes) and checks the served inputs and
outputs against it. Its streams are Triton sequences: one correlation id each,
``sequence_start`` on the first step after open or ``reset()``, ``sequence_end`` on
``close()``. A ``StreamSession`` over it steps, smooths and warms up exactly as over a local
runner, so ``edgevid run --triton URL --model NAME`` prints what a local run prints.

Torch-free; needs ``tritonclient`` (``pip install 'edgevid[triton]'``).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError, require
from edgevid.manifest import Manifest
from edgevid.runtime.artifact import Artifact
from edgevid.runtime.backends.base import BackendError, BackendStream, Runner

_TYPES = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8", "INT8": "int8", "INT32": "int32", "INT64": "int64"}
# Correlation ids: random 48-bit base per process, then counting, so two clients rarely collide.
_IDS = itertools.count(random.SystemRandom().getrandbits(48) + 1)


def _client_module(protocol: str) -> Any:
    if protocol not in ("grpc", "http"):
        raise EdgevidError(f"protocol must be grpc or http, got {protocol!r}")
    return require(f"tritonclient.{protocol}", "triton")


def _fail(url: str, exc: Exception) -> EdgevidError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return EdgevidError(f"Triton at {url}: {first[:300]}")


class TritonRunner(Runner):
    """A model served by Triton (stream mode); create it with ``connect``."""

    name = "triton"
    extra = "triton"

    def __init__(self, artifact: Artifact, **options: Any) -> None:
        super().__init__(artifact, **options)
        self.url, self.model, self.protocol = options["url"], options["model"], options.get("protocol", "grpc")
        self._client: Any = options["client"]

    @property
    def model_label(self) -> str:
        """The served model."""
        return f"{self.model} at {self.url}"

    def _load(self) -> None:
        # Triton keeps the states (production) or the Python model does (portable): only the
        # frame and the logits cross the wire, so only they are checked against the manifest.
        self._inputs = list(self.manifest.inputs)
        self._outputs = list(self.manifest.outputs)

    def load(self) -> TritonRunner:
        """Mark loaded; the served frame / logits tensors were checked in ``connect``."""
        self._loaded = True
        return self

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Not available: a served stream model runs only inside its sequences."""
        raise BackendError("a Triton stream model runs in sequences: use open_stream() / StreamSession")

    def open_stream(self) -> TritonStream:
        """A new sequence (its own correlation id)."""
        self._require_loaded()
        return TritonStream(self)

    def close(self) -> None:
        """Close the connection."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing must not raise
                pass
        super().close()


class TritonStream(BackendStream):
    """One Triton sequence; ``sequence_id`` defaults to a fresh id."""

    def __init__(self, runner: TritonRunner, sequence_id: int | None = None) -> None:
        super().__init__(runner)
        self.sequence_id = int(sequence_id) if sequence_id is not None else next(_IDS)
        self._module = _client_module(runner.protocol)
        frame, logits = runner.frame_input, runner.logits_output
        self._frame, self._logits = frame.name, logits.name
        self._dtype = {v: k for k, v in _TYPES.items()}[frame.dtype]
        self._start = True
        self._last: np.ndarray | None = None

    def _infer(self, frame: np.ndarray, end: bool = False) -> np.ndarray:
        runner = self.runner
        x = self._module.InferInput(self._frame, list(frame.shape), self._dtype)
        x.set_data_from_numpy(np.ascontiguousarray(frame))
        out = self._module.InferRequestedOutput(self._logits)
        try:
            result = runner._client.infer(runner.model, [x], outputs=[out], sequence_id=self.sequence_id,
                                          sequence_start=self._start, sequence_end=end)
        except Exception as exc:  # tritonclient raises InferenceServerException for server and connection errors
            raise _fail(runner.url, exc) from exc
        self._start = False
        return np.array(result.as_numpy(self._logits), copy=True)

    def step(self, frame: np.ndarray) -> np.ndarray:
        """One step of this sequence: the frame (batch 1) in, the step's logits (1, K) out."""
        self._last = frame
        return self._infer(frame)

    def reset(self) -> None:
        """The next step starts the sequence again (Triton resets its state on START)."""
        self._start = True

    def close(self) -> None:
        """End the sequence on the server (its state is released there)."""
        if self._last is not None and not self._start and self.runner._client is not None:
            try:
                self._infer(self._last, end=True)
            except EdgevidError:
                pass  # the server may be gone; it frees the sequence after its idle time anyway
        self._last = None


def connect(url: str, model: str, *, protocol: str = "grpc") -> TritonRunner:
    """A loaded ``TritonRunner`` for ``model`` served at ``url`` (``host:port``)."""
    module = _client_module(protocol)
    try:
        client = module.InferenceServerClient(url)
        if not client.is_server_live():
            raise EdgevidError(f"Triton at {url} is not live")
        config = client.get_model_config(model, as_json=True) if protocol == "grpc" else client.get_model_config(model)
    except EdgevidError:
        raise
    except Exception as exc:  # noqa: BLE001 - connection refused, unknown model, ...
        raise _fail(url, exc) from exc
    config = config.get("config", config)
    raw = (config.get("parameters") or {}).get("edgevid_manifest", {}).get("string_value")
    if not raw:
        client.close()
        raise EdgevidError(f"model {model!r} at {url} was not written by `edgevid triton` (no edgevid_manifest "
                           "parameter in its config)")
    manifest = Manifest.from_dict(json.loads(raw), source=f"{model} at {url}")
    if manifest.mode != "stream":
        client.close()
        raise EdgevidError(f"model {model!r} at {url} is not a stream model")
    served = {t["name"]: t for t in config.get("input", [])}
    frame = manifest.inputs[0]
    got = served.get(frame.name)
    if got is None or [int(d) for d in got.get("dims", [])] != [int(d) for d in frame.shape[1:]]:
        client.close()
        raise EdgevidError(f"model {model!r} at {url} does not take {frame.name} {frame.shape[1:]} as its manifest says")
    runner = TritonRunner(Artifact(Path(f"triton/{model}"), manifest), url=url, model=model, protocol=protocol,
                          client=client)
    return runner.load()


__all__ = ["TritonRunner", "TritonStream", "connect"]
