"""Tests of experiments.qmc: its closed-form gradients, and a small run's curves and table."""

import jax
import numpy as np
import pytest

import logtrick as lt
from experiments import qmc

CONFIG = qmc.Config(dims=(1,), log2_sizes=(3, 4), num_randomisations=4)


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


def test_small_run_has_every_curve_and_a_table():
    """Every (problem, D, estimator) the study applies has an MSE per N and sampler, positive, with a finite
    slope; the table has one row per curve."""
    results = qmc.run(CONFIG)
    expected = [(p.name, d, name) for p in qmc.PROBLEMS for d in CONFIG.dims
                for name, (_, _, applies) in qmc.ESTIMATORS.items() if applies(p.name, d)]
    assert [(c["problem"], c["dim"], c["estimator"]) for c in results["curves"]] == expected
    for c in results["curves"]:
        for sampler in qmc.SAMPLERS:
            assert len(c[sampler]["mse"]) == len(CONFIG.log2_sizes) and min(c[sampler]["mse"]) > 0, c
            assert np.isfinite(c[sampler]["slope"]), c
    assert len(qmc.format_table(results).splitlines()) == 2 + len(expected)
