"""A trained run loaded back: its network (in eval mode) from its config and checkpoint, for predict, export,
the refinement stage and the flatness measurement."""

from __future__ import annotations

from pathlib import Path

import torch

from fam_skull.common.checkpoint import READABLE_FORMATS, CheckpointError, load_checkpoint
from fam_skull.common.paths import RunFolder
from fam_skull.config import Config, load_config
from fam_skull.networks.models import model_from_config


def load_run(
    run: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Config, tuple[int, ...], Path]:
    """The trained model (eval mode), its config, training grid and checkpoint path.

    ``checkpoint`` is ``best``, ``last``, ``epoch_NNNN`` or a path; ``best`` falls back to ``last`` when a run
    never validated.

    Raises:
        ConfigError: the run's config.yaml is missing or invalid. CheckpointError: the checkpoint cannot be read.
    """
    folder = RunFolder(Path(run))
    config = load_config(folder.config)
    path = folder.checkpoint(checkpoint)
    if checkpoint == "best" and not path.is_file():
        path = folder.checkpoint("last")
    state = load_checkpoint(path, map_location=device)
    if state.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r} is not one this version reads "
            f"({', '.join(READABLE_FORMATS)}); use the fam-skull version that wrote it"
        )
    grid = tuple(state["grid"])
    model = model_from_config(config, grid)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, grid, path
