"""Counts in the English that messages and generated READMEs print: "2nd", "every 3rd frame"."""

from __future__ import annotations


def ordinal(n: int) -> str:
    """``n`` as an English ordinal: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 22nd, 111th, 112th."""
    # 11, 12 and 13 (and 111, 112, ...) take "th" whatever their last digit says.
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def every_nth(n: int, noun: str = "frame") -> str:
    """``every frame`` for 1, else ``every 2nd frame``, ``every 3rd frame``, ...: a sampling stride in words."""
    return f"every {noun}" if n == 1 else f"every {ordinal(n)} {noun}"
