"""Ingesting dataset trees written in the test, roles, idempotent reruns, and every kind of bad input."""

import logging
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_volume

from data_prep.defects import make_defect
from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from data_prep.prepare import PrepareOptions, prepare
from fam_skull.cli import main

GRID = (24, 24, 12)


def _tree(root, skulls, layout):
    """Write skulls as a SkullBreak (types bilateral, random_1) or SkullFix tree of NRRDs."""
    for i, (mask, spacing) in enumerate(skulls):
        name = f"{i:03d}" if layout == "skullbreak" else ("100" if i == 3 else f"{i:03d}")
        base = root if layout == "skullbreak" else root / "training_set"
        write_volume(base / "complete_skull" / f"{name}.nrrd", mask.astype(np.uint8), spacing)
        types = ("bilateral", "random") if layout == "skullbreak" else ("sphere",)
        for kind in types:
            region = make_defect(mask, spacing, kind, seed=i).region
            folder = {"random": "random_1"}.get(kind, kind)
            sub = (folder,) if layout == "skullbreak" else ()
            write_volume(base.joinpath("defective_skull", *sub, f"{name}.nrrd"), (mask & ~region).astype(np.uint8), spacing)
            write_volume(base.joinpath("implant", *sub, f"{name}.nrrd"), (mask & region).astype(np.uint8) * 255, spacing)


def test_skullbreak_tree(tmp_path, skulls, caplog):
    _tree(tmp_path / "sb", skulls, "skullbreak")
    lonely = tmp_path / "sb" / "defective_skull" / "bilateral" / "009.nrrd"
    write_volume(lonely, skulls[0][0].astype(np.uint8))
    with caplog.at_level(logging.WARNING):
        result = prepare(PrepareOptions(tmp_path / "out", "skullbreak", tmp_path / "sb", grid=GRID, val_fraction=0.25, eval_fraction=0.25, quiet=True))
    manifest = Manifest.load(result.manifest)
    roles = {c["id"]: (c["role"], c["defect"]) for c in manifest.cases}
    eval_skull = next(c["skull"] for c in manifest.cases if c["role"] == "eval1")
    assert roles[f"{eval_skull}_bilateral"] == ("eval1", "bilateral")
    assert roles[f"{eval_skull}_random_1"] == ("eval2", "random_1")
    others = [f"{i:03d}" for i in range(4) if f"{i:03d}" != eval_skull]
    assert sorted(roles[f"{s}_bilateral"][0] for s in others) == ["train", "train", "val"]
    assert all(f"{s}_random_1" not in roles for s in others)  # held-out type never trains
    assert [e["file"] for e in manifest.data["excluded"]] == sorted(f"{s}_random_1" for s in others)
    assert "009.nrrd" in caplog.text and "no partner complete_skull/009.nrrd" in caplog.text
    assert manifest.data["skipped"][0]["file"].endswith("009.nrrd")
    # given implants are read (binarized 255 -> 1) and kept in the original space for evaluation
    case = next(c for c in manifest.cases if c["role"] == "eval2")
    implant = to_array(read_image(manifest.file(case, "original", "implant")))
    i = int(case["skull"])
    expected = skulls[i][0] & make_defect(skulls[i][0], skulls[i][1], "random", seed=i).region
    assert np.array_equal(implant != 0, expected)
    assert to_array(read_image(manifest.file(case, "grid", "defective"))).shape == GRID


def test_skullfix_tree_and_idempotent_rerun(tmp_path, skulls):
    _tree(tmp_path / "sf", skulls, "skullfix")
    opts = PrepareOptions(tmp_path / "out", "skullfix", tmp_path / "sf", grid=GRID, val_fraction=0.0, eval_fraction=0.34, quiet=True)
    first = prepare(opts)
    manifest = Manifest.load(tmp_path / "out")
    assert {c["id"]: c["role"] for c in manifest.cases}["100"] == "eval2"
    assert sorted(c["role"] for c in manifest.cases) == ["eval1", "eval2", "train", "train"]
    assert all(c["defect"] == "skullfix" for c in manifest.cases)
    again = prepare(opts)
    assert (first.prepared, first.reused, again.prepared, again.reused) == (4, 0, 0, 4)
    regrid = prepare(replace(opts, grid=(16, 16, 8)))  # another grid: nothing finished can be reused
    assert (regrid.prepared, regrid.reused) == (4, 0)
    case = Manifest.load(tmp_path / "out").cases[0]
    assert to_array(read_image(Manifest.load(tmp_path / "out").file(case, "grid", "complete"))).shape == (16, 16, 8)


def test_generated_defects_and_explicit_sets(tmp_path, skulls):
    for i, (mask, spacing) in enumerate(skulls):
        write_volume(tmp_path / "mug" / f"skull{i}.nii.gz", mask.astype(np.uint8), spacing, origin=(5.0, -3.0, 2.0))
    result = prepare(
        PrepareOptions(
            tmp_path / "out", "complete", tmp_path / "mug", grid=GRID, defects=("sphere", "cube"),
            shift_defects=("random",), eval1=("skull1",), eval2=("skull2",), val_fraction=0.0, quiet=True,
        )
    )
    manifest = Manifest.load(result.manifest)
    roles = {c["id"]: c["role"] for c in manifest.cases}
    assert roles == {
        "skull0_sphere": "train", "skull0_cube": "train", "skull3_sphere": "train", "skull3_cube": "train",
        "skull1_sphere": "eval1", "skull1_cube": "eval1", "skull2_random": "eval2",
    }
    for case in manifest.role("eval1", "eval2"):
        vol = {k: to_array(read_image(manifest.file(case, "original", k))) != 0 for k in ("complete", "defective", "implant")}
        assert np.array_equal(vol["implant"], vol["complete"] & ~vol["defective"])
        assert 0.005 <= vol["implant"].sum() / vol["complete"].sum() <= 0.30
        assert read_image(manifest.file(case, "original", "complete")).GetOrigin() == pytest.approx((5.0, -3.0, 2.0))


def _bad_inputs(root, skull):
    mask, spacing = skull
    good = write_volume(root / "good_complete.nrrd", mask.astype(np.uint8), spacing)
    defective = mask & ~make_defect(mask, spacing, "sphere", seed=0).region
    write_volume(root / "good_defective.nrrd", defective.astype(np.uint8), spacing)
    (root / "garbage.nrrd").write_bytes(b"NRRD0004\nthis is not a volume\n")
    whole = write_volume(root / "whole.nrrd", defective.astype(np.uint8), spacing)
    (root / "truncated.nrrd").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20), np.uint8)), str(root / "flat.nrrd"))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.uint8), np.eye(4)), str(root / "fourd.nii.gz"))
    write_volume(root / "empty.nrrd", np.zeros(mask.shape, np.uint8), spacing)
    nan = defective.astype(np.float32)
    nan[3, 3, 3] = np.nan
    write_volume(root / "nan.nrrd", nan, spacing)
    write_volume(root / "small.nrrd", defective[:-4].astype(np.uint8), spacing)
    write_volume(root / "shifted.nrrd", defective.astype(np.uint8), spacing, origin=(5.0, 0.0, 0.0))
    rows = {
        "ok": "good_defective.nrrd",
        "garbled": "garbage.nrrd",
        "cut": "truncated.nrrd",
        "twod": "flat.nrrd",
        "fourd": "fourd.nii.gz",
        "blank": "empty.nrrd",
        "nans": "nan.nrrd",
        "mismatch": "small.nrrd",
        "moved": "shifted.nrrd",
    }
    lines = ["id,defective,complete"] + [f"{k},{v},{good.name}" for k, v in rows.items()]
    lines += ["orphan,good_defective.nrrd,missing_complete.nrrd", "../escape,good_defective.nrrd,good_complete.nrrd"]
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


EXPECTED = {
    "garbled": r"garbage\.nrrd: cannot read it",
    "cut": r"truncated\.nrrd: cannot read it",
    "twod": r"flat\.nrrd: expected a 3D scalar volume, got size \(20, 20\)",
    "fourd": r"fourd\.nii\.gz: expected a 3D scalar volume, got size \(8, 8, 8, 3\)",
    "blank": r"empty\.nrrd: the mask is empty",
    "nans": r"nan\.nrrd: contains NaN voxels",
    "mismatch": r"small\.nrrd: size \(44, 48, 24\) / spacing .* disagree with its partner's \(48, 48, 24\)",
    "moved": r"shifted\.nrrd: origin/direction \(5\.0, 0\.0, 0\.0\) / .* differ from its partner's \(0\.0, 0\.0, 0\.0\)",
    "orphan": r"missing_complete\.nrrd: file not found",
    "pairs.csv:12": r"case id '\.\./escape' is not a safe file name \(it could escape the output folder\)",
}


def test_bad_inputs_are_reported_and_the_rest_is_prepared(tmp_path, skulls, capsys):
    import re

    csv = _bad_inputs(tmp_path, skulls[0])
    code = main(["prepare", str(tmp_path / "out"), "--pairs", str(csv), "--grid", "24,24,12", "--eval-fraction", "0", "--val-fraction", "0", "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    manifest = Manifest.load(tmp_path / "out")
    assert [c["id"] for c in manifest.cases] == ["ok"]
    skipped = {s["file"].split("/")[-1]: s["reason"] for s in manifest.data["skipped"]}
    assert set(skipped) == set(EXPECTED)
    for key, pattern in EXPECTED.items():
        assert re.search(pattern, skipped[key]), (key, skipped[key])
        assert sum(key in line and "skipped" in line for line in err.splitlines()) == 1
    assert not any((tmp_path / "out").glob("*escape*")) and not (tmp_path / "escape.json").exists()
    code = main(["prepare", str(tmp_path / "out"), "--pairs", str(csv), "--grid", "24,24,12", "--quiet", "--strict"])
    assert code == 1
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text("defective,complete\nempty.nrrd,good_complete.nrrd\n")
    assert main(["prepare", str(tmp_path / "out2"), "--pairs", str(only_bad), "--grid", "24,24,12", "--quiet"]) == 1


def test_named_evaluation_skull_that_does_not_exist(tmp_path):
    from data_prep.prepare import assign_roles
    from data_prep.sources import discover

    cases, _ = discover("synthetic", count=3)
    with pytest.raises(ValueError, match="not in the dataset: nope"):
        assign_roles(cases, PrepareOptions(tmp_path, synthetic=3, eval1=("synth000", "nope")))
