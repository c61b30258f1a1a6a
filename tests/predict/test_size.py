"""Head-size matching: sizes, factors and scaling against hand-computed geometry; the networks see a skull at the
training size and its implant comes back at the skull's own; a skull of the training size is predicted as before."""

import json

import numpy as np
import pytest
import torch

from data_prep.io import from_array
from data_prep.manifest import Manifest
from data_prep.preprocess import Layout
from fam_skull.predict.inputs import manifest_cases
from fam_skull.predict.predictor import Predictor, load_predictor
from fam_skull.predict.size import LIMITS, SIZE_FILE, rescale, size_factor, skull_size, training_skull_size


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius**2


def test_skull_size_is_the_geometric_mean_of_width_and_length():
    mask = np.zeros((40, 50, 30), bool)
    mask[5:25, 10:45, 3:9] = True  # 20 x 35 voxels in x, y; height ignored
    assert skull_size(mask, (2.0, 1.5, 9.0)) == pytest.approx(np.sqrt(40.0 * 52.5))
    with pytest.raises(ValueError, match="empty"):
        skull_size(np.zeros((4, 4, 4), bool), (1, 1, 1))


def test_size_factor_keeps_skulls_within_tolerance_and_clips_the_rest():
    mask = np.zeros((60, 60, 10), bool)
    mask[10:50, 10:50, 2:8] = True  # size 40 mm
    assert size_factor(mask, (1, 1, 1), 41.0, 0.05) == 1.0
    assert size_factor(mask, (1, 1, 1), 36.0, 0.05) == pytest.approx(0.9)
    assert size_factor(mask, (1, 1, 1), 400.0, 0.05) == LIMITS[1]
    assert size_factor(mask, (1, 1, 1), 4.0, 0.05) == LIMITS[0]


def test_rescale_scales_a_ball_about_its_centre():
    centre = np.array([30.0, 28.0, 26.0])
    ball = _ball((64, 60, 56), centre, 12.0)
    small = rescale(ball, 0.75, centre)
    idx = np.argwhere(small)
    assert np.allclose(idx.mean(0), centre, atol=0.5)
    assert small.sum() == pytest.approx(4 / 3 * np.pi * 9.0**3, rel=0.05)
    assert small.dtype == bool


class _Ball(torch.nn.Module):
    """A stand-in network: its foreground is a fixed ball in the middle of the grid, and it keeps what it saw."""

    def __init__(self, radius: float) -> None:
        super().__init__()
        self.radius, self.seen = radius, []

    def forward(self, x):
        self.seen.append(x[0, 0].numpy().copy())
        shape = x.shape[2:]
        ball = torch.from_numpy(_ball(shape, [(n - 1) / 2 for n in shape], self.radius))
        logits = torch.zeros((1, 2) + tuple(shape))
        logits[0, 1] = ball.float() * 2 - 1
        return logits


def _layout(shape):
    return Layout.plan(from_array(np.zeros(shape, np.uint8), None), (32, 32, 32))


def test_a_large_skull_is_seen_at_the_training_size_and_its_implant_scaled_back():
    shape = (64, 64, 64)
    centre = np.array([31.5, 31.5, 31.5])
    skull = _ball(shape, centre, 28.0) & ~_ball(shape, centre, 25.0)  # a shell 56 voxels across
    layout = _layout(shape)
    net = _Ball(radius=6.0)  # grid voxels (2 mm): a 12 mm ball at the centre, inside the cavity
    predictor = Predictor(net, torch.device("cpu"), min_component_mm3=0, rim_mm=None, skull_size_mm=44.8, size_tolerance=0.05)
    case = predictor.predict_case(layout.to_grid(skull), layout, skull)
    assert case.size_factor == pytest.approx(0.8)
    seen = net.seen[0] > 0.5
    assert skull_size(seen, (2.0, 2.0, 2.0)) == pytest.approx(44.8, rel=0.06)  # the network saw the training size
    # the 12 mm ball the network drew, scaled back by 1 / 0.8: radius 15 mm in the skull's own geometry
    assert case.implant.sum() == pytest.approx(4 / 3 * np.pi * 15.0**3, rel=0.1)


def test_a_skull_of_the_training_size_is_predicted_unscaled(trained_run, manifest):
    data = Manifest.load(manifest)
    case = data.role("eval1")[0]
    predictor, _, grid, _, _ = load_predictor(trained_run)
    assert predictor.skull_size_mm is not None
    cached = json.loads((trained_run / SIZE_FILE).read_text())
    assert cached["skulls"] == len({c["skull"] for c in data.role("train")})
    loaded = next(c for c in manifest_cases(manifest, ("eval1",), grid) if c.id == case["id"]).load()
    scaled = predictor.predict_case(*loaded)
    predictor.size_tolerance = None
    plain = predictor.predict_case(*loaded)
    assert scaled.size_factor == 1.0
    assert np.array_equal(scaled.implant, plain.implant)


def test_a_run_without_its_manifest_predicts_without_matching(tmp_path, caplog):
    assert training_skull_size(tmp_path, tmp_path / "gone" / "manifest.json") is None
    assert "head-size matching is off" in caplog.text
