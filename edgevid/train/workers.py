"""DataLoader worker processes: how many a run may ask for, and that none outlives the run.

Torch-free (``edgevid train --help`` reads the bound). The workers are started by a fork
server (``trainer.loader_workers`` says why), and CPython's fork server hands every child it
forks a copy of the pipe whose closing tells the fork server that its parent is gone. So
when the parent is killed (SIGKILL, or SIGTERM without cleanup) the fork server waits for
its workers, and the workers, whose parent is the fork server (torch's watchdog checks
that one), wait for it: all stay, holding the memory of a training process, and the
resource tracker waits for them. Measured with CPython 3.11 and torch 2.x: 40 s after
``kill`` of ``edgevid train --workers 2`` all four processes were still alive.

The cure (``watch_parent``, the loaders' ``worker_init_fn``): each worker watches the pipe
that multiprocessing keeps open from the process that started it (``parent_process()``'s
sentinel, at EOF once that process is gone, however it died) and exits then. With the
workers gone, the fork server sees its pipe close and exits, and so does the resource
tracker. ``edgevid.signals.exit_on`` makes SIGTERM unwind the trainer like Ctrl-C does, so
workers are shut down and temp files removed.
"""

from __future__ import annotations

import multiprocessing
import os
import threading


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_workers() -> int:
    """The most loader processes a run may start: 4 per CPU, at most 64 (each holds a copy of the dataset code)."""
    return max(1, min(64, 4 * cpu_count()))


def watch_parent(_worker_id: int | None = None) -> None:
    """A DataLoader ``worker_init_fn``: this worker exits as soon as the process that started it is gone.

    A daemon thread waits on the parent's sentinel; a worker started after its parent died
    sees the sentinel ready at once and exits too.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing (a test calling it directly)
        return
    threading.Thread(target=_exit_when_gone, args=(parent.sentinel,), name="edgevid-parent-watch",
                     daemon=True).start()


def _exit_when_gone(sentinel: int) -> None:
    from multiprocessing.connection import wait

    wait([sentinel])
    os._exit(1)  # the parent is gone: nobody reads this worker's results, and no cleanup is ours to run
