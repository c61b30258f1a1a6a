"""manifest.py: roles sorted by id, file paths relative to the manifest, the volumes that are missing."""

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
