"""Latency statistics in constant memory, for runs that never end (a camera watched for months).

A list of every frame's timing grows by tens of bytes a frame; this keeps a count, an exact
sum and a histogram of log-spaced bins (1% wide), so percentiles are within 0.5% of the
exact ones however long the run.
"""

from __future__ import annotations

import math

import numpy as np

_LOW_MS = 1e-3  # 1 microsecond: the first bin's lower edge
_GROWTH = 1.01  # each bin is 1% wider than the one before
_BINS = int(math.log(1e7 / _LOW_MS) / math.log(_GROWTH)) + 1  # up to ~10^4 s


class LatencyStats:
    """Count, mean and percentiles of millisecond values, O(1) memory."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self._hist = np.zeros(_BINS + 1, dtype=np.int64)  # the last bin holds everything above

    def add(self, ms: float) -> None:
        """Record one value (negative and NaN values count as 0)."""
        ms = ms if ms > 0 else 0.0
        self.count += 1
        self.total += ms
        index = 0 if ms <= _LOW_MS else min(_BINS, int(math.log(ms / _LOW_MS) / math.log(_GROWTH)) + 1)
        self._hist[index] += 1

    def __len__(self) -> int:
        return self.count

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100), the geometric middle of its bin."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.count))
        index = int(np.searchsorted(np.cumsum(self._hist), rank))
        if index == 0:
            return _LOW_MS
        return _LOW_MS * _GROWTH ** (index - 0.5)
