"""Is this machine quiet enough for its latency figures to mean anything?

A report on a loaded machine once said "211x faster than torch eager" (8.7x and 23.6x in
other runs of the same command): torch's OpenMP threads wait on a core that another process
holds, and a p99 of seconds follows. Interleaving makes ratios fair against slow drift, not
against a neighbour that takes a core. So while latency is measured, the machine is watched:

- others' CPU: busy time of the whole machine (/proc/stat) minus this process's own
  (/proc/self/stat, every thread), in cores. Anything near a core on a small machine means
  the variants shared their cores with someone else.
- steal: time the hypervisor gave this VM's CPUs to another guest (/proc/stat's steal).
- a probe: one fixed single-threaded workload timed between rounds; on a quiet machine its
  times agree within a few percent.
- each variant's block medians: the same calls timed minutes apart should agree.
- the load average, at the start and the end (context for the reader; it counts this
  process's own threads, so it decides nothing by itself).

Thresholds are generous on purpose: they catch a busy neighbour, not the noise of a shared VM
that a user cannot remove.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OTHERS_CORES_MAX = 0.35  # others' average CPU use, in cores
STEAL_MAX = 0.05  # fraction of all CPU time
PROBE_SPREAD_MAX = 1.5  # slowest / fastest probe
BLOCK_SPREAD_MAX = 1.5  # slowest / fastest block median of one variant

ADVICE = ("for a clean measurement, close other work on this machine (or run where nothing else runs), "
          "then run the same command again")


def _cpu_jiffies() -> tuple[int, int, int] | None:
    """(busy, steal, total) jiffies of all CPUs since boot, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return total - idle - steal, steal, total


def _own_jiffies() -> int | None:
    """utime + stime of this process (all its threads), in jiffies; None where /proc is missing."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return int(rest[11]) + int(rest[12])


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def probe_once(n: int = 60_000) -> float:
    """Milliseconds of a fixed single-threaded Python loop (about 2-4 ms on a current core)."""
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i & 7
    return (time.perf_counter() - t0) * 1e3


def block_spread(ms: list[float], block: int) -> float | None:
    """Slowest / fastest median over the blocks of ``block`` calls; None with fewer than 2 blocks."""
    blocks = [ms[i:i + block] for i in range(0, len(ms) - block + 1, block)]
    if len(blocks) < 2:
        return None
    medians = [float(np.median(b)) for b in blocks]
    return round(max(medians) / min(medians), 3) if min(medians) > 0 else None


@dataclass
class NoiseMonitor:
    """Start before timing, ``probe()`` between rounds, ``summary()`` at any point after."""

    started: float = 0.0
    cpu0: tuple[int, int, int] | None = None
    own0: int | None = None
    load_start: list[float] | None = None
    probes: list[float] = field(default_factory=list)

    def start(self) -> NoiseMonitor:
        self.started = time.perf_counter()
        self.cpu0, self.own0, self.load_start = _cpu_jiffies(), _own_jiffies(), _load()
        self.probe()
        return self

    def probe(self) -> None:
        """Time the fixed workload three times; keep the fastest (a single preemption is not noise)."""
        self.probes.append(round(min(probe_once() for _ in range(3)), 4))

    def summary(self, rows: dict[str, list[float]] | None = None, block: int | None = None) -> dict[str, Any]:
        """What was seen, ``noisy`` and why (see the module docstring); ``rows``: variant -> call ms."""
        seconds = time.perf_counter() - self.started
        cpu1, own1 = _cpu_jiffies(), _own_jiffies()
        out: dict[str, Any] = {"seconds": round(seconds, 1), "load_average_start": self.load_start,
                               "load_average_end": _load(), "cores": len(os.sched_getaffinity(0))
                               if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                               "others_cores": None, "steal_fraction": None, "probe_ms": list(self.probes),
                               "probe_spread": None, "block_spread": {}}
        reasons: list[str] = []
        if self.cpu0 and cpu1 and cpu1[2] > self.cpu0[2]:
            busy, steal, total = (b - a for a, b in zip(self.cpu0, cpu1))
            ticks = os.sysconf("SC_CLK_TCK")
            out["steal_fraction"] = round(steal / total, 4)
            if self.own0 is not None and own1 is not None and seconds > 0:
                out["others_cores"] = round(max(0.0, (busy - (own1 - self.own0)) / ticks / seconds), 3)
        if out["others_cores"] is not None and out["others_cores"] > OTHERS_CORES_MAX:
            reasons.append(f"other processes used {out['others_cores']:.2f} cores on average while latency was "
                           f"measured ({out['cores']} usable)")
        if out["steal_fraction"] is not None and out["steal_fraction"] > STEAL_MAX:
            reasons.append(f"the hypervisor took {100 * out['steal_fraction']:.0f}% of the CPU time (steal)")
        if len(self.probes) >= 2 and min(self.probes) > 0:
            out["probe_spread"] = round(max(self.probes) / min(self.probes), 3)
            if out["probe_spread"] > PROBE_SPREAD_MAX:
                reasons.append(f"a fixed workload timed between rounds varied {out['probe_spread']:.1f}x")
        for name, ms in (rows or {}).items():
            spread = block_spread(ms, block) if block else None
            if spread is not None:
                out["block_spread"][name] = spread
        drifting = [n for n, s in out["block_spread"].items() if s > BLOCK_SPREAD_MAX]
        if drifting and len(drifting) * 2 >= len(out["block_spread"]):
            reasons.append(f"{len(drifting)} of {len(out['block_spread'])} variants' block medians varied more "
                           f"than {BLOCK_SPREAD_MAX}x between rounds")
        out["noisy"] = bool(reasons)
        out["reasons"] = reasons
        load = out["load_average_end"]
        load_text = f"; load average {load[0]:.2f} on {out['cores']} cores" if load else ""
        out["summary"] = ("; ".join(reasons) + load_text) if reasons else \
            f"no sign of another load while latency was measured{load_text}"
        out["advice"] = ADVICE
        return out

    def row_noisy(self, summary: dict[str, Any], name: str) -> bool:
        """A row's latency is unreliable when the machine was, or its own blocks disagree."""
        spread = summary["block_spread"].get(name)
        return bool(summary["noisy"] or (spread is not None and spread > BLOCK_SPREAD_MAX))
