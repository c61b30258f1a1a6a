"""Progress bars: one setting for every long step, and the worker pool that reports into one."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, quiet: bool = False, **kwargs) -> tqdm:
    """A tqdm bar, off with ``quiet`` and off when stderr is not a terminal (a redirected log gets no bar lines)."""
    return tqdm(iterable, disable=True if quiet else None, **kwargs)


def run_jobs(
    fn: Callable[[Any], Any],
    jobs: Sequence[Any],
    workers: int,
    *,
    desc: str,
    total: int | None = None,
    count: Callable[[Any], int] = lambda result: 1,
    initializer: Callable[[], None] | None = None,
    quiet: bool = False,
) -> Iterator[Any]:
    """``fn(job)`` for every job, yielded as each finishes: in ``workers`` processes when there are several jobs,
    else in this one; one bar of ``total`` units (default one per job) advanced by ``count(result)``."""
    bar = progress(total=len(jobs) if total is None else total, desc=desc, unit="case", quiet=quiet or not jobs)
    try:
        if workers > 1 and len(jobs) > 1:
            # spawn: forked children can deadlock in thread pools (OpenMP, ITK) the parent already started
            with mp.get_context("spawn").Pool(workers, initializer=initializer) as pool:
                for result in pool.imap_unordered(fn, jobs):
                    bar.update(count(result))
                    yield result
        else:
            for job in jobs:
                result = fn(job)
                bar.update(count(result))
                yield result
    finally:
        bar.close()


def peak_memory_mib(reset: bool = True) -> float | None:
    """This process's peak resident memory (MiB) since the last reset, then reset (Linux: VmHWM of
    /proc/self/status, reset through /proc/self/clear_refs); None where the kernel does not tell."""
    try:
        status = Path("/proc/self/status").read_text()
        peak = next(float(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
    except (OSError, StopIteration, ValueError):
        return None
    return peak
