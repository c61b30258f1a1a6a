"""MONAI transforms for skull training data: fresh defects on complete skulls, and the training augmentation.

Items are dictionaries with channel-first masks ``image`` (defective skull), ``implant`` and ``complete``
on the training grid, and ``spacing`` (mm per grid axis). Every transform keeps the exact partition
``image + implant = complete`` (disjoint): a defect is cut from ``complete``, and the spatial transforms apply
one draw to all three masks with nearest-neighbour interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureTyped, MapTransform, Rand3DElasticd, RandAffined, RandFlipd, RandomizableTransform

from data_prep.defects import DEFECT_TYPES, DefectError, make_defect
from fam_skull.config import AugmentConfig

MASKS = ("image", "implant", "complete")


class RandSkullDefectd(RandomizableTransform, MapTransform):
    """With probability ``prob``, cut a fresh seeded defect of a random type from the complete skull.

    Args:
        kinds: defect types to draw from (``data_prep.defects.DEFECT_TYPES``).
        prob: probability of drawing a new defect; otherwise the item keeps the defect it has.
        complete_key, defective_key, implant_key: the masks (channel first, shape (1, X, Y, Z), LPS order).
        spacing_key: the key holding the voxel spacing in mm (defects are placed in millimetres); without it, the
            spacing comes from the affine of a ``MetaTensor`` complete skull (what ``LoadImaged`` gives).

    A skull on which no acceptable defect can be drawn keeps its own defect (never an empty implant).
    Seed it with ``set_random_state`` as any MONAI random transform.
    """

    def __init__(
        self,
        kinds: Sequence[str],
        prob: float = 1.0,
        complete_key: str = "complete",
        defective_key: str = "image",
        implant_key: str = "implant",
        spacing_key: str = "spacing",
    ) -> None:
        unknown = [k for k in kinds if k not in DEFECT_TYPES]
        if not kinds or unknown:
            raise ValueError(f"kinds: give one or more of {', '.join(DEFECT_TYPES)} (got {list(kinds)})")
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, [complete_key, defective_key, implant_key])
        self.kinds = tuple(kinds)
        self.complete_key, self.defective_key, self.implant_key, self.spacing_key = complete_key, defective_key, implant_key, spacing_key
        self._kind, self._seed = self.kinds[0], 0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self._kind = self.kinds[self.R.randint(len(self.kinds))]
        self._seed = int(self.R.randint(2**31))

    def __call__(self, data: dict) -> dict:
        self.randomize()
        if not self._do_transform:
            return data
        out = dict(data)
        complete = torch.as_tensor(out[self.complete_key])
        mask = complete[0].cpu().numpy() > 0.5
        if self.spacing_key in out:
            spacing = np.asarray(out[self.spacing_key], dtype=float).reshape(-1)
        elif isinstance(complete, MetaTensor):
            spacing = np.linalg.norm(complete.affine.detach().cpu().double().numpy()[:3, :3], axis=0)
        else:
            raise KeyError(f"RandSkullDefectd: no {self.spacing_key!r} key and {self.complete_key!r} is not a MetaTensor with an affine")
        try:
            region = make_defect(mask, spacing, self._kind, self._seed).region
        except DefectError:
            return data
        cut = torch.from_numpy(region)[None].to(complete.device)
        out[self.implant_key] = complete * cut
        out[self.defective_key] = complete * ~cut
        return out


class RandFieldOfViewd(RandomizableTransform, MapTransform):
    """A scan that holds less of the head: with probability ``prob`` the lowest 15-40% of the axial slices are
    blanked in all masks (no face, no mandible: a scan cut above the orbits), or one time in five the top 3-10%
    (a vertex outside the field of view). An implant cropped away leaves an item without a defect, which teaches
    that a whole skull gets no implant."""

    def __init__(self, keys: Sequence[str] = MASKS, prob: float = 0.0) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self._low, self._share = True, 0.0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self._low = bool(self.R.rand() < 0.8)
        self._share = float(self.R.uniform(0.15, 0.4) if self._low else self.R.uniform(0.03, 0.1))

    def __call__(self, data: dict) -> dict:
        self.randomize()
        if not self._do_transform:
            return data
        out = dict(data)
        for key in self.keys:
            mask = torch.as_tensor(out[key]).clone()
            n = int(round(self._share * mask.shape[-1]))
            if self._low:
                mask[..., :n] = 0
            else:
                mask[..., mask.shape[-1] - n :] = 0
            out[key] = mask
        return out


class RandThickSlicesd(RandomizableTransform, MapTransform):
    """Thick slices: with probability ``prob`` the axial resolution is lowered by a factor of 2-5 (slices averaged)
    and brought back (linear), thresholded at 0.5, for the complete and the defective skull; the implant is then
    what the one holds and the other lacks, so the partition stays exact."""

    def __init__(
        self, prob: float = 0.0, complete_key: str = "complete", defective_key: str = "image", implant_key: str = "implant"
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, [complete_key, defective_key, implant_key])
        self.complete_key, self.defective_key, self.implant_key = complete_key, defective_key, implant_key
        self._factor = 2.0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self._factor = float(self.R.uniform(2.0, 5.0))

    def _thick(self, mask: torch.Tensor) -> torch.Tensor:
        x = mask.float()[None]
        depth = x.shape[-1]
        low = torch.nn.functional.interpolate(x, size=(*x.shape[2:4], max(2, round(depth / self._factor))), mode="area")
        return torch.nn.functional.interpolate(low, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)[0] >= 0.5

    def __call__(self, data: dict) -> dict:
        self.randomize()
        if not self._do_transform:
            return data
        out = dict(data)
        complete = torch.as_tensor(out[self.complete_key])
        full, defective = self._thick(complete), self._thick(torch.as_tensor(out[self.defective_key]))
        defective &= full
        out[self.complete_key] = full.to(complete.dtype)
        out[self.defective_key] = defective.to(complete.dtype)
        out[self.implant_key] = (full & ~defective).to(complete.dtype)
        return out


def training_augmentation(
    kinds: Sequence[str],
    fresh_defect: float = AugmentConfig.fresh_defect,
    flip: float = AugmentConfig.flip,
    affine: float = AugmentConfig.affine,
    rotate_deg: float = AugmentConfig.rotate_deg,
    scale: float = AugmentConfig.scale,
    elastic: float = AugmentConfig.elastic,
    crop: float = AugmentConfig.crop,
    thick_slices: float = AugmentConfig.thick_slices,
) -> Compose:
    """Fresh defects, then left-right flips (axis 0 of LPS volumes), small rotations and scalings, elastic
    deformation (one draw for all three masks; nearest-neighbour interpolation keeps them binary and the partition
    exact), field-of-view crops and thick slices. A transform whose probability is 0 is left out, so the draws of
    the others are what they were without it. The defaults are the training config's
    (:class:`~fam_skull.config.AugmentConfig`)."""
    steps: list = []
    if fresh_defect > 0:
        steps.append(RandSkullDefectd(kinds, prob=fresh_defect))
    if flip > 0:
        steps.append(RandFlipd(MASKS, prob=flip, spatial_axis=0))
    if affine > 0:
        angle = np.deg2rad(rotate_deg)
        steps.append(
            RandAffined(
                MASKS, prob=affine, rotate_range=(angle, angle, angle), scale_range=(scale,) * 3, mode="nearest", padding_mode="zeros"
            )
        )
    if elastic > 0:  # displacements of a few voxels, smooth over ~5 voxels: the skull's shape, not its texture
        steps.append(
            Rand3DElasticd(MASKS, sigma_range=(4, 6), magnitude_range=(40, 80), prob=elastic, mode="nearest", padding_mode="zeros")
        )
    if crop > 0:
        steps.append(RandFieldOfViewd(MASKS, prob=crop))
    if thick_slices > 0:
        steps.append(RandThickSlicesd(prob=thick_slices))
    steps.append(EnsureTyped(MASKS, dtype=torch.float32, track_meta=False))  # plain tensors for the network
    return Compose(steps)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one item in one epoch: a function of the three alone, so a resumed run, a
    different number of DataLoader workers or another rank draws exactly the same augmentation."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochSeededDataset(torch.utils.data.Dataset):
    """``base[i]`` passed through a random ``transform`` seeded by :func:`item_seed` (call :meth:`set_epoch`
    before each epoch, as with a DistributedSampler)."""

    def __init__(self, base, transform: Compose, seed: int) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        self.transform.set_random_state(seed=item_seed(self.seed, self.epoch, index))
        out = self.transform(dict(self.base[index]))
        return out[0] if isinstance(out, list) else out  # a patch sampler's (num_samples=1) single patch
