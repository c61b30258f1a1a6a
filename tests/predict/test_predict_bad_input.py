"""Hostile and broken input to predict, table by table: each row must give its exit status and one message naming
the file, case or key; the good cases are still done, nothing lands outside the output folder, and nothing already
computed is lost (the shared checks: helpers.assert_refused). docs/reliability.md lists the same checks."""

import re
import shutil

from helpers import manifest_variant, refusal_test

from fam_skull.cli import main
from fam_skull.common.checkpoint import load_checkpoint, save_checkpoint


def _escape(data):
    data["cases"][0]["id"] = "../../ESCAPED"


def _duplicate(data):
    data["cases"].append(dict(data["cases"][0]))


# name -> (argv built from the test's folders, exit status, message pattern)
REFUSALS = {
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
            str(manifest_variant(t["tmp"], t["manifest"], _escape)),
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
            str(manifest_variant(t["tmp"], t["manifest"], _duplicate)),
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
            str(manifest_variant(t["tmp"], t["manifest"], lambda d: [d])),
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
            str(manifest_variant(t["tmp"], t["manifest"], lambda d: {k: v for k, v in d.items() if k != "cases"})),
            "--output",
            str(t["out"]),
        ],
        2,
        r"manifest\.json: 'cases' must be a list",
    ),
}


test_bad_arguments_are_refused_before_any_work = refusal_test(REFUSALS)


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
