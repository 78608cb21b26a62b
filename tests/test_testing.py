"""The z-test accepts unbiased estimates and rejects a real bias."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt


def normal_draws(key, mean, num):
    return mean + jax.random.normal(jax.random.key(key), (num,) + jnp.shape(mean))


def test_accepts_unbiased_and_reports():
    mean = {"a": jnp.array([1.0, -2.0, 3.0]), "b": jnp.float32(0.5)}
    draws = jax.tree_util.tree_map(lambda m: normal_draws(0, m, 500), mean)
    report = lt.testing.assert_unbiased(draws, mean)
    assert report.num_estimates == 500 and report.max_abs_z < report.threshold
    assert report.z["a"].shape == (3,)


def test_rejects_a_bias_of_a_few_standard_errors_in_one_coordinate():
    """A shift of 0.3 standard deviations in one of 10 coordinates (z ≈ 0.3 √2000 ≈ 13) is found and named."""
    expected = jnp.zeros(10)
    draws = normal_draws(1, expected, 2000).at[:, 7].add(0.3)
    with pytest.raises(AssertionError, match=r"\[7\]"):
        lt.testing.assert_unbiased(draws, expected)


def test_threshold_is_bonferroni():
    draws = normal_draws(2, jnp.zeros(100), 100)
    report = lt.testing.assert_unbiased(draws, jnp.zeros(100), significance=0.01)
    # Φ⁻¹(1 - 0.01 / 200) ≈ 3.89
    np.testing.assert_allclose(report.threshold, 3.8906, atol=1e-3)


def test_constant_estimates_need_exact_agreement():
    lt.testing.assert_unbiased(jnp.full((50, 2), 1.0), jnp.ones(2))
    with pytest.raises(AssertionError):
        lt.testing.assert_unbiased(jnp.full((50, 2), 1.0), jnp.array([1.0, 1.01]))


def test_nan_estimates_are_rejected():
    with pytest.raises(AssertionError):
        lt.testing.assert_unbiased(jnp.full((50,), jnp.nan), jnp.float32(0.0))


def test_input_errors():
    with pytest.raises(ValueError, match="pytree structures"):
        lt.testing.assert_unbiased({"a": jnp.zeros((40, 2))}, {"b": jnp.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        lt.testing.assert_unbiased(jnp.zeros((40, 3)), jnp.zeros(2))
    with pytest.raises(ValueError, match="at least 30"):
        lt.testing.assert_unbiased(jnp.zeros((10, 2)), jnp.zeros(2))


def test_z_test_reports_without_raising():
    """The report of a rejected test, its z-scores the hand-computed (mean - expected) / (std / √M)."""
    draws = normal_draws(3, jnp.zeros(4), 400).at[:, 2].add(1.0)
    report = lt.testing.z_test(draws, jnp.zeros(4))
    d = np.asarray(draws, np.float64)
    z = d.mean(axis=0) / (d.std(axis=0, ddof=1) / np.sqrt(400))
    np.testing.assert_allclose(report.z, z, rtol=1e-6)
    assert report.max_abs_z == pytest.approx(np.abs(z).max()) and report.max_abs_z > report.threshold
    assert report.num_estimates == 400 and int(np.argmax(np.abs(report.z))) == 2
    with pytest.raises(ValueError, match="at least 30"):
        lt.testing.z_test(draws[:10], jnp.zeros(4))


def test_accuracy_fields_against_hand_computations():
    estimates = {"a": np.array([[1.0, 0.0], [3.0, 2.0]] * 20), "b": np.array([[0.5], [-0.5]] * 20)}
    expected = {"a": np.array([1.0, 1.0]), "b": np.array([1.0])}
    acc = lt.testing.accuracy(estimates, expected)
    est = np.concatenate([estimates["a"], estimates["b"]], axis=1)  # rows (1, 0, .5) and (3, 2, -.5)
    g = np.array([1.0, 1.0, 1.0])
    mean = est.mean(axis=0)  # (2, 1, 0)
    assert acc.relative_bias == pytest.approx(np.linalg.norm(mean - g) / np.sqrt(3))
    assert acc.relative_rmse == pytest.approx(np.sqrt(np.mean(np.sum((est - g) ** 2, axis=1))) / np.sqrt(3))
    cosines = est @ g / (np.linalg.norm(est, axis=1) * np.sqrt(3))
    assert acc.cosine == pytest.approx(cosines.mean())
    assert acc.cosine_of_mean == pytest.approx(mean @ g / (np.linalg.norm(mean) * np.sqrt(3)))
    report = lt.testing.z_test(estimates, expected)
    assert (acc.max_abs_z, acc.threshold, acc.num_estimates) == (report.max_abs_z, report.threshold, 40)
    # An estimate of exactly 0 has cosine 0; a zero mean has cosine_of_mean 0.
    zero = lt.testing.accuracy(np.array([[0.0, 0.0], [2.0, 0.0], [-2.0, 0.0]] * 10), np.array([1.0, 0.0]))
    assert zero.cosine == pytest.approx(0.0) and zero.cosine_of_mean == 0.0 and zero.relative_bias == 1.0
    with pytest.raises(ValueError, match="`expected` is zero"):
        lt.testing.accuracy(np.ones((40, 2)), np.zeros(2))


def test_draw_estimates_in_both_forms():
    """The estimator form draws ``estimate(params, init(params), k)``; the function form any ``key -> pytree``."""
    est = lt.score_function(lambda x: jnp.sum(x**2), lt.families.normal(), num_samples=4,
                            baseline=lt.baselines.moving_average(0.5))
    params = {"loc": jnp.array([0.5, -1.0]), "log_scale": jnp.zeros(2)}
    key = jax.random.key(0)
    draws = lt.testing.draw_estimates(est, params, key, num_estimates=3)
    loss = lambda k: est.loss(params, est.init(params), k)[0]
    losses = lt.testing.draw_estimates(loss, key, num_estimates=3)
    single = jax.jit(lambda k: (est.estimate(params, est.init(params), k)[0], loss(k)))
    for i, k in enumerate(jax.random.split(key, 3)):
        grads, value = single(k)
        for name in params:
            np.testing.assert_allclose(draws[name][i], grads[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(losses[i], value, rtol=1e-6)
