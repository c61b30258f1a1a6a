"""progress.py: a bar on a terminal, none when stderr is a file or pipe (a redirected log), none with quiet."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

SCRIPT = "from data_prep.progress import progress\nfor _ in progress(range(40), quiet={quiet}, desc='work'): pass\n"


def _stderr(quiet: bool, terminal: bool) -> str:
    code = SCRIPT.format(quiet=quiet)
    if not terminal:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal: tqdm sizes bars to it
    try:
        subprocess.run([sys.executable, "-c", code], stderr=child, stdout=subprocess.DEVNULL, check=True)
        os.close(child)
        out = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            out += chunk
        return out.decode(errors="replace")
    finally:
        os.close(main)


@pytest.mark.parametrize(("quiet", "terminal", "bar"), [(False, True, True), (True, True, False), (False, False, False)])
def test_bars_only_on_a_terminal_and_never_when_quiet(quiet, terminal, bar):
    err = _stderr(quiet, terminal)
    assert ("work: 100%" in err) is bar, err
