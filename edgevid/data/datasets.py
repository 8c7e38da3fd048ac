"""Labelled clips as numpy arrays: the torch-free dataset that evaluation, calibration and the
torch ``Dataset`` (``edgevid.data.torch_dataset``) all read from.

A clip is what OpenCV decodes, before any preprocessing: (T, H, W, 3) uint8 BGR. The model
input is made from it by ``edgevid.runtime.preprocess.preprocess_clip``, the same function
the deployed runtime calls.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgevid.data.sampling import ClipSampler
from edgevid.data.sources import DatasetError, Sample, SampleList, first_few, resolve_split
from edgevid.data.video_io import VideoDecodeError, count_frames, read_frames

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


def _scan(samples: list[Sample], workers: int) -> list[int | VideoDecodeError]:
    """Frame count of every video (decoding it), or the error that decoding raised."""

    def probe(sample: Sample) -> int | VideoDecodeError:
        try:
            return count_frames(sample.path)
        except VideoDecodeError as exc:
            return exc

    # OpenCV releases the GIL while decoding, so threads give real parallelism here.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(probe, samples))


class VideoClipDataset:
    """Clips of labelled videos: ``load(i)`` -> ((T, H, W, 3) uint8 BGR frames, label).

    ``on_error`` decides what an unreadable video does: ``"raise"`` stops with an error
    naming it, ``"skip"`` leaves it out and records it in ``skipped`` (see ``skip_report``).
    With ``verify`` (the default) every video is decoded once up front, which finds the
    corrupt ones and gives true frame counts for sampling; without it, counts are taken at
    first load and an unreadable video raises whatever ``on_error`` says.
    """

    def __init__(
        self,
        samples: SampleList,
        sampler: ClipSampler,
        train: bool = False,
        on_error: str = "raise",
        verify: bool = True,
        workers: int | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.classes: list[str] = list(samples.classes)
        self.root: Path = samples.root
        self.source: str = samples.source
        self.sampler = sampler
        self.train = train
        self.on_error = on_error
        self.skipped: list[Path] = []
        self.total = len(samples.samples)
        kept = list(samples.samples)
        counts: list[int | None] = [None] * len(kept)
        if verify:
            results = _scan(kept, workers or min(4, os.cpu_count() or 1))
            bad = [(s, r) for s, r in zip(kept, results) if isinstance(r, VideoDecodeError)]
            if bad and on_error == "raise":
                raise VideoDecodeError(
                    f"{len(bad)} of {self.total} videos in {self.source} cannot be read, e.g. {bad[0][1]}; "
                    "set on_error='skip' (command line: --skip-unreadable) to leave them out"
                )
            self.skipped = [s.path for s, _ in bad]
            pairs = [(s, r) for s, r in zip(kept, results) if not isinstance(r, VideoDecodeError)]
            kept, counts = [s for s, _ in pairs], [int(r) for _, r in pairs]  # type: ignore[arg-type]
            if self.skipped:
                log.warning("%s", self.skip_report())
        if not kept:
            raise DatasetError(
                f"none of the {self.total} videos in {self.source} is readable: {self.skip_report()}"
            )
        self.samples: list[Sample] = kept
        self.num_frames: list[int | None] = counts

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """The label of every (readable) sample, in order."""
        return [s.label for s in self.samples]

    def skip_report(self) -> str:
        """One line: how many videos were skipped as unreadable, and the first few paths."""
        if not self.skipped:
            return f"all {self.total} videos in {self.source} are readable"
        shown = first_few([str(p) for p in self.skipped])
        return f"skipped {len(self.skipped)} unreadable video(s) of {self.total} in {self.source}: {shown}"

    def load(self, index: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, int]:
        """Clip ``index`` as ((T, H, W, 3) uint8 BGR, label); ``rng`` drives train-mode sampling."""
        sample = self.samples[index]
        count = self.num_frames[index]
        if count is None:  # not verified: decode everything once, remember the true count
            frames = read_frames(sample.path)
            self.num_frames[index] = len(frames)
            return frames[self.sampler(len(frames), self.train, rng)], sample.label
        return read_frames(sample.path, self.sampler(count, self.train, rng).tolist()), sample.label

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        """Every clip in order (test-mode sampling unless the dataset is in train mode)."""
        for i in range(len(self)):
            yield self.load(i)


def open_dataset(
    root: str | os.PathLike,
    split: str,
    sampler: ClipSampler,
    train: bool = False,
    on_error: str = "raise",
    verify: bool = True,
) -> VideoClipDataset:
    """A ``VideoClipDataset`` for ``split`` of a dataset folder (layout picked by ``resolve_split``)."""
    return VideoClipDataset(
        resolve_split(root, split), sampler, train=train, on_error=on_error, verify=verify
    )
