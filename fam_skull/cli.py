"""The ``fam-skull`` command: a thin layer over the Python API, with the same parameter names."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("x", ",").split(",") if v)


def _names(text: str) -> tuple[str, ...]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8").replace("\n", ",")
        except OSError as e:
            raise argparse.ArgumentTypeError(f"{text[1:]}: cannot read the list ({e.strerror})") from None
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _logging(quiet: bool) -> None:
    # the console handler is what --quiet silences; run folders' log files still get every INFO line
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[console], force=True)


def _prepare_parser(p: argparse.ArgumentParser) -> None:
    from data_prep.prepare import PrepareOptions

    d = argparse.Namespace(**{f.name: f.default for f in dataclasses.fields(PrepareOptions)})
    p.add_argument("output", type=Path, help="dataset folder to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--skullbreak", type=Path, metavar="ROOT", help="SkullBreak root (complete_skull/, defective_skull/, implant/)")
    src.add_argument("--skullfix", type=Path, metavar="ROOT", help="SkullFix root (training_set/...)")
    src.add_argument("--complete", type=Path, metavar="DIR", help="folder of complete skulls; defects are generated")
    src.add_argument(
        "--pairs",
        type=Path,
        metavar="CSV_OR_DIR",
        help="CSV defective,complete[,implant][,id] or a folder with defective/ complete/ [implant/]",
    )
    src.add_argument(
        "--nnunet",
        type=Path,
        metavar="DATASET",
        help="nnU-Net v2 raw dataset (dataset.json, imagesTr/<case>_0000, labelsTr/<case>[, imagesTs, labelsTs])",
    )
    src.add_argument("--synthetic", type=int, metavar="N", help="N synthetic skulls")
    p.add_argument(
        "--nnunet-label",
        choices=["auto", "implant", "complete"],
        default=d.nnunet_label,
        help="what an nnU-Net label holds; auto: by its names in dataset.json (implant; skull, complete_skull, ...)",
    )
    p.add_argument("--synthetic-shape", type=_ints, default=None, help="grid of the synthetic skulls (default: --grid)")
    p.add_argument("--grid", type=_ints, default=d.grid, help="training grid x,y,z (default 256,256,128)")
    p.add_argument("--axial-slices", type=int, default=None, help="crop/pad to this many axial slices (top kept) before resizing")
    p.add_argument("--no-largest-component", dest="keep_largest", action="store_false", help="keep every connected component")
    p.add_argument("--input-kind", choices=["auto", "mask", "ct"], default=d.input_kind, help="auto: negative values mean CT")
    p.add_argument("--threshold", type=float, default=d.threshold, help=f"bone threshold in HU for CT (default {d.threshold:g})")
    p.add_argument("--defects", type=_names, default=d.defects, help="defect types generated for training and eval1")
    p.add_argument("--shift-defects", type=_names, default=None, help="defect types of eval2 (unseen in training)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="fraction of skulls for validation")
    p.add_argument("--eval-fraction", type=float, default=d.eval_fraction, help="fraction of skulls for evaluation")
    p.add_argument("--eval1", type=_names, default=(), help="skull ids of evaluation set 1 (comma list or @file)")
    p.add_argument("--eval2", type=_names, default=(), help="skull ids of evaluation set 2 (comma list or @file)")
    p.add_argument("--mandible", action="store_true", help="synthetic skulls get a mandible arc")
    p.add_argument(
        "--no-refine-data",
        dest="refine_data",
        action="store_false",
        help="write train/val volumes on the grid only (the refinement stage needs them at the scan's resolution)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the splits and defects (default %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="parallel processes (default %(default)s)")
    p.add_argument("--force", action="store_true", help="redo finished cases")
    p.add_argument("--strict", action="store_true", help="exit nonzero when any input was skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _run_prepare(args) -> int:
    from data_prep.prepare import PrepareOptions, prepare

    source = next(s for s in ("skullbreak", "skullfix", "complete", "pairs", "nnunet", "synthetic") if getattr(args, s) is not None)
    opts = PrepareOptions(
        output=args.output,
        source=source,
        path=None if source == "synthetic" else getattr(args, source),
        nnunet_label=args.nnunet_label,
        synthetic=args.synthetic or 0,
        synthetic_shape=args.synthetic_shape,
        grid=args.grid,
        axial_slices=args.axial_slices,
        keep_largest=args.keep_largest,
        input_kind=args.input_kind,
        threshold=args.threshold,
        defects=args.defects,
        shift_defects=args.shift_defects,
        val_fraction=args.val_fraction,
        eval_fraction=args.eval_fraction,
        eval1=args.eval1,
        eval2=args.eval2,
        mandible=args.mandible,
        refine_data=args.refine_data,
        seed=args.seed,
        workers=args.workers,
        force=args.force,
        strict=args.strict,
        quiet=args.quiet,
    )
    result = prepare(opts)
    if not result.ok:
        logging.error("nothing usable was prepared; see the reasons above")
        return 1
    return 1 if args.strict and result.skipped else 0


def _train_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (omit with --resume)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5 fam.lam=0.02")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder exactly where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _config_and_overrides(args) -> tuple[str | None, list[str]]:
    # with --resume the first positional may already be an override
    if args.config is not None and "=" in args.config:
        return None, [args.config, *args.overrides]
    return args.config, list(args.overrides)


def _run_train(args) -> int:
    from fam_skull.train import train

    config, overrides = _config_and_overrides(args)
    if config is None and args.resume is None:
        raise ValueError("give a config file or --resume RUN")
    result = train(config, overrides, resume=args.resume, quiet=args.quiet)
    logging.info("finished %s: best validation implant DSC %.4f at epoch %d", result.run, result.best_implant_dsc, result.best_epoch)
    return 0


def _number_or_off(p: argparse.ArgumentParser, flag: str, off: str, default: float | None, on_help: str, off_help: str) -> None:
    """A number option and the flag that turns its step off (the number None), as exclusive choices."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(flag, type=float, default=default, help=f"{on_help} (default %(default)s)")
    group.add_argument(off, dest=flag[2:].replace("-", "_"), action="store_const", const=None, help=off_help)


def _predict_parser(p: argparse.ArgumentParser) -> None:
    from fam_skull.predict.options import PredictOptions

    d = PredictOptions(run=Path("."), output=Path("."))
    p.add_argument("--run", type=Path, required=True, help="training run folder")
    p.add_argument("--output", type=Path, required=True, help="folder for the predictions")
    p.add_argument("--manifest", type=Path, help="prepared manifest (its evaluation sets are predicted)")
    p.add_argument("--files", type=Path, nargs="+", default=[], help="defective skull volumes (or folders of them) to predict instead")
    p.add_argument("--roles", type=_names, default=d.roles, help="manifest roles to predict (default eval1,eval2)")
    p.add_argument("--checkpoint", default=d.checkpoint, help="best, last, epoch_NNNN or a .pt path")
    p.add_argument("--min-component-mm3", type=float, default=d.min_component_mm3, help="drop smaller implant pieces")
    _number_or_off(
        p,
        "--rim-mm",
        "--keep-floating",
        d.rim_mm,
        "drop implant pieces more than this many mm from the skull",
        "keep implant pieces that touch no bone",
    )
    _number_or_off(
        p,
        "--stray-mm",
        "--keep-strays",
        d.stray_mm,
        "drop implant pieces under a tenth of the largest more than this many mm from every larger one",
        "keep small implant pieces far from the implant",
    )
    p.add_argument("--flips", action="store_true", help="test-time flips: mean of the scan and its mirror image, and their disagreement")
    _number_or_off(
        p,
        "--size-tolerance",
        "--no-size-match",
        d.size_tolerance,
        "scale a skull whose size differs from the training skulls' by more than this fraction to theirs",
        "never scale a skull",
    )
    p.add_argument("--stl", action="store_true", help="also write an STL mesh of each implant (LPS mm)")
    p.add_argument("--roi-size", type=_ints, default=None, help="sliding-window size on the grid")
    p.add_argument(
        "--stage", choices=["coarse", "refined"], default=None, help="with a refinement run: refined (default) or its coarse stage alone"
    )
    p.add_argument("--input-kind", choices=["auto", "mask", "ct"], default=d.input_kind, help="how --files are binarized, as in prepare")
    p.add_argument("--threshold", type=float, default=d.threshold, help="bone threshold in HU for CT --files (default %(default)s)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda[:N] (default %(default)s)")
    p.add_argument("--force", action="store_true", help="redo finished cases")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _run_predict(args) -> int:
    from fam_skull.predict import PredictOptions, predict

    if args.manifest is None and not args.files:
        raise ValueError("give --manifest or --files")
    opts = PredictOptions(**{k: v for k, v in vars(args).items() if k in PredictOptions.__dataclass_fields__})
    result = predict(opts)
    return 1 if result.predicted + result.reused == 0 else 0


def _evaluate_parser(p: argparse.ArgumentParser) -> None:
    from fam_skull.evaluate.options import UNITS, EvaluateOptions

    d = EvaluateOptions(predictions=[], manifest=Path("."), output=Path("."))
    p.add_argument("predictions", nargs="+", help="prediction folders, optionally label=folder")
    p.add_argument("--manifest", type=Path, required=True, help="the prepared manifest holding the ground truth")
    p.add_argument("--output", type=Path, required=True, help="report folder")
    p.add_argument("--sets", type=_names, default=d.sets, help="evaluation sets (default eval1,eval2)")
    p.add_argument("--subset", type=int, default=d.subset, help="size of the subset aggregates (default 100)")
    p.add_argument(
        "--empty", choices=["diagonal", "inf"], default=d.empty, help="score of a missing surface (default: the volume diagonal)"
    )
    p.add_argument("--units", choices=UNITS, default=d.units, help="distances in mm (default) or in voxels of each case's grid")
    p.add_argument("--workers", type=int, default=d.workers, help="parallel processes (default %(default)s)")
    p.add_argument("--force", action="store_true", help="recompute cached per-case results")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _run_evaluate(args) -> int:
    from fam_skull.evaluate import EvaluateOptions, evaluate

    opts = EvaluateOptions(**{k: v for k, v in vars(args).items() if k in EvaluateOptions.__dataclass_fields__})
    result = evaluate(opts)
    print((result.output / "table.md").read_text(encoding="utf-8"))
    if result.cases and result.failed == result.cases:
        logging.error("fam-skull evaluate: every case failed (reasons above and in %s); nothing was scored", result.output)
        return 1
    return 0


def _sweep_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="sweep YAML (sections 'sweep' and 'run')")
    p.add_argument("overrides", nargs="*", help="e.g. sweep.seeds=[0,1] run.train.epochs=50")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _run_sweep(args) -> int:
    from fam_skull.experiments.sweep import load_sweep, sweep

    config, run = load_sweep(args.config, args.overrides)
    result = sweep(config, run, quiet=args.quiet)
    print(result.table)
    return 0


def _demo_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="e.g. prepare.synthetic=6 run.train.epochs=2")
    p.add_argument("--config", type=Path, default=None, help="demo settings (default: the packaged configs/demo.yaml)")
    p.add_argument("--output", type=Path, default=Path("demo_out"), help="folder for data, runs and the report (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _run_demo(args) -> int:
    from fam_skull.experiments.demo import DEMO_CONFIG, demo

    result = demo(args.config or DEMO_CONFIG, args.output, args.overrides, quiet=args.quiet)
    print(result.table)
    print(f"report: {result.output / 'report' / 'report.md'}")
    return 0


def _flatness_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="training run folder")
    p.add_argument("--manifest", "--data", dest="data", type=Path, required=True, help="prepared manifest (--data: the old name)")
    p.add_argument("--roles", type=_names, default=("train",), help="manifest roles measured (default train)")
    p.add_argument("--probes", type=int, default=4, help="Hutchinson probes per case")
    p.add_argument("--objective", choices=["kappa", "fisher"], default="kappa", help="kappa (Hessian) or fisher (Gauss-Newton)")
    p.add_argument("--max-cases", type=int, default=None, help="measure the first N cases only")
    p.add_argument("--checkpoint", default="best", help="best, last, epoch_NNNN or a .pt path")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes (default 0)")
    p.add_argument("--output", type=Path, default=None, help="also write the result as JSON")
    p.add_argument(
        "--match",
        type=_reference,
        default=None,
        metavar="OBJECTIVE=LAMBDA",
        help="instead: the lambdas at which kappa, fisher and l2 pull on the FAM layer as hard as this one (e.g. published=0.002)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _reference(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected OBJECTIVE=LAMBDA (e.g. published=0.002), got {text!r}") from None


def _run_flatness(args) -> int:
    from fam_skull.experiments.flatness import match_strengths, measure_flatness

    if args.match is not None:
        m = match_strengths(
            args.run,
            args.data,
            args.match,
            roles=args.roles,
            probes=args.probes,
            max_cases=args.max_cases or 8,
            checkpoint=args.checkpoint,
            seed=args.seed,
            quiet=args.quiet,
        )
        for objective, lam in m.lam.items():
            print(f"{objective}: ||grad R|| / ||grad E|| = {m.ratio[objective]:.6g} per unit lambda; matched lambda = {lam:.6g}")
        return 0

    r = measure_flatness(
        args.run,
        args.data,
        roles=args.roles,
        probes=args.probes,
        max_cases=args.max_cases,
        checkpoint=args.checkpoint,
        seed=args.seed,
        output=args.output,
        quiet=args.quiet,
        objective=args.objective,
    )
    print(
        f"{r.method}: {'kappa' if r.objective == 'kappa' else 'kappa_F'}({r.layer}) = {r.kappa:.6g}, "
        f"95% CI [{r.ci95[0]:.6g}, {r.ci95[1]:.6g}] over {len(r.per_case)} cases"
    )
    return 0


def _export_parser(p: argparse.ArgumentParser) -> None:
    from fam_skull.predict.options import MIN_COMPONENT_MM3

    p.add_argument("run", type=Path, help="training run folder")
    p.add_argument("output", type=Path, help="bundle folder to write")
    p.add_argument("--checkpoint", default="best", help="best, last, epoch_NNNN or a .pt path")
    p.add_argument("--min-component-mm3", type=float, default=MIN_COMPONENT_MM3, help="implant pieces smaller than this are removed")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _run_export(args) -> int:
    from fam_skull.predict.export import export_bundle

    out = export_bundle(args.run, args.output, args.checkpoint, args.min_component_mm3)
    print(
        f"bundle: {out}\nrun it: python -m monai.bundle run --config_file {out / 'configs' / 'inference.json'} "
        f"--bundle_root {out} --input_dir DEFECTIVE_SKULLS --output_dir PREDICTIONS"
    )
    return 0


def _export_nnunet_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, help="prepared manifest (or its folder)")
    p.add_argument("output", type=Path, help="nnUNet_raw folder (the dataset goes into Dataset<id>_<name>) or a Dataset<id>_<name> folder")
    p.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id, 1-999 (default %(default)s)")
    p.add_argument("--name", default="FamSkull", help="nnU-Net dataset name (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no info lines on the console")


def _run_export_nnunet(args) -> int:
    from data_prep.nnunet import export_nnunet

    result = export_nnunet(args.manifest, args.output, args.dataset_id, args.name)
    print(f"nnU-Net dataset: {result.dataset} ({', '.join(f'{k} {v}' for k, v in result.cases.items())}; {len(result.skipped)} skipped)")
    return 0 if sum(result.cases.values()) else 1


def _import_nnunet_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("predictions", type=Path, help="folder of nnU-Net's predicted label maps (nnUNetv2_predict -o)")
    p.add_argument("--dataset", type=Path, required=True, help="the nnU-Net raw dataset the predicted images came from")
    p.add_argument("--output", type=Path, required=True, help="fam-skull predictions folder to write (for fam-skull evaluate)")
    p.add_argument("--method", default="nnU-Net", help="method label in evaluation reports (default %(default)s)")
    p.add_argument("--label", choices=["auto", "implant"], default="auto", help="auto: the label named implant in dataset.json")
    p.add_argument("--quiet", action="store_true", help="no info lines on the console")


def _run_import_nnunet(args) -> int:
    from fam_skull.predict.nnunet import import_nnunet

    result = import_nnunet(args.predictions, args.dataset, args.output, args.method, args.label)
    return 0 if result.imported else 1


def _implant_parser(p: argparse.ArgumentParser) -> None:
    from fam_skull.printing.options import ImplantOptions

    d = ImplantOptions(scan=Path("."), run=Path("."), output=Path("."))
    p.add_argument("scan", type=Path, help="a DICOM folder, NIfTI or NRRD: a CT (HU) or a skull mask")
    p.add_argument("--run", type=Path, required=True, help="a trained run (a refinement run brings its coarse run)")
    p.add_argument("--output", type=Path, required=True, help="folder for the implant, mesh and report")
    p.add_argument("--series", default=None, help="SeriesInstanceUID to read when the DICOM folder holds several")
    p.add_argument("--input-kind", choices=["auto", "ct", "mask"], default=d.input_kind, help="auto: negative values mean CT")
    p.add_argument("--threshold", type=float, default=d.threshold, help="bone threshold in HU (default %(default)s)")
    p.add_argument("--checkpoint", default=d.checkpoint, help="best, last, epoch_NNNN or a .pt path")
    p.add_argument("--stage", choices=["coarse", "refined"], default=None, help="default: refined for a refinement run")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--frame", choices=["LPS", "RAS"], default=d.frame, help="mesh coordinates (default LPS, as DICOM and 3D Slicer files)")
    p.add_argument("--smoothing", type=int, default=d.smoothing, help="Taubin smoothing passes of the mesh (0: none)")
    p.add_argument("--faces", type=int, default=None, help="decimate the mesh to about this many triangles")
    p.add_argument("--min-component-mm3", type=float, default=d.min_component_mm3, help="implant pieces smaller than this are removed")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines on the console (log files keep them)")


def _run_implant(args) -> int:
    from fam_skull.printing.options import ImplantOptions
    from fam_skull.printing.scan import implant

    result = implant(ImplantOptions(**{k: v for k, v in vars(args).items() if k in ImplantOptions.__dataclass_fields__}))
    r = result.report
    if r["implant"]:
        print(
            f"implant {r['volume_ml']:.2f} ml, {r['surface_area_cm2']:.1f} cm2, thickness {r['thickness_mm']['min']:.1f}-"
            f"{r['thickness_mm']['mean']:.1f} mm (min-mean), overlap {r['overlap_ml']:.3f} ml, largest seam "
            f"{'>= ' if r['seam_at_least'] else ''}{r['largest_seam_mm']:.1f} mm"
        )
    else:
        print("no implant: the skull shows no defect the network fills")
    print(f"report: {result.output / 'report.json'} and report.png; mesh: {result.output / 'implant.stl'}")
    return 0


COMMANDS = {  # name: (help, parser builder, runner)
    "prepare": ("preprocess skulls, make defects, write a dataset manifest", _prepare_parser, _run_prepare),
    "train": ("train baseline, FAM or SAM from a YAML config", _train_parser, _run_train),
    "predict": ("completed skulls and implants in each case's original geometry", _predict_parser, _run_predict),
    "evaluate": ("DSC, HD, HD95 per case and set, paper-style tables and plots", _evaluate_parser, _run_evaluate),
    "sweep": ("baseline, FAM at several lambdas (and SAM) over seeds: train, predict, evaluate, one table", _sweep_parser, _run_sweep),
    "demo": ("the whole pipeline on synthetic skulls, on a CPU, in minutes", _demo_parser, _run_demo),
    "flatness": ("kappa of a trained model's FAM layer over a dataset, with a 95%% interval", _flatness_parser, _run_flatness),
    "export": ("a trained coarse run as a MONAI bundle (python -m monai.bundle run)", _export_parser, _run_export),
    "implant": ("one scan (DICOM, NIfTI, NRRD; CT or mask) to a printable implant mesh and its report", _implant_parser, _run_implant),
    "export-nnunet": ("a prepared dataset as an nnU-Net v2 raw dataset with fam-skull's split", _export_nnunet_parser, _run_export_nnunet),
    "import-nnunet": ("nnU-Net's predictions as a fam-skull predictions folder", _import_nnunet_parser, _run_import_nnunet),
}


def build_parser(full: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line; only the commands in ``full`` (default: all) get their options, so ``fam-skull --help``
    and one command's parsing do not import every stage (torch, MONAI, SimpleITK)."""
    parser = argparse.ArgumentParser(prog="fam-skull", description="Skull reconstruction with FAM (relative flatness aware minimization).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, add, _) in COMMANDS.items():
        command = sub.add_parser(name, help=text)
        if full is None or name in full:
            add(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(full=[a for a in argv if a in COMMANDS][:1]).parse_args(argv)
    _logging(getattr(args, "quiet", False))
    from fam_skull.common.checkpoint import CheckpointError
    from fam_skull.train.guard import TrainingError

    try:
        return COMMANDS[args.command][2](args) or 0
    except (ValueError, FileNotFoundError) as e:  # bad input or configuration: nothing was run
        logging.error("fam-skull %s: %s", args.command, e)
        return 2
    except (CheckpointError, TrainingError, OSError) as e:  # failed while working (diverged, disk full, no permission)
        logging.error("fam-skull %s: %s", args.command, e)
        return 1
