"""Hostile and broken input to prepare, table by table: each row must give its exit status and one message naming
the file, case or key; the good cases are still done, nothing lands outside the output folder, and nothing already
computed is lost (the shared checks: helpers.assert_refused). docs/reliability.md lists the same checks."""

import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import cut, refusal_test, write_volume

from data_prep.defects import make_defect
from data_prep.folder import FolderError, check_folder
from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from fam_skull.cli import main

GRID = "24,24,12"


def _bad_files(root: Path, skull) -> Path:
    """Every kind of broken volume, named in a pairs CSV next to one good pair."""
    mask, spacing = skull
    good = write_volume(root / "good_complete.nrrd", mask.astype(np.uint8), spacing)
    defective = mask & ~make_defect(mask, spacing, "sphere", seed=0).region
    write_volume(root / "good_defective.nrrd", defective.astype(np.uint8), spacing)
    (root / "garbage.nrrd").write_bytes(b"NRRD0004\nthis is not a volume\n")
    cut(write_volume(root / "truncated.nrrd", defective.astype(np.uint8), spacing), 0.5)
    cut(write_volume(root / "truncated.nii.gz", defective.astype(np.uint8), spacing))  # SimpleITK reads it as zeros
    cut(write_volume(root / "truncated.nii", defective.astype(np.uint8), spacing))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20), np.uint8)), str(root / "flat.nrrd"))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.uint8), np.eye(4)), str(root / "fourd.nii.gz"))
    write_volume(root / "empty.nrrd", np.zeros(mask.shape, np.uint8), spacing)
    nan = defective.astype(np.float32)
    nan[3, 3, 3] = np.nan
    write_volume(root / "nan.nrrd", nan, spacing)
    write_volume(root / "nan.nii.gz", nan, spacing)  # SimpleITK reads NaN in NIfTI as 0
    write_volume(root / "small.nrrd", defective[:-4].astype(np.uint8), spacing)
    write_volume(root / "shifted.nrrd", defective.astype(np.uint8), spacing, origin=(5.0, 0.0, 0.0))
    rows = [
        ("ok", "good_defective.nrrd"),
        ("garbled", "garbage.nrrd"),
        ("cut", "truncated.nrrd"),
        ("cutgz", "truncated.nii.gz"),
        ("cutnii", "truncated.nii"),
        ("twod", "flat.nrrd"),
        ("fourd", "fourd.nii.gz"),
        ("blank", "empty.nrrd"),
        ("nans", "nan.nrrd"),
        ("nansgz", "nan.nii.gz"),
        ("mismatch", "small.nrrd"),
        ("moved", "shifted.nrrd"),
        ("ok", "good_defective.nrrd"),
    ]
    lines = ["id,defective,complete"] + [f"{k},{v},{good.name}" for k, v in rows]
    lines += ["orphan,good_defective.nrrd,missing_complete.nrrd", "../escape,good_defective.nrrd,good_complete.nrrd"]
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


# skipped case id (or, where no case was made, the file or CSV row) -> the reason it must give
BAD_FILES = {
    "garbled": r"garbage\.nrrd: cannot read it",
    "cut": r"truncated\.nrrd: cannot read it",
    "cutgz": r"truncated\.nii\.gz: truncated or corrupt \(EOFError",
    "cutnii": r"truncated\.nii: truncated or corrupt",
    "twod": r"flat\.nrrd: expected a 3D scalar volume, got size \(20, 20\)",
    "fourd": r"fourd\.nii\.gz: expected a 3D scalar volume, got size \(8, 8, 8, 3\)",
    "blank": r"empty\.nrrd: the mask is empty",
    "nans": r"nan\.nrrd: contains NaN voxels",
    "nansgz": r"nan\.nii\.gz: 1 NaN voxel\(s\)",
    "mismatch": r"small\.nrrd: size/spacing \(44, 48, 24\) / .* differ from \(48, 48, 24\) / .*, its partner's",
    "moved": r"shifted\.nrrd: origin \(5\.0, 0\.0, 0\.0\) is 5 mm from \(0\.0, 0\.0, 0\.0\), its partner's",
    "good_defective.nrrd": r"case id 'ok' is already taken by .*good_defective\.nrrd; rename one of them",
    "orphan": r"missing_complete\.nrrd: file not found",
    "pairs.csv:16": r"case id '\.\./escape' is not a safe file name \(it could escape the output folder\)",
}


def test_broken_volumes_are_reported_one_line_each_and_the_good_pair_is_prepared(tmp_path, skulls, capsys):
    csv = _bad_files(tmp_path, skulls[0])
    out = tmp_path / "out"
    assert main(["prepare", str(out), "--pairs", str(csv), "--grid", GRID, "--eval-fraction", "0", "--val-fraction", "0", "--quiet"]) == 0
    err = capsys.readouterr().err
    manifest = Manifest.load(out)
    assert [c["id"] for c in manifest.cases] == ["ok"]
    skipped = {s["file"].split("/")[-1]: s["reason"] for s in manifest.data["skipped"]}
    assert set(skipped) == set(BAD_FILES)
    for name, pattern in BAD_FILES.items():
        assert re.search(pattern, skipped[name]), (name, skipped[name])
        assert sum(name in line and "skipped" in line for line in err.splitlines()) >= 1
    assert not any(tmp_path.rglob("*escape*"))
    assert main(["prepare", str(out), "--pairs", str(csv), "--grid", GRID, "--quiet", "--strict"]) == 1
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text("defective,complete\nempty.nrrd,good_complete.nrrd\n")
    assert main(["prepare", str(tmp_path / "out2"), "--pairs", str(only_bad), "--grid", GRID, "--quiet"]) == 1


def test_names_that_collide_after_cleaning_keep_the_first_and_name_both(tmp_path, skulls, capsys):
    mask, spacing = skulls[0]
    src = tmp_path / "skulls"
    for name in ("col b.nii.gz", "col_b.nii.gz", "dup.nii.gz", "dup.nrrd", "solo.nrrd"):
        write_volume(src / name, mask.astype(np.uint8), spacing)
    out = tmp_path / "out"
    assert (
        main(
            [
                "prepare",
                str(out),
                "--complete",
                str(src),
                "--grid",
                GRID,
                "--defects",
                "sphere",
                "--eval-fraction",
                "0",
                "--val-fraction",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    ids = [c["id"] for c in Manifest.load(out).cases]
    assert sorted(ids) == ["col_b_sphere", "dup_sphere", "solo_sphere"]
    skipped = {s["file"].split("/")[-1]: s["reason"] for s in Manifest.load(out).data["skipped"]}
    assert re.search(r"case id 'col_b' is already taken by .*col b\.nii\.gz", skipped["col_b.nii.gz"])
    assert re.search(r"case id 'dup' is already taken by .*dup\.nii\.gz", skipped["dup.nrrd"])
    assert len(list((out / "grid").glob("col_b_sphere_*"))) == 3


def test_grid_volumes_partition_the_complete_skull_exactly(manifest):
    data = Manifest.load(manifest)
    for case in data.cases:
        volumes = {k: to_array(read_image(data.file(case, "grid", k))).astype(bool) for k in ("defective", "complete", "implant")}
        assert not (volumes["defective"] & volumes["implant"]).any(), case["id"]
        assert np.array_equal(volumes["defective"] | volumes["implant"], volumes["complete"]), case["id"]
        assert volumes["implant"].any(), case["id"]


# name -> (argv built from the test's folders, exit status, message pattern)
REFUSALS = {
    "grid of zeros": (
        lambda t: ["prepare", str(t["out"]), "--synthetic", "2", "--grid", "0,0,0"],
        2,
        r"grid: three sizes x,y,z of at least 2 voxels, got 0,0,0",
    ),
    "grid of two sizes": (
        lambda t: ["prepare", str(t["out"]), "--synthetic", "2", "--grid", "32,32"],
        2,
        r"grid: three sizes .* got 32,32",
    ),
    "grid beyond memory": (
        lambda t: ["prepare", str(t["out"]), "--synthetic", "2", "--grid", "5000,5000,5000"],
        2,
        r"grid: 1\.25e\+11 voxels need about \d+ GiB per case, this machine has",
    ),
    "negative synthetic count": (
        lambda t: ["prepare", str(t["out"]), "--synthetic", "-3"],
        2,
        r"synthetic: the number of skulls must be >= 1, got -3",
    ),
    "evaluation list file missing": (
        lambda t: ["prepare", str(t["out"]), "--synthetic", "2", "--eval1", "@" + str(t["tmp"] / "missing.txt")],
        2,
        r"missing\.txt: cannot read the list",
    ),
    "prepare output is a file": (
        lambda t: ["prepare", str(t["file"]), "--synthetic", "2"],
        2,
        r"output .*a_file\.txt: is a file, not a folder",
    ),
}


test_bad_arguments_are_refused_before_any_work = refusal_test(REFUSALS)


def test_odd_settings_that_still_run_say_what_they_mean(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "d"), "--synthetic", "2", "--grid", GRID, "--eval-fraction", "0", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"no val or eval1 or eval2 cases in .*manifest\.json", err), err


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))  # root may write anywhere
    assert main(["prepare", str(locked), "--synthetic", "2", "--grid", GRID, "--quiet"]) == 2
    assert f"output {locked}: not writable; fix its permissions" in capsys.readouterr().err
    assert not list(locked.iterdir())
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FolderError, match="cannot create it"):
        check_folder(tmp_path / "a_file" / "sub")


def test_a_folder_in_use_is_refused_and_freed_when_its_holder_dies(tmp_path, capsys):
    out = tmp_path / "data"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from data_prep.folder import claim\n"
            "with claim(sys.argv[1], 'prepare'):\n    print('held', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["prepare", str(out), "--synthetic", "2", "--grid", GRID, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert re.search(rf"output .*data: in use by fam-skull prepare \(pid {holder.pid} on .*, since .*\); wait for it", err), err
        assert not (out / "manifest.json").exists()
    finally:
        holder.kill()  # like a crash: no cleanup runs
        holder.wait()
    time.sleep(0.1)
    assert main(["prepare", str(out), "--synthetic", "2", "--grid", GRID, "--eval-fraction", "0", "--quiet"]) == 0
