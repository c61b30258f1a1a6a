"""data_prep.folder: a claim is re-entrant within a process, refused to another, and freed when its holder ends."""

import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.folder import LOCK_NAME, FolderError, check_folder, claim


def test_a_claim_is_reentrant_in_one_process_and_released_after(tmp_path):
    with claim(tmp_path / "out", "sweep") as held, claim(tmp_path / "out", "evaluate"):  # a sweep's evaluate
        assert held == (tmp_path / "out").resolve() and (held / LOCK_NAME).is_file()
    script = f"from data_prep.folder import claim\nwith claim({str(tmp_path / 'out')!r}, 'train'):\n    print('ok')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.stdout.strip() == "ok", done.stderr


def test_check_folder_without_creating(tmp_path):
    assert not check_folder(tmp_path / "new" / "run", create=False).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderError, match="is a file, not a folder"):
        check_folder(tmp_path / "file")
    with pytest.raises(FolderError, match="is not a writable folder"):
        check_folder(tmp_path / "file" / "run", create=False)
