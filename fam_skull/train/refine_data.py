"""The refinement stage's training data: for every train (val) case, the defective skull and implant at the
scan's resolution (``prepare`` keeps them), the coarse run's implant probability for the case, and the box
around the union of the coarse and the true implant (so training sees the whole defect even where the coarse
stage missed part), cut into patches; optionally more training cases with fresh defects cut at the scan's
resolution (the prepared ones are one per skull, of the training types only)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Compose, EnsureTyped, RandCropByPosNegLabeld, RandFlipd, SpatialPadd

from data_prep.defects import DefectError, make_defect
from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest, ManifestError
from data_prep.preprocess import Layout
from data_prep.progress import progress
from fam_skull.networks.implant import defect_box, scan_probability

log = logging.getLogger("fam_skull.train")


def load_case(manifest: Manifest, case: dict, coarse: torch.nn.Module, device: torch.device) -> dict:
    """A case at the scan's resolution (canonical arrays): ``defective``, ``implant``, the coarse
    ``probability``, and ``spacing``.

    Raises:
        ManifestError: the case has no volumes in the original geometry (prepared with ``--no-refine-data``).
    """
    if "original" not in case:
        raise ManifestError(
            f"{manifest.path}: case {case['id']} has no volumes at the scan's resolution; "
            "prepare again without --no-refine-data to train a refinement stage"
        )
    layout = Layout.from_dict(case["layout"])
    defective = layout.canonical_array(read_image(manifest.file(case, "original", "defective"))) != 0
    implant = layout.canonical_array(read_image(manifest.file(case, "original", "implant"))) != 0
    grid = to_array(read_image(manifest.file(case, "grid", "defective"))) != 0
    return _case(case["id"], layout, defective, implant, grid, coarse, device)


def _case(
    name: str, layout: Layout, defective: np.ndarray, implant: np.ndarray, grid: np.ndarray, coarse: torch.nn.Module, device: torch.device
) -> dict:
    return {
        "id": name,
        "defective": defective,
        "implant": implant,
        "probability": scan_probability(coarse, grid, layout, defective, device),
        "spacing": np.asarray(layout.canonical.spacing),
        "layout": layout,
    }


def fresh_cases(
    cases: list[dict],
    kinds: Sequence[str],
    count: int,
    seed: int,
    coarse: torch.nn.Module,
    device: torch.device,
    quiet: bool = True,
    first: int = 0,
) -> list[dict]:
    """``count`` more cases per case of :func:`load_cases`: a defect of a kind drawn from ``kinds`` cut from the
    complete skull (defective + implant) at the scan's resolution, the grid input made from it as ``prepare``
    makes it, and the coarse probability for it. Seeded by (``seed``, case position from ``first``, draw); a draw
    that finds no acceptable defect is left out (and counted in the log)."""
    out, dropped = [], []
    for i, c in enumerate(progress(cases, desc="refine data (fresh defects)", unit="case", quiet=quiet), start=first):
        complete, layout = c["defective"] | c["implant"], c["layout"]
        for k in range(count):
            rng = np.random.default_rng([seed, i, k])
            kind = kinds[int(rng.integers(len(kinds)))]
            try:
                region = make_defect(complete, c["spacing"], kind, int(rng.integers(2**31))).region
            except DefectError:
                dropped.append(f"{c['id']}/{kind}{k}")
                continue
            defective = complete & ~region
            out.append(_case(f"{c['id']}/{kind}{k}", layout, defective, complete & region, layout.to_grid(defective), coarse, device))
    if dropped:
        total = count * len(cases)
        log.warning("fresh defects: %d of %d draws found no acceptable defect, left out: %s", len(dropped), total, ", ".join(dropped))
    return out


def load_cases(manifest: Manifest, role: str, coarse: torch.nn.Module, device: torch.device, quiet: bool = True) -> list[dict]:
    """:func:`load_case` of every ``role`` case.

    Raises:
        ManifestError: no case has this role, or one has no volumes at the scan's resolution.
    """
    cases = manifest.role(role)
    if not cases:
        raise ManifestError(f"{manifest.path}: no {role} cases; prepare more skulls or change the split")
    return [load_case(manifest, c, coarse, device) for c in progress(cases, desc=f"refine data ({role})", unit="case", quiet=quiet)]


def training_set(
    manifest: Manifest,
    coarse: torch.nn.Module,
    device: torch.device,
    margin_mm: float,
    kinds: Sequence[str] = (),
    fresh: int = 0,
    seed: int = 0,
    quiet: bool = True,
) -> list[dict]:
    """The :func:`training_items` of every train case, then of its ``fresh`` :func:`fresh_cases`, made one train
    case at a time so that only the boxes are held: at ~1 mm a whole case is 50 MB, and 140 train cases with 2 fresh
    defects each, all whole at once, filled this machine's 24 GB.

    Raises:
        ManifestError: as :func:`load_cases`.
    """
    cases = manifest.role("train")
    if not cases:
        raise ManifestError(f"{manifest.path}: no train cases; prepare more skulls or change the split")
    items, extra = [], []
    for i, c in enumerate(progress(cases, desc="refine data (train)", unit="case", quiet=quiet)):
        case = load_case(manifest, c, coarse, device)
        items += training_items([case], margin_mm)
        if fresh:
            extra += training_items(fresh_cases([case], kinds, fresh, seed, coarse, device, first=i), margin_mm)
    return items + extra


def training_items(cases: list[dict], margin_mm: float) -> list[dict]:
    """Per case, the box around the coarse and the true implant, as network items (``image``: defective skull
    and coarse probability, ``implant``: the label), channel first."""
    items = []
    for c in cases:
        box = defect_box((c["probability"] >= 0.5) | c["implant"], c["spacing"], margin_mm)
        image = np.stack([c["defective"][box], c["probability"][box]]).astype(np.float32)
        items.append({"image": torch.from_numpy(image), "implant": torch.from_numpy(c["implant"][box][None].astype(np.float32))})
    return items


def patch_augmentation(patch: Sequence[int]) -> Compose:
    """Patches of the box, half centred on implant voxels and half elsewhere (MONAI's positive/negative
    sampling), flipped left-right half the time."""
    keys = ("image", "implant")
    return Compose(
        [
            SpatialPadd(keys, spatial_size=tuple(patch)),
            RandCropByPosNegLabeld(keys, label_key="implant", spatial_size=tuple(patch), pos=1, neg=1, num_samples=1),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            EnsureTyped(keys, dtype=torch.float32, track_meta=False),
        ]
    )
