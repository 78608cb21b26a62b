"""The unbiasedness test: it accepts unbiased estimates, rejects a real bias, refuses what it cannot test,
and is right about its error rate on heavy-tailed estimates (numpy simulations, a few hundred runs each)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

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


def test_threshold_is_bonferroni_student():
    draws = normal_draws(2, jnp.zeros(100), 300)
    report = lt.testing.assert_unbiased(draws, jnp.zeros(100), significance=0.01)
    # t_299(1 - 0.01 / 200) ≈ 3.944 (the normal quantile would be 3.89)
    np.testing.assert_allclose(report.threshold, 3.9437, atol=1e-3)


def test_constant_estimates_need_exact_agreement():
    """Equal estimates pass when they equal the expected value, and are refused otherwise: a deterministic
    bias and rare outcomes the sample has not reached look the same."""
    lt.testing.assert_unbiased(jnp.full((50, 2), 1.0), jnp.ones(2))
    with pytest.raises(lt.testing.InconclusiveError, match=r"\[1\]: all 50 estimates equal 1"):
        lt.testing.assert_unbiased(jnp.full((50, 2), 1.0), jnp.array([1.0, 1.01]))


def test_nan_estimates_are_rejected():
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(jnp.full((50,), jnp.nan), jnp.float32(0.0))


def test_input_errors():
    with pytest.raises(ValueError, match="pytree structures"):
        lt.testing.assert_unbiased({"a": jnp.zeros((40, 2))}, {"b": jnp.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        lt.testing.assert_unbiased(jnp.zeros((40, 3)), jnp.zeros(2))
    with pytest.raises(ValueError, match="at least 30"):
        lt.testing.assert_unbiased(jnp.zeros((10, 2)), jnp.zeros(2))


def test_check_unbiased_reports_without_raising():
    """The report of a rejected test, its statistics computed by hand: Hall's H(T) from T and the skewness,
    rescaled from the Student threshold at ν = 2(M - 1)/(2 + κ̂) degrees of freedom to the one at M - 1."""
    draws = normal_draws(3, jnp.zeros(4), 400).at[:, 2].add(1.0)
    report = lt.testing.check_unbiased(draws, jnp.zeros(4))
    d = np.asarray(draws, np.float64)
    t = d.mean(axis=0) / (d.std(axis=0, ddof=1) / np.sqrt(400))
    a = scipy.stats.skew(d, axis=0) / np.sqrt(400)
    nu = np.minimum(399.0, 2 * 399 / np.maximum(2 + scipy.stats.kurtosis(d, axis=0), 2.0))
    quantile = lambda df: scipy.stats.t.ppf(1 - 1e-3 / 8, df)
    h = (t + a * t**2 / 3 + a**2 * t**3 / 27 + a / 6) * quantile(399) / quantile(nu)
    np.testing.assert_allclose(report.z, h, rtol=1e-6)
    assert report.verdict == "biased" and report.max_abs_z == pytest.approx(np.abs(h).max())
    assert report.num_estimates == 400 and int(np.argmax(np.abs(report.z))) == 2
    with pytest.raises(ValueError, match="at least 30"):
        lt.testing.check_unbiased(draws[:10], jnp.zeros(4))


RNG = np.random.default_rng(0)


def _score_x4(runs, m):
    """One-sample score-function estimates of d/d log σ E[x⁴] at σ = 1: ε⁴ (ε² - 1), mean 12."""
    eps = RNG.standard_normal((runs, m, 1))
    return eps**4 * (eps**2 - 1), 12.0


def _rare_reward(runs, m):
    """4-sample score-function estimates of a rare reward: f = 100 on an outcome of probability 0.01."""
    hits = RNG.random((runs, m, 1, 4)) < 0.01
    return np.mean(100.0 * hits * (hits - 0.01), axis=-1), 100.0 * 0.01 * 0.99


def _verdicts(sampler, runs, m, alpha, bias=0.0):
    draws, mean = sampler(runs, m)
    return [lt.testing.check_unbiased(d + bias, np.full(d.shape[1:], mean), significance=alpha).verdict
            for d in draws]


@pytest.mark.parametrize("sampler, m", [(_score_x4, 30), (_score_x4, 64), (_rare_reward, 64)])
def test_heavy_tails_are_refused_not_rejected(sampler, m):
    """The estimates the plain z-test rejected 46%, 32% and 8% of the time at α = 0.05: rejections stay within
    the binomial bound of α over 400 runs, and most of these samples are refused as too few to test."""
    verdicts = _verdicts(sampler, 400, m, 0.05)
    rejected = verdicts.count("biased") / len(verdicts)
    assert rejected <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400), rejected
    assert verdicts.count("inconclusive") > len(verdicts) / 2


def test_a_plain_z_test_is_miscalibrated_on_the_same_estimates():
    """The same 400 samples of ε⁴ (ε² - 1) with 30 estimates: the uncorrected normal z-test rejects far more
    often than α = 0.05 (what the calibrated test replaces)."""
    draws, mean = _score_x4(400, 30)
    z = (draws.mean(axis=1) - mean) / (draws.std(axis=1, ddof=1) / np.sqrt(30))
    assert np.mean(np.abs(z) > 1.96) > 0.2


def test_power_on_light_tails_and_sample_size_helper():
    """estimates_needed's M detects a bias of the asked relative size at least 95% of the time (minus the
    binomial noise of 300 runs), and the test at M keeps its α on the unbiased estimates."""
    pilot = 2.0 + RNG.exponential(size=(100, 3)) - 1.0
    m = lt.testing.estimates_needed(pilot, np.full(3, 2.0), relative_bias=0.1, significance=0.01)
    sampler = lambda runs, m: (2.0 + RNG.exponential(size=(runs, m, 3)) - 1.0, 2.0)
    caught = _verdicts(sampler, 300, m, 0.01, bias=0.2).count("biased") / 300
    false = _verdicts(sampler, 300, m, 0.01).count("biased") / 300
    assert caught >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / 300), (m, caught)
    assert false <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / 300), (m, false)


def test_inconclusive_error_says_how_many_estimates():
    draws, mean = _score_x4(1, 64)
    report = lt.testing.check_unbiased(draws[0], np.full(1, mean))
    if report.verdict != "inconclusive":   # a sample that happens to look light-tailed: find one that does not
        draws, _ = _score_x4(20, 64)
        draws = draws[[lt.testing.check_unbiased(d, np.full(1, mean)).verdict == "inconclusive"
                       for d in draws].index(True)][None]
        report = lt.testing.check_unbiased(draws[0], np.full(1, mean))
    assert report.min_estimates > 64 and report.num_untestable == 1
    with pytest.raises(lt.testing.InconclusiveError, match=f"at least {report.min_estimates} estimates"):
        lt.testing.assert_unbiased(draws[0], np.full(1, mean))


def test_variance_ratio_checks_the_size_of_a_reduction():
    """Half the noise is a quarter of the variance: shown ≤ 0.3×, not shown ≤ 0.2× (the bound below the truth)."""
    noise = RNG.standard_normal((400, 5))
    report = lt.testing.assert_variance_ratio(0.5 * noise, noise, at_most=0.3)
    assert report.ratio == pytest.approx(0.25)
    with pytest.raises(AssertionError, match="not shown"):
        lt.testing.assert_variance_ratio(0.5 * noise, noise, at_most=0.2)
    with pytest.raises(ValueError, match="paired"):
        lt.testing.assert_variance_ratio(noise[:20], noise[:20], at_most=0.3)


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
    report = lt.testing.check_unbiased(estimates, expected)
    assert (acc.max_abs_z, acc.threshold, acc.num_estimates, acc.verdict) == (
        report.max_abs_z, report.threshold, 40, report.verdict)
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
