"""Run a function in a forked child and report its wall time and peak memory (shared by the benchmarks)."""

from __future__ import annotations

import multiprocessing as mp
import time


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
