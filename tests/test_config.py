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


def test_defaults_live_in_one_place():
    """Lambda, rho and the bone threshold are each defined once; every entry point takes that value (a copy
    changed to a literal anywhere fails here)."""
    from inspect import signature

    from data_prep.prepare import PrepareOptions
    from data_prep.preprocess import BONE_HU, binarize
    from fam_skull.cli import build_parser
    from fam_skull.experiments.sweep import SweepConfig
    from fam_skull.fam.regularizer import DEFAULT_LAMBDA, FAMRegularizer
    from fam_skull.fam.sam import DEFAULT_RHO, SAM
    from fam_skull.predict import PredictOptions
    from fam_skull.predict.export import FolderPredictor
    from fam_skull.predict.inputs import load_file
    from fam_skull.train.step import Stepper

    def default(fn, name):
        return signature(fn).parameters[name].default

    assert Config().fam.lam == default(FAMRegularizer, "lam") == DEFAULT_LAMBDA
    assert DEFAULT_LAMBDA in SweepConfig().lams  # a sweep without lams brackets the default objective's lambda
    assert Config().sam.rho == SweepConfig().sam_rho == default(Stepper, "sam_rho") == default(SAM, "rho") == DEFAULT_RHO
    assert (
        PrepareOptions(output=Path("."), synthetic=1).threshold
        == PredictOptions(run=Path("."), output=Path(".")).threshold
        == default(binarize, "threshold")
        == default(load_file, "threshold")
        == default(FolderPredictor, "threshold")
        == BONE_HU
    )
    sub = build_parser()._subparsers._group_actions[0].choices
    for command in ("prepare", "predict"):
        assert sub[command].get_default("threshold") == BONE_HU
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"lam={DEFAULT_LAMBDA}" in readme and f"lambda = {DEFAULT_LAMBDA}" in readme
