"""Many cameras on one model: each source a session of its own, all stepped in one call per tick.

    with runtime.load("exports/tsm-online") as runner, runtime.MultiStreamSession(runner) as multi:
        multi.add("door")
        multi.add("yard")
        while True:                                        # a tick: the sources that have a new frame
            preds = multi.push({"door": frame_a, "yard": frame_b})
            for source, pred in preds.items(): ...

Each source is a ``StreamSession`` whose states are one row of the batch, so it behaves as one
alone: the same defaults from the
manifest (every ``sampling.stride``-th frame stepped, scores averaged over ``sampling.frames``
predictions), warm-up marking, a time-strided network's first output, its own gate. What
differs is the call: the sources that step in a tick go through the network together, batch N,
their states rows of the backend's batched buffers (``edgevid.runtime.backends.batch``).

Per source:

- a source absent from a tick's frames does not advance (cameras at different frame rates);
- a gated source (its frame has not changed) keeps its state and is left out of the call;
- ``reset(source)`` after a reconnect or a scene cut; ``remove(source)`` when it ends or fails,
  while the others go on; sources may be added at any time;
- non-finite scores for one source reset that source alone, and are reported in
  ``failed`` for that tick (the others' predictions stand).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.runtime.backends.base import Runner
from edgevid.runtime.preprocess import check_frame
from edgevid.runtime.session import Prediction, StreamSession


class _Row:
    """A ``StreamSession``'s states as one row of a ``StreamBatch``: reset and close act on that row;
    steps are taken for all rows at once by ``MultiStreamSession``."""

    def __init__(self, batch: Any, handle: int) -> None:
        self.batch, self.handle = batch, handle

    def step(self, frame: np.ndarray) -> np.ndarray:
        raise EdgevidError("a source of a MultiStreamSession is stepped by its push(), not on its own")

    def reset(self) -> None:
        self.batch.reset(self.handle)

    def close(self) -> None:
        self.batch.close_stream(self.handle)


class MultiStreamSession:
    """N sources of one stream-mode artifact, stepped together (see the module docstring).

    ``batched=False`` steps each source's own backend stream one after another instead: the
    naive way, kept for comparison (``edgevid bench --streams``). ``topk``, ``smooth``,
    ``every`` are the defaults of every source (``add`` may override them).
    """

    def __init__(self, runner: Runner, *, topk: int = 5, smooth: int | None = None, every: int | None = None,
                 batched: bool = True) -> None:
        if not runner.is_loaded:
            raise EdgevidError("the runner is not loaded: create it with edgevid.runtime.load()")
        if runner.manifest.mode != "stream":
            raise EdgevidError(f"{runner.manifest.model} was exported in {runner.manifest.mode} mode: several "
                               "sources are stepped together only in stream mode (export with --mode stream)")
        from edgevid.runtime.backends.batch import StreamsOneByOne

        self.runner = runner
        self.defaults = {"topk": topk, "smooth": smooth, "every": every}
        self.batch = runner.open_batch() if batched else StreamsOneByOne(runner)
        self._x_dtype = np.dtype(runner.frame_input.dtype)  # the batch's frames, stacked
        self._lanes: dict[Hashable, StreamSession] = {}  # each source's session, its states a row of the batch
        self.failed: dict[Hashable, str] = {}  # sources whose scores were not finite in the last tick
        self.calls = 0  # network calls made
        self.last_infer_ms = 0.0  # the last call's time (all sources of that tick)
        self.last_batch = 0  # sources stepped in the last call
        self.batched = batched
        self._closed = False

    @property
    def sources(self) -> list[Hashable]:
        """The sources, in the order they were added."""
        return list(self._lanes)

    def __len__(self) -> int:
        return len(self._lanes)

    def add(self, source: Hashable, *, gate: Any = None, **options: Any) -> None:
        """A new source, its states at their initial values (``gate``: its own ``DeltaGate``)."""
        self._check_open()
        if source in self._lanes:
            raise EdgevidError(f"source {source!r} is already in this session")
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise EdgevidError(f"unknown source option(s): {', '.join(sorted(unknown))}")
        row = _Row(self.batch, self.batch.open())
        try:
            self._lanes[source] = StreamSession(self.runner, gate=gate, stream=row, **(self.defaults | options))
        except BaseException:
            row.close()
            raise

    def remove(self, source: Hashable) -> None:
        """Drop a source (it ended, failed, or its camera is gone); the others go on."""
        self._lane(source).close()  # closes its row too
        del self._lanes[source]

    def reset(self, source: Hashable) -> None:
        """New states for one source: a camera reconnect, a scene cut, a gap in its frames."""
        self._lane(source).reset()

    def last(self, source: Hashable) -> Prediction | None:
        """The source's latest prediction."""
        return self._lane(source).last

    def push(self, frames: Mapping[Hashable, np.ndarray]) -> dict[Hashable, Prediction]:
        """One tick: each named source's next BGR frame. Returns the predictions made, by source.

        Sources not named do not advance. One network call steps every source whose frame is
        due and not gated; there is none when no source's is.
        """
        self._check_open()
        lanes = [(source, self._lane(source)) for source in frames]
        for frame in frames.values():  # every frame checked before any source counts one
            check_frame(frame)
        due: list[tuple[Hashable, StreamSession, tuple[np.ndarray, int, float, float | None]]] = []
        for source, lane in lanes:
            ready = lane._input_of(frames[source])  # counts the frame, asks the gate (which may reset the row)
            if ready is not None:
                due.append((source, lane, ready))
        return self._step(due)

    def push_inputs(self, inputs: Mapping[Hashable, np.ndarray]) -> dict[Hashable, Prediction]:
        """Like ``push`` for frames already preprocessed (the graph's input for one step)."""
        self._check_open()
        for source, x in inputs.items():  # all checked before any source counts one
            self._lane(source)._check_input(x)
        due = []
        for source, x in inputs.items():
            lane = self._lanes[source]
            index = lane._pushed
            lane._pushed += 1
            if lane._wants(index):
                due.append((source, lane, (x, index, 0.0, None)))
        return self._step(due)

    def _step(self, due: list) -> dict[Hashable, Prediction]:
        self.failed = {}
        if not due:
            return {}
        x = np.stack([ready[0] for _, _, ready in due]).astype(self._x_dtype, copy=False)
        t0 = time.perf_counter()
        try:
            logits = self.batch.step([lane._stream.handle for _, lane, _ in due], x)
        except EdgevidError:
            raise
        except Exception as exc:  # noqa: BLE001 - backend libraries raise their own types
            from edgevid.runtime.backends.base import BackendError

            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{self.runner.name} failed stepping {len(due)} sources: {first}") from exc
        infer_ms = (time.perf_counter() - t0) * 1e3
        self.calls += 1
        self.last_infer_ms, self.last_batch = infer_ms, len(due)
        out: dict[Hashable, Prediction] = {}
        for row, (source, lane, (_, index, pre_ms, motion_ms)) in enumerate(due):
            try:
                pred = lane._finish(logits[row], index, lane._latency(pre_ms, infer_ms, motion_ms))
            except EdgevidError as exc:  # non-finite scores: that session reset itself (its row too); the others stand
                self.failed[source] = str(exc)
                continue
            if pred is not None:
                out[source] = pred
        return out

    def _lane(self, source: Hashable) -> StreamSession:
        self._check_open()
        try:
            return self._lanes[source]
        except KeyError:
            raise EdgevidError(f"no source {source!r} in this session") from None

    def _check_open(self) -> None:
        if self._closed:
            raise EdgevidError("this session is closed: open a new one")

    def close(self) -> None:
        """Release the batch and every source."""
        if not self._closed:
            for lane in self._lanes.values():
                lane.close()
            self._lanes.clear()
            self.batch.close()
        self._closed = True

    def __enter__(self) -> MultiStreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
