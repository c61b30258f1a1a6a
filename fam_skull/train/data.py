"""Training and validation data from a prepared manifest: the defective skull in; its implant and complete
skull as the two possible targets (``model.target``)."""

from __future__ import annotations

from typing import Any, Protocol, cast

import torch
from monai.data import CacheDataset, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.data import Dataset as TorchDataset

from data_prep.manifest import Manifest, ManifestError
from fam_skull.train.augment import MASKS


def items(manifest: Manifest, role: str) -> list[dict]:
    """Dataset items of the ``role`` cases: ``id``, grid paths of ``image`` (defective), ``implant`` and
    ``complete``, and ``spacing`` (grid voxel size in mm)."""
    out = []
    for case in manifest.role(role):
        out.append(
            {
                "id": case["id"],
                "image": str(manifest.file(case, "grid", "defective")),
                "implant": str(manifest.file(case, "grid", "implant")),
                "complete": str(manifest.file(case, "grid", "complete")),
                "spacing": torch.tensor(case["grid_spacing"], dtype=torch.float64),
            }
        )
    return out


def transforms() -> Compose:
    """Load the grid volumes as plain float tensors (C, X, Y, Z) holding 0/1."""
    return Compose(
        [
            LoadImaged(keys=MASKS, image_only=True),
            EnsureChannelFirstd(keys=MASKS, channel_dim="no_channel"),
            EnsureTyped(keys=MASKS, dtype=torch.float32, track_meta=False),
        ]
    )


def dataset(manifest: Manifest, role: str, cache: bool = True) -> Dataset:
    """MONAI (Cache)Dataset of the ``role`` cases.

    Raises:
        ManifestError: no case has this role.
    """
    entries = items(manifest, role)
    if not entries:
        raise ManifestError(f"{manifest.path}: no {role} cases; prepare more skulls or change the split")
    if cache:
        return CacheDataset(entries, transforms(), cache_rate=1.0, num_workers=None, progress=False)
    return Dataset(entries, transforms())


class Cases(Protocol):
    """What training reads cases from: a MONAI dataset, an augmenting wrapper of one, or a list of dicts."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def loader(ds: Cases, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1, num_workers: int = 0) -> DataLoader:
    """A loader whose order depends only on ``seed`` and the epoch (``sampler.set_epoch``), so a resumed run
    sees the same batches; under torchrun each rank takes its share of every global batch."""
    data = cast(TorchDataset, ds)  # torch reads any map-style dataset; its hints name the class
    sampler: DistributedSampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=num_workers, pin_memory=torch.cuda.is_available())
