"""stats.py: the t interval of a mean, against t-table values."""

import math

import pytest

from fam_skull.common.stats import mean_interval


def test_the_interval_of_two_values_uses_t_with_one_degree_of_freedom():
    # [0, 1]: mean 0.5, standard error 0.5; t(0.975, 1) = 12.7062 (a t table), so 0.5 +- 6.3531
    mean, low, high = mean_interval([0.0, 1.0])
    assert mean == 0.5 and low == pytest.approx(0.5 - 6.3531, abs=1e-4) and high == pytest.approx(0.5 + 6.3531, abs=1e-4)


def test_twenty_values_are_wider_than_the_normal_interval():
    values = [float(i % 5) for i in range(20)]
    mean, low, high = mean_interval(values)
    se = (sum((v - mean) ** 2 for v in values) / 19) ** 0.5 / math.sqrt(20)
    assert (high - low) / 2 == pytest.approx(2.093024 * se, rel=1e-6)  # t(0.975, 19), about 7% above 1.96


def test_fewer_than_two_values_have_no_interval():
    mean, low, high = mean_interval([3.0])
    assert mean == 3.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in mean_interval([]))
