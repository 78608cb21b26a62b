"""Delta-method and sum-and-sample control variates against exact gradients.

Stochastic tests here are statistical: many independent estimates from a fixed
key, and `lt.testing.assert_unbiased` (a Bonferroni z-test with the standard
error measured from those estimates) against an exact gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt
from logtrick.control_variates import delta_method, sum_and_sample

NUM_ESTIMATES = 400
GAUSS = {"loc": jnp.linspace(-1.0, 1.0, 5), "log_scale": jnp.full(5, -1.0)}
LOGITS = jnp.array([2.0, 1.5, 0.5, 0.0, -0.5, -1.0, 0.3, -2.0])
TABLE = jnp.array([6.0, 2.0, 5.0, 3.5, 1.0, 4.0, 7.0, 2.5])


def total_variance(estimates):
    return sum(float(np.var(np.asarray(leaf), axis=0, ddof=1).sum()) for leaf in jax.tree_util.tree_leaves(estimates))


def quadratic(x):
    return jnp.sum((x - 0.5) ** 2) + 2.0 * x[0] * x[1] - x[2] * x[4] + jnp.sum(x)


def quadratic_expectation(params):
    mu, sigma = params["loc"], jnp.exp(params["log_scale"])
    return jnp.sum((mu - 0.5) ** 2 + sigma**2) + 2.0 * mu[0] * mu[1] - mu[2] * mu[4] + jnp.sum(mu)


def test_delta_method_is_exact_for_a_quadratic():
    """Zero variance for quadratic f: every key's gradient, value and Hessian are the exact ones."""
    est = delta_method(quadratic, num_samples=4)

    def per_key(key):
        grads, _, aux = est.estimate(GAUSS, (), key)
        return grads, est.surrogate(GAUSS, (), key), jax.hessian(est.surrogate)(GAUSS, (), key), aux

    grads, values, hessians, aux = jax.jit(jax.vmap(per_key))(jax.random.split(jax.random.key(0), 8))
    exact = jax.jit(lambda p: (quadratic_expectation(p), jax.grad(quadratic_expectation)(p),
                               jax.hessian(quadratic_expectation)(p)))
    value, grad, hessian = exact(GAUSS)
    np.testing.assert_allclose(values, np.full(8, value), rtol=1e-5)
    for a in GAUSS:
        np.testing.assert_allclose(grads[a], np.broadcast_to(grad[a], (8, 5)), atol=1e-4)
        for b in GAUSS:
            np.testing.assert_allclose(hessians[a][b], np.broadcast_to(hessian[a][b], (8, 5, 5)), atol=1e-3)
    assert aux["f"].shape == aux["control_variate"].shape == (8, 4)
    np.testing.assert_allclose(aux["control_variate"], aux["f"], rtol=1e-5)


def test_delta_method_unbiased_with_far_lower_variance():
    """Statistical: Σ cos(x_d), D = 5, against the closed form; variance far below score function + leave-one-out."""
    f = lambda x: jnp.sum(jnp.cos(x))
    est = delta_method(f, num_samples=16)
    plain = lt.score_function(f, lt.families.normal(), num_samples=16, baseline=lt.baselines.leave_one_out())

    def per_key(key):
        k1, k2 = jax.random.split(key)
        return est.estimate(GAUSS, (), k1)[0], plain.estimate(GAUSS, (), k2)[0]

    keys = jax.random.split(jax.random.key(0), NUM_ESTIMATES)
    estimates, reference = jax.jit(jax.vmap(per_key))(keys)
    lt.testing.assert_unbiased(estimates, jax.jit(jax.grad(lt.exact.normal_cosine(1.0)))(GAUSS))
    ratio = total_variance(estimates) / total_variance(reference)
    print(f"delta method / score function (leave-one-out) variance ratio, N = 16, σ = e^-1: {ratio:.4f}")
    assert ratio < 0.1


@pytest.mark.parametrize(
    "params, match",
    [
        ({"loc": jnp.zeros(3)}, "`params` must be a mapping with keys 'loc' and 'log_scale'"),
        ({"loc": jnp.zeros(3), "log_scale": jnp.zeros(2)}, r"must both have shape \(D,\)"),
        ({"loc": jnp.zeros((2, 3)), "log_scale": jnp.zeros((2, 3))}, r"must both have shape \(D,\)"),
    ],
)
def test_delta_method_bad_params(params, match):
    with pytest.raises(ValueError, match=match):
        delta_method(jnp.sum, num_samples=4).estimate(params, (), jax.random.key(0))


def test_delta_method_bad_f_and_num_samples():
    with pytest.raises(ValueError, match="`f` must return a scalar"):
        delta_method(lambda x: x, num_samples=4).estimate(GAUSS, (), jax.random.key(0))
    with pytest.raises(ValueError, match="`num_samples` must be an int >= 1"):
        delta_method(jnp.sum, num_samples=0)


def test_sum_and_sample_unbiased_below_score_function_and_surrogate():
    """Statistical: K = 8, exact by enumeration, with and without leave-one-out.

    A baseline subtracted from the sampled term alone would be biased by
    b ∇q_C; with f around 4 that bias is many standard errors wide. The
    variance is compared with the plain score function at the same number of f
    evaluations (2 summed + 4 sampled = 6). Also checks the surrogate's value
    and the aux entries.
    """
    f = lambda x: TABLE[x]
    family = lt.families.categorical()
    plain = lt.score_function(f, family, num_samples=6)
    summed = sum_and_sample(f, num_summed=2, num_samples=4)
    loo = sum_and_sample(f, num_summed=2, num_samples=4, baseline=lt.baselines.leave_one_out())

    def per_key(key):
        k1, k2 = jax.random.split(key)
        grads, _, aux = loo.estimate(LOGITS, (), k2)
        others = plain.estimate(LOGITS, (), k1)[0], summed.estimate(LOGITS, (), k2)[0]
        return others + (grads, loo.surrogate(LOGITS, (), k2), aux)

    keys = jax.random.split(jax.random.key(0), NUM_ESTIMATES)
    reference, no_baseline, with_loo, values, aux = jax.jit(jax.vmap(per_key))(keys)
    expected = jax.jit(jax.grad(lt.exact.expectation(f, family, lt.exact.categorical_support(8))))(LOGITS)
    for name, estimates in [("none", no_baseline), ("leave_one_out", with_loo)]:
        lt.testing.assert_unbiased(estimates, expected)
        ratio = total_variance(estimates) / total_variance(reference)
        print(f"sum-and-sample (baseline {name}) / plain score function variance ratio, 6 evaluations: {ratio:.4f}")
        assert ratio < 1.0

    np.testing.assert_array_equal(aux["summed_classes"], np.broadcast_to([0, 1], (NUM_ESTIMATES, 2)))
    assert aux["f"].shape == aux["baseline"].shape == (NUM_ESTIMATES, 4)
    assert not np.any(np.isin(aux["f"], TABLE[:2]))
    q = jax.nn.softmax(LOGITS)
    expected_values = np.sum(q[:2] * aux["f_summed"], axis=1) + (1.0 - q[:2].sum()) * np.mean(aux["f"], axis=1)
    np.testing.assert_allclose(values, expected_values, rtol=1e-5)


def test_sum_and_sample_nonfinite_summed_f_gives_nan_grads():
    """A non-finite f on a summed class: NaN grads, baseline state unchanged."""
    f = lambda x: jnp.where(x == 0, jnp.inf, TABLE[x])
    est = sum_and_sample(f, num_summed=2, num_samples=3, baseline=lt.baselines.moving_average(0.9))
    state = est.init(LOGITS)
    grads, new_state, aux = jax.jit(est.estimate)(LOGITS, state, jax.random.key(0))
    assert np.all(np.isnan(grads)) and not np.all(np.isfinite(aux["f_summed"]))
    assert int(new_state.count) == int(state.count)


def test_sum_and_sample_bad_arguments():
    with pytest.raises(ValueError, match="`num_summed` must be an int >= 1"):
        sum_and_sample(jnp.float32, num_summed=0, num_samples=4)
    with pytest.raises(ValueError, match="`num_samples` must be an int >= 2"):
        sum_and_sample(jnp.float32, num_summed=1, num_samples=1, baseline=lt.baselines.leave_one_out())
    est = sum_and_sample(lambda x: TABLE[x], num_summed=8, num_samples=4)
    with pytest.raises(ValueError, match="`num_summed` must be < K=8"):
        est.estimate(LOGITS, (), jax.random.key(0))
    est = sum_and_sample(lambda x: TABLE[x], num_summed=2, num_samples=4)
    with pytest.raises(ValueError, match=r"`params` must be logits of shape \(K,\)"):
        est.estimate(LOGITS.reshape(2, 4), (), jax.random.key(0))
