"""A run's epoch history as files: ``metrics.csv`` and the ``curves.png`` panels."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from data_prep.io import atomic_write_text
from fam_skull.common.figures import pyplot, save_figure


def plot_curves(history: list[dict], path: Path, best_epoch: int, regularizer: str | None = None) -> None:
    """Labelled panels: losses, the regularizer (its metrics.csv column, e.g. ``kappa_F``; only when FAM ran),
    validation implant DSC (with the completed skull's for contrast) and validation implant HD95; the epoch
    ``best.pt`` holds is marked."""
    plt = pyplot()

    def series(key):
        return [(h["epoch"], h[key]) for h in history if h.get(key) is not None]

    fam = regularizer is not None and bool(series(regularizer))
    fig, axes = plt.subplots(1, 4 if fam else 3, figsize=(17 if fam else 13, 3.8))
    loss_ax, dsc_ax, hd_ax = axes[0], axes[-2], axes[-1]
    lines = [("task_loss", "task loss", 1.0)] + ([("loss", "total loss (with FAM)", 0.6)] if fam else [])
    for key, label, alpha in lines:
        if series(key):
            loss_ax.plot(*zip(*series(key)), label=label, alpha=alpha)
    loss_ax.set(title="training loss", ylabel="loss")
    if series("task_loss"):
        loss_ax.legend()
    if fam:
        assert regularizer is not None
        axes[1].plot(*zip(*series(regularizer)), color="tab:red")
        axes[1].set(title=f"{regularizer} of the FAM layer (training batches)", ylabel=regularizer)
    for key, label, color in (("val_implant_dsc", "implant", "tab:green"), ("val_skull_dsc", "completed skull", "tab:grey")):
        if series(key):
            dsc_ax.plot(*zip(*series(key)), marker="o", color=color, label=label)
    dsc_ax.set(title="validation DSC (best.pt: highest implant DSC)", ylabel="DSC", ylim=(0, 1.02))
    if series("val_implant_hd95"):
        hd_ax.plot(*zip(*series("val_implant_hd95")), marker="o", color="tab:purple")
    hd_ax.set(title="validation implant HD95", ylabel="HD95 (mm)")
    for ax in axes:
        ax.set_xlabel("epoch")
    if best_epoch:
        for ax in (dsc_ax, hd_ax):
            ax.axvline(best_epoch, color="black", linestyle=":", linewidth=1, label=f"best.pt (epoch {best_epoch})")
        dsc_ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def write_metrics(history: list[dict], path: Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, out.getvalue())
