"""The MONAI metric classes equal compute_metrics (itself checked against medpy in test_metrics.py), through
aggregate() over several batches, with per-call or MetaTensor spacing, and inside a MONAI SupervisedEvaluator."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from data_prep.defects import make_defect
from fam_skull.metrics import compute_metrics
from fam_skull.metrics.monai_metrics import ASSDMetric, BoundaryDSCMetric, DSCMetric, HD95Metric, HDMetric

CLASSES = {"dsc": DSCMetric, "hd": HDMetric, "hd95": HD95Metric, "assd": ASSDMetric, "bdsc": BoundaryDSCMetric}
SPACING = (0.8, 1.1, 2.5)


def _cases(skulls):
    """(prediction, reference, defective) implants: a shifted and eroded guess of each true implant, one missed."""
    out = []
    for i, (mask, spacing) in enumerate(skulls):
        implant = mask & make_defect(mask, spacing, "sphere", seed=i).region
        guess = np.roll(implant, i - 1, axis=0) & mask if i != 3 else np.zeros_like(implant)
        out.append((guess, implant, mask & ~implant))
    return out


def _batch(arrays):
    return torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32))


@pytest.mark.parametrize("name", list(CLASSES))
def test_aggregate_over_batches_equals_compute_metrics(name, skulls):
    cases = _cases(skulls)
    metric = CLASSES[name]()
    for start in (0, 2):  # two batches of two
        chunk = cases[start : start + 2]
        metric(_batch([c[0] for c in chunk]), _batch([c[1] for c in chunk]), spacing=SPACING, defective=_batch([c[2] for c in chunk]))
    expected = [compute_metrics(p, r, SPACING, defective=d)[name] for p, r, d in cases]
    assert metric.aggregate().item() == pytest.approx(np.mean(expected), rel=1e-6)  # MONAI reduces in float32
    assert metric.get_buffer()[:, 0].tolist() == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(expected[3])  # the missed case scores the diagonal (or DSC 0), not inf/NaN
    metric.reset()
    with pytest.raises(ValueError, match="nothing to aggregate"):
        metric.aggregate()


def test_one_hot_input_drops_the_background_and_spacing_comes_from_the_affine(skulls):
    pred, ref, _ = _cases(skulls)[0]
    one_hot = [torch.from_numpy(np.stack([~m, m])[None].astype(np.float32)) for m in (pred, ref)]
    affine = torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64))
    metric = HD95Metric(reduction="none")
    metric(MetaTensor(one_hot[0], affine=affine), one_hot[1])
    assert metric.aggregate().shape == (1, 1)
    assert metric.aggregate().item() == pytest.approx(compute_metrics(pred, ref, SPACING)["hd95"], rel=1e-12)
    per_item = HDMetric()
    per_item(_batch([pred, pred]), _batch([ref, ref]), spacing=[SPACING, [2.0]])
    assert per_item.get_buffer()[:, 0].tolist() == pytest.approx(
        [compute_metrics(pred, ref, SPACING)["hd"], compute_metrics(pred, ref, (2.0, 2.0, 2.0))["hd"]], rel=1e-12
    )


def test_bad_calls_are_refused(skulls):
    pred, ref, _ = _cases(skulls)[0]
    with pytest.raises(ValueError, match="bdsc needs the defective skull"):
        BoundaryDSCMetric()(_batch([pred]), _batch([ref]))
    with pytest.raises(ValueError, match="one shape"):
        DSCMetric()(_batch([pred]), _batch([ref[:-1]]))
    with pytest.raises(ValueError, match="empty must be one of"):
        DSCMetric(empty="nan")


def test_metric_handlers_in_a_supervised_evaluator_give_the_same_numbers(skulls):
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.handlers import IgniteMetricHandler, from_engine

    cases = _cases(skulls)
    affine = torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64))
    items = [
        {
            "image": MetaTensor(torch.from_numpy(p[None].astype(np.float32)), affine=affine),
            "label": MetaTensor(torch.from_numpy(r[None].astype(np.float32)), affine=affine),
        }
        for p, r, _ in cases
    ]
    handlers = {name: IgniteMetricHandler(CLASSES[name](), output_transform=from_engine(["pred", "label"])) for name in ("dsc", "hd95")}
    evaluator = SupervisedEvaluator(
        torch.device("cpu"),
        DataLoader(Dataset(items), batch_size=2),
        torch.nn.Identity(),
        key_val_metric={"dsc": handlers["dsc"]},
        additional_metrics={"hd95": handlers["hd95"]},
    )
    evaluator.run()
    for name in ("dsc", "hd95"):
        expected = np.mean([compute_metrics(p, r, SPACING)[name] for p, r, _ in cases])
        assert evaluator.state.metrics[name] == pytest.approx(expected, rel=1e-6), name
