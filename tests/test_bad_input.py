"""Hostile and broken inputs, table by table: each row is thrown at the command line and must give its exit status
and one message naming the file, case or key; the good cases are still done, nothing lands outside the output
folder, and nothing already computed is lost. The README's "Bad input" paragraph lists the same checks."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from helpers import TINY_UNET, write_config, write_volume

from data_prep.defects import make_defect
from data_prep.folder import LOCK_NAME, FolderError, check_folder
from data_prep.io import Geometry, from_array, read_image, to_array, write_image
from data_prep.manifest import Manifest
from fam_skull.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fam_skull.cli import main

GRID = "24,24,12"


def _cut(path: Path, fraction: float = 0.4) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _bad_files(root: Path, skull) -> Path:
    """Every kind of broken volume, named in a pairs CSV next to one good pair."""
    mask, spacing = skull
    good = write_volume(root / "good_complete.nrrd", mask.astype(np.uint8), spacing)
    defective = mask & ~make_defect(mask, spacing, "sphere", seed=0).region
    write_volume(root / "good_defective.nrrd", defective.astype(np.uint8), spacing)
    (root / "garbage.nrrd").write_bytes(b"NRRD0004\nthis is not a volume\n")
    _cut(write_volume(root / "truncated.nrrd", defective.astype(np.uint8), spacing), 0.5)
    _cut(write_volume(root / "truncated.nii.gz", defective.astype(np.uint8), spacing))  # SimpleITK reads it as zeros
    _cut(write_volume(root / "truncated.nii", defective.astype(np.uint8), spacing))
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
    "mismatch": r"small\.nrrd: size \(44, 48, 24\) / spacing .* disagree with its partner's \(48, 48, 24\)",
    "moved": r"shifted\.nrrd: origin/direction \(5\.0, 0\.0, 0\.0\) / .* differ from its partner's \(0\.0, 0\.0, 0\.0\)",
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


def _manifest_variant(tmp_path: Path, manifest: Path, change) -> Path:
    """A copy of the shared manifest (its volumes linked, not copied) changed by ``change(data)``."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    for sub in ("grid", "original"):
        if not (folder / sub).exists():
            (folder / sub).symlink_to(manifest.parent / sub)
    data = json.loads(manifest.read_text())
    data = change(data) or data
    path = folder / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def _drop_a_volume(data):
    data["cases"] = [dict(c, grid=dict(c["grid"], defective="grid/gone.nii.gz")) if c["role"] == "train" else c for c in data["cases"]]


def _escape(data):
    data["cases"][0]["id"] = "../../ESCAPED"


def _duplicate(data):
    data["cases"].append(dict(data["cases"][0]))


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
    "predict output is a file": (
        lambda t: ["predict", "--run", str(t["run"]), "--manifest", str(t["manifest"]), "--output", str(t["file"])],
        2,
        r"a_file\.txt: is a file",
    ),
    "manifest id escapes": (
        lambda t: [
            "predict",
            "--run",
            str(t["run"]),
            "--manifest",
            str(_manifest_variant(t["tmp"], t["manifest"], _escape)),
            "--output",
            str(t["out"] / "a" / "b"),
        ],
        2,
        r"case id '\.\./\.\./ESCAPED' is not a safe file name",
    ),
    "manifest id twice": (
        lambda t: [
            "predict",
            "--run",
            str(t["run"]),
            "--manifest",
            str(_manifest_variant(t["tmp"], t["manifest"], _duplicate)),
            "--output",
            str(t["out"]),
        ],
        2,
        r"manifest\.json: case id 'synth\w+' appears twice",
    ),
    "manifest is a list": (
        lambda t: [
            "predict",
            "--run",
            str(t["run"]),
            "--manifest",
            str(_manifest_variant(t["tmp"], t["manifest"], lambda d: [d])),
            "--output",
            str(t["out"]),
        ],
        2,
        r"manifest\.json: not a fam-skull manifest",
    ),
    "manifest without cases": (
        lambda t: [
            "predict",
            "--run",
            str(t["run"]),
            "--manifest",
            str(_manifest_variant(t["tmp"], t["manifest"], lambda d: {k: v for k, v in d.items() if k != "cases"})),
            "--output",
            str(t["out"]),
        ],
        2,
        r"manifest\.json: 'cases' must be a list",
    ),
    "manifest names a missing volume": (
        lambda t: [
            "train",
            str(t["config"]),
            f"data.manifest={_manifest_variant(t['tmp'], t['manifest'], _drop_a_volume)}",
            f"output={t['out']}",
        ],
        2,
        r"data\.manifest: \d+ volume\(s\) it names are missing, e\.g\. case synth\w+ grid defective \(.*gone\.nii\.gz\)",
    ),
    "infinite learning rate": (
        lambda t: ["train", str(t["config"]), "optim.lr=.inf", f"output={t['out']}"],
        2,
        r"optim\.lr: must be a finite number, got inf",
    ),
    "demo key misspelt": (
        lambda t: ["demo", "--output", str(t["out"]), "prepare.synthetc=6"],
        2,
        r"unknown key prepare\.synthetc \(did you mean prepare\.synthetic\?\)",
    ),
    "demo run key misspelt, before any case is prepared": (
        lambda t: ["demo", "--output", str(t["out"]), "run.train.epoch=3"],
        2,
        r"unknown key train\.epoch \(did you mean train\.epochs\?\)",
    ),
    "evaluate output is a file": (
        lambda t: ["evaluate", str(t["predictions"]), "--manifest", str(t["manifest"]), "--output", str(t["file"])],
        2,
        r"a_file\.txt: is a file",
    ),
    "evaluate subset 0": (
        lambda t: ["evaluate", str(t["predictions"]), "--manifest", str(t["manifest"]), "--output", str(t["out"]), "--subset", "0"],
        2,
        r"subset: must be >= 1",
    ),
    "evaluate subset -1": (
        lambda t: ["evaluate", str(t["predictions"]), "--manifest", str(t["manifest"]), "--output", str(t["out"]), "--subset", "-1"],
        2,
        r"subset: must be >= 1",
    ),
    "broken predictions index": (
        lambda t: ["evaluate", str(t["broken"]), "--manifest", str(t["manifest"]), "--output", str(t["out"])],
        2,
        r"broken/predictions\.json: not a readable JSON file",
    ),
}


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, manifest, trained_run):
    out = tmp_path_factory.mktemp("pred")
    assert main(["predict", "--run", str(trained_run), "--manifest", str(manifest), "--output", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("name", list(REFUSALS))
def test_bad_arguments_are_refused_before_any_work(name, tmp_path, manifest, trained_run, predictions, capsys):
    (tmp_path / "a_file.txt").write_text("not a folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "predictions.json").write_text('{"method": "x", "cases": ')
    config, _ = write_config(tmp_path, manifest, "baseline", TINY_UNET, "cfg")
    folders = {
        "tmp": tmp_path,
        "out": tmp_path / "out",
        "file": tmp_path / "a_file.txt",
        "run": trained_run,
        "manifest": manifest,
        "predictions": predictions,
        "broken": broken,
        "config": config,
    }
    argv, status, pattern = REFUSALS[name]
    try:
        code = main([*argv(folders), "--quiet"])
    except SystemExit as e:  # argparse: usage and the message on stderr
        code = e.code
    err = capsys.readouterr().err
    assert code == status, err
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    assert (tmp_path / "a_file.txt").read_text() == "not a folder"
    assert not (tmp_path / "out").exists() or not any(p for p in (tmp_path / "out").rglob("*") if p.name != LOCK_NAME and p.is_file())
    assert not list(tmp_path.parent.rglob("ESCAPED*"))


def test_odd_settings_that_still_run_say_what_they_mean(tmp_path, manifest, capsys):
    assert main(["prepare", str(tmp_path / "d"), "--synthetic", "2", "--grid", GRID, "--eval-fraction", "0", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"no val or eval1 or eval2 cases in .*manifest\.json", err), err
    config, _ = write_config(tmp_path, manifest, "fam", TINY_UNET, "run")
    assert main(["train", str(config), "fam.warmup_steps=1000", "train.epochs=1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"fam\.warmup_steps 1000 >= the \d+ steps of this run: FAM never switches on", err), err


def test_evaluate_exits_nonzero_when_every_case_failed(tmp_path, manifest, predictions, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(predictions, bad)
    for f in bad.glob("*_implant.nii.gz"):
        f.unlink()
    assert main(["evaluate", str(bad), "--manifest", str(manifest), "--output", str(tmp_path / "e"), "--quiet"]) == 1
    assert "every case failed" in capsys.readouterr().err
    assert (tmp_path / "e" / "table.md").is_file()  # the report of the failures is still written


def test_cached_scores_follow_the_options_and_the_reference(tmp_path, manifest, predictions):
    out = tmp_path / "e"
    eval_args = [str(predictions), "--manifest", str(manifest), "--output", str(out), "--sets", "eval1", "--quiet"]
    assert main(["evaluate", *eval_args]) == 0
    case_file = sorted((out / "baseline" / "cases").glob("*.json"))[0]
    first = json.loads(case_file.read_text())
    assert first["key"]["empty"] == "diagonal"
    assert first["prediction_files"]["implant"].startswith(str(predictions)) and first["reference_files"]["implant"].endswith(
        "_implant.nii.gz"
    )
    assert main(["evaluate", *eval_args, "--empty", "inf"]) == 0
    again = json.loads(case_file.read_text())
    assert again["key"]["empty"] == "inf"
    assert json.loads((out / "baseline" / "summary.json").read_text())["empty_policy"] == "inf"
    # a changed reference (here emptied): its case is scored again against the new file
    data = Manifest.load(manifest)
    case = next(c for c in data.cases if c["id"] == first["case"])
    copy = _manifest_variant(tmp_path, manifest, lambda d: None)
    image = read_image(data.file(case, "original", "implant"))
    moved = tmp_path / "data" / "implant_copy.nii.gz"
    write_image(from_array(np.zeros_like(to_array(image)), Geometry.of(image)), moved)
    changed = json.loads(copy.read_text())
    for c in changed["cases"]:
        if c["id"] == case["id"]:
            c["original"]["implant"] = moved.name
    copy.write_text(json.dumps(changed))
    assert (
        main(["evaluate", str(predictions), "--manifest", str(copy), "--output", str(out), "--sets", "eval1", "--empty", "inf", "--quiet"])
        == 0
    )
    rescored = json.loads(case_file.read_text())
    assert rescored["key"]["reference"]["implant"][0] == str(moved.resolve())
    assert again["implant"]["empty"] in (None, "prediction") and rescored["implant"]["empty"] in ("reference", "both")


def test_a_prediction_off_the_reference_origin_is_recorded_per_case(tmp_path, manifest, predictions):
    bad = tmp_path / "bad"
    shutil.copytree(predictions, bad)
    index = json.loads((bad / "predictions.json").read_text())
    victim = sorted(index["cases"])[0]
    path = bad / index["cases"][victim]["files"]["implant"]
    image = read_image(path)
    image.SetOrigin(tuple(np.add(image.GetOrigin(), (40.0, 0.0, 0.0))))
    sitk.WriteImage(image, str(path))
    assert main(["evaluate", str(bad), "--manifest", str(manifest), "--output", str(tmp_path / "e"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "e" / "baseline" / "summary.json").read_text())
    errors = {r["case"]: r["error"] for r in summary["metric_per_case"] if "error" in r}
    assert list(errors) == [victim]
    assert re.search(r"_implant\.nii\.gz: origin .* is 40 mm from the reference's", errors[victim])


# name -> (overrides, message pattern); each run diverges in its first epoch
DIVERGENCE = {
    "huge learning rate": (["optim.lr=1e30"], r"epoch 1 step 1: a weight reached [\d.e+]+ \(train\.max_weight 1e\+06\), training diverged"),
    "huge lambda": (
        ["method=fam", "fam.objective=kappa", "fam.lam=1e38", "train.max_nonfinite=2"],
        r"2 non-finite steps in a row \(epoch 1\)",
    ),
}


@pytest.mark.parametrize("name", list(DIVERGENCE))
def test_divergence_stops_without_saving_garbage(name, tmp_path, manifest, capsys):
    config, out = write_config(tmp_path, manifest, "baseline", TINY_UNET, "run")
    overrides, pattern = DIVERGENCE[name]
    assert main(["train", str(config), *overrides, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert "no checkpoint was written (it diverged in the first epoch)" in err
    assert not list(Path(out).rglob("*.pt"))


def test_divergence_after_a_good_epoch_keeps_it(tmp_path, manifest, capsys):
    config, out = write_config(tmp_path, manifest, "baseline", TINY_UNET, "run")
    assert main(["train", str(config), "train.epochs=1", "--quiet"]) == 0
    before = (Path(out) / "checkpoints" / "last.pt").read_bytes()
    assert main(["train", "--resume", out, "train.epochs=2", "optim.lr=1e30", "--quiet"]) == 1
    assert f"the last good checkpoint is {out}/checkpoints/last.pt" in capsys.readouterr().err
    assert (Path(out) / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_applies_the_keys_that_may_change_and_refuses_the_others(tmp_path, manifest, capsys):
    config, out = write_config(tmp_path, manifest, "baseline", TINY_UNET, "run")
    assert main(["train", str(config), "train.epochs=1", "--quiet"]) == 0
    assert main(["train", "--resume", out, "model.channels=[8,16,32]", "train.epochs=2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.channels ([4, 8, 16] -> [8, 16, 32]) cannot change on resume" in err
    assert load_checkpoint(Path(out) / "checkpoints" / "last.pt")["epoch"] == 1
    # a baseline coarse run never reads fam.* or refine.*: changing them changes nothing it was trained with
    unused = ["fam.objective=kappa", "refine.margin_mm=5"]
    assert main(["train", "--resume", out, "train.epochs=2", "optim.lr=0.0005", *unused, "--quiet"]) == 0
    state = load_checkpoint(Path(out) / "checkpoints" / "last.pt")
    assert state["epoch"] == 2
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0005)
    assert yaml.safe_load((Path(out) / "config.yaml").read_text())["optim"]["lr"] == 0.0005


# name -> how the run's last.pt is damaged, and the message
BAD_CHECKPOINTS = {
    "another architecture": (
        lambda s: s.update(model={k: torch.zeros(1) for k in s["model"]}),
        r"last\.pt: does not fit this run's config\.yaml \(missing entry or another model: Error",
    ),
    "no optimizer entry": (
        lambda s: s.pop("optimizer"),
        r"last\.pt: does not fit this run's config\.yaml \(missing entry or another model: 'optimizer'\)",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
def test_resume_from_a_checkpoint_that_does_not_fit(name, tmp_path, manifest, capsys):
    config, out = write_config(tmp_path, manifest, "baseline", TINY_UNET, "run")
    assert main(["train", str(config), "train.epochs=1", "--quiet"]) == 0
    last = Path(out) / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    damage, pattern = BAD_CHECKPOINTS[name]
    damage(state)
    save_checkpoint(state, last)
    assert main(["train", "--resume", out, "train.epochs=2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert "Traceback" not in err


def test_a_checkpoint_of_an_unknown_format_is_refused_by_predict(tmp_path, manifest, trained_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        if path.is_file():
            save_checkpoint({**load_checkpoint(path), "format": "fam-skull-checkpoint/9"}, path)
    assert main(["predict", "--run", str(run), "--manifest", str(manifest), "--output", str(tmp_path / "p"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"\.pt: checkpoint format 'fam-skull-checkpoint/9' is not one this version reads", err), err
    assert not list((tmp_path / "p").glob("*.nii.gz"))


def test_a_full_disk_while_saving_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(
        CheckpointError, match=r"last\.pt: cannot be written \(No space left on device; the previous version is unchanged\); free space"
    ):
        save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


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


def test_outputs_are_readable_as_the_umask_allows(manifest, predictions):
    import os

    mask = os.umask(0)
    os.umask(mask)
    wanted = 0o666 & ~mask
    for path in (
        manifest,
        next((manifest.parent / "grid").iterdir()),
        predictions / "predictions.json",
        next(predictions.glob("*_implant.nii.gz")),
    ):
        assert path.stat().st_mode & 0o777 == wanted, path
