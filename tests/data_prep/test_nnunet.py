"""nnU-Net v2 datasets in and out: a round trip through export-nnunet and prepare --nnunet, the exported files
against nnU-Net's schema (and nnunetv2's own readers where installed), plain nnU-Net datasets, and malformed ones."""

import json
import logging
import re

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import write_volume

from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from data_prep.nnunet import CASES_FILE, NnunetError, export_nnunet, label_values
from data_prep.phantom import synthetic_skull
from data_prep.prepare import PrepareOptions, prepare

GRID = (24, 24, 12)
OBLIQUE = tuple(sitk.VersorTransform((0.3, 0.2, 0.9), 0.35).GetMatrix())
ORIENTATIONS = ["LPS", "RAI", OBLIQUE, "PLI", "LPS"]  # flipped and permuted files of upright skulls; a tilted one


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Five complete skulls in several orientations, prepared with generated defects (both evaluation sets)."""
    root = tmp_path_factory.mktemp("nnunet")
    for i, orientation in enumerate(ORIENTATIONS):
        mask, spacing, _ = synthetic_skull(10 + i, (40, 40, 20))
        path = write_volume(root / "complete" / f"s{i}.nii.gz", mask.astype(np.uint8), spacing, (5.0 * i, -3.0, 12.0))
        image = sitk.ReadImage(str(path))
        if isinstance(orientation, str):
            image = sitk.DICOMOrient(image, orientation)
        else:
            image.SetDirection(orientation)
        sitk.WriteImage(image, str(path))
    opts = PrepareOptions(
        root / "prepared", "complete", root / "complete", grid=GRID, defects=("sphere", "bilateral"), shift_defects=("random",),
        val_fraction=0.25, eval_fraction=0.25, quiet=True,
    )  # fmt: skip
    prepare(opts)
    return root, opts


def _volumes(manifest: Manifest, case: dict, space: str) -> dict:
    out = {}
    for kind, rel in case[space].items():
        image = read_image(manifest.root / rel)
        out[kind] = (to_array(image), image.GetSize(), (image.GetSpacing(), image.GetOrigin(), image.GetDirection()))
    return out


def _same_geometry(a, b):
    """Equal up to the float precision NIfTI stores a direction and origin in."""
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_round_trip_gives_the_same_cases_voxel_for_voxel_and_in_geometry(prepared):
    root, opts = prepared
    result = export_nnunet(opts.output, root / "raw")
    assert result.dataset == root / "raw" / "Dataset501_FamSkull" and not result.skipped
    back = prepare(PrepareOptions(root / "back", "nnunet", result.dataset, grid=GRID, quiet=True))
    assert not back.skipped
    first, second = Manifest.load(opts.output), Manifest.load(back.manifest)
    key = ("id", "skull", "role", "defect")
    assert [tuple(c[k] for k in key) for c in second.cases] == [tuple(c[k] for k in key) for c in first.cases]
    assert {c["role"] for c in first.cases} == {"train", "val", "eval1", "eval2"}
    oblique = set()
    for a, b in zip(first.cases, second.cases):
        assert a["layout"]["orientation"] == b["layout"]["orientation"] and a["layout"]["grid"] == b["layout"]["grid"]
        for space in ("original", "canonical"):
            ga, gb = a["layout"][space], b["layout"][space]
            assert ga["shape"] == gb["shape"]
            _same_geometry([ga[k] for k in ("spacing", "origin", "direction")], [gb[k] for k in ("spacing", "origin", "direction")])
        if a["layout"]["original"]["direction"] != [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]:
            oblique.add(a["skull"])
        for space in ("grid", "original"):
            va, vb = _volumes(first, a, space), _volumes(second, b, space)
            assert va.keys() == vb.keys() == {"defective", "complete", "implant"}
            for kind in va:
                np.testing.assert_array_equal(va[kind][0], vb[kind][0], err_msg=f"{a['id']} {space} {kind}")
                assert va[kind][1] == vb[kind][1]
                _same_geometry(va[kind][2], vb[kind][2])
    assert oblique == {"s1", "s2", "s3"}  # the flipped, oblique and permuted skulls went through


def test_exported_files_follow_nnunets_schema(prepared):
    root, opts = prepared
    result = export_nnunet(opts.output, root / "raw2" / "Dataset042_Skulls")
    folder = result.dataset
    assert folder.name == "Dataset042_Skulls"
    info = json.loads((folder / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "noNorm"} and info["labels"] == {"background": 0, "implant": 1}
    assert info["file_ending"] == ".nii.gz"
    images = sorted(p.name for p in (folder / "imagesTr").iterdir())
    labels = sorted(p.name for p in (folder / "labelsTr").iterdir())
    assert info["numTraining"] == len(images) == len(labels) == result.cases["train"] + result.cases["val"]
    assert [name.replace("_0000", "") for name in images] == labels
    manifest = Manifest.load(opts.output)
    splits = json.loads((folder / "splits_final.json").read_text())
    rows = {line.split(",")[0]: line.split(",") for line in (folder / CASES_FILE).read_text().splitlines()[1:]}
    assert len(splits) == 1 and set(splits[0]) == {"train", "val"}
    for role in ("train", "val"):
        assert sorted(rows[n][1] for n in splits[0][role]) == [c["id"] for c in manifest.role(role)]
    tests = sorted(p.name.replace("_0000.nii.gz", "") for p in (folder / "imagesTs").iterdir())
    assert sorted(rows[n][1] for n in tests) == [c["id"] for c in manifest.role("eval1", "eval2")]
    case = manifest.role("train")[0]
    nnunet_id = next(n for n, row in rows.items() if row[1] == case["id"])
    label = read_image(folder / "labelsTr" / f"{nnunet_id}.nii.gz")
    reference = read_image(manifest.file(case, "original", "implant"))
    np.testing.assert_array_equal(to_array(label), to_array(reference))
    assert set(np.unique(to_array(label)).tolist()) == {0, 1}


def test_nnunetv2_reads_the_export(prepared):
    pytest.importorskip("nnunetv2", reason="nnunetv2 is an optional extra (pip install fam-skull[nnunet])")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    root, opts = prepared
    folder = export_nnunet(opts.output, root / "raw3").dataset
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on any inconsistency
    dataset = get_filenames_of_train_images_and_targets(str(folder))
    splits = json.loads((folder / "splits_final.json").read_text())
    assert sorted(splits[0]["train"] + splits[0]["val"]) == sorted(dataset)


def _plain(root, labels, image_values=False):
    """A plain nnU-Net dataset (no fam-skull case list): three training cases, one labelled and one unlabelled
    test case; the label holds implant (and skull) values as ``labels`` names them."""
    values = {name: value for name, value in labels.items() if name != "background"}
    for split, names in (("Tr", ("a", "b", "c")), ("Ts", ("t", "u"))):
        for i, name in enumerate(names):
            mask, spacing, _ = synthetic_skull(20 + i + 5 * (split == "Ts"), (40, 40, 20))
            cut = np.zeros_like(mask)
            cut[:, :, 14:] = True
            implant = mask & cut
            defective = mask & ~cut
            image = np.where(defective, 700, -1000).astype(np.int16) if image_values else defective.astype(np.uint8)
            write_volume(root / f"images{split}" / f"{name}_0000.nii.gz", image, spacing)
            if name == "u":
                continue
            label = np.zeros(mask.shape, np.uint8)
            if "skull" in values:
                label[defective] = values["skull"]
            label[implant] = values.get("implant", 1)
            write_volume(root / f"labels{split}" / f"{name}.nii.gz", label, spacing)
    info = {"channel_names": {"0": "CT" if image_values else "mask"}, "labels": labels, "numTraining": 3, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(info))
    return root


@pytest.mark.parametrize(
    "labels",
    [
        {"background": 0, "implant": 1},
        {"background": 0, "skull": 1, "implant": 2},
        {"background": 0, "complete_skull": [1, 2], "implant": 2},
    ],
    ids=["implant", "skull and implant", "regions"],
)
def test_a_plain_nnunet_dataset_is_prepared_with_its_test_cases_as_evaluation(tmp_path, labels, caplog):
    root = _plain(tmp_path / "Dataset007_Plain", labels)
    with caplog.at_level(logging.WARNING):
        result = prepare(PrepareOptions(tmp_path / "out", "nnunet", root, grid=GRID, eval_fraction=0, val_fraction=0.34, quiet=True))
    manifest = Manifest.load(result.manifest)
    roles = {c["id"]: c["role"] for c in manifest.cases}
    assert sorted(roles[k] for k in "abc") == ["train", "train", "val"] and roles["t"] == "eval1" and len(roles) == 4
    assert "u_0000.nii.gz" in caplog.text and "without a label" in caplog.text
    case = manifest.role("eval1")[0]
    mask, _, _ = synthetic_skull(25, (40, 40, 20))
    implant = to_array(read_image(manifest.file(case, "original", "implant"))).astype(bool)
    expected = mask.copy()
    expected[:, :, :14] = False
    np.testing.assert_array_equal(implant, expected)
    complete = to_array(read_image(manifest.file(case, "original", "complete"))).astype(bool)
    np.testing.assert_array_equal(complete, mask)


def test_a_ct_image_is_read_as_ct_and_the_label_choice_is_named(tmp_path):
    root = _plain(tmp_path / "Dataset008_CT", {"background": 0, "foreground": 1}, image_values=True)
    result = prepare(PrepareOptions(tmp_path / "out", "nnunet", root, grid=GRID, quiet=True, nnunet_label="implant"))
    manifest = Manifest.load(result.manifest)
    case = next(c for c in manifest.cases if c["id"] == "t")
    implant = to_array(read_image(manifest.file(case, "original", "implant"))).astype(bool)
    mask, _, _ = synthetic_skull(25, (40, 40, 20))
    expected = mask.copy()
    expected[:, :, :14] = False
    np.testing.assert_array_equal(implant, expected)
    with pytest.raises(NnunetError, match="none of the labels.*--nnunet-label implant"):
        prepare(PrepareOptions(tmp_path / "out2", "nnunet", root, grid=GRID, quiet=True))


def test_label_values_by_name_and_by_choice():
    where = "dataset.json"
    assert label_values({"background": 0, "Implant": 2, "skull": 1}, "auto", where) == ((2,), (1,))
    assert label_values({"background": 0, "complete": [1, 2], "implant": 2}, "auto", where) == ((2,), (1,))
    assert label_values({"background": 0, "x": 1, "y": 2}, "complete", where) == ((), (1, 2))
    with pytest.raises(NnunetError, match="label values must be integers"):
        label_values({"background": 0, "implant": "one"}, "auto", where)


def _good_case(root, name, seed, channels=2, origin=(0.0, 0.0, 0.0)):
    mask, spacing, _ = synthetic_skull(seed, (40, 40, 20))
    defective = mask.copy()
    defective[:, :, 14:] = False
    for c in range(channels):
        write_volume(root / "imagesTr" / f"{name}_{c:04d}.nii.gz", defective.astype(np.uint8), spacing)
    write_volume(root / "labelsTr" / f"{name}.nii.gz", (mask & ~defective).astype(np.uint8), spacing, origin)
    return mask, defective, spacing


def test_malformed_cases_get_one_message_each_and_the_good_cases_are_prepared(tmp_path, capsys):
    from fam_skull.cli import main

    root = tmp_path / "Dataset009_Broken"
    for i, name in enumerate(("good1", "good2", "good3")):
        _good_case(root, name, 30 + i)
    mask, defective, spacing = _good_case(root, "nochannel", 40)
    (root / "imagesTr" / "nochannel_0001.nii.gz").unlink()
    _good_case(root, "moved", 41, origin=(7.0, 0.0, 0.0))
    _good_case(root, "badvalue", 42)
    write_volume(root / "labelsTr" / "badvalue.nii.gz", (mask & ~defective).astype(np.uint8) * 5, spacing)
    write_volume(root / "labelsTr" / "orphan.nii.gz", (mask & ~defective).astype(np.uint8), spacing)
    write_volume(root / "imagesTr" / "wrongend_0000.nrrd", defective.astype(np.uint8), spacing)
    write_volume(root / "imagesTr" / "unnumbered.nii.gz", defective.astype(np.uint8), spacing)
    write_volume(root / "imagesTr" / "nolabel_0000.nii.gz", defective.astype(np.uint8), spacing)
    write_volume(root / "imagesTr" / "nolabel_0001.nii.gz", defective.astype(np.uint8), spacing)
    info = {
        "channel_names": {"0": "mask", "1": "copy"},
        "labels": {"background": 0, "implant": 1},
        "numTraining": 6,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(info))
    out = tmp_path / "out"
    assert main(["prepare", str(out), "--nnunet", str(root), "--grid", "24,24,12", "--eval-fraction", "0", "--quiet"]) == 0
    err = capsys.readouterr().err
    expected = {
        "nochannel": r"nochannel_0000\.nii\.gz: channel file nochannel_0001\.nii\.gz is missing",
        "moved": r"moved\.nii\.gz: origin .* from .*, its image's; an nnU-Net label must share its image's grid",
        "badvalue": r"badvalue\.nii\.gz: values \[5\] are not labels of dataset\.json",
        "orphan": r"labelsTr/orphan\.nii\.gz: a label without an image \(imagesTr/orphan_0000\.nii\.gz\)",
        "wrongend": r"wrongend_0000\.nrrd: does not end in dataset\.json's file_ending '\.nii\.gz'",
        "unnumbered": r"unnumbered\.nii\.gz: not named <case>_XXXX\.nii\.gz",
        "nolabel": r"nolabel_0000\.nii\.gz: no label .*labelsTr/nolabel\.nii\.gz; add it or remove the image",
    }
    for name, pattern in expected.items():
        assert len(re.findall(pattern, err)) == 1, name
    manifest = Manifest.load(out)
    assert sorted(c["id"] for c in manifest.cases) == ["good1", "good2", "good3"]
    assert len(manifest.data["skipped"]) == len(expected)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (None, r"Dataset010_X/dataset\.json: not found; an nnU-Net v2 raw dataset has dataset\.json"),
        ({"file_ending": ".png"}, r"dataset\.json: file_ending '\.png' is not one of"),
        ({"labels": None}, r"dataset\.json: lacks labels"),
        ({"labels": {"background": 0, "tumour": 1}}, r"none of the labels \['background', 'tumour'\] is named as an implant"),
    ],
    ids=["no dataset.json", "wrong file_ending", "no labels", "unknown label"],
)
def test_a_broken_dataset_json_is_refused_naming_the_file(tmp_path, capsys, change, pattern):
    from fam_skull.cli import main

    root = tmp_path / "Dataset010_X"
    _good_case(root, "good", 50, channels=1)
    if change is not None:
        info = {"channel_names": {"0": "mask"}, "labels": {"background": 0, "implant": 1}, "numTraining": 1, "file_ending": ".nii.gz"}
        info = {k: v for k, v in (info | change).items() if v is not None}
        (root / "dataset.json").write_text(json.dumps(info))
    assert main(["prepare", str(tmp_path / "out"), "--nnunet", str(root), "--grid", "24,24,12", "--quiet"]) == 2
    assert re.search(pattern, capsys.readouterr().err)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_dataset_key_lists_the_files_and_a_missing_one_is_named(tmp_path, capsys):
    from fam_skull.cli import main

    root = tmp_path / "Dataset011_Listed"
    mask, defective, spacing = _good_case(root, "a", 60, channels=1)
    _good_case(root, "b", 61, channels=1)
    (root / "imagesTr").rename(root / "scans")
    (root / "labelsTr").rename(root / "masks")
    entries = {c: {"images": [f"scans/{c}_0000.nii.gz"], "label": f"masks/{c}.nii.gz"} for c in ("a", "b")}
    entries["c"] = {"images": ["scans/c_0000.nii.gz"], "label": "masks/c.nii.gz"}
    info = {"channel_names": {"0": "mask"}, "labels": {"background": 0, "implant": 1}, "numTraining": 3, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(info | {"dataset": entries}))
    out = tmp_path / "out"
    assert main(["prepare", str(out), "--nnunet", str(root), "--grid", "24,24,12", "--eval-fraction", "0", "--quiet"]) == 0
    assert re.search(r"scans/c_0000\.nii\.gz: named by dataset\.json for case c but not found", capsys.readouterr().err)
    manifest = Manifest.load(out)
    assert sorted(c["id"] for c in manifest.cases) == ["a", "b"]
    case = next(c for c in manifest.cases if c["id"] == "a")
    implant = to_array(read_image(manifest.file(case, "original", "implant"))).astype(bool)
    np.testing.assert_array_equal(implant, mask & ~defective)
