"""Shared helpers: synthetic skulls written as NRRD/NIfTI in the test's own folder."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from data_prep.phantom import synthetic_skull


def write_volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> Path:
    """Write an (x, y, z) array with geometry, as the datasets ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="session")
def skulls():
    """Four synthetic skulls at 48x48x24 with their spacing."""
    return [synthetic_skull(seed, (48, 48, 24))[:2] for seed in range(4)]
