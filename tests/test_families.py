"""Built-in families and the adapter: shapes, normalisation, sample moments, and use in estimators."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from jax.scipy import stats

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def test_normal_sample_and_log_prob():
    params = {"loc": jnp.array([1.0, -2.0]), "log_scale": jnp.array([0.0, 0.5])}
    family = lt.families.normal()
    xs = family.sample(params, jax.random.key(0), 4000)
    assert xs.shape == (4000, 2)
    lt.testing.assert_unbiased(xs, params["loc"])
    lt.testing.assert_unbiased((xs - params["loc"]) ** 2, jnp.exp(2 * params["log_scale"]))
    x = jnp.array([0.3, 0.1])
    expected = stats.norm.logpdf(0.3, 1.0, 1.0) + stats.norm.logpdf(0.1, -2.0, jnp.exp(0.5))
    np.testing.assert_allclose(family.log_prob(params, x), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "family, params, support",
    [
        (lt.families.bernoulli(), jnp.array([-0.5, 1.2]), lt.exact.bernoulli_support(2)),
        (lt.families.categorical(), jnp.array([[0.1, 0.5, -1.0], [2.0, 0.0, 0.3]]), lt.exact.categorical_support(3, 2)),
        (lt.families.poisson(), jnp.log(jnp.array([0.5, 3.0])),
         jnp.stack(jnp.meshgrid(jnp.arange(40), jnp.arange(40), indexing="ij"), -1).reshape(-1, 2)),
    ],
    ids=["bernoulli", "categorical", "poisson"],
)
def test_discrete_families_normalised_and_sampled_with_their_probabilities(family, params, support):
    """Statistical: total mass 1, and sample frequencies of each coordinate's mean match the exact mean."""
    expectation = lambda g: lt.exact.expectation(g, family, support)(params)
    total, exact_mean = jit(lambda: (expectation(lambda x: jnp.float32(1.0)), jnp.stack(
        [expectation(lambda x, i=i: x[i].astype(jnp.float32)) for i in range(support.shape[1])])))()
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)
    xs = family.sample(params, jax.random.key(1), 4000)
    assert xs.shape == (4000,) + support.shape[1:]
    lt.testing.assert_unbiased(xs.astype(jnp.float32), exact_mean)


NUMPYRO_CASES = {
    "normal": (
        lambda p: nd.Normal(p["loc"], jnp.exp(p["log_scale"])),
        {"loc": jnp.array([0.5, -1.0]), "log_scale": jnp.array([0.1, -0.2])},
        lambda x: jnp.sum(jnp.cos(1.5 * x)),
        lt.exact.normal_cosine(1.5),
    ),
    "bernoulli": (
        lambda logits: nd.Bernoulli(logits=logits),
        jnp.array([0.3, -0.8, 1.1]),
        lambda b: jnp.sum(b * jnp.array([1.0, 2.0, -3.0])) + b[0] * b[2],
        lt.exact.expectation(lambda b: jnp.sum(b * jnp.array([1.0, 2.0, -3.0])) + b[0] * b[2],
                             lt.families.bernoulli(), lt.exact.bernoulli_support(3)),
    ),
}


@pytest.mark.parametrize("case", NUMPYRO_CASES)
def test_numpyro_adapter_gives_unbiased_gradients(case):
    """Statistical: a numpyro distribution adapted as a Family, against an exact gradient."""
    make, params, f, exact = NUMPYRO_CASES[case]
    family = lt.families.from_distribution(make)
    est = lt.score_function(f, family, num_samples=32, baseline=lt.baselines.leave_one_out())
    estimates = jit(jax.vmap(lambda k: est.estimate(params, (), k)[0]))(jax.random.split(jax.random.key(0), 300))
    lt.testing.assert_unbiased(estimates, jax.grad(exact)(params))


def test_adapter_accepts_seed_keyword_and_rejects_unknown_signature():
    class SeedNormal:
        def __init__(self, loc):
            self.loc = loc

        def sample(self, *, seed, sample_shape=()):
            return self.loc + jax.random.normal(seed, sample_shape + jnp.shape(self.loc))

        def log_prob(self, x):
            return stats.norm.logpdf(x, self.loc)

    family = lt.families.from_distribution(SeedNormal)
    assert family.sample(jnp.zeros(3), jax.random.key(0), 5).shape == (5, 3)

    class NoKey:
        def sample(self, sample_shape=()):
            return jnp.zeros(sample_shape)

    with pytest.raises(TypeError, match="neither `key` nor `seed`"):
        lt.families.from_distribution(lambda p: NoKey()).sample(None, jax.random.key(0), 2)


@pytest.mark.parametrize("name", ["normal", "bernoulli", "categorical", "poisson"])
def test_log_prob_elements_sum_to_log_prob(name):
    """Each built-in family's per-element log-probabilities have the batch shape and sum to log_prob."""
    family = getattr(lt.families, name)()
    params = {"normal": {"loc": jnp.arange(6.0).reshape(2, 3), "log_scale": jnp.full((2, 3), -0.5)},
              "bernoulli": jnp.linspace(-1, 1, 6).reshape(2, 3), "categorical": jnp.arange(24.0).reshape(2, 3, 4) / 7,
              "poisson": jnp.linspace(-1, 1, 6).reshape(2, 3)}[name]
    x = family.sample(params, jax.random.key(0), 1)[0]
    elements = family.log_prob_elements(params, x)
    assert elements.shape == (2, 3)
    np.testing.assert_allclose(jnp.sum(elements), family.log_prob(params, x), rtol=1e-5)


def test_inverse_cdfs_are_the_quantile_functions():
    """On a grid of u (the midpoints of 64 cells, and the extreme grid points), each family's inverse CDF is
    scipy's quantile function: the normal's to float precision, the Poisson's and categorical's exactly."""
    from scipy import stats as scipy_stats

    u = np.concatenate([(np.arange(64) + 0.5) / 64, [2.0**-24, 1 - 2.0**-24]]).astype(np.float32)
    normal = {"loc": jnp.full(u.shape, 0.5), "log_scale": jnp.full(u.shape, -0.3)}
    np.testing.assert_allclose(lt.families.normal().inverse_cdf(normal, jnp.asarray(u)),
                               scipy_stats.norm.ppf(u, 0.5, np.exp(-0.3)), rtol=2e-5, atol=2e-5)
    for rate in (0.3, 4.0, 150.0):
        x = jit(lt.families.poisson().inverse_cdf)(jnp.full(u.shape, np.log(rate), jnp.float32), jnp.asarray(u))
        np.testing.assert_array_equal(x[:64], scipy_stats.poisson.ppf(u[:64], rate), err_msg=f"rate {rate}")
        assert scipy_stats.poisson.cdf(x[-1], rate) >= 1 - 1e-6
    logits = jnp.array([0.2, -1.0, 1.5, 0.0])
    probs = np.asarray(jax.nn.softmax(logits), np.float64)
    x = lt.families.categorical().inverse_cdf(jnp.broadcast_to(logits, u.shape + (4,)), jnp.asarray(u))
    np.testing.assert_array_equal(x, np.minimum(np.searchsorted(np.cumsum(probs), u), 3))
    np.testing.assert_array_equal(lt.families.bernoulli().inverse_cdf(jnp.full(u.shape, 0.4), jnp.asarray(u)),
                                  u < 1 / (1 + np.exp(-0.4)))
