"""Baselines keep the score-function estimator unbiased and reduce its variance.

Statistical tests: fixed keys, `lt.testing.assert_unbiased` against exact gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

PARAMS = {"loc": jnp.array([2.0, -1.5]), "log_scale": jnp.array([-0.5, 0.2])}
F = lambda x: jnp.sum((x - 0.5) ** 2)
EXACT = lt.exact.normal_quadratic(0.5)


def estimates_for(baseline, key=0, num_estimates=400, f=F, params=PARAMS, num_samples=16):
    est = lt.score_function(f, lt.families.normal(), num_samples=num_samples, baseline=baseline)
    return lt.testing.draw_estimates(est, params, jax.random.key(key), num_estimates=num_estimates)


def total_variance(estimates):
    return sum(float(np.var(leaf, axis=0).sum()) for leaf in jax.tree_util.tree_leaves(estimates))


def test_leave_one_out_unbiased_and_reduces_variance():
    """Statistical: unbiased; f shifted by 20 (same gradient) has a variance only a baseline removes."""
    shifted = lambda x: F(x) + 20.0
    plain = estimates_for(None, f=shifted)
    loo = estimates_for(lt.baselines.leave_one_out(), f=shifted)
    lt.testing.assert_unbiased(plain, jax.grad(EXACT)(PARAMS))
    lt.testing.assert_unbiased(loo, jax.grad(EXACT)(PARAMS))
    # The true ratio is about 0.1; a variance from 400 estimates is off by more than 2x with negligible probability.
    assert total_variance(loo) < 0.25 * total_variance(plain)


def test_leave_one_out_values():
    b, _ = lt.baselines.leave_one_out().apply(jnp.array([1.0, 2.0, 6.0]), ())
    np.testing.assert_allclose(b, [4.0, 3.5, 1.5])


def test_own_sample_in_baseline_is_caught_as_biased():
    """Statistical: the classic mistake, a baseline that includes the sample's own value, is biased and rejected."""
    own_mean = lt.Baseline(init=lambda: (), apply=lambda v, s: (jnp.full_like(v, jnp.mean(v)), s))
    est = lt.score_function(F, lt.families.normal(), num_samples=4, baseline=own_mean)
    estimates = lt.testing.draw_estimates(est, PARAMS, jax.random.key(0), num_estimates=2000)
    with pytest.raises(AssertionError, match="biased"):
        lt.testing.assert_unbiased(estimates, jax.grad(EXACT)(PARAMS))


def test_moving_average_threads_state_and_stays_unbiased():
    """Statistical: after 20 jitted steps the baseline tracks E[f], and step-20 estimates over 400 chains are unbiased."""
    est = lt.score_function(F, lt.families.normal(), num_samples=16, baseline=lt.baselines.moving_average(0.8))

    def chain(key):
        def step(state, k):
            grads, state, aux = est.estimate(PARAMS, state, k)
            return state, (grads, aux["baseline"][0])

        state, (grads, b) = jax.lax.scan(step, est.init(PARAMS), jax.random.split(key, 20))
        return jax.tree_util.tree_map(lambda g: g[-1], grads), b[-1], state

    grads, b, state = jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(1), 400))
    assert np.all(state.count == 20)
    lt.testing.assert_unbiased(grads, jax.grad(EXACT)(PARAMS))
    # The baseline is an average of ~5 batch means of 16 samples: its mean over chains is within a few s.e. of E[f].
    lt.testing.assert_unbiased(b[:, None], EXACT(PARAMS)[None])


def test_moving_average_first_call_is_zero_then_bias_corrected():
    baseline = lt.baselines.moving_average(0.9)
    state = baseline.init()
    b, state = baseline.apply(jnp.array([4.0, 6.0]), state)
    np.testing.assert_allclose(b, [0.0, 0.0])
    b, state = baseline.apply(jnp.array([1.0, 1.0]), state)
    np.testing.assert_allclose(b, [5.0, 5.0], rtol=1e-6)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_moving_average_rejects_bad_decay(decay):
    with pytest.raises(ValueError, match="`decay`"):
        lt.baselines.moving_average(decay)


LOGITS = jnp.array([-1.0, -0.3, 0.2, 0.8, 1.5])
WEIGHTS = jnp.array([0.7, -0.4, 1.1, 0.5, -0.9])
BERNOULLI_F = lambda b: (jnp.dot(WEIGHTS, b) - 1.0) ** 2
BERNOULLI_EXACT = lt.exact.expectation(BERNOULLI_F, lt.families.bernoulli(), lt.exact.bernoulli_support(5))


def draws_after_warm_up(est, params, key, *, num_estimates, warm_up):
    """Estimates each taken after ``warm_up`` calls at the same params, from independent keys."""

    def one(k):
        warm, k = jax.random.split(k)
        state = jax.lax.fori_loop(0, warm_up, lambda i, s: est.estimate(params, s, jax.random.fold_in(warm, i))[1],
                                  est.init(params))
        return est.estimate(params, state, k)[0]

    return jax.jit(jax.vmap(one))(jax.random.split(key, num_estimates))


def test_optimal_pooled_unbiased_and_below_leave_one_out():
    """Statistical: the optimal baseline pooled over calls is unbiased and well below leave-one-out.

    At loc = 0.5, f = Σ (x - 0.5)² + 20 is even in the noise, where E[f s²] / E[s²]
    is far from E[f] (for one coordinate: 3σ² + 20 and 5σ² + 20 against σ² + 20).
    Pooled over 20 calls (decay 0.9) the variance is 0.51-0.61 of leave-one-out's
    over 5 keys; from the batch alone (decay 0), s⁴ is heavy-tailed and c noisy:
    0.85-0.98 at N = 16, 0.65-0.81 at N = 64.
    """
    shifted = lambda x: F(x) + 20.0
    centred = {"loc": jnp.array([0.5, 0.5]), "log_scale": PARAMS["log_scale"]}
    draws = {name: draws_after_warm_up(
        lt.score_function(shifted, lt.families.normal(), num_samples=16, baseline=baseline), centred,
        jax.random.key(0), num_estimates=400, warm_up=20)
        for name, baseline in (("optimal", lt.baselines.optimal(decay=0.9)), ("loo", lt.baselines.leave_one_out()))}
    lt.testing.assert_unbiased(draws["optimal"], jax.grad(EXACT)(centred))
    ratio = total_variance(draws["optimal"]) / total_variance(draws["loo"])
    print(f"optimal (pooled) / leave-one-out variance: {ratio:.2f}")
    assert ratio < 0.75


def test_optimal_unbiased_on_bernoulli_logits():
    """Statistical: unbiased on 5 Bernoulli logits against enumeration, N = 4, from the batch alone."""
    est = lt.score_function(BERNOULLI_F, lt.families.bernoulli(), num_samples=4, baseline=lt.baselines.optimal())
    estimates = lt.testing.draw_estimates(est, LOGITS, jax.random.key(3), num_estimates=2000)
    lt.testing.assert_unbiased(estimates, jax.grad(BERNOULLI_EXACT)(LOGITS))


def test_optimal_values_leave_one_out():
    values, s2 = jnp.array([1.0, 2.0, 6.0]), jnp.array([[1.0], [3.0], [0.0]])
    state = lt.baselines.optimal().init(jnp.zeros(1))
    c, _ = lt.baselines.optimal().apply(values, state, s2)
    # c_i = Σ_{k≠i} f_k s_k² / Σ_{k≠i} s_k²: (6 + 0)/3, (1 + 0)/1, (1 + 6)/4.
    np.testing.assert_allclose(c[:, 0], [2.0, 1.0, 1.75])
    c, _ = lt.baselines.optimal().apply(values, state, jnp.array([[1.0], [0.0], [0.0]]))
    # Sample 0's others have no score: the leave-one-out mean of f.
    np.testing.assert_allclose(c[:, 0], [4.0, 1.0, 1.0])


def test_optimal_refuses_chunking_and_antithetic():
    for kwargs in ({"chunk_size": 2}, {"antithetic": True}):
        with pytest.raises(ValueError, match="per-coordinate"):
            lt.score_function(F, lt.families.normal(), num_samples=4, baseline=lt.baselines.optimal(), **kwargs)


def test_group_normalised_bias_is_measured():
    """Statistical: GRPO normalisation is biased: the z-test rejects it; its length and angle are off."""
    est = lt.score_function(BERNOULLI_F, lt.families.bernoulli(), num_samples=4,
                            baseline=lt.baselines.group_normalised())
    estimates = lt.testing.draw_estimates(est, LOGITS, jax.random.key(4), num_estimates=3000)
    exact = np.asarray(jax.grad(BERNOULLI_EXACT)(LOGITS))
    mean = np.asarray(estimates).mean(axis=0)
    length = np.linalg.norm(mean) / np.linalg.norm(exact)
    angle = np.degrees(np.arccos(mean @ exact / np.linalg.norm(mean) / np.linalg.norm(exact)))
    z = np.abs(lt.testing.z_scores(estimates, exact)).max()
    print(f"GRPO: |mean| / |exact| = {length:.2f}, angle {angle:.0f} degrees, max |z| {z:.0f}")
    with pytest.raises(AssertionError, match="biased"):
        lt.testing.assert_unbiased(estimates, exact)


def test_group_normalised_values():
    b, _ = lt.baselines.group_normalised().apply(jnp.array([1.0, 2.0, 4.0]), ())
    values = jnp.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(values - b, lt.rl.group_normalised_advantages(values), atol=1e-6)
    b, _ = lt.baselines.group_normalised().apply(jnp.full(4, 3.7), ())
    np.testing.assert_allclose(jnp.full(4, 3.7) - b, 0.0, atol=1e-6)


def test_optimal_from_two_samples_is_leave_one_out():
    """With N = 2 and nothing pooled, c_i = f_k s_k² / s_k² is the other sample's f."""
    values = jnp.array([1.5, -2.0])
    c, _ = lt.baselines.optimal().apply(values, lt.baselines.optimal().init(jnp.zeros(3)), jnp.array(
        [[0.3, 1.0, 2.0], [0.7, 0.1, 4.0]]))
    np.testing.assert_allclose(c, jnp.broadcast_to(jnp.array([[-2.0], [1.5]]), (2, 3)), rtol=1e-6)


def test_optimal_pools_previous_calls():
    """The decayed sums of earlier calls enter c; the current sample never enters its own c."""
    baseline = lt.baselines.optimal(decay=0.5)
    state = baseline.init(jnp.zeros(1))
    _, state = baseline.apply(jnp.array([1.0, 3.0]), state, jnp.array([[1.0], [1.0]]))
    np.testing.assert_allclose(state.numerator, [2.0])  # 0.5 * (1 + 3)
    np.testing.assert_allclose(state.denominator, [1.0])  # 0.5 * (1 + 1)
    c, _ = baseline.apply(jnp.array([10.0, 20.0]), state, jnp.array([[2.0], [1.0]]))
    # c_0 = (2 + 20 * 1) / (1 + 1); c_1 = (2 + 10 * 2) / (1 + 2).
    np.testing.assert_allclose(c[:, 0], [11.0, 22.0 / 3.0], rtol=1e-6)
    with pytest.raises(ValueError, match="`decay`"):
        lt.baselines.optimal(decay=1.0)
