"""Training and validation data from a prepared manifest: defective skull in, complete skull as target."""

from __future__ import annotations

import torch
from monai.data import CacheDataset, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged
from torch.utils.data import DataLoader, DistributedSampler

from data_prep.manifest import Manifest, ManifestError


def items(manifest: Manifest, role: str) -> list[dict]:
    """Dataset items (id, image = grid defective path, label = grid complete path) of the ``role`` cases."""
    out = []
    for case in manifest.role(role):
        out.append(
            {
                "id": case["id"],
                "image": str(manifest.file(case, "grid", "defective")),
                "label": str(manifest.file(case, "grid", "complete")),
            }
        )
    return out


def transforms() -> Compose:
    """Load the grid volumes as plain float tensors (C, X, Y, Z); the label stays 0/1."""
    return Compose(
        [
            LoadImaged(keys=["image", "label"], image_only=True),
            EnsureChannelFirstd(keys=["image", "label"], channel_dim="no_channel"),
            EnsureTyped(keys=["image", "label"], dtype=torch.float32, track_meta=False),
        ]
    )


def dataset(manifest: Manifest, role: str, cache: bool = True, progress: bool = False):
    """MONAI (Cache)Dataset of the ``role`` cases.

    Raises:
        ManifestError: no case has this role.
    """
    entries = items(manifest, role)
    if not entries:
        raise ManifestError(f"{manifest.path}: no {role} cases; prepare more skulls or change the split")
    if cache:
        return CacheDataset(entries, transforms(), cache_rate=1.0, num_workers=None, progress=progress)
    return Dataset(entries, transforms())


def loader(ds, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1, num_workers: int = 0) -> DataLoader:
    """A loader whose order depends only on ``seed`` and the epoch (``sampler.set_epoch``), so a resumed run
    sees the same batches; under torchrun each rank takes its share of every global batch."""
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, pin_memory=torch.cuda.is_available())
