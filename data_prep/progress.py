"""Progress bars: one setting for every long step."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, quiet: bool = False, **kwargs) -> tqdm:
    """A tqdm bar, off with ``quiet`` and off when stderr is not a terminal (a redirected log gets no bar lines)."""
    return tqdm(iterable, disable=True if quiet else None, **kwargs)
