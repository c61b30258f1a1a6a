"""fam-skull against nnU-Net v2 on the same cases, nnU-Net trained for the same wall-clock time as fam-skull's run.

    pip install -c benchmarks/constraints.txt -e ".[nnunet]"
    python benchmarks/nnunet_compare.py --manifest DEMO/data/manifest.json --run DEMO/runs/baseline_refined_s0 --work WORK

1. ``export-nnunet``: fam-skull's train and val cases (original resolution) as an nnU-Net raw dataset, fam-skull's
   split as fold 0, the evaluation sets as imagesTs.
2. nnU-Net's own fingerprint, planning and preprocessing (``3d_fullres`` unless ``--configuration``).
3. nnU-Net's default trainer (``nnUNetTrainer``: its network, loss, augmentation, SGD with poly schedule), fold 0, on
   the CPU, for ``--budget`` seconds (default: fam-skull's training time, both stages, read from the runs' logs).
   nnU-Net's schedule is 1000 epochs of 250 iterations; here the epochs are shortened to ``--iterations`` so that the
   poly schedule runs its course inside the budget: the number of epochs (and the poly schedule's length) is set from
   the first epoch's measured time, and training stops at the budget whatever that estimate. Nothing of nnU-Net's is
   changed but these counts.
4. nnU-Net's predictor (``nnUNetPredictor``: sliding window, Gaussian weighting, mirroring unless ``--no-mirroring``)
   and fam-skull's predictor on the evaluation cases (all, or every case of the first ``--skulls`` held-out skulls:
   each skull brings every defect type of both sets), each timed per case in this process.
5. ``import-nnunet`` and ``fam-skull evaluate`` score both against the same references: one table per set and per
   defect type (implant DSC, boundary DSC, HD95), written to WORK/comparison.md and printed.

Reruns reuse the export, the preprocessing, nnU-Net's trained weights (WORK/nnunet_weights.pt; ``--retrain`` trains
again) and each case nnU-Net has already predicted, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

DATASET_ID = 951
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ")


def run_seconds(run: Path) -> float:
    """Training wall time of a fam-skull run from its log: each start to the last line before the next start (a
    resumed run counts every segment)."""
    total, start, last = 0.0, None, None
    for line in (run / "log.txt").read_text(encoding="utf-8").splitlines():
        match = STAMP.match(line)
        if not match:
            continue
        t = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        if " starting " in line:
            total += (last - start) if start is not None else 0.0
            start = t
        last = t
    return total + ((last - start) if start is not None else 0.0)


def training_seconds(run: Path) -> tuple[float, list[Path]]:
    """fam-skull's training time for ``run`` and the coarse run it refines, if any."""
    import yaml

    runs = [run]
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    coarse = (config.get("refine") or {}).get("coarse_run")
    if config.get("stage") == "refine" and coarse:
        runs.insert(0, Path(coarse))
    return sum(run_seconds(r) for r in runs), runs


def _quiet_stdout(log):
    """nnU-Net prints every step to stdout: into the work folder's log instead."""
    return contextlib.redirect_stdout(log)


def train_nnunet(dataset: str, configuration: str, budget: float, iterations: int, log) -> dict:
    import torch

    trainer = _trainer(dataset, configuration)
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = max(1, iterations // 5)
    trainer.save_every = 10**9  # the final checkpoint only
    start = time.perf_counter()
    with _quiet_stdout(log):
        trainer.on_train_start()
        epochs = done = 0
        while epochs < trainer.num_epochs and time.perf_counter() - start < budget:
            epoch_start = time.perf_counter()
            trainer.on_epoch_start()
            trainer.on_train_epoch_start()
            outputs = []
            for _ in range(trainer.num_iterations_per_epoch):  # the budget is checked every iteration, not every epoch
                if outputs and time.perf_counter() - start >= budget:
                    break
                outputs.append(trainer.train_step(next(trainer.dataloader_train)))
            trainer.on_train_epoch_end(outputs)
            with torch.no_grad():
                trainer.on_validation_epoch_start()
                val = [trainer.validation_step(next(trainer.dataloader_val)) for _ in range(trainer.num_val_iterations_per_epoch)]
                trainer.on_validation_epoch_end(val)
            trainer.on_epoch_end()
            epochs += 1
            done += len(outputs)
            if epochs == 1:  # the poly schedule ends where the budget does, at the first epoch's pace; rounded up,
                # the budget check above cuts the last epoch short, so the whole budget is used
                left = budget - (time.perf_counter() - start)
                trainer.num_epochs = 1 + max(0, math.ceil(left / (time.perf_counter() - epoch_start)))
                trainer.lr_scheduler.max_steps = trainer.num_epochs
        trainer.on_train_end()
    return trainer, {
        "seconds": time.perf_counter() - start,
        "epochs": epochs,
        "planned_epochs": trainer.num_epochs,
        "iterations": done,
        "patch": list(trainer.configuration_manager.patch_size),
        "batch": trainer.batch_size,
    }


def _trainer(dataset: str, configuration: str):
    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    folder = join(nnUNet_preprocessed, dataset)
    plans, dataset_json = load_json(join(folder, "nnUNetPlans.json")), load_json(join(folder, "dataset.json"))
    plans["continue_training"] = False  # what get_trainer_from_args adds
    return nnUNetTrainer(plans=plans, configuration=configuration, fold=0, dataset_json=dataset_json, device=torch.device("cpu"))


def save_training(trainer, record: dict, work: Path) -> None:
    """The trained weights as plain tensors (nnU-Net's own checkpoint needs unpickling to load) and the training
    record, both written atomically."""
    import torch

    from data_prep.io import atomic_path, atomic_write_text

    with atomic_path(work / "nnunet_weights.pt", ".pt") as tmp, open(tmp, "wb") as f:
        torch.save(trainer.network.state_dict(), f)
    atomic_write_text(work / "nnunet_training.json", json.dumps(record, indent=1))


def load_training(dataset: str, configuration: str, work: Path):
    """The trainer of an earlier run of this script, its weights loaded without unpickling, and its record."""
    import torch

    trainer = _trainer(dataset, configuration)
    trainer.initialize()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # (nnU-Net spells it so) sets the mirroring axes for prediction
    trainer.network.load_state_dict(torch.load(work / "nnunet_weights.pt", map_location="cpu", weights_only=True))
    return trainer, json.loads((work / "nnunet_training.json").read_text(encoding="utf-8"))


def predict_nnunet(trainer, images: dict[str, Path], output: Path, mirroring: bool, timing: Path, log) -> float:
    """nnU-Net's predictor on the trainer's weights (built as nnU-Net's own final validation builds it) for
    ``images`` (nnU-Net case id -> image), one case at a time; a case already in ``timing`` (a JSON record of seconds
    per case, rewritten after each case) is kept. Mean seconds per case. ``mirroring=False`` is nnU-Net's own
    ``--disable_tta``: one forward pass per tile instead of eight, for machines where eight would not finish."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from data_prep.io import atomic_write_text

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring, device=trainer.device, allow_tqdm=False)
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor.manual_initialization(
        trainer.network,
        trainer.plans_manager,
        trainer.configuration_manager,
        [trainer.network.state_dict()],
        trainer.dataset_json,
        type(trainer).__name__,
        trainer.inference_allowed_mirroring_axes,
    )
    output.mkdir(parents=True, exist_ok=True)
    seconds = json.loads(timing.read_text(encoding="utf-8")) if timing.is_file() else {}
    ending = trainer.dataset_json["file_ending"]
    for case, image in sorted(images.items()):
        if case in seconds and (output / f"{case}{ending}").is_file():
            continue
        start = time.perf_counter()
        with _quiet_stdout(log):
            predictor.predict_from_files_sequential([[str(image)]], [str(output / case)], save_probabilities=False, overwrite=True)
        seconds[case] = time.perf_counter() - start
        atomic_write_text(timing, json.dumps(seconds, indent=1))
        print(f"nnU-Net predicted {case} in {seconds[case]:.0f} s ({len(seconds)} of {len(images)})", flush=True)
    return sum(seconds[c] for c in images) / max(1, len(images))


def predict_famskull(run: Path, manifest: Path, output: Path, min_component_mm3: float) -> float:
    from data_prep.manifest import Manifest
    from fam_skull.predict import PredictOptions, predict

    cases = len(Manifest.load(manifest).role("eval1", "eval2"))
    start = time.perf_counter()
    predict(PredictOptions(run=run, output=output, manifest=manifest, min_component_mm3=min_component_mm3, force=True, quiet=True))
    return (time.perf_counter() - start) / max(1, cases)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def table(summaries: dict, manifest: Path, rows: dict) -> str:
    """Markdown: one row per method and set, then per defect type: implant DSC, boundary DSC, HD95 (mm)."""
    from data_prep.manifest import Manifest

    defect = {c["id"]: c.get("defect") for c in Manifest.load(manifest).cases}
    lines = [
        "| method | training | set | cases | implant DSC | boundary DSC | HD95 (mm) | prediction s/case |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_type = ["| method | set | defect type | cases | implant DSC | boundary DSC | HD95 (mm) |", "|---|---|---|---|---|---|---|"]
    for label, summary in summaries.items():
        cases = [c for c in summary["metric_per_case"] if "error" not in c]
        failed = len(summary["metric_per_case"]) - len(cases)
        for role in ("eval1", "eval2"):
            chosen = [c for c in cases if c["set"] == role]
            m = {k: _mean([c["implant"][k] for c in chosen]) for k in ("dsc", "bdsc", "hd95")}
            lines.append(
                f"| {label} | {rows[label]['training']} | {role} | {len(chosen)}{f' ({failed} failed)' if failed else ''} | "
                f"{m['dsc']:.3f} | {m['bdsc']:.3f} | {m['hd95']:.2f} | {rows[label]['predict']:.2f} |"
            )
            for kind in sorted({defect[c["case"]] for c in chosen}):
                typed = [c for c in chosen if defect[c["case"]] == kind]
                t = {k: _mean([c["implant"][k] for c in typed]) for k in ("dsc", "bdsc", "hd95")}
                by_type.append(f"| {label} | {role} | {kind} | {len(typed)} | {t['dsc']:.3f} | {t['bdsc']:.3f} | {t['hd95']:.2f} |")
    return "\n".join(lines) + "\n\nPer defect type:\n\n" + "\n".join(by_type) + "\n"


def held_out_cases(manifest: Path, skulls: int | None, work: Path) -> tuple[Path, set[str]]:
    """The manifest both methods are scored on and its evaluation case ids: all of them, or every evaluation case
    of the first ``skulls`` held-out skulls (sorted by skull id) in a subset manifest in ``work``."""
    from data_prep.manifest import Manifest

    full = Manifest.load(manifest)
    cases = full.role("eval1", "eval2")
    if skulls is None:
        return manifest, {c["id"] for c in cases}
    chosen = sorted({c.get("skull", c["id"]) for c in cases})[:skulls]
    ids = {c["id"] for c in cases if c.get("skull", c["id"]) in chosen}
    return full.subset(ids, work / f"manifest_{skulls}_skulls.json").path, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True, help="the prepared dataset fam-skull's run trained on")
    parser.add_argument("--run", type=Path, required=True, help="fam-skull's run (a refinement run brings its coarse run)")
    parser.add_argument("--work", type=Path, required=True, help="folder for nnU-Net's raw, preprocessed and results folders")
    parser.add_argument("--budget", type=float, default=None, help="nnU-Net's training seconds (default: fam-skull's)")
    parser.add_argument("--configuration", default="3d_fullres", help="nnU-Net configuration (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=25, help="iterations per nnU-Net epoch (nnU-Net: 250)")
    parser.add_argument("--no-mirroring", action="store_true", help="nnU-Net's --disable_tta (8x fewer forward passes)")
    parser.add_argument("--skulls", type=int, default=None, help="score the first N held-out skulls' cases (default: all)")
    parser.add_argument("--retrain", action="store_true", help="train nnU-Net again instead of reusing WORK's weights")
    parser.add_argument("--workers", type=int, default=2, help="nnU-Net's augmentation and preprocessing processes")
    parser.add_argument("--min-component-mm3", type=float, default=None, help="fam-skull's predict option (default: predict's)")
    parser.add_argument("--label", default=None, help="nnU-Net's row label (default: nnU-Net, its iterations)")
    args = parser.parse_args()
    work = args.work.resolve()
    for name in ("raw", "preprocessed", "results"):
        os.environ[f"nnUNet_{name}"] = str(work / f"nnUNet_{name}")
        (work / f"nnUNet_{name}").mkdir(parents=True, exist_ok=True)
    os.environ["nnUNet_n_proc_DA"] = str(args.workers)
    import torch

    torch.set_num_threads(multiprocessing.cpu_count())  # what nnUNetv2_train does on a CPU
    from data_prep.io import atomic_write_text
    from data_prep.nnunet import FILE_ENDING, export_nnunet, read_cases_file
    from fam_skull.evaluate import EvaluateOptions, evaluate
    from fam_skull.predict.nnunet import import_nnunet
    from fam_skull.predict.options import MIN_COMPONENT_MM3

    fam_seconds, fam_runs = training_seconds(args.run)
    budget = args.budget or fam_seconds
    log = open(work / "nnunet.log", "a", encoding="utf-8")
    dataset = export_nnunet(args.manifest, work / "nnUNet_raw", DATASET_ID, "FamSkullCompare").dataset
    scored, ids = held_out_cases(args.manifest, args.skulls, work)
    start = time.perf_counter()
    planned = (work / "nnUNet_preprocessed" / dataset.name / f"nnUNetPlans_{args.configuration}").is_dir()
    if not planned:
        from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

        with _quiet_stdout(log):
            extract_fingerprints([DATASET_ID], num_processes=args.workers, check_dataset_integrity=True, show_progress_bar=False)
            plan_experiments([DATASET_ID])
            preprocess([DATASET_ID], configurations=(args.configuration,), num_processes=(args.workers,))
    planning = "reused" if planned else f"took {time.perf_counter() - start:.0f} s"
    names = ", ".join(r.name for r in fam_runs)
    print(f"fam-skull trained {fam_seconds:.0f} s ({names}); nnU-Net gets {budget:.0f} s; its planning {planning}")
    if args.retrain or not (work / "nnunet_training.json").is_file():
        trainer, trained = train_nnunet(dataset.name, args.configuration, budget, args.iterations, log)
        save_training(trainer, trained, work)
    else:
        trainer, trained = load_training(dataset.name, args.configuration, work)
        print(f"nnU-Net's weights from {work / 'nnunet_weights.pt'} (--retrain trains again)")
    per_iteration = trained["seconds"] / max(1, trained["iterations"])
    print(
        f"nnU-Net {args.configuration}: patch {trained['patch']}, batch {trained['batch']}, {trained['epochs']} of "
        f"{trained['planned_epochs']} planned epochs x {args.iterations} iterations = {trained['iterations']} iterations in "
        f"{trained['seconds']:.0f} s ({per_iteration:.1f} s/iteration; nnU-Net's default schedule is 1000 x 250 = 250000 "
        f"iterations, {250000 / max(1, trained['iterations']):.0f}x more)",
        flush=True,
    )
    nnunet_out = work / "nnunet_predictions"
    images = {n: dataset / "imagesTs" / f"{n}_0000{FILE_ENDING}" for n, row in read_cases_file(dataset).items() if row["id"] in ids}
    if args.retrain:
        (work / "nnunet_seconds.json").unlink(missing_ok=True)
    nnunet_case = predict_nnunet(trainer, images, nnunet_out, not args.no_mirroring, work / "nnunet_seconds.json", log)
    import_nnunet(nnunet_out, dataset, work / "nnunet_as_famskull", method="nnU-Net")
    fam_case = predict_famskull(args.run, scored, work / "famskull_predictions", args.min_component_mm3 or MIN_COMPONENT_MM3)
    label = args.label or f"nnU-Net ({trained['iterations']} it.)"
    import matplotlib

    matplotlib.rcdefaults()  # nnU-Net's progress plot sets seaborn's style and font scale for the whole process
    result = evaluate(
        EvaluateOptions(
            predictions=[f"fam-skull={work / 'famskull_predictions'}", f"{label}={work / 'nnunet_as_famskull'}"],
            manifest=scored,
            output=work / "report",
            force=True,
            quiet=True,
        )
    )
    rows = {
        "fam-skull": {"training": f"{fam_seconds:.0f} s", "predict": fam_case},
        label: {"training": f"{trained['seconds']:.0f} s, {trained['iterations']} iterations", "predict": nnunet_case},
    }
    text = table(result.summaries, scored, rows)
    subset = f", the {len(ids)} evaluation cases of the first {args.skulls} held-out skulls" if args.skulls else ""
    header = (
        f"fam-skull: {args.run} ({', '.join(r.name for r in fam_runs)}). nnU-Net v2: nnUNetTrainer, {args.configuration}, "
        f"patch {trained['patch']}, batch {trained['batch']}, fold 0 = fam-skull's train/val split, "
        f"{trained['epochs']} epochs x {args.iterations} iterations (default 1000 x 250), CPU, {multiprocessing.cpu_count()} cores, "
        f"prediction {'without' if args.no_mirroring else 'with'} mirroring{subset}.\n\n"
    )
    atomic_write_text(work / "comparison.md", header + text)
    atomic_write_text(work / "comparison.json", json.dumps(trained | {"fam_seconds": fam_seconds, "budget": budget}, indent=1))
    print(header + text)
    log.close()


if __name__ == "__main__":
    sys.exit(main())
