"""Tests of experiments.qmc: its closed-form gradients, and a small run's curves and table."""

import jax
import numpy as np
import pytest

import logtrick as lt
from experiments import qmc

CONFIG = qmc.Config(dims=(1,), log2_sizes=(3, 4), num_randomisations=4, estimators=("score",))


@pytest.mark.parametrize("problem", qmc.PROBLEMS, ids=lambda p: p.name)
def test_closed_forms_are_the_expected_gradients(problem):
    """Statistical: 4000 plain Monte Carlo score-function estimates (N = 64, D = 3) are centred on jax.grad of
    the problem's closed-form expectation (lt.testing.assert_unbiased, α = 1e-3), so the study's MSE is measured
    against the true gradient, not a nearby one."""
    params = qmc.params_of(3)
    est = lt.score_function(problem.f, lt.families.normal(), num_samples=64,
                            baseline=lt.baselines.leave_one_out())
    estimates = lt.testing.draw_estimates(est, params, jax.random.key(0), num_estimates=4000)
    lt.testing.assert_unbiased(estimates, jax.grad(problem.expectation)(params))


@pytest.mark.slow
def test_small_run_has_its_curves_and_a_table():
    """Every problem has a curve of the configured estimator, with an MSE per N and sampler, positive, and a
    finite slope; the table has one row per curve."""
    results = qmc.run(CONFIG)
    expected = [(p.name, 1, "score") for p in qmc.PROBLEMS]
    assert [(c["problem"], c["dim"], c["estimator"]) for c in results["curves"]] == expected
    for c in results["curves"]:
        for sampler in qmc.SAMPLERS:
            assert len(c[sampler]["mse"]) == len(CONFIG.log2_sizes) and min(c[sampler]["mse"]) > 0, c
            assert np.isfinite(c[sampler]["slope"]), c
    assert len(qmc.format_table(results).splitlines()) == 2 + len(expected)


def test_fit_slope_recovers_a_power_law():
    """An exact N^-1.5 law gives slope -1.5; the slope's standard error is that of the points' log-MSE errors
    propagated through least squares (5% relative error at each of 2 points a factor 4 apart: 0.05·√2 / log 4)."""
    sizes = np.array([16.0, 64.0])
    slope, se = qmc.fit_slope(sizes, 3.0 * sizes**-1.5, 0.05 * 3.0 * sizes**-1.5)
    assert slope == pytest.approx(-1.5) and se == pytest.approx(0.05 * np.sqrt(2) / np.log(4))
