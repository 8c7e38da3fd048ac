"""Argument types shared by the verbs: numbers checked at parse time, with their bounds.

argparse turns an ``ArgumentTypeError`` into one ``usage:`` + ``error:`` pair and exit 2, so
a value that cannot be right (``nan``, ``inf``, a size that would allocate terabytes, a port
above 65535) is refused before anything is read, allocated or written. Bounds are generous:
they exist to stop a typo or an attack from becoming a MemoryError or a hang, not to second
guess a real use.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

# Bounds the verbs share (a model's clip, a frame's side, a dataset's size, threads).
MAX_FRAMES = 1024  # frames in a clip; the manifest's own ceiling (edgevid.manifest)
MAX_SIDE = 4096  # pixels on a frame's side for what edgevid itself builds (synth, export)
MAX_THREADS = 1024
MAX_SECONDS = 7 * 24 * 3600.0  # a week: any timed loop or timeout


def _int(text: str) -> int:
    try:
        if len(text) > 20:  # int() of 5000 digits raises (or takes long) deep inside Python
            raise ValueError
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer in ``[lo, hi]`` (``hi`` None: no upper bound)."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < lo or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """A finite number in the interval; ``nan`` and ``inf`` are refused by name."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"must be in {left}{lo:g}, {hi:g}{right}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive = int_range(1)
non_negative = int_range(0)
frames = int_range(1, MAX_FRAMES)
side = int_range(8, MAX_SIDE)
threads = int_range(1, MAX_THREADS)
seed = int_range(0, 2**32 - 1)  # numpy's and torch's seeding range
port = int_range(1, 65535)
seconds = float_range(0.0, MAX_SECONDS, lo_open=True)
