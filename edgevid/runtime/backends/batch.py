"""Many streams of one model stepped together: one network call per tick, batch N.

An edge box watches 4 to 16 cameras. Stepping each stream alone costs one call per camera per
tick, and at small inputs a call is mostly fixed overhead (DeepStream's nvstreammux and Triton's
sequence batcher batch for that reason). A ``StreamBatch`` keeps every stream's temporal states
as one row of batched state buffers, ``(capacity, ...)`` per state, and steps any subset of its
streams in a single call:

- the streams that step are all the open ones, in row order (every camera had a frame): the
  call reads the first n rows of the buffers as they are, no gather;
- a subset (a camera without a new frame, a gated one): its rows are gathered into scratch
  buffers, stepped, and written back; the other rows keep their states untouched.

Rows stay packed: closing a stream moves the last row into its place, so the open streams are
always rows ``0..n-1`` and the batch shrinks and grows as sources come and go. Streams are
named by handles that never change (``open() -> handle``), not by rows.

``NumpyStreamBatch`` does this with numpy buffers and the runner's stateless ``infer`` call
(any backend whose graph has a dynamic batch); ONNX Runtime binds the buffers with IOBinding
(``OrtStreamBatch``), OpenVINO shares them with its request (``OvStreamBatch``) or steps one
stateful request per stream through its async queue (``OvRequestQueue``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgevid.runtime.backends.base import BackendError, batch1_shape, initial_state

MAX_STREAMS = 1024  # a bound on the buffers one batch allocates (rows x state size)


class StreamBatch(ABC):
    """Open, step, reset and close streams by handle; ``step`` runs the given ones in one call."""

    def __init__(self, runner: Any) -> None:
        runner._require_stream_mode()
        self.runner = runner
        self._rows: dict[int, int] = {}  # handle -> row
        self._handles: list[int] = []  # row -> handle
        self._next_handle = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self._handles)

    def open(self) -> int:
        """A new stream with its states at their initial values; returns its handle."""
        self._check_open()
        if len(self._handles) >= MAX_STREAMS:
            raise BackendError(f"a stream batch holds at most {MAX_STREAMS} streams")
        handle, row = self._next_handle, len(self._handles)
        self._next_handle += 1
        self._grow(row + 1)
        self._rows[handle] = row
        self._handles.append(handle)
        self._reset_row(row)
        return handle

    def close_stream(self, handle: int) -> None:
        """Drop one stream; the last row moves into its place."""
        row = self._row(handle)
        last = len(self._handles) - 1
        if row != last:
            self._move_row(last, row)
            moved = self._handles[last]
            self._handles[row] = moved
            self._rows[moved] = row
        self._handles.pop()
        del self._rows[handle]

    def reset(self, handle: int) -> None:
        """Back to the initial states (new video, scene cut, camera reconnect)."""
        self._reset_row(self._row(handle))

    def step(self, handles: Sequence[int], frames: np.ndarray) -> np.ndarray:
        """One call: ``frames[i]`` is the next frame of stream ``handles[i]``; returns (len, K) logits.

        Streams not named keep their states (they do not advance). The logits are the caller's.
        """
        self._check_open()
        if len(handles) == 0:
            raise BackendError("step needs at least one stream")
        rows = [self._row(h) for h in handles]
        if len(set(rows)) != len(rows):
            raise BackendError("a stream appears twice in one step")
        if frames.shape[0] != len(rows):
            raise BackendError(f"step got {frames.shape[0]} frames for {len(rows)} streams")
        packed = rows == list(range(len(self._handles)))
        return self._step(rows, frames, packed)

    def close(self) -> None:
        """Release every buffer; the batch cannot be used afterwards."""
        self._closed = True
        self._rows.clear()
        self._handles.clear()

    def __enter__(self) -> StreamBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _row(self, handle: int) -> int:
        self._check_open()
        if handle not in self._rows:
            raise BackendError(f"no open stream {handle} in this batch")
        return self._rows[handle]

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("this stream batch is closed")

    @abstractmethod
    def _grow(self, rows: int) -> None:
        """Make room for at least ``rows`` streams, keeping the states of the open ones."""

    @abstractmethod
    def _reset_row(self, row: int) -> None:
        """Write the initial states into ``row``."""

    @abstractmethod
    def _move_row(self, src: int, dst: int) -> None:
        """Copy the states of row ``src`` into row ``dst``."""

    @abstractmethod
    def _step(self, rows: list[int], frames: np.ndarray, packed: bool) -> np.ndarray:
        """Step ``rows`` (``packed``: exactly rows 0..n-1 in order) and return their logits."""


def require_dynamic_batch(runner: Any) -> None:
    """Batched states need the graph's batch axis to be dynamic (``N``): say how to get one."""
    dim = runner.frame_input.shape[0] if runner.frame_input.shape else 1
    if not isinstance(dim, str):
        raise BackendError(
            f"{runner.manifest.model} was exported with a fixed batch of {dim}: stepping several streams in one "
            "call needs a dynamic batch (export it again without --batch, for onnxruntime or openvino)")


class NumpyStreamBatch(StreamBatch):
    """States in numpy buffers, stepped through the runner's stateless ``infer`` call."""

    def __init__(self, runner: Any, max_rows: int | None = None) -> None:
        require_dynamic_batch(runner)
        super().__init__(runner)
        self.max_rows = max_rows  # the most streams one call takes (a TensorRT profile's max batch)
        m = runner.manifest
        self._pairs = list(m.states)
        self._init = [initial_state(p)[0] for p in self._pairs]  # one row
        self._frame_name, self._logits_name = runner.frame_input.name, runner.logits_output.name
        self._frame_shape = tuple(batch1_shape(runner.frame_input)[1:])
        self._frame_dtype = np.dtype(runner.frame_input.dtype)
        self._states: list[np.ndarray] = [np.empty((0, *v.shape), v.dtype) for v in self._init]
        self.capacity = 0  # rows allocated (grows by doubling)

    def _grow(self, rows: int) -> None:
        if rows <= self.capacity:
            return
        self.capacity = max(rows, 2 * self.capacity, 4)
        self._states = [_regrown(s, self.capacity) for s in self._states]
        self._grown(self.capacity)

    def _grown(self, capacity: int) -> None:
        """Hook: the state buffers were reallocated (bindings to them are stale)."""

    def _reset_row(self, row: int) -> None:
        for state, init in zip(self._states, self._init):
            state[row] = init

    def _move_row(self, src: int, dst: int) -> None:
        for state in self._states:
            state[dst] = state[src]

    def _check_frames(self, frames: np.ndarray) -> np.ndarray:
        if frames.shape[1:] != self._frame_shape:
            raise BackendError(f"step expects frames of shape (n, {', '.join(map(str, self._frame_shape))}), "
                               f"got {frames.shape}")
        return np.ascontiguousarray(frames, dtype=self._frame_dtype)

    def open(self) -> int:
        if self.max_rows is not None and len(self) >= self.max_rows:
            raise BackendError(f"this batch takes at most {self.max_rows} streams in one call (the engine's "
                               f"optimization profile); load the runner with max_batch={len(self) + 1} or more")
        return super().open()

    def _step(self, rows: list[int], frames: np.ndarray, packed: bool) -> np.ndarray:
        n = len(rows)
        feeds = {self._frame_name: self._check_frames(frames)}
        for pair, state in zip(self._pairs, self._states):
            feeds[pair.input] = state[:n] if packed else state[rows]
        out = self._infer(feeds)
        for pair, state in zip(self._pairs, self._states):
            if packed:
                state[:n] = out[pair.output]
            else:
                state[rows] = out[pair.output]
        return np.array(out[self._logits_name], copy=True)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.infer(feeds)

    def close(self) -> None:
        self._states = []
        super().close()


def _regrown(array: np.ndarray, capacity: int) -> np.ndarray:
    """``array`` with ``capacity`` rows, its existing rows kept."""
    out = np.empty((capacity, *array.shape[1:]), array.dtype)
    out[: array.shape[0]] = array
    return out


class StreamsOneByOne(StreamBatch):
    """The naive way, for comparison and for backends without a batched call: one stream each,
    stepped one after another (``runner.open_stream()`` per handle)."""

    def __init__(self, runner: Any) -> None:
        super().__init__(runner)
        self._streams: list[Any] = []  # row -> BackendStream

    def _grow(self, rows: int) -> None:
        while len(self._streams) < rows:
            self._streams.append(self.runner.open_stream())

    def _reset_row(self, row: int) -> None:
        self._streams[row].reset()

    def _move_row(self, src: int, dst: int) -> None:
        # Streams are objects: the last one takes the freed row, the closed one is released.
        self._streams[dst].close()
        self._streams[dst] = self._streams[src]
        self._streams.pop(src)

    def _step(self, rows: list[int], frames: np.ndarray, packed: bool) -> np.ndarray:
        return np.concatenate([self._streams[r].step(frames[i : i + 1]) for i, r in enumerate(rows)])

    def close_stream(self, handle: int) -> None:
        row, last = self._row(handle), len(self._handles) - 1
        super().close_stream(handle)
        if row == last:  # nothing moved into its place: release it here
            self._streams.pop().close()

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams = []
        super().close()
