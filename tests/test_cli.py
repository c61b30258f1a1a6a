"""The command line: every command documents itself, and bad usage exits with a message, not a traceback."""

from pathlib import Path

import pytest

from fam_skull.cli import COMMANDS, build_parser, main
from fam_skull.predict.options import PredictOptions


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in COMMANDS])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: fam-skull" in capsys.readouterr().out


def test_missing_inputs_are_reported(capsys, tmp_path):
    assert main(["train"]) == 2
    assert "give a config file or --resume RUN" in capsys.readouterr().err
    assert main(["predict", "--run", str(tmp_path), "--output", str(tmp_path / "p")]) == 2
    assert "give --manifest or --files" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml there" in capsys.readouterr().err


def test_help_does_not_import_torch_or_monai():
    """--help, top level and per command, answers without importing torch or MONAI (seconds on a cold start)."""
    import subprocess
    import sys

    for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
        script = (
            f"import sys\nfrom fam_skull.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'monai'})\n"
            "print('heavy:', heavy)"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert "heavy: []" in done.stdout, (argv, done.stdout[-500:], done.stderr[-500:])


def test_a_wheel_carries_what_the_demo_needs(tmp_path):
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "src"  # built from a copy: setuptools leaves build/ next to the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    for name in ("fam_skull", "data_prep"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("fam_skull-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"fam_skull/configs/{p.name}" for p in (root / "configs").glob("*.yaml")}
    assert "fam_skull/configs/demo.yaml" in shipped and shipped <= names
    stages = {
        f"fam_skull/{stage}/__init__.py" for stage in ("common", "metrics", "networks", "train", "predict", "evaluate", "experiments")
    }
    assert {"fam_skull/fam/flatness.py", "data_prep/prepare.py", *stages} <= names


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], {k: getattr(PredictOptions(run=Path("r"), output=Path("o")), k) for k in ("rim_mm", "stray_mm", "size_tolerance")}),
        (["--keep-floating", "--keep-strays", "--no-size-match"], {"rim_mm": None, "stray_mm": None, "size_tolerance": None}),
        (["--rim-mm", "2", "--stray-mm", "25", "--size-tolerance", "0.1"], {"rim_mm": 2.0, "stray_mm": 25.0, "size_tolerance": 0.1}),
    ],
)
def test_predict_s_post_processing_steps_take_a_number_or_turn_off(flags, expected):
    args = build_parser(["predict"]).parse_args(["predict", "--run", "r", "--output", "o", *flags])
    assert {k: getattr(args, k) for k in expected} == expected


def test_a_post_processing_step_cannot_be_set_and_turned_off_at_once(capsys):
    with pytest.raises(SystemExit):
        build_parser(["predict"]).parse_args(["predict", "--run", "r", "--output", "o", "--stray-mm", "25", "--keep-strays"])
    assert "not allowed with argument" in capsys.readouterr().err
