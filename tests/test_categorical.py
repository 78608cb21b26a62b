"""Sum-and-sample (lt.sum_and_sample) against the exact gradient of a categorical expectation.

Stochastic tests are statistical: many independent estimates from a fixed key
and `lt.testing.assert_unbiased` against enumeration of the 8 classes
(`lt.exact.estimator`), in the logits and in f's own parameters.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
CATEGORICAL = lt.families.categorical()
LOGITS = jnp.array([2.0, 1.5, 0.5, 0.0, -0.5, -1.0, 0.3, -2.0])
TABLE = jnp.array([6.0, 2.0, 5.0, 3.5, 1.0, 4.0, 7.0, 2.5])
NUM_ESTIMATES = 2000


def lookup(x, table):
    return table[x]


def exact_variance_ratio():
    """Total variance of sum-and-sample without a baseline over the plain score function's, 6 f evaluations each,
    exactly by enumeration in numpy: with h(x) = f(x) ∇log q(x) = f(x) (e_x - q), the plain estimate has
    (1/6) Var_q h, and sum-and-sample (1/4) (1 - q_C)² Var_r h, r = q(· | x ∉ C), C the 2 likeliest classes."""
    q, table = np.asarray(jax.nn.softmax(LOGITS), np.float64), np.asarray(TABLE, np.float64)
    h = table[:, None] * (np.eye(8) - q)
    variance = lambda weights, rows: weights @ np.sum((rows - weights @ rows) ** 2, axis=1)
    q_summed = q[:2].sum()
    return (1 - q_summed) ** 2 * variance(q[2:] / (1 - q_summed), h[2:]) / 4 / (variance(q, h) / 6)


def test_sum_and_sample_unbiased_in_logits_and_args_below_score_function():
    """Statistical: K = 8, with and without leave-one-out, ∇_logits (``estimate``) and ∇_table against enumeration.

    A baseline subtracted from the sampled term alone would be biased by
    b ∇q_C; with f around 4 that bias is many standard errors wide. Paired
    against the plain score function at the same number of f evaluations
    (2 summed + 4 sampled = 6) on the same keys, the variance ratio is 0.1716
    (exact) ± 0.035 without a baseline and at most 0.05 with leave-one-out.
    Also checks the loss's value and the aux entries.
    """
    plain = lt.score_function(lookup, CATEGORICAL, num_samples=6)
    summed = lt.sum_and_sample(lookup, num_summed=2, num_samples=4)
    loo = lt.sum_and_sample(lookup, num_summed=2, num_samples=4, baseline=lt.baselines.leave_one_out())

    def grads(est, key):
        logits_grad, _, aux = est.estimate(LOGITS, (), key, TABLE)
        value, table_grad = jax.value_and_grad(lambda t: est.loss(LOGITS, (), key, t)[0])(TABLE)
        return (logits_grad, table_grad), value, aux

    def per_key(key):
        return grads(plain, key)[0], grads(summed, key)[0], grads(loo, key)

    keys = jax.random.split(jax.random.key(0), NUM_ESTIMATES)
    reference, no_baseline, (with_loo, values, aux) = jit(jax.vmap(per_key))(keys)
    exact = lt.exact.estimator(lookup, CATEGORICAL, lt.exact.categorical_support(8))
    expected = jit(jax.grad(lambda p, t: exact.loss(p, (), jax.random.key(0), t)[0], argnums=(0, 1)))(LOGITS, TABLE)
    for estimates in (no_baseline, with_loo):
        lt.testing.assert_unbiased(estimates, expected)
    ratio = exact_variance_ratio()
    np.testing.assert_allclose(ratio, 0.1716, atol=1e-4)
    # The margins: 30 other seeds of 2000 estimates (ratios 0.163-0.179 without a baseline; 0.040-0.044, median
    # 0.0418, with leave-one-out) all give a paired z > 4.5 at them, on both sides.
    lt.testing.assert_variance_ratio(no_baseline[0], reference[0], at_most=ratio + 0.035)
    lt.testing.assert_variance_ratio(reference[0], no_baseline[0], at_most=1 / (ratio - 0.035))
    lt.testing.assert_variance_ratio(with_loo[0], reference[0], at_most=0.05)

    np.testing.assert_array_equal(aux["summed_classes"], np.broadcast_to([0, 1], (NUM_ESTIMATES, 2)))
    assert aux["f"].shape == aux["baseline"].shape == (NUM_ESTIMATES, 4)
    assert not np.any(np.isin(aux["f"], TABLE[:2]))
    q = jax.nn.softmax(LOGITS)
    expected_values = np.sum(q[:2] * aux["f_summed"], axis=1) + (1.0 - q[:2].sum()) * np.mean(aux["f"], axis=1)
    np.testing.assert_allclose(values, expected_values, rtol=1e-5)


def test_sum_and_sample_nonfinite_summed_f_gives_nan_grads():
    """A non-finite f on a summed class: NaN value and every entry of both gradients, state unchanged."""
    est = lt.sum_and_sample(lambda x, t: jnp.where(x == 0, jnp.inf, t[x]), num_summed=2, num_samples=3,
                            baseline=lt.baselines.moving_average(0.9))
    state = est.init(LOGITS)

    def step(logits, table):
        (value, (new_state, aux)), grads = jax.value_and_grad(
            lambda p, t: est.loss(p, state, jax.random.key(0), t), argnums=(0, 1), has_aux=True)(logits, table)
        return value, new_state, aux, grads

    value, new_state, aux, grads = jit(step)(LOGITS, TABLE)
    assert np.isnan(value) and all(np.all(np.isnan(g)) for g in grads)
    assert np.all(np.isfinite(aux["f"])) and not np.all(np.isfinite(aux["f_summed"]))
    assert int(new_state.count) == int(state.count)


def test_sum_and_sample_bad_arguments():
    with pytest.raises(ValueError, match="sum_and_sample: `num_summed` must be an int >= 1"):
        lt.sum_and_sample(lookup, num_summed=0, num_samples=4)
    with pytest.raises(ValueError, match="sum_and_sample: `num_samples` must be an int >= 2"):
        lt.sum_and_sample(lookup, num_summed=1, num_samples=1, baseline=lt.baselines.leave_one_out())
    key = jax.random.key(0)
    est = lt.sum_and_sample(lookup, num_summed=8, num_samples=4)
    with pytest.raises(ValueError, match="sum_and_sample: `num_summed` must be < K=8"):
        jax.eval_shape(est.estimate, LOGITS, (), key, TABLE)
    est = lt.sum_and_sample(lookup, num_summed=2, num_samples=4)
    with pytest.raises(ValueError, match=r"sum_and_sample: `params` must be logits of shape \(K,\)"):
        jax.eval_shape(est.estimate, LOGITS.reshape(2, 4), (), key, TABLE)
