"""Tests of experiments.ipd_hessian: the exact value and its derivatives, and the DiCE estimates against them.

The estimator tests are statistical: bias tests (``lt.testing.check_unbiased``) on
independent estimates from a fixed key, the experiment's own bias check.
"""

import dataclasses

import jax
import numpy as np
import pytest

import logtrick as lt
from experiments import common
from experiments import ipd_hessian as ipd

# Short episodes: the truncated value differs from the infinite-horizon one by far more than the noise.
# 384 estimates, three batches of the experiment's lax.map: enough for the bias test to judge the Hessians' tails.
CONFIG = dataclasses.replace(ipd.QUICK, horizon=10, num_estimates=128, check_estimates=384)


@pytest.fixture(scope="module")
def thetas():
    return 0.5 * jax.random.normal(jax.random.key(0), (2, 5))


def _values_by_rounds(theta_1, theta_2, gamma, horizon):
    """Σ_{t<T} γ^t E[payoffs of round t], the outcome distribution of each round propagated one round at a time."""
    l1, l2 = ipd.cooperate_logits(np.asarray(theta_1, np.float64), np.asarray(theta_2, np.float64))
    p1, p2 = 1.0 / (1.0 + np.exp(-l1)), 1.0 / (1.0 + np.exp(-l2))
    outcome = np.stack([p1 * p2, p1 * (1 - p2), (1 - p1) * p2, (1 - p1) * (1 - p2)], axis=1)  # (5, 4)
    payoffs = np.asarray(ipd.PAYOFFS, np.float64)
    distribution, total = outcome[0], np.zeros(2)
    for t in range(horizon):
        total += gamma**t * distribution @ payoffs
        distribution = distribution @ outcome[1:]
    return total


def _exact(theta_1, theta_2):
    """Both agents' V, and the derivatives of V₁ at the horizon T and at T = ∞."""
    value = lambda a, b, horizon: ipd.exact_values(a, b, gamma=CONFIG.gamma, horizon=horizon)
    return {"values": value(theta_1, theta_2, CONFIG.horizon),
            "derivatives": ipd.derivatives(lambda a, b: value(a, b, CONFIG.horizon)[0], theta_1, theta_2),
            "infinite": ipd.derivatives(lambda a, b: value(a, b, None)[0], theta_1, theta_2)}


@pytest.fixture(scope="module")
def exact(thetas):
    """In float64, from one compiled function: :func:`_exact`, and central finite differences of ∇_{θ₁} V₁
    in θ₁ and θ₂."""
    with jax.enable_x64(True):
        t1, t2 = (np.asarray(t, np.float64) for t in thetas)
        exact_fn = jax.jit(_exact, compiler_options=common.FAST_COMPILE)
        grad = lambda a, b: np.asarray(exact_fn(a, b)["derivatives"]["gradient"])
        h, eye = 1e-5, np.eye(5)
        finite_differences = {
            "hessian": np.stack([(grad(t1 + h * e, t2) - grad(t1 - h * e, t2)) / (2 * h) for e in eye]),
            "mixed_hessian": np.stack([(grad(t1, t2 + h * e) - grad(t1, t2 - h * e)) / (2 * h) for e in eye], axis=1),
        }
        return jax.tree_util.tree_map(np.asarray, exact_fn(t1, t2)), finite_differences


def test_exact_values_and_derivatives(thetas, exact):
    """V from the linear solve against a round-by-round sum; its Hessian and mixed Hessian against central
    finite differences of its gradient (float64). The same checks reject the sum over one round more and the
    mixed Hessian transposed (∂θ₂ on the wrong axis)."""
    expected, finite_differences = exact
    np.testing.assert_allclose(expected["values"], _values_by_rounds(*thetas, CONFIG.gamma, CONFIG.horizon),
                               rtol=1e-10)
    for quantity, by_differences in finite_differences.items():
        np.testing.assert_allclose(expected["derivatives"][quantity], by_differences, rtol=1e-6, atol=1e-8)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(expected["values"], _values_by_rounds(*thetas, CONFIG.gamma, CONFIG.horizon + 1),
                                   rtol=1e-10)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(expected["derivatives"]["mixed_hessian"].T, finite_differences["mixed_hessian"],
                                   rtol=1e-6, atol=1e-8)


@pytest.fixture(scope="module")
def study(thetas, exact):
    """The experiment's error statistics and bias check of one batch of estimates, and the estimates."""
    draw = jax.jit(ipd.estimates, static_argnums=(0, 1, 2), compiler_options=common.FAST_COMPILE)
    drawn = draw(CONFIG, CONFIG.check_batch, CONFIG.check_estimates, *thetas, jax.random.key(1))
    drawn = jax.tree_util.tree_map(np.asarray, drawn)
    derivatives = exact[0]["derivatives"]
    results = {"errors": {e: ipd.error_stats(d, derivatives) for e, d in drawn.items()},
               "bias_check": {e: {q: ipd.z_test(d[q], derivatives[q]) for q in ipd.QUANTITIES}
                              for e, d in drawn.items()}}
    return results, drawn


def test_dice_estimates_pass_the_bias_check(exact, study):
    """Statistical: every estimator's gradient, Hessian and mixed Hessian pass assert_unbiased (neither biased nor
    too heavy-tailed to test), and the experiment's bias check records the same statistic, threshold and verdict."""
    results, drawn = study
    for estimator, checks in results["bias_check"].items():
        for quantity, check in checks.items():
            report = lt.testing.assert_unbiased(drawn[estimator][quantity], exact[0]["derivatives"][quantity])
            assert check == {"max_abs_z": report.max_abs_z, "threshold": report.threshold,
                             "verdict": "consistent"}, (estimator, quantity)


def test_the_bias_check_rejects_the_wrong_target(exact, study):
    """Statistical, the check's power: every estimator's gradient, Hessian and mixed Hessian are rejected as
    estimates of the infinite-horizon ones (T = 10 truncates them by far more than the noise)."""
    _, drawn = study
    for estimator, derivatives in drawn.items():
        for quantity in ipd.QUANTITIES:
            report = lt.testing.check_unbiased(derivatives[quantity], exact[0]["infinite"][quantity])
            assert report.verdict == "biased", (estimator, quantity, report)


def test_leave_one_out_baseline_cuts_the_error(study):
    """The README's claim, with room: Loaded DiCE's relative RMS error is under half of DiCE's, per quantity."""
    results, _ = study
    dice, loaded = results["errors"]["dice"], results["errors"]["loaded_dice"]
    for quantity in ipd.QUANTITIES:
        assert loaded[quantity]["relative_rmse"] < 0.5 * dice[quantity]["relative_rmse"], quantity
