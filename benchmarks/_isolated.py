"""Run a function in a forked child and report its wall time and peak memory (shared by the benchmarks)."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

MMAP_THRESHOLD = "65536"


def heap_returns_memory() -> None:
    """Re-run this script with glibc's ``MALLOC_MMAP_THRESHOLD_`` at 64 KiB (once): every tensor then lives in its
    own mapping that goes back to the system when freed, so a resident-memory peak follows the live tensors (as
    CUDA's allocated-memory peak does) instead of the heap's fragmentation, which adds up to ~1.5x here."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD})


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def _child(fn, args, queue) -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark: VmHWM is this child's peak from here on
    base = _rss_kib("VmRSS")
    start = time.perf_counter()
    result = fn(*args)
    queue.put((time.perf_counter() - start, (_rss_kib("VmHWM") - base) / 1024, result))


def isolated(fn, *args):
    """``(seconds, peak MiB above the state at fork, fn(*args))``, measured in a forked child."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out
