"""Figures: one matplotlib setup (the file backend, imported only when a figure is drawn) and one atomic writer."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from data_prep.io import atomic_write_bytes


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed; the import waits for the first figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
