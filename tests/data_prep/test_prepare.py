"""Ingesting dataset trees written in the test, roles and idempotent reruns (bad input: test_bad_input.py)."""

import logging
from dataclasses import replace

import numpy as np
import pytest
from helpers import write_volume

from data_prep.defects import make_defect
from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from data_prep.prepare import PrepareOptions, prepare

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
        result = prepare(
            PrepareOptions(tmp_path / "out", "skullbreak", tmp_path / "sb", grid=GRID, val_fraction=0.25, eval_fraction=0.25, quiet=True)
        )
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
            tmp_path / "out",
            "complete",
            tmp_path / "mug",
            grid=GRID,
            defects=("sphere", "cube"),
            shift_defects=("random",),
            eval1=("skull1",),
            eval2=("skull2",),
            val_fraction=0.0,
            quiet=True,
        )
    )
    manifest = Manifest.load(result.manifest)
    roles = {c["id"]: c["role"] for c in manifest.cases}
    assert roles == {
        "skull0_sphere": "train",
        "skull0_cube": "train",
        "skull3_sphere": "train",
        "skull3_cube": "train",
        "skull1_sphere": "eval1",
        "skull1_cube": "eval1",
        "skull2_random": "eval2",
    }
    for case in manifest.role("eval1", "eval2"):
        vol = {k: to_array(read_image(manifest.file(case, "original", k))) != 0 for k in ("complete", "defective", "implant")}
        assert np.array_equal(vol["implant"], vol["complete"] & ~vol["defective"])
        assert 0.005 <= vol["implant"].sum() / vol["complete"].sum() <= 0.30
        assert read_image(manifest.file(case, "original", "complete")).GetOrigin() == pytest.approx((5.0, -3.0, 2.0))


def test_named_evaluation_skull_that_does_not_exist(tmp_path):
    from data_prep.prepare import assign_roles
    from data_prep.sources import discover

    cases, _ = discover("synthetic", count=3)
    with pytest.raises(ValueError, match="not in the dataset: nope"):
        assign_roles(cases, PrepareOptions(tmp_path, synthetic=3, eval1=("synth000", "nope")))
