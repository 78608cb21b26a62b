"""Tests of experiments.exact_check: every method against the exact gradient, and the 1/√N law of its error."""

import jax
import numpy as np
import pytest

import logtrick as lt
from experiments import exact_check as ec

# One compiled function per problem, the methods' N shared with the sweep; sizes of the sweep large enough
# for its squared errors to be nearly Gaussian, so that the delta-method standard error of the slope holds.
CONFIG = ec.Config(num_samples=16, num_estimates=1000, warmup_steps=2, sweep=(16, 256))


@pytest.fixture(scope="module")
def result():
    return ec.run(CONFIG)


def test_exact_check_runs_and_agrees(result):
    """Statistical: for each method, the mean of 1000 estimates z-tested against jax.grad of the exact
    expectation on all 12 coordinates of the 5 problems at once (Bonferroni, α = 1e-3)."""
    assert [(r["problem"], r["param"]) for r in result["rows"]] == [
        (p.name, label) for p in ec.problems() for label in p.labels]
    for name, test in result["z_test"].items():
        assert test["verdict"] == "consistent" and test["max_abs_z"] <= test["threshold"], name
    assert max(r["abs_error_in_se"] for r in result["rows"]) == pytest.approx(result["z_test"]["none"]["max_abs_z"])
    for r in result["rows"]:
        assert set(r["variance"]) == set(ec.METHODS) and all(v > 0 for v in r["variance"].values()), r


def test_error_falls_as_one_over_sqrt_n(result):
    """Statistical: for every problem the fitted log-log slope of the RMS error against N is within its
    standard error's Bonferroni threshold of -1/2, that standard error small enough for the check to have power."""
    assert set(result["error_slope"]) == {p.name for p in ec.problems()}
    for name, slope in result["error_slope"].items():
        assert abs(slope["z"]) <= result["slope_threshold"], (name, slope)
        assert 0 < slope["standard_error"] < 0.1, (name, slope)


WRONG = {
    "biased (GRPO's normalisation)": lambda p, n: lt.score_function(
        p.f, p.family, num_samples=n, baseline=lt.baselines.group_normalised()),
    "one sample whatever N": lambda p, n: lt.score_function(p.f, p.family, num_samples=1),
}


def test_slope_check_rejects_wrong_estimators():
    """Statistical: the same slope check rejects an estimator whose bias does not fall with N and one that
    ignores N, on the first problem (1000 estimates at each size of the sweep)."""
    problem = ec.problems()[0]
    exact = np.asarray(ec.exact_gradient(problem), np.float64)
    estimators = {(name, n): make(problem, n) for name, make in WRONG.items() for n in CONFIG.sweep}
    drawn = ec.draw(problem.params, estimators, jax.random.key(3), num_estimates=CONFIG.num_estimates)
    threshold = ec.bonferroni(CONFIG.significance, 1)
    for name in WRONG:
        slope = ec.error_slope({n: drawn[name, n] for n in CONFIG.sweep}, exact)
        assert slope["z"] > threshold, (name, slope)


def test_error_slope_recovers_a_known_slope():
    """Statistical: Gaussian estimates with error ∝ N^-0.3 give a slope within 4 standard errors of -0.3."""
    rng = np.random.default_rng(0)
    sizes = (1, 10, 100)
    estimates = {n: 1.0 + n ** -0.3 * rng.standard_normal((2000, 3)) for n in sizes}
    slope = ec.error_slope(estimates, np.ones(3))
    assert abs(slope["slope"] + 0.3) < 4 * slope["standard_error"]
    assert slope["z"] > 10
    np.testing.assert_allclose([slope["rms_error"][n] for n in sizes], np.sqrt(3) * np.array(sizes) ** -0.3,
                               rtol=0.05)


def test_slope_check_rejects_a_fixed_bias():
    """Statistical: Gaussian estimates with error ∝ N^-1/2 at the sweep's sizes pass the slope check; the same
    estimates plus a fixed bias (0.1 per coordinate, 0.4 standard deviations at N = 16) are rejected: their
    error levels off."""
    rng = np.random.default_rng(1)
    estimates = {n: 1.0 + rng.standard_normal((CONFIG.num_estimates, 3)) / np.sqrt(n) for n in CONFIG.sweep}
    threshold = ec.bonferroni(CONFIG.significance, 1)
    assert abs(ec.error_slope(estimates, np.ones(3))["z"]) <= threshold
    biased = ec.error_slope({n: e + 0.1 for n, e in estimates.items()}, np.ones(3))
    assert biased["z"] > threshold, biased
