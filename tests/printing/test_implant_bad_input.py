"""Broken input to fam-skull implant, table by table: one message naming the scan or option, nothing written
(the shared checks: helpers.assert_refused)."""

import numpy as np
from helpers import refusal_test, write_series, write_volume

from data_prep.io import from_array


def _volume(t, name, value):
    return str(write_volume(t["tmp"] / name, np.full((24, 24, 16), value, np.int16), spacing=(2.0, 2.0, 2.0)))


def _gap_series(t):
    image = from_array(np.full((24, 24, 16), -1000, np.int16))
    return str(write_series(image, t["tmp"] / "gap", skip=[7]))


def _implant(scan, *more):
    return lambda t: ["implant", scan(t), "--run", str(t["run"]), "--output", str(t["out"]), *more]


# name -> (argv built from the test's folders, exit status, message pattern)
REFUSALS = {
    "scan not found": (_implant(lambda t: str(t["tmp"] / "missing.nii.gz")), 2, r"missing\.nii\.gz: file not found"),
    "empty mask": (_implant(lambda t: _volume(t, "empty.nii.gz", 0)), 2, r"empty\.nii\.gz: the mask is empty"),
    "CT without bone": (_implant(lambda t: _volume(t, "soft.nii.gz", 40), "--input-kind", "ct"), 2, r"soft\.nii\.gz: no bone"),
    "a slice missing": (_implant(_gap_series), 2, r"gap: about 1 slice\(s\) missing between s0006\.dcm and s0008\.dcm"),
    "too few faces": (_implant(lambda t: _volume(t, "m.nii.gz", 1), "--faces", "10"), 2, r"faces: at least 100 triangles"),
    "output is a file": (
        lambda t: ["implant", _volume(t, "m.nii.gz", 1), "--run", str(t["run"]), "--output", str(t["file"])],
        2,
        r"a_file\.txt: is a file",
    ),
}

test_bad_arguments_are_refused_before_any_work = refusal_test(REFUSALS)
