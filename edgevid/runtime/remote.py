"""A Triton-served stream model as a runner: sessions over a server instead of a local backend.

``connect(url, model)`` reads the model's manifest from its Triton config (the
``edgevid_manifest`` parameter ``edgevid triton`` writes) and checks the served inputs and
outputs against it. Its streams are Triton sequences: one correlation id each,
``sequence_start`` on the first step after open or ``reset()``, ``sequence_end`` on
``close()``. A ``StreamSession`` over it steps, smooths and warms up exactly as over a local
runner, so ``edgevid run --triton URL --model NAME`` prints what a local run prints.

Every call to the server has a deadline (``timeout``, 30 s by default): a server that is
gone, stopped (SIGSTOP) or never answers is one line within it, never a hang. The URL is
``host:port`` with a port in 1..65535 (gRPC would wrap 99999 to 34463 silently).

Torch-free; needs ``tritonclient`` (``pip install 'edgevid[triton]'``).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError, require
from edgevid.manifest import Manifest
from edgevid.runtime.artifact import Artifact
from edgevid.runtime.backends.base import BackendError, BackendStream, Runner

_TYPES = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "UINT8": "uint8", "INT8": "int8",
          "INT16": "int16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}
DEFAULT_TIMEOUT_S = 30.0  # per call: far above a step (milliseconds), far below a user's patience
MAX_TIMEOUT_S = 7 * 24 * 3600.0
# Correlation ids: random 48-bit base per process, then counting, so two clients rarely collide.
_IDS = itertools.count(random.SystemRandom().getrandbits(48) + 1)


def _client_module(protocol: str) -> Any:
    if protocol not in ("grpc", "http"):
        raise EdgevidError(f"protocol must be grpc or http, got {protocol!r}")
    return require(f"tritonclient.{protocol}", "triton")


def check_url(url: str) -> str:
    """``url`` if it is ``host:port`` (an IPv6 host in brackets) with a port in 1..65535, else one line."""
    host, sep, port = (url or "").rpartition(":")
    if not sep or not host or not port.isdigit() or len(port) > 5:
        raise EdgevidError(f"Triton URL {url!r} must be host:port (the server's gRPC endpoint, e.g. 127.0.0.1:8001)")
    if not 1 <= int(port) <= 65535:
        raise EdgevidError(f"Triton URL {url!r}: the port must be between 1 and 65535, got {int(port)}")
    return url


def check_timeout(timeout: float) -> float:
    """``timeout`` if it is a finite number of seconds in (0, a week], else one line."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or not 0 < timeout <= MAX_TIMEOUT_S:
        raise EdgevidError(f"the Triton timeout must be in (0, {MAX_TIMEOUT_S:g}] seconds, got {timeout!r}")
    return float(timeout)


def _fail(url: str, exc: Exception, timeout: float | None = None) -> EdgevidError:
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else "")
    if timeout is not None and ("DEADLINE_EXCEEDED" in code or isinstance(exc, TimeoutError)
                                or "timed out" in str(exc).lower()):
        return EdgevidError(f"Triton at {url} did not answer within {timeout:g} s (the server is stopped, "
                            "overloaded or not a Triton server; --timeout sets the limit)")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return EdgevidError(f"Triton at {url}: {first[:300]}")


class TritonRunner(Runner):
    """A model served by Triton (stream mode); create it with ``connect``."""

    name = "triton"
    extra = "triton"

    def __init__(self, artifact: Artifact, **options: Any) -> None:
        super().__init__(artifact, **options)
        self.url, self.model, self.protocol = options["url"], options["model"], options.get("protocol", "grpc")
        self.timeout: float = options.get("timeout", DEFAULT_TIMEOUT_S)
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
        self._failed = False  # a call failed (server gone, deadline): close() sends nothing more

    def _infer(self, frame: np.ndarray, end: bool = False) -> np.ndarray:
        runner = self.runner
        x = self._module.InferInput(self._frame, list(frame.shape), self._dtype)
        x.set_data_from_numpy(np.ascontiguousarray(frame))
        out = self._module.InferRequestedOutput(self._logits)
        try:
            result = runner._client.infer(runner.model, [x], outputs=[out], sequence_id=self.sequence_id,
                                          sequence_start=self._start, sequence_end=end,
                                          **_deadline(runner.protocol, runner.timeout))
        except Exception as exc:  # tritonclient raises InferenceServerException for server and connection errors
            self._failed = True
            raise _fail(runner.url, exc, runner.timeout) from exc
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
        if self._last is not None and not self._start and not self._failed and self.runner._client is not None:
            try:
                self._infer(self._last, end=True)
            except EdgevidError:
                pass  # the server may be gone; it frees the sequence after its idle time anyway
        self._last = None


def _deadline(protocol: str, timeout: float) -> dict[str, Any]:
    """The per-call deadline argument (gRPC; the HTTP client has it in its constructor)."""
    return {"client_timeout": timeout} if protocol == "grpc" else {}


def _client(module: Any, url: str, protocol: str, timeout: float) -> Any:
    if protocol == "grpc":
        return module.InferenceServerClient(url)
    return module.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)


def connect(url: str, model: str, *, protocol: str = "grpc", timeout: float = DEFAULT_TIMEOUT_S) -> TritonRunner:
    """A loaded ``TritonRunner`` for ``model`` served at ``url`` (``host:port``); every call waits ``timeout`` s at most."""
    module = _client_module(protocol)
    check_url(url)
    timeout = check_timeout(timeout)
    deadline = _deadline(protocol, timeout)
    client = None
    try:
        client = _client(module, url, protocol, timeout)
        if not client.is_server_live(**deadline):
            raise EdgevidError(f"Triton at {url} is not live")
        config = client.get_model_config(model, as_json=True, **deadline) if protocol == "grpc" \
            else client.get_model_config(model)
    except EdgevidError:
        _close_quietly(client)
        raise
    except Exception as exc:  # noqa: BLE001 - connection refused, deadline, unknown model, ...
        _close_quietly(client)
        raise _fail(url, exc, timeout) from exc
    try:
        manifest = _served_manifest(config.get("config", config), model, url)
    except BaseException:
        _close_quietly(client)
        raise
    runner = TritonRunner(Artifact(Path(f"triton/{model}"), manifest), url=url, model=model, protocol=protocol,
                          client=client, timeout=timeout)
    return runner.load()


def _close_quietly(client: Any) -> None:
    if client is not None:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing must not hide the error being reported
            pass


def _served_manifest(config: dict[str, Any], model: str, url: str) -> Manifest:
    """The manifest in a served model's config, checked against the frame input the server takes."""
    raw = (config.get("parameters") or {}).get("edgevid_manifest", {}).get("string_value")
    if not raw:
        raise EdgevidError(f"model {model!r} at {url} was not written by `edgevid triton` (no edgevid_manifest "
                           "parameter in its config)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise EdgevidError(f"model {model!r} at {url}: its edgevid_manifest parameter is not JSON") from exc
    manifest = Manifest.from_dict(data, source=f"{model} at {url}")
    if manifest.mode != "stream":
        raise EdgevidError(f"model {model!r} at {url} is not a stream model")
    frame = manifest.inputs[0]
    if frame.dtype not in _TYPES.values():
        raise EdgevidError(f"model {model!r} at {url} takes {frame.name} as {frame.dtype}, which Triton's clients "
                           "cannot send")
    served = {t.get("name"): t for t in config.get("input", [])}
    got = served.get(frame.name)
    want = [d if isinstance(d, int) else -1 for d in frame.shape[1:]]  # a dynamic dim is -1 in Triton
    try:
        dims = None if got is None else [int(d) for d in got.get("dims", [])]
    except (TypeError, ValueError):
        dims = None
    if dims != want:
        raise EdgevidError(f"model {model!r} at {url} does not take {frame.name} {frame.shape[1:]} as its manifest says")
    return manifest


__all__ = ["TritonRunner", "TritonStream", "connect"]
