"""Configs: typed validation with messages naming the key, overrides, and every shipped config."""

from pathlib import Path

import pytest
import yaml

from fam_skull.config import Config, ConfigError, load_config
from fam_skull.experiments.sweep import load_sweep
from fam_skull.fam.flatness import resolve_layer
from fam_skull.networks.models import model_from_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_overrides_are_typed_and_applied():
    cfg = load_config(
        base={"data": {"manifest": "m.json"}}, overrides=["train.epochs=7", "fam.lam=1e-3", "model.channels=[8,16]", "method=fam"]
    )
    assert (cfg.train.epochs, cfg.fam.lam, cfg.model.channels, cfg.method) == (7, 0.001, [8, 16], "fam")
    assert isinstance(cfg.fam.lam, float)
    assert load_config(base=yaml.safe_load(cfg.to_yaml())) == cfg  # the saved config reloads to the same object


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.chanels=[1]"], "unknown key model.chanels (did you mean model.channels?)"),
        (["model.channels=[8, x]"], "model.channels[1]: expected int, got str 'x'"),
        (["train.amp=yes please"], "train.amp: expected bool"),
        (["optim.lr=0"], "optim.lr: must be > 0"),
        (["train.epochs"], "expected key=value"),
        (["data.manifest=''"], "data.manifest: required"),
        (["model.name=vnet"], "model.name: must be one of unet, autoencoder, linear_ae"),
        # typed as the FAM package's Literals, checked while the section is built
        (["fam.objective=kapa"], "fam.objective: must be one of kappa, fisher, published, l2, got 'kapa'"),
        (["fam.estimator=1"], "fam.estimator: must be one of hutchinson, exact, got 1"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(base={"data": {"manifest": "m.json"}}, overrides=overrides)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "famm"}, "method: must be one of baseline, fam, sam, got 'famm'"),
        ({"optim": {"lr": -1.0}}, "optim.lr: must be > 0, got -1.0"),
        ({"augment": {"flip": 2.0}}, r"augment.flip: must be in \[0, 1\], got 2.0"),
        ({"fam": {"chunk": 0}}, "fam.chunk: must be >= 1, got 0"),
        ({"model": {"name": "vnet"}}, "model.name: must be one of unet, autoencoder, linear_ae"),
    ],
)
def test_a_config_made_in_python_is_validated_by_every_entry_point(tmp_path, change, message):
    """train() and the sweep take Config objects; those are checked as a YAML file is (they used to pass as they were)."""
    from dataclasses import replace

    from fam_skull.config import validate
    from fam_skull.train import train
    from fam_skull.train.resume import resolve

    cfg = Config()
    cfg.data.manifest = str(tmp_path / "manifest.json")
    for key, value in change.items():
        cfg = replace(cfg, **{key: replace(getattr(cfg, key), **value) if isinstance(value, dict) else value})
    for entry in (validate, resolve, train):
        with pytest.raises(ConfigError, match=message):
            entry(cfg)


@pytest.mark.parametrize("name", ["unet_paper.yaml", "skullrec_autoencoder.yaml", "fam_paper_linear_ae.yaml"])
def test_shipped_training_configs_build_their_model_and_layer(name):
    cfg = load_config(CONFIGS / name)
    model = model_from_config(cfg, (256, 256, 128))
    layer = resolve_layer(model, cfg.fam.layer)
    if cfg.model.name == "linear_ae":
        assert layer.name == "decode_latent" and tuple(layer.weight.shape) == (256, 32)  # the paper's decodeL


def test_shipped_sweep_and_demo_configs():
    sweep, run = load_sweep(CONFIGS / "sweep_paper.yaml")
    assert sweep.lams == [0.0006, 0.002, 0.02, 0.1, 0.7]
    assert load_config(base=run).loss.weight == 80.0
    demo = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    assert set(demo) == {"prepare", "sweep", "run"}
    load_sweep(values={"sweep": demo["sweep"], "run": {**demo["run"], "data": {"manifest": "x"}}})
    with pytest.raises(ConfigError, match="sweep.lams: every lambda must be >= 0"):
        load_sweep(values={"sweep": {"lams": [-1.0]}, "run": {"data": {"manifest": "x"}}})


DEMO_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if "prepare" in yaml.safe_load(p.read_text()))


@pytest.mark.parametrize("path", DEMO_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_demo_config_loads_with_its_arms(path):
    """A typo in an arm's keys (or a defect type that does not exist) fails here, not an hour into a sweep."""
    values = yaml.safe_load(path.read_text())
    run = {**values["run"], "data": {**values["run"].get("data", {}), "manifest": "x"}}
    sweep, _ = load_sweep(values={"sweep": values["sweep"], "run": run})
    if path.name == "paper_reproduction.yaml":  # the authors score the network's output without post-processing
        assert sweep.rim_mm is None and sweep.stray_mm is None and sweep.min_component_mm3 == 0
    broken = [{"name": "typo", "set": {"augment.defect_type": ["anywhere"]}}]
    with pytest.raises(ConfigError, match="augment.defect_type"):
        load_sweep(values={"sweep": {**values["sweep"], "arms": broken}, "run": run})


def test_defaults_live_in_one_place():
    """Every default is defined once and every entry point takes that value (a copy changed to a literal anywhere
    fails here): lambda, rho, the bone threshold, the smallest implant piece, the augmentation, the network, the
    metric keys."""
    from dataclasses import asdict
    from inspect import signature

    from data_prep.prepare import PrepareOptions
    from data_prep.preprocess import BONE_HU, binarize
    from fam_skull.cli import build_parser
    from fam_skull.evaluate.report import per_case_csv
    from fam_skull.experiments.sweep import SweepConfig
    from fam_skull.fam.regularizer import DEFAULT_LAMBDA, FAMRegularizer
    from fam_skull.fam.sam import DEFAULT_RHO, SAM
    from fam_skull.metrics import METRICS, compute_metrics
    from fam_skull.metrics.monai_metrics import SkullMetric
    from fam_skull.networks.models import network_spec
    from fam_skull.predict.export import FolderPredictor, export_bundle
    from fam_skull.predict.inputs import load_file
    from fam_skull.predict.options import MIN_COMPONENT_MM3, PredictOptions
    from fam_skull.predict.predictor import Predictor
    from fam_skull.train.augment import training_augmentation
    from fam_skull.train.step import Stepper

    def default(fn, name):
        return signature(fn).parameters[name].default

    assert Config().fam.lam == default(FAMRegularizer, "lam") == DEFAULT_LAMBDA
    assert DEFAULT_LAMBDA in SweepConfig().lams  # a sweep without lams brackets the default objective's lambda
    assert Config().sam.rho == SweepConfig().sam_rho == default(Stepper, "sam_rho") == default(SAM, "rho") == DEFAULT_RHO
    predict_options = PredictOptions(run=Path("."), output=Path("."))
    assert (
        PrepareOptions(output=Path("."), synthetic=1).threshold
        == predict_options.threshold
        == default(binarize, "threshold")
        == default(load_file, "threshold")
        == default(FolderPredictor, "threshold")
        == BONE_HU
    )
    assert (
        predict_options.min_component_mm3
        == SweepConfig().min_component_mm3
        == default(FolderPredictor, "min_component_mm3")
        == default(export_bundle, "min_component_mm3")
        == Predictor.min_component_mm3
        == MIN_COMPONENT_MM3
    )
    sub = build_parser()._subparsers._group_actions[0].choices
    for command in ("prepare", "predict"):
        assert sub[command].get_default("threshold") == BONE_HU
    for command in ("predict", "export"):
        assert sub[command].get_default("min_component_mm3") == MIN_COMPONENT_MM3
    augment = asdict(Config().augment)
    assert {k: default(training_augmentation, k) for k in ("fresh_defect", "flip", "affine", "rotate_deg", "scale")} == {
        k: augment[k] for k in ("fresh_defect", "flip", "affine", "rotate_deg", "scale")
    }
    model = asdict(Config().model)
    spec = network_spec("unet")
    assert {k: spec[k] for k in ("channels", "strides", "num_res_units", "norm", "act", "dropout")} == {
        k: model[k] for k in ("channels", "strides", "num_res_units", "norm", "act", "dropout")
    }
    assert network_spec("linear_ae", strides=[2, 2, 2, 2], spatial_size=(64, 64, 32))["latent_size"] == model["latent_size"]
    import numpy as np

    scores = compute_metrics(np.eye(4, dtype=bool)[:, :, None].repeat(2, 2), np.ones((4, 4, 2), bool), defective=np.zeros((4, 4, 2), bool))
    assert set(METRICS) <= set(scores)
    assert [SkullMetric(m).metric for m in METRICS] == list(METRICS)
    assert per_case_csv({}).strip().split(",")[4:-2] == list(METRICS)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"lam={DEFAULT_LAMBDA}" in readme and f"lambda = {DEFAULT_LAMBDA}" in readme


def test_configs_are_read_as_utf8_whatever_the_locale(tmp_path):
    """GDCM's DICOM writer leaves the process in the C locale, where Python's default text encoding is ASCII."""
    import locale

    from fam_skull.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("data: {manifest: unused.json}  # lambda ± 10%, λ\nmethod: baseline\n", encoding="utf-8")
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        assert locale.getpreferredencoding(False) != "UTF-8"
        assert load_config(path).method == "baseline"
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
