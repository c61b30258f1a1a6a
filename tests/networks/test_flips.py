"""Test-time flips: the mean of the prediction and its mirrored twin, computed by hand for a network whose output
is known in closed form, and the disagreement map written beside each implant by predict."""

import json

import numpy as np
import torch

from data_prep.io import read_image, to_array
from fam_skull.cli import main
from fam_skull.networks.implant import implant_on_grid, mirrored


class Weighted(torch.nn.Module):
    """Logits (0, w * x): the implant probability is sigmoid(w * x), with w varying along left-right."""

    def __init__(self, w: np.ndarray) -> None:
        super().__init__()
        self.w = torch.from_numpy(w)

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), x * self.w], 1)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_the_mirrored_mean_is_the_mean_of_the_two_predictions():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (6, 5, 4)).astype(np.float32)
    w = np.linspace(-3, 2, 6, dtype=np.float32)[:, None, None] * np.ones((6, 5, 4), np.float32)
    mean, difference = mirrored(Weighted(w), torch.from_numpy(x)[None, None])
    p = _sigmoid(x * w)
    q = _sigmoid(x * w[::-1])  # the mirrored input's prediction, mirrored back: flip(sigmoid(flip(x) * w))
    np.testing.assert_allclose(mean[0, 0].numpy(), (p + q) / 2, rtol=1e-5)
    np.testing.assert_allclose(difference[0, 0].numpy(), np.abs(p - q), rtol=1e-5, atol=1e-7)


def test_implant_on_grid_with_flips_thresholds_the_mean_off_the_bone():
    grid = np.zeros((6, 5, 4), np.float32)
    grid[0] = 1  # bone on the right side
    w = np.linspace(-3, 2, 6, dtype=np.float32)[:, None, None] * np.ones((6, 5, 4), np.float32) + 0.5
    disagreement = np.zeros(grid.shape, np.float32)
    implant = implant_on_grid(Weighted(w), grid, torch.device("cpu"), flips=True, disagreement=disagreement)
    p, q = _sigmoid(grid * w), _sigmoid(grid * w[::-1])
    np.testing.assert_array_equal(implant, ((p + q) / 2 > 0.5) & (grid < 0.5))
    np.testing.assert_allclose(disagreement, np.abs(p - q), atol=1e-6)


def test_predict_with_flips_writes_the_disagreement_beside_each_implant(tmp_path, manifest, trained_run):
    out = tmp_path / "flips"
    assert main(["predict", "--run", str(trained_run), "--manifest", str(manifest), "--output", str(out), "--flips", "--quiet"]) == 0
    index = json.loads((out / "predictions.json").read_text())
    assert index["weights"]["flips"] is True
    for entry in index["cases"].values():
        implant = read_image(out / entry["files"]["implant"])
        disagreement = read_image(out / entry["files"]["disagreement"])
        values = to_array(disagreement)
        assert disagreement.GetSize() == implant.GetSize() and disagreement.GetDirection() == implant.GetDirection()
        assert values.max() <= 100 and values.max() > 0  # a 2-epoch network is not left-right symmetric
