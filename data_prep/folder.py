"""Output folders: checked before any work, and held by one process at a time.

A second ``fam-skull`` process writing into a folder in use would interleave files and the last writer would
win, so every command claims its output folder with an advisory lock (``flock`` on ``.fam-skull.lock``). The
operating system drops the lock when the process ends, however it ends, so a crash never leaves a folder stuck.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".fam-skull.lock"
_held: dict[Path, int] = {}  # folders this process holds -> depth (a sweep's claim covers the demo's)


class FolderError(ValueError):
    """An output folder that cannot be used; the message names it and what to do."""


def check_folder(path: str | os.PathLike, what: str = "output", create: bool = True) -> Path:
    """``path`` as a folder that can be written: created if needed, or with ``create=False`` only checked (the
    nearest existing folder above it must be writable), so a check before any work leaves nothing behind.

    Raises:
        FolderError: it is a file, cannot be created, or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FolderError(f"{what} {path}: is a file, not a folder; choose a folder")
    if not create and not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise FolderError(f"{what} {path}: cannot create it ({parent} is not a writable folder); choose a folder you can write")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FolderError(f"{what} {path}: cannot create it ({e.strerror}); choose a folder you can write") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FolderError(f"{what} {path}: not writable; fix its permissions or choose another folder")
    return path


@contextmanager
def claim(path: str | os.PathLike, command: str) -> Iterator[Path]:
    """Check ``path`` (:func:`check_folder`) and hold it for this process while the block runs.

    Raises:
        FolderError: the folder cannot be used, or another process holds it (named with its pid and command).
    """
    path = check_folder(path).resolve()
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    lock = path / LOCK_NAME
    try:
        handle = open(lock, "a+")
    except OSError as e:
        raise FolderError(f"output {path}: cannot create {LOCK_NAME} ({e.strerror}); choose a folder you can write") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                info = json.loads(handle.read())
                holder = f"{info['command']} (pid {info['pid']} on {info['host']}, since {info['since']})"
            except (ValueError, KeyError, TypeError):
                holder = "another process"
            raise FolderError(f"output {path}: in use by {holder}; wait for it to finish or choose another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "command": f"fam-skull {command}",
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
        )
        handle.flush()
        _held[path] = 1
        try:
            yield path
        finally:
            del _held[path]
            fcntl.flock(handle, fcntl.LOCK_UN)
