"""Several video sources read side by side, frame by frame, into ticks (``edgevid run --video A --video B``).

Each tick says which sources have a new frame, which ended and which failed:

- recorded sources (files, frame folders) keep their own frame rates on one virtual clock:
  each tick is the next frame time among them, and a source whose next frame is not due yet
  sits the tick out (a 10 fps file advances once for every three ticks of a 30 fps one). A
  file without a frame rate counts as 25 fps. They are read as fast as the model goes.
- live sources (cameras, URLs, pipelines) are read by a thread each that keeps only the newest
  frame, as a camera pipeline does; a live source joins a tick when it has a frame it has not
  handed out yet. With live sources alone, a tick waits for the first of them to have one.
- a source that ends (EOF) or fails (a decode error, a camera gone) is reported once and
  dropped; the others go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgevid.errors import EdgevidError
from edgevid.runtime.video import FrameSource

DEFAULT_FPS = 25.0
_LIVE_WAIT_S = 0.002  # how often a tick of live sources alone looks for a frame


@dataclass
class Tick:
    """One tick: new frames by source name; sources that ended or failed since the last tick."""

    frames: dict[str, np.ndarray] = field(default_factory=dict)
    ended: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class _Recorded:
    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.period = 1.0 / (source.fps or DEFAULT_FPS)
        self.frames = iter(source)
        self.read = 0

    @property
    def due(self) -> float:
        return self.read * self.period


class _Live:
    """A thread that keeps the newest frame of a live source."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.read = 0
        self.dropped = 0  # frames replaced before a tick took them
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self.error: str | None = None
        self.done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"edgevid-source-{source.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for frame in self.source:
                with self._lock:
                    self.dropped += self._frame is not None
                    self._frame = frame
                if self._stop.is_set():
                    return
        except EdgevidError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - OpenCV raises cv2.error and others
            self.error = f"{self.source.name}: {exc}"
        finally:
            self.done = True

    def take(self) -> np.ndarray | None:
        with self._lock:
            frame, self._frame = self._frame, None
        if frame is not None:
            self.read += 1
        return frame

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class SourceSet:
    """Named frame sources read into ``Tick``s (see the module docstring); ``max_frames`` per source."""

    def __init__(self, sources: dict[str, FrameSource], max_frames: int | None = None) -> None:
        self.max_frames = max_frames
        self._recorded = {n: _Recorded(s) for n, s in sources.items() if not s.live}
        self._live = {n: _Live(s) for n, s in sources.items() if s.live}
        self.sources = dict(sources)

    @property
    def active(self) -> list[str]:
        """The sources still delivering."""
        return [*self._recorded, *self._live]

    def frames_read(self, name: str) -> int:
        """Frames a source has handed out."""
        reader = self._recorded.get(name) or self._live.get(name)
        return reader.read if reader is not None else 0

    def ticks(self) -> Iterator[Tick]:
        """Ticks until every source has ended or failed."""
        while self._recorded or self._live:
            yield self._next_tick()

    def drop(self, name: str) -> None:
        """Stop reading a source (the caller gave up on it)."""
        reader = self._recorded.pop(name, None) or self._live.pop(name, None)
        if isinstance(reader, _Live):
            reader.stop()

    def _next_tick(self) -> Tick:
        tick = Tick()
        if self._recorded:
            now = min(r.due for r in self._recorded.values())
            for name, reader in list(self._recorded.items()):
                if reader.due <= now + 1e-9:
                    self._read_recorded(name, reader, tick)
        else:
            self._wait_for_live()
        for name, reader in list(self._live.items()):
            frame = reader.take()
            if frame is not None:
                self._deliver(name, reader.read, frame, tick)
            elif reader.done:
                self._finish(name, tick, reader.error)
        return tick

    def _deliver(self, name: str, read: int, frame: np.ndarray, tick: Tick) -> None:
        tick.frames[name] = frame
        if self.max_frames is not None and read >= self.max_frames:  # its last frame is still in this tick
            self._finish(name, tick, None)

    def _read_recorded(self, name: str, reader: _Recorded, tick: Tick) -> None:
        try:
            frame = next(reader.frames)
        except StopIteration:
            self._finish(name, tick, None)
            return
        except EdgevidError as exc:
            self._finish(name, tick, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - OpenCV raises cv2.error and others
            self._finish(name, tick, f"{name}: {exc}")
            return
        reader.read += 1
        self._deliver(name, reader.read, frame, tick)

    def _finish(self, name: str, tick: Tick, error: str | None) -> None:
        if error is None:
            tick.ended.append(name)
        else:
            tick.failed[name] = error
        self.drop(name)

    def _wait_for_live(self) -> None:
        while not any(r._frame is not None or r.done for r in self._live.values()):
            time.sleep(_LIVE_WAIT_S)

    def close(self) -> None:
        """Stop the reader threads and release every source."""
        for reader in self._live.values():
            reader.stop()
        self._recorded.clear()
        self._live.clear()
        for source in self.sources.values():
            source.close()
