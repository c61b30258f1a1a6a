"""Training-time transforms: fresh seeded defects, flips and affine that keep defective + implant = complete."""

import numpy as np
import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, Lambdad

from data_prep.phantom import synthetic_skull
from fam_skull.train.augment import EpochSeededDataset, RandSkullDefectd, item_seed, training_augmentation


@pytest.fixture(scope="module")
def item():
    mask, spacing, _ = synthetic_skull(3, (48, 48, 24))
    complete = torch.from_numpy(mask.astype(np.float32))[None]
    implant = torch.zeros_like(complete)
    implant[..., 16:20] = complete[..., 16:20]  # a band: the item's prepared "defect"
    return {"image": complete - implant, "implant": implant, "complete": complete, "spacing": torch.tensor(spacing)}


def assert_partition(out):
    image, implant, complete = (out[k] for k in ("image", "implant", "complete"))
    assert set(torch.unique(torch.cat([image, implant, complete])).tolist()) <= {0.0, 1.0}
    assert not (image * implant).any()
    assert torch.equal(image + implant, complete)


def test_fresh_defect_is_seeded_and_exact(item):
    t = RandSkullDefectd(["sphere", "bilateral", "random"], prob=1.0)
    draws = []
    for seed in (5, 5, 6):
        t.set_random_state(seed=seed)
        draws.append(t(dict(item)))
    assert torch.equal(draws[0]["implant"], draws[1]["implant"])
    assert not torch.equal(draws[0]["implant"], draws[2]["implant"])
    for out in draws:
        assert_partition(out)
        assert torch.equal(out["complete"], item["complete"])
        assert not torch.equal(out["implant"], item["implant"])
        removed = float(out["implant"].sum() / item["complete"].sum())
        assert 0.005 <= removed <= 0.30


def test_fresh_defect_probability_zero_keeps_the_item(item):
    t = RandSkullDefectd(["sphere"], prob=0.0)
    t.set_random_state(seed=0)
    out = t(dict(item))
    assert torch.equal(out["implant"], item["implant"]) and torch.equal(out["image"], item["image"])


def test_unknown_defect_type_is_refused():
    with pytest.raises(ValueError, match="kinds: give one or more of"):
        RandSkullDefectd(["meteor"])


def test_augmentation_keeps_the_partition_and_flips_left_right(item):
    flip_only = training_augmentation(["sphere"], fresh_defect=0.0, flip=1.0, affine=0.0)
    out = flip_only(dict(item))
    assert torch.equal(out["complete"], torch.flip(item["complete"], dims=[1]))  # axis 0 of (X, Y, Z): left-right
    full = training_augmentation(["sphere", "cube"], fresh_defect=1.0, flip=0.5, affine=1.0, rotate_deg=15, scale=0.15)
    for seed in range(4):
        full.set_random_state(seed=seed)
        out = full(dict(item))
        assert_partition(out)
        assert type(out["image"]) is torch.Tensor and out["image"].dtype == torch.float32


def test_epoch_seeded_dataset_repeats_within_an_epoch_and_changes_across(item):
    ds = EpochSeededDataset([item] * 3, training_augmentation(["sphere", "random"]), seed=7)
    ds.set_epoch(1)
    first = [ds[i]["implant"] for i in range(3)]
    again = [ds[i]["implant"] for i in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # each item has its own draw
    ds.set_epoch(2)
    assert not torch.equal(ds[0]["implant"], first[0])
    assert item_seed(7, 1, 0) == item_seed(7, 1, 0) != item_seed(7, 2, 0)


def test_defect_transform_composes_with_a_cache_dataset(item):
    # deterministic steps cached, the random defect applied on every access, as in any MONAI pipeline
    cached = Compose([Lambdad("complete", lambda x: x), RandSkullDefectd(["sphere"], prob=1.0)])
    cached.set_random_state(seed=3)
    ds = CacheDataset([dict(item)], cached, cache_rate=1.0, progress=False)
    a, b = ds[0]["implant"], ds[0]["implant"]
    assert not torch.equal(a, b)  # a fresh defect per access
    assert_partition(ds[0])


def test_defect_transform_reads_a_nifti_skull_loaded_by_monai(item, tmp_path):
    from helpers import write_volume
    from monai.transforms import LoadImaged, Orientationd

    spacing = item["spacing"].tolist()
    path = write_volume(tmp_path / "skull.nii.gz", item["complete"][0].numpy().astype(np.uint8), spacing)
    load = Compose([LoadImaged("complete", ensure_channel_first=True), Orientationd("complete", axcodes="LPS")])
    loaded = load({"complete": str(path)})
    assert torch.equal(loaded["complete"].as_tensor(), item["complete"])  # LPS array order, as the project's
    t = RandSkullDefectd(["frontoorbital"])
    outs = []
    for data in (loaded, {**item, "complete": item["complete"]}):
        t.set_random_state(seed=11)
        outs.append(t(dict(data)))
    assert torch.equal(outs[0]["implant"].as_tensor(), outs[1]["implant"])  # spacing from the affine = the given one
    with pytest.raises(KeyError, match="no 'spacing' key"):
        t({"complete": item["complete"]})


def test_shape_augmentations_keep_the_partition_and_do_what_they_say(item):
    from fam_skull.train.augment import RandFieldOfViewd, RandThickSlicesd

    t = training_augmentation(["sphere"], fresh_defect=1.0, flip=0.5, affine=0.5, elastic=1.0, crop=1.0, thick_slices=1.0)
    for seed in range(4):
        t.set_random_state(seed=seed)
        out = t(dict(item))
        assert_partition(out)
        assert not torch.equal(out["complete"], torch.as_tensor(item["complete"]).float())
    crop = RandFieldOfViewd(prob=1.0)
    for seed in range(6):
        crop.set_random_state(seed=seed)
        out = crop(dict(item))
        assert_partition(out)
        depth = item["complete"].shape[-1]
        n = int(round(crop._share * depth))
        part = out["complete"][..., :n] if crop._low else out["complete"][..., depth - n :]
        assert n > 0 and not part.any()
        kept = out["complete"][..., n:] if crop._low else out["complete"][..., : depth - n]
        source = item["complete"][..., n:] if crop._low else item["complete"][..., : depth - n]
        assert torch.equal(torch.as_tensor(kept), torch.as_tensor(source))
    thick = RandThickSlicesd(prob=1.0)
    thick.set_random_state(seed=0)
    out = thick(dict(item))
    assert_partition(out)

    # slices averaged in groups and interpolated back: neighbouring axial slices agree more than in the original
    def step(mask):
        m = torch.as_tensor(mask).float()
        return float((m[..., 1:] != m[..., :-1]).float().mean())

    assert step(out["complete"]) < step(item["complete"])
