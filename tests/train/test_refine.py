"""The refinement stage: boxes around the defect, pasting back into the original geometry, and a refined run
trained and predicted from the CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import TINY_UNET, write_config

from data_prep.defects import DefectError, limits
from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from data_prep.preprocess import Layout
from fam_skull.cli import main
from fam_skull.networks.implant import defect_box, refine_implant
from fam_skull.networks.trained import load_run
from fam_skull.train.refine_data import fresh_cases, load_cases, training_items, training_set


def test_box_is_the_bounding_box_grown_by_the_margin_in_mm_and_clipped():
    mask = np.zeros((40, 30, 20), bool)
    mask[10:15, 3:6, 12:19] = True
    box = defect_box(mask, spacing=(0.5, 2.0, 1.5), margin_mm=3.0)
    # 3 mm is 6 voxels along x, 1.5 -> 2 along y, 2 along z; y and z reach the border and are clipped
    assert box == (slice(4, 21), slice(1, 8), slice(10, 20))
    assert defect_box(np.zeros((4, 4, 4), bool), (1, 1, 1), 5.0) is None


class _FromProbability(torch.nn.Module):
    """A stand-in refinement network: its implant is its second input channel (the coarse probability)."""

    def forward(self, x):
        p = x[:, 1:2]
        return torch.cat([0.5 - p, p - 0.5], dim=1)


@pytest.mark.parametrize("margin_mm", [0.0, 6.0, 500.0])
def test_refined_implant_is_pasted_back_in_an_oblique_flipped_scan(margin_mm):
    rng = np.random.default_rng(0)
    shape = (30, 26, 22)
    angle = np.deg2rad(20)
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-1, 1, -1])  # rotated about z, x and z flipped
    implant = np.zeros(shape[::-1], np.uint8)  # (z, y, x) for SimpleITK
    implant[3:9, 20:26, 4:10] = 1  # touches the y border
    defective = (rng.random(shape[::-1]) > 0.8).astype(np.uint8) * (1 - implant)
    images = {}
    for name, array in (("implant", implant), ("defective", defective)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.7, 0.9, 1.3))
        image.SetOrigin((12.0, -40.0, 7.5))
        image.SetDirection(direction.ravel().tolist())
        images[name] = image
    layout = Layout.plan(images["implant"], (16, 16, 12))
    assert layout.orientation != "LPS"
    canonical = {k: layout.canonical_array(v) != 0 for k, v in images.items()}
    refined = refine_implant(
        _FromProbability(),
        canonical["defective"],
        canonical["implant"].astype(np.float32),
        layout.canonical.spacing,
        (8, 8, 8),
        margin_mm,
        "cpu",
    )
    back = layout.to_original(refined)
    assert back.GetSize() == images["implant"].GetSize()
    np.testing.assert_allclose(back.GetOrigin(), images["implant"].GetOrigin())
    np.testing.assert_allclose(back.GetDirection(), images["implant"].GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), implant)


def test_fresh_refinement_defects_partition_the_skull_are_seeded_and_feed_the_grid_as_prepare_does(manifest, trained_run):
    coarse = load_run(trained_run)[0]
    m = Manifest.load(manifest)
    cases = load_cases(m, "train", coarse, "cpu")
    for case, loaded in zip(m.role("train"), cases, strict=True):
        # the route a fresh defect takes to the grid is prepare's own: the prepared grid input, recomputed
        grid = to_array(read_image(m.file(case, "grid", "defective"))) != 0
        np.testing.assert_array_equal(loaded["layout"].to_grid(loaded["defective"]), grid)
    kinds = ["sphere", "anywhere"]
    fresh = fresh_cases(cases, kinds, 2, seed=3, coarse=coarse, device="cpu")
    again = fresh_cases(cases, kinds, 2, seed=3, coarse=coarse, device="cpu")
    other = fresh_cases(cases, kinds, 2, seed=4, coarse=coarse, device="cpu")
    assert len(fresh) == 2 * len(cases) and [c["id"] for c in fresh] == [c["id"] for c in again]
    for c, a in zip(fresh, again, strict=True):
        np.testing.assert_array_equal(c["implant"], a["implant"])
    assert any(not np.array_equal(c["implant"], o["implant"]) for c, o in zip(fresh, other, strict=True))
    by_id = {c["id"]: c for c in cases}
    for c in fresh:
        source, kind = by_id[c["id"].split("/")[0]], c["id"].split("/")[1][:-1]
        complete = source["defective"] | source["implant"]
        assert kind in kinds
        assert not (c["defective"] & c["implant"]).any() and np.array_equal(c["defective"] | c["implant"], complete)
        low, high = limits(kind)
        assert low <= c["implant"].sum() / complete.sum() <= high
        assert not (c["probability"] * c["defective"]).any()  # the coarse channel is zero on the given bone


def test_the_training_set_made_a_case_at_a_time_equals_the_one_made_from_every_whole_case(manifest, trained_run):
    coarse = load_run(trained_run)[0]
    m = Manifest.load(manifest)
    cases = load_cases(m, "train", coarse, "cpu")
    kinds = ["sphere", "anywhere"]
    whole = training_items(cases + fresh_cases(cases, kinds, 2, seed=3, coarse=coarse, device="cpu"), 4.0)
    streamed = training_set(m, coarse, "cpu", 4.0, kinds, fresh=2, seed=3)
    assert len(streamed) == len(whole) == 3 * len(cases)
    for a, b in zip(streamed, whole, strict=True):
        for key in ("image", "implant"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_a_fresh_draw_with_no_acceptable_defect_is_left_out_and_counted(manifest, trained_run, monkeypatch, caplog):
    from fam_skull.train import refine_data

    coarse = load_run(trained_run)[0]
    cases = load_cases(Manifest.load(manifest), "train", coarse, "cpu")
    cut = refine_data.make_defect

    def no_cube(complete, spacing, kind, seed):
        if kind == "cube":
            raise DefectError("no cube fits")
        return cut(complete, spacing, kind, seed)

    monkeypatch.setattr(refine_data, "make_defect", no_cube)
    with caplog.at_level("WARNING", logger="fam_skull.train"):
        fresh = fresh_cases(cases, ["sphere", "cube"], 3, seed=0, coarse=coarse, device="cpu")
    cubes = [(i, k) for i in range(len(cases)) for k in range(3) if np.random.default_rng([0, i, k]).integers(2) == 1]
    assert 0 < len(cubes) < 3 * len(cases)  # the seed draws both kinds, so the count below can be wrong
    assert len(fresh) == 3 * len(cases) - len(cubes) and all("/sphere" in c["id"] for c in fresh)
    assert f"{len(cubes)} of {3 * len(cases)} draws found no acceptable defect" in caplog.text


def test_refinement_run_from_the_cli(tmp_path, manifest, trained_run):
    """Train a refinement stage on the tiny coarse run, predict both stages, and check what they write."""
    path, out = write_config(
        tmp_path,
        manifest,
        "baseline",
        TINY_UNET,
        "refined",
        refine={"coarse_run": str(trained_run), "patch": [16, 16, 16], "fresh_defects": 1},
        train={"epochs": 1},
    )
    path.write_text(path.read_text() + "stage: refine\n")
    assert main(["train", str(path), "--quiet"]) == 0
    for stage in ("refined", "coarse"):
        assert (
            main(["predict", "--run", out, "--manifest", str(manifest), "--output", str(tmp_path / stage), "--stage", stage, "--quiet"])
            == 0
        )
    assert main(["predict", "--run", str(trained_run), "--manifest", str(manifest), "--output", str(tmp_path / "alone"), "--quiet"]) == 0
    m = Manifest.load(manifest)
    index = json.loads((tmp_path / "refined" / "predictions.json").read_text())
    assert index["stage"] == "refined" and not index["failed"]
    for case in m.role("eval1", "eval2"):
        truth = read_image(m.file(case, "original", "implant"))
        refined = read_image(tmp_path / "refined" / f"{case['id']}_implant.nii.gz")
        assert refined.GetSize() == truth.GetSize() and np.allclose(refined.GetSpacing(), truth.GetSpacing())
        defective = to_array(read_image(m.file(case, "original", "defective"))) != 0
        assert not (to_array(refined).astype(bool) & defective).any()  # never on the bone it was given
        # the coarse stage of a refinement run is the coarse run itself
        np.testing.assert_array_equal(
            to_array(read_image(tmp_path / "coarse" / f"{case['id']}_implant.nii.gz")),
            to_array(read_image(tmp_path / "alone" / f"{case['id']}_implant.nii.gz")),
        )
    assert (
        main(
            [
                "predict",
                "--run",
                str(trained_run),
                "--manifest",
                str(manifest),
                "--output",
                str(tmp_path / "x"),
                "--stage",
                "refined",
                "--quiet",
            ]
        )
        == 2
    )
