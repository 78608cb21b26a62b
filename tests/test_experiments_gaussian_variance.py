"""Tests of experiments.gaussian_variance: exact single-sample variances and their Monte Carlo check."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import gaussian_variance as gv

QUADRATIC = gv.COSTS[0]


def test_quadratic_k1_variances_are_exact():
    """f = (x-1)², x ~ N(1, 1), ε = x - 1: the variances in closed form.

    score (ε³, ε⁴-ε²): 15, 74; mean baseline E[f] = 1: 10, 56; optimal
    baselines b* = (3, 5): 6, 24; pathwise (2ε, 2ε²): 4, 8; measure-valued
    ((W² - W'²)/√(2π), M² - ε²): 8/(2π), 8, coupled (0, M²(1 - U²)): 0, 4.
    Every mean is the gradient (0, 2σ) = (0, 2).
    """
    with jax.enable_x64(True):
        moments = jax.jit(functools.partial(gv.exact_moments, QUADRATIC.f, num_points=64))(
            jnp.asarray([1.0, 1.0]), jnp.asarray(1.0))
    expected = {"score": (15.0, 74.0), "score_mean_baseline": (10.0, 56.0),
                "score_optimal_baseline": (6.0, 24.0), "pathwise": (4.0, 8.0),
                "measure_valued": (8 / (2 * np.pi), 8.0), "measure_valued_coupled": (0.0, 4.0)}
    for name, variance in expected.items():
        np.testing.assert_allclose(moments["variance"][name], variance, rtol=1e-6, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(moments["mean"][name], (0.0, 2.0), atol=1e-10, err_msg=name)
    np.testing.assert_allclose(moments["optimal_baseline"], (3.0, 5.0), rtol=1e-10)


@pytest.mark.parametrize("cost", [QUADRATIC, gv.COSTS[1]], ids=lambda c: c.name)
def test_monte_carlo_agrees_with_exact(cost):
    """Statistical: 10^5 library single-sample terms at each checked k; their sample means and mean squared
    deviations are z-tested against the exact gradient and variance (lt.testing.check_unbiased, Bonferroni, α = 1e-3
    over the study). Also the quadrature means equal jax.grad of the closed forms in lt.exact."""
    config = gv.Config(num_k=3, num_quadrature=500, mc_samples=100_000)
    with jax.enable_x64(True):
        result = gv.study_cost(cost, config, jax.random.key(1))
    assert result["checks"]["mean_vs_closed_form_max_abs_error"] < 1e-10
    assert result["checks"]["expectation_vs_closed_form_max_abs_error"] < 1e-12
    assert len(result["mc_checks"]) == len(cost.mc_ks) * len(gv.ESTIMATORS) * len(gv.PARAMS)
    for check in result["mc_checks"]:
        assert check["variance_se"] > 0 and np.isfinite(check["variance_se"])
        assert abs(check["mean_z"]) <= result["mc_threshold"], check
        assert abs(check["variance_z"]) <= result["mc_threshold"], check


def test_moment_test_rejects_a_wrong_variance_and_mean():
    """Statistical: the moment test accepts the true moments of 10^5 N(0, 4) draws and rejects a variance
    10% too large (22 standard errors) and a mean of 0.05 (8 standard errors)."""
    samples = {"g": 2.0 * np.random.default_rng(0).standard_normal((100_000, 1))}
    true = gv.moment_test(samples, {"g": np.zeros(1)}, {"g": np.full(1, 4.0)}, significance=1e-3)
    assert true.max_abs_z <= true.threshold
    wrong_variance = gv.moment_test(samples, {"g": np.zeros(1)}, {"g": np.full(1, 4.4)}, significance=1e-3)
    assert abs(wrong_variance.z["variance"]["g"][0]) > 10
    wrong_mean = gv.moment_test(samples, {"g": np.full(1, 0.05)}, {"g": np.full(1, 4.0)}, significance=1e-3)
    assert abs(wrong_mean.z["mean"]["g"][0]) > wrong_mean.threshold
