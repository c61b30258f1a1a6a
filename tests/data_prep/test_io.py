"""data_prep.io: atomic writes with the umask's permissions, JSON reading with the file named, NIfTI integrity."""

import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_volume

from data_prep.io import VolumeError, atomic_path, atomic_write_text, read_image, read_json


def test_atomic_path_replaces_whole_files_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "old")
    # the mode is read from the umask at import: a fresh process with a group-only umask
    script = f"import os\nos.umask(0o027)\nfrom data_prep.io import atomic_write_text\natomic_write_text({str(target)!r}, 'new')"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]  # no temporary file left


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"a": ')
    with pytest.raises(ValueError, match=r"broken\.json: not a readable JSON file"):
        read_json(path)
    with pytest.raises(ValueError, match=r"missing\.json: not a readable JSON file"):
        read_json(tmp_path / "missing.json")


def test_nifti_is_checked_against_its_header(tmp_path):
    mask = np.zeros((12, 10, 8), np.uint8)
    mask[3:9, 2:8, 2:6] = 1
    whole = write_volume(tmp_path / "whole.nii.gz", mask)
    assert np.array_equal(np.asarray(read_image(whole).GetSize()), [12, 10, 8])
    data = whole.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) - 20])  # the trailer and the end of the stream gone
    with pytest.raises(VolumeError, match=r"cut\.nii\.gz: truncated or corrupt"):
        read_image(tmp_path / "cut.nii.gz")
    floats = mask.astype(np.float32)
    floats[0, 0, 0] = np.nan
    with pytest.raises(VolumeError, match=r"nan\.nii: 1 NaN voxel"):
        read_image(write_volume(tmp_path / "nan.nii", floats))
