"""lt.measure_valued: unbiased against exact gradients for every family with a weak derivative, coupled or not.

The stochastic tests are statistical: independent estimates from a fixed key,
tested by `lt.testing.assert_unbiased` (α = 1e-3, Bonferroni over every
coordinate of every variant in one call) against `jax.grad` of closed forms or
enumerations. The exact single-sample variance by quadrature is checked
against Monte Carlo in `tests/test_experiments_gaussian_variance.py`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
NUM_ESTIMATES = 400
VARIANTS = {"coupled": dict(coupling=True), "uncoupled": dict(coupling=False),
            "rqmc": dict(coupling=True, sampler="rqmc")}


def draws(f, family, params, *args, num_samples=16):
    """NUM_ESTIMATES estimates of every variant of lt.measure_valued, in one compiled function."""
    ests = {name: lt.measure_valued(f, family, num_samples=num_samples, **kw) for name, kw in VARIANTS.items()}

    def one(key):
        return {name: est.estimate(params, (), key, *args)[0] for name, est in ests.items()}

    return jit(jax.vmap(one))(jax.random.split(jax.random.key(0), NUM_ESTIMATES))


def expected(grad):
    return {name: grad for name in VARIANTS}


K = jnp.array([1.5, 0.7])
GAUSS = {"loc": jnp.array([0.3, -0.5]), "log_scale": jnp.array([-0.2, 0.1])}


def gaussian_f(x):
    """Smooth, with an interaction; and a step, not differentiable in x."""
    return jnp.sum(jnp.cos(K * x)) + x[0] * x[1] + 2.0 * (x[1] > 0.2)


def gaussian_exact(params):
    loc, scale = params["loc"], jnp.exp(params["log_scale"])
    smooth = jnp.sum(jnp.exp(-0.5 * (K * scale) ** 2) * jnp.cos(K * loc)) + loc[0] * loc[1]
    return smooth + 2.0 * jax.scipy.stats.norm.sf(0.2, loc[1], scale[1])


def test_gaussian_unbiased_for_smooth_and_discontinuous_f():
    """Statistical: location (Weibull) and log-scale (Maxwell) parts, coupled, uncoupled and RQMC."""
    lt.testing.assert_unbiased(draws(gaussian_f, lt.families.normal(), GAUSS),
                               expected(jax.grad(gaussian_exact)(GAUSS)))


def test_bernoulli_unbiased():
    """Statistical: three Bernoullis, f with a three-way interaction, exact by enumeration."""
    f = lambda b: (b[0] + 2.0 * b[1] - b[2]) ** 2 + 3.0 * b[0] * b[1] * b[2]
    logits = jnp.array([0.4, -1.0, 1.5])
    exact = lt.exact.expectation(f, lt.families.bernoulli(), lt.exact.bernoulli_support(3))
    lt.testing.assert_unbiased(draws(f, lt.families.bernoulli(), logits), expected(jax.grad(exact)(logits)))


def test_categorical_unbiased():
    """Statistical: 3 categoricals of 5 classes, f with pairwise interactions, exact over the 125 outcomes."""
    w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
    f = lambda x: w[0, x[0]] * w[1, x[1]] + jnp.sin(w[2, x[2]] + x[0]) + 0.3 * x[1] * x[2]
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)
    exact = lt.exact.expectation(f, lt.families.categorical(), lt.exact.categorical_support(5, 3))
    lt.testing.assert_unbiased(draws(f, lt.families.categorical(), logits), expected(jax.grad(exact)(logits)))


def test_poisson_unbiased():
    """Statistical: two Poissons (rates 0.7, 2.5), f with an interaction, exact over a truncated support."""
    f = lambda x: jnp.sin(x[0]) + x[0] * x[1] / (1.0 + x[1])
    log_rate = jnp.log(jnp.array([0.7, 2.5]))
    support = jnp.stack(jnp.meshgrid(jnp.arange(40), jnp.arange(40), indexing="ij"), -1).reshape(-1, 2)
    exact = lt.exact.expectation(f, lt.families.poisson(), support)
    lt.testing.assert_unbiased(draws(f, lt.families.poisson(), log_rate), expected(jax.grad(exact)(log_rate)))


def test_args_get_the_pathwise_gradient_and_the_mixed_derivative():
    """f(x, w) = w·cos(x): ∂_w of the loss is the sample mean of cos(x_i) (checked against the aux f values of
    the same call), and ∂_w ∂_θ is the estimate of ∇_θ E[cos x] with the same key."""
    est = lt.measure_valued(lambda x, w: jnp.dot(w, jnp.cos(x)), lt.families.normal(), num_samples=8)
    key, w = jax.random.key(3), jnp.array([1.0, -2.0])

    @jit
    def derivatives(w):
        grad_w, (_, aux) = jax.grad(lambda w: est.loss(GAUSS, (), key, w), has_aux=True)(w)
        mixed = jax.jacrev(lambda w: est.estimate(GAUSS, (), key, w)[0])(w)
        per_coordinate = [est.estimate(GAUSS, (), key, e)[0] for e in jnp.eye(2)]
        return grad_w, aux, mixed, per_coordinate

    grad_w, aux, mixed, per_coordinate = derivatives(w)
    cosines = jnp.stack([lt.measure_valued(lambda x: jnp.cos(x[i]), lt.families.normal(), num_samples=8).loss(
        GAUSS, (), key)[1][1]["f"] for i in range(2)])
    np.testing.assert_allclose(grad_w, cosines.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(jnp.dot(w, cosines.mean(axis=1)), aux["f"].mean(), rtol=1e-5)
    for i in range(2):
        for name in ("loc", "log_scale"):
            np.testing.assert_allclose(mixed[name][:, i], per_coordinate[i][name], rtol=1e-5, atol=1e-6)


def test_chunked_is_the_unchunked_estimate_under_rqmc():
    """Under sampler='rqmc' the chunks take their points of one net: same key, same estimate."""
    make = lambda **kw: lt.measure_valued(gaussian_f, lt.families.normal(), num_samples=16, sampler="rqmc", **kw)
    key = jax.random.key(5)
    whole, chunked = (jit(est.estimate)(GAUSS, (), key)[0] for est in (make(), make(chunk_size=4)))
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(chunked)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nonfinite_f_at_a_redrawn_sample_makes_the_gradient_nan():
    """f is finite at every base sample (b_0 = 0 there) but -inf at the x⁺ with b_0 = 1: NaN, not a silent skip."""
    est = lt.measure_valued(lambda b: jnp.log1p(-b[0]), lt.families.bernoulli(), num_samples=4)
    grads, _, aux = est.estimate(jnp.array([-30.0, 0.0]), (), jax.random.key(0))
    assert np.all(np.isfinite(aux["f"])) and np.all(np.isnan(grads))


def test_errors_name_the_argument():
    family_without = lt.Family(lt.families.normal().sample, lt.families.normal().log_prob)
    with pytest.raises(ValueError, match="measure_valued: `family` has no `weak_derivative`"):
        lt.measure_valued(jnp.sum, family_without, num_samples=4)
    with pytest.raises(ValueError, match="measure_valued: `num_samples`"):
        lt.measure_valued(jnp.sum, lt.families.normal(), num_samples=0)
    with pytest.raises(ValueError, match="measure_valued: `sampler` must be one of"):
        lt.measure_valued(jnp.sum, lt.families.normal(), num_samples=4, sampler="sobol")
