"""The portable Triton model (copied as ``<model>/1/model.py``): Triton's Python backend running edgevid.runtime.

One stream per correlation id (``request.correlation_id()``), each a row of one batch of
streams (``edgevid.runtime.backends.batch``), so the requests of several sequences that the
sequence batcher hands over together are stepped in one network call. A new stream, from the
initial states, on a request with the sequence START flag; released on END, or when the
sequence has had no request for the config's ``max_sequence_idle_microseconds`` (Triton
frees its slot then too). Each request is one preprocessed frame; the response is that
step's raw logits. The artifact sits next to this file (``artifact/``); the backend
(onnxruntime or openvino) is the config's ``edgevid_backend`` parameter.

Triton's sequence batcher itself refuses a first request without START for an unknown
correlation id; a request that reaches this model for a sequence it no longer holds (a
stream released after its idle time, then resumed without START) gets an error response.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils  # only inside Triton's Python backend

START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
END = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END


class TritonPythonModel:
    """edgevid.runtime behind Triton's sequence batcher."""

    def initialize(self, args: dict) -> None:
        # The server's working directory is nobody's promise: a folder named `edgevid` there must
        # not shadow the installed package (the stub's sys.path has the working directory on it).
        cwd = os.getcwd()
        sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]
        from edgevid import runtime

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"], "artifact")
        self.runner = runtime.load(here, params.get("edgevid_backend", "onnxruntime"))
        self.frame = self.runner.frame_input.name
        self.logits = self.runner.logits_output.name
        idle_us = int(config.get("sequence_batching", {}).get("max_sequence_idle_microseconds") or 1_000_000)
        self.max_idle_s = idle_us / 1e6
        # Every sequence is a row of one batch (edgevid.runtime.backends.batch): the requests the
        # sequence batcher hands over together are stepped in one network call.
        self.batch = self.runner.open_batch()
        self.streams: dict = {}  # correlation id -> (row handle in the batch, last request time)

    def _evict_idle(self, now: float) -> None:
        for corrid, (handle, last) in list(self.streams.items()):
            if now - last > self.max_idle_s:
                self.batch.close_stream(handle)
                del self.streams[corrid]

    def _error(self, exc: Exception) -> object:
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))

    def execute(self, requests: list) -> list:
        now = time.monotonic()
        self._evict_idle(now)
        responses: list = [None] * len(requests)
        ready = []  # (request index, correlation id, flags, frame)
        for i, request in enumerate(requests):
            corrid, flags = request.correlation_id(), request.flags()
            try:
                if flags & START:
                    old = self.streams.pop(corrid, None)
                    if old is not None:
                        self.batch.close_stream(old[0])
                    self.streams[corrid] = (self.batch.open(), now)
                if corrid not in self.streams:
                    raise ValueError(f"sequence {corrid} has no state here (released after "
                                     f"{self.max_idle_s:g} s idle, or never started): send it again with START")
                # DLPack both ways, not as_numpy() / Tensor(numpy): a stub built against numpy 1.x
                # misreads numpy 2 arrays (wrong values in, empty tensors out; seen with Triton 2.5x).
                frame = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, self.frame))
                ready.append((i, corrid, flags, np.ascontiguousarray(frame).reshape(frame.shape[-3:])))
            except Exception as exc:  # noqa: BLE001 - one bad request must not take down the others
                responses[i] = self._error(exc)
        while ready:  # one call a round; a sequence twice in one execute waits for the next round
            now_round, later, seen = [], [], set()
            for item in ready:
                (later if item[1] in seen else now_round).append(item)
                seen.add(item[1])
            try:
                logits = self.batch.step([self.streams[c][0] for _, c, _, _ in now_round],
                                         np.stack([f for _, _, _, f in now_round]))
                for row, (i, _, _, _) in enumerate(now_round):
                    out = np.ascontiguousarray(logits[row : row + 1])
                    responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(self.logits, out)])
            except Exception as exc:  # noqa: BLE001 - the call failed for every request in it
                for i, _, _, _ in now_round:
                    responses[i] = self._error(exc)
            for _, corrid, flags, _ in now_round:
                handle = self.streams[corrid][0]
                self.streams[corrid] = (handle, now)
                if flags & END:
                    self.batch.close_stream(handle)
                    del self.streams[corrid]
            ready = later
        return responses

    def finalize(self) -> None:
        self.batch.close()
        self.streams.clear()
        self.runner.close()
