"""data.py: items read back the prepared volumes; the loader's order is the seed's and the epoch's, and ranks split
every epoch between them without overlap."""

import numpy as np
import torch

from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from fam_skull.train.data import dataset, loader


def test_dataset_items_are_the_prepared_grid_volumes(manifest):
    data = Manifest.load(manifest)
    ds = dataset(data, "train", cache=False)
    case = data.role("train")[0]
    item = ds[0]
    for key, kind in (("image", "defective"), ("implant", "implant"), ("complete", "complete")):
        assert item[key].shape == (1, *data.data["grid"])
        assert np.array_equal(item[key][0].numpy() != 0, to_array(read_image(data.file(case, "grid", kind))) != 0)
    assert torch.equal(item["image"] + item["implant"], item["complete"])  # the exact partition, as loaded
    assert item["spacing"].tolist() == case["grid_spacing"]


def test_loader_order_follows_seed_and_epoch_and_ranks_split_it():
    ds = list(range(10))

    def order(seed, epoch, rank=0, world=1):
        dl = loader(ds, 1, shuffle=True, seed=seed, rank=rank, world=world)
        dl.sampler.set_epoch(epoch)
        return [int(b) for b in dl]

    assert order(0, 1) == order(0, 1) and order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    shares = [order(0, 1, rank, 2) for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == ds and not set(shares[0]) & set(shares[1])
