"""The refinement stage: the implant at the scan's resolution, in a box around the coarse stage's implant.

The coarse network sees the whole skull on the coarse training grid; the refinement network (a MONAI UNet
with 2 input channels: the defective skull and the coarse implant probability upsampled to the scan's
resolution) predicts the implant by sliding window inside a box: the coarse implant's bounding box grown by
``margin_mm`` and clipped to the volume. Everything here works on canonical (LPS) arrays at the scan's
resolution; :class:`~data_prep.preprocess.Layout` maps them to and from the original geometry.

Training data: for every train (val) case, the defective skull and implant in the original geometry
(``prepare`` keeps them), the coarse run's probability for the case, and the box around the union of the
coarse and the true implant (so training sees the whole defect even where the coarse stage missed part).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, EnsureTyped, RandCropByPosNegLabeld, RandFlipd, SpatialPadd

from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest, ManifestError
from data_prep.preprocess import Layout
from data_prep.progress import progress
from fam_skull.data import Cases
from fam_skull.metrics import implant_scores
from fam_skull.models import implant_mask


def defect_box(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> tuple[slice, ...] | None:
    """The bounding box of ``mask`` grown by ``margin_mm`` on every side (rounded up to whole voxels per axis)
    and clipped to the array; None for an empty mask."""
    if not mask.any():
        return None
    box = []
    for axis, s in enumerate(spacing):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        grow = int(np.ceil(margin_mm / s))
        box.append(slice(max(idx[0] - grow, 0), min(idx[-1] + grow + 1, mask.shape[axis])))
    return tuple(box)


@torch.no_grad()
def coarse_probability(model: torch.nn.Module, defective_grid: np.ndarray, device: torch.device) -> np.ndarray:
    """The coarse network's implant probability on the grid (float32), zero on the bone it was given."""
    x = torch.from_numpy(defective_grid.astype(np.float32))[None, None].to(device)
    p = torch.softmax(model(x).float(), 1)[0, 1]
    return (p * (x[0, 0] < 0.5)).cpu().numpy()


def scan_probability(
    model: torch.nn.Module, defective_grid: np.ndarray, layout: Layout, defective: np.ndarray, device: torch.device
) -> np.ndarray:
    """The coarse implant probability resampled to the canonical array at the scan's resolution, zero on
    ``defective`` (the canonical defective skull)."""
    return (layout.canonical_from_grid(coarse_probability(model, defective_grid, device)) * ~defective).astype(np.float32)


@torch.no_grad()
def refine_implant(
    model: torch.nn.Module,
    defective: np.ndarray,
    probability: np.ndarray,
    spacing: Sequence[float],
    patch: Sequence[int],
    margin_mm: float,
    device: torch.device,
    box: tuple[slice, ...] | None = None,
) -> np.ndarray:
    """The refined implant (bool, canonical array at the scan's resolution).

    Args:
        defective: the defective skull (canonical, scan resolution).
        probability: the coarse implant probability resampled to the same array.
        spacing: voxel size in mm; patch: the sliding window (voxels); margin_mm: the box margin.
        box: the box to refine (default: around the coarse implant, probability >= 0.5).
    """
    out = np.zeros(defective.shape, bool)
    box = box if box is not None else defect_box(probability >= 0.5, spacing, margin_mm)
    if box is None:
        return out
    x = torch.from_numpy(np.stack([defective[box], probability[box]]).astype(np.float32))[None].to(device)
    logits = sliding_window_inference(x, tuple(patch), 1, model, overlap=0.25, mode="gaussian")
    assert isinstance(logits, torch.Tensor)  # the model returns one tensor
    out[box] = implant_mask(logits, x[:, :1])[0, 0].cpu().numpy()
    return out


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
    return {
        "id": case["id"],
        "defective": defective,
        "implant": implant,
        "probability": scan_probability(coarse, grid, layout, defective, device),
        "spacing": np.asarray(layout.canonical.spacing),
    }


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


def load_cases(manifest: Manifest, role: str, coarse: torch.nn.Module, device: torch.device, quiet: bool = True) -> list[dict]:
    cases = manifest.role(role)
    if not cases:
        raise ManifestError(f"{manifest.path}: no {role} cases; prepare more skulls or change the split")
    return [load_case(manifest, c, coarse, device) for c in progress(cases, desc=f"refine data ({role})", unit="case", quiet=quiet)]


@torch.no_grad()
def validate_refined(model: torch.nn.Module, cases: Cases, patch: Sequence[int], margin_mm: float, device: torch.device) -> dict:
    """Mean implant DSC, HD95 (mm) and completed-skull DSC of the refined implants at the scan's resolution."""
    model.eval()
    rows = []
    for i in range(len(cases)):
        c = cases[i]
        implant = refine_implant(model, c["defective"], c["probability"], c["spacing"], patch, margin_mm, device)
        rows.append(implant_scores(implant, c["implant"], c["defective"], c["spacing"]))
    return {f"val_{key}": float(np.mean([r[key] for r in rows])) for key in rows[0]}
