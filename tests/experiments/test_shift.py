"""The shift table's inputs are what they say (a healthy skull has no implant, two defects remove more than one,
a crop blanks the low slices, thick slices triple the spacing), and the table is written; the MNI152 skull, where
nilearn is installed, is one closed vault open only below."""

import numpy as np
import pytest
from scipy import ndimage

from data_prep.manifest import Manifest
from fam_skull.experiments.shift import CROP, LARGE, THICK, build_cases, shift_table


def test_the_shifted_inputs_are_built_as_described(manifest):
    cases = build_cases(Manifest.load(manifest), anatomy=False)
    rows = {c.row for c in cases}
    assert {"eval1", "healthy", "two defects", "large defect", "field-of-view crop", "thick slices"} <= rows
    for case in cases:
        assert not (case.defective & case.implant).any()
        if case.row == "healthy":
            assert not case.implant.any() and case.defective.any()
        if case.row == "large defect":
            assert case.implant.sum() >= LARGE * (case.implant | case.defective).sum()
        if case.row == "field-of-view crop":
            low = int(round(CROP * case.defective.shape[2]))
            assert not case.defective[:, :, :low].any() and not case.implant[:, :, :low].any()
    eval1 = next(c for c in cases if c.row == "eval1")
    thick = next(c for c in cases if c.name == f"{eval1.name}_thick")
    assert thick.image.GetSpacing()[2] == pytest.approx(THICK * eval1.image.GetSpacing()[2])
    ml = {c.name: c.implant.sum() * np.prod(c.image.GetSpacing()) for c in cases}
    # the same implant, coarser: a slab is bone where any of its slices is, so no more than THICK times the volume
    assert ml[eval1.name] <= ml[thick.name] <= THICK * ml[eval1.name]


def test_the_table_is_written(tmp_path, manifest, trained_run):
    table, results = shift_table(trained_run, manifest, tmp_path, rim_mm=None, anatomy=False)
    assert table.startswith("| input | cases | implant DSC")
    assert "| healthy |" in table and "| thick slices |" in table
    assert (tmp_path / "shift.csv").read_text().count("\n") == len(results) + 1
    assert all("error" not in r for r in results)


def test_the_mni152_skull_is_a_vault_open_only_below():
    pytest.importorskip("nilearn", reason="the MNI152 template comes with nilearn (pip install nilearn)")
    from data_prep.io import to_array
    from data_prep.template import template_skull

    image = template_skull((96, 96, 48))
    skull = to_array(image) != 0
    ml = skull.sum() * np.prod(image.GetSpacing()) / 1000
    assert 350 < ml < 800  # an adult cranium without the face
    air, _ = ndimage.label(~skull)
    assert air[48, 48, 30] == air[0, 0, -1]  # the cavity opens to the outside ...
    lowest = int(np.flatnonzero(skull.any(axis=(0, 1)))[0])
    above = ~skull
    above[:, :, : lowest + 3] = False
    air, _ = ndimage.label(above)
    assert air[48, 48, 30] != air[0, 0, -1]  # ... only below: above its lowest slices the vault is closed
