"""sources.py: case ids that are safe file names, volume stems, and the finders' handling of names."""

import pytest

from data_prep.sources import check_id, safe_id, stem


@pytest.mark.parametrize("name, expected", [("col b", "col_b"), ("../x", "x"), ("ä1", "1"), ("...", "case"), ("001", "001")])
def test_safe_id(name, expected):
    assert safe_id(name) == expected
    assert check_id(safe_id(name)) == expected


@pytest.mark.parametrize("bad", ["../../ESCAPED", "a/b", "", ".hidden", "a..b", "x\\y"])
def test_check_id_refuses_what_could_leave_a_folder(bad):
    with pytest.raises(ValueError, match="not a safe file name"):
        check_id(bad)


def test_stem_knows_double_suffixes(tmp_path):
    assert [stem(tmp_path / n) for n in ("a.nii.gz", "b.nii", "c.nrrd", "d.mha", "e.txt")] == ["a", "b", "c", "d", "e"]
