"""The statistics behind the README's benchmark figures, on inputs worked out by hand:
data budgets to 95 % (``reach``), the interquartile mean and
its bootstrap CI (fidelity vs compression), and the Student-t CI over seeds (``mean_ci``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
# benchmarks/ is a folder of scripts, not a package; importing them runs no benchmark
from fidelity_compression import bootstrap_ci, iqm  # noqa: E402
from vs_imitation_report import reach  # noqa: E402

from policykd.jobs.evaluate import mean_ci  # noqa: E402

T_975 = {1: 12.706204736174698, 2: 4.302652729911275}  # Student-t 97.5 % quantiles, by degrees of freedom

def test_reach_is_the_first_x_whose_return_meets_the_threshold():
    labels = [2_000.0, 4_000.0, 6_000.0]
    assert reach(labels, [-150.0, 190.0, 250.0], threshold=190.0) == 4_000.0
    assert reach(labels, [-150.0, 189.9, 180.0], threshold=190.0) is None
    assert reach(labels, [-50.0, -60.0, -70.0], threshold=-55.0) == 2_000.0  # negative returns: >= still


def test_iqm_drops_the_lowest_and_highest_quarters():
    assert iqm(np.array([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0])) == 4.5  # mean of 3, 4, 5, 6
    assert iqm(np.array([-1e6, 90.0, 100.0, 110.0, 1e6, 100.0, 95.0, 105.0])) == 100.0  # outliers ignored
    assert iqm(np.arange(10.0)) == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))  # 10 // 4 = 2 cut at each end
    assert iqm(np.array([1.0, 2.0, 6.0])) == 3.0  # under 4 values: the plain mean


def test_bootstrap_ci_of_two_values_spans_them():
    """Resampling [0, 1] gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5 and
    97.5 percentiles of 2,000 resamples are 0 and 1."""
    assert bootstrap_ci(np.array([0.0, 1.0]), np.mean, np.random.default_rng(0)) == (0.0, 1.0)
    assert bootstrap_ci(np.full(5, 7.0), iqm, np.random.default_rng(0)) == (7.0, 7.0)


def test_bootstrap_ci_is_seeded_and_narrows_with_more_runs():
    rng = np.random.default_rng(1)
    few, many = rng.normal(100.0, 10.0, 6), rng.normal(100.0, 10.0, 60)
    assert bootstrap_ci(few, iqm, np.random.default_rng(0)) == bootstrap_ci(few, iqm, np.random.default_rng(0))
    low, high = bootstrap_ci(many, np.mean, np.random.default_rng(0))
    assert low < many.mean() < high
    # the bootstrap CI of a mean is close to the normal one, mean ± 1.96 s / sqrt(n)
    half = 1.96 * many.std(ddof=1) / np.sqrt(len(many))
    assert low == pytest.approx(many.mean() - half, abs=0.25 * half)
    assert high == pytest.approx(many.mean() + half, abs=0.25 * half)
    few_low, few_high = bootstrap_ci(few, np.mean, np.random.default_rng(0))
    assert few_high - few_low > high - low


def test_mean_ci_is_the_student_t_interval_over_seeds():
    # [1, 2, 3]: mean 2, sample std 1, t(0.975, 2) = 4.3027 -> 2 ± 4.3027 / sqrt(3)
    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert low == pytest.approx(2.0 - T_975[2] / np.sqrt(3)) and high == pytest.approx(2.0 + T_975[2] / np.sqrt(3))
    # [10, 20]: mean 15, sample std 7.0711, standard error 5 -> 15 ± 5 t(0.975, 1) = 15 ± 63.53
    assert mean_ci([10.0, 20.0]) == pytest.approx((15.0, 15.0 - 5 * T_975[1], 15.0 + 5 * T_975[1]))
    assert mean_ci([5.0]) == (5.0, 5.0, 5.0)  # one seed: a point
    assert mean_ci([4.0, 4.0, 4.0]) == (4.0, 4.0, 4.0)
