"""manifest.py: roles sorted by id, file paths relative to the manifest, the volumes that are missing, subsets."""

import json

import pytest

from data_prep.manifest import Manifest, ManifestError


def _manifest(tmp_path, cases):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": "fam-skull-manifest/1", "grid": [8, 8, 4], "cases": cases}))
    return Manifest.load(tmp_path)


def test_roles_files_and_missing_volumes(tmp_path):
    (tmp_path / "grid").mkdir()
    for kind in ("defective", "complete", "implant"):
        (tmp_path / "grid" / f"b_{kind}.nii.gz").write_bytes(b"x")
    grid = {k: f"grid/{{}}_{k}.nii.gz" for k in ("defective", "complete", "implant")}
    cases = [
        {"id": "b", "role": "train", "grid": {k: v.format("b") for k, v in grid.items()}},
        {"id": "a", "role": "train", "grid": {k: v.format("a") for k, v in grid.items()}},
        {"id": "c", "role": "eval1"},
    ]
    m = _manifest(tmp_path, cases)
    assert [c["id"] for c in m.role("train")] == ["a", "b"] and [c["id"] for c in m.role("eval1", "eval2")] == ["c"]
    assert m.file(m.role("train")[1], "grid", "implant") == tmp_path / "grid" / "b_implant.nii.gz"
    assert m.missing(("train",)) == [
        f"case a grid {k} ({tmp_path / 'grid' / f'a_{k}.nii.gz'})" for k in ("defective", "complete", "implant")
    ]
    assert m.missing(("eval1",), "original") == [f"case c original {k}" for k in ("defective", "complete", "implant")]
    with pytest.raises(ManifestError, match="case c has no original implant volume"):
        m.file(m.role("eval1")[0], "original", "implant")


def test_a_role_outside_the_four_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="'cases' must be a list of records with an id and a role"):
        _manifest(tmp_path, [{"id": "a", "role": "test"}])


def test_a_subset_keeps_training_cases_and_resolves_volumes_from_its_own_folder(tmp_path):
    grid = {k: f"grid/e_{k}.nii.gz" for k in ("defective", "complete", "implant")}
    cases = [
        {"id": "t", "role": "train", "grid": {k: v.replace("e_", "t_") for k, v in grid.items()}},
        {"id": "e", "role": "eval1", "grid": grid, "original": {"implant": "original/e_implant.nii.gz"}},
        {"id": "f", "role": "eval2"},
        {"id": "g", "role": "eval2"},
    ]
    (tmp_path / "data").mkdir()
    full = _manifest(tmp_path / "data", cases)
    subset = full.subset({"e", "g"}, tmp_path / "elsewhere" / "subset.json")
    reread = Manifest.load(tmp_path / "elsewhere" / "subset.json")
    assert [c["id"] for c in reread.cases] == ["t", "e", "g"] and reread.data["grid"] == [8, 8, 4]
    for case in reread.role("eval1"):
        assert reread.file(case, "original", "implant") == (tmp_path / "data" / "original" / "e_implant.nii.gz").resolve()
        assert reread.file(case, "grid", "defective") == (tmp_path / "data" / "grid" / "e_defective.nii.gz").resolve()
    assert reread.file(reread.role("train")[0], "grid", "implant") == (tmp_path / "data" / "grid" / "t_implant.nii.gz").resolve()
    assert subset.path == tmp_path / "elsewhere" / "subset.json" and full.cases[1]["grid"] == grid  # the source is untouched
    with pytest.raises(ManifestError, match="t are not evaluation cases here"):
        full.subset({"t", "e"}, tmp_path / "bad.json")
