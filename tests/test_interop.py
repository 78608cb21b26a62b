"""logtrick inside other JAX libraries: a flax NNX encoder, an equinox decoder, distrax and NumPyro
distributions as families, optax chains around ``est.loss``.

Statistical where stated: 2000 independent estimates of a gradient through the user's model, against the
same model's gradient with ``lt.exact.estimator`` in place of the sampling estimator (`lt.testing.assert_unbiased`,
α = 1e-3).
"""

import functools

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax
import pytest
from flax import nnx

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
CATEGORICAL = lt.families.categorical()
DATA = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)  # 3 datapoints of 4 features
TABLE = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)


def per_datapoint_loss(est, logits, key):
    """The mean over datapoints of est.loss for f(x, row) = (row[x] + 1)², vmapped, each with its own key."""
    keys = jax.random.split(key, logits.shape[0])
    values = jax.vmap(lambda lg, k, row: est.loss(lg, est.init(lg), k, row)[0])(logits, keys, TABLE)
    return jnp.mean(values)


def f(x, row):
    return (row[x] + 1.0) ** 2


SAMPLED = lt.score_function(f, CATEGORICAL, num_samples=4, baseline=lt.baselines.leave_one_out())
EXACT = lt.exact.estimator(f, CATEGORICAL, lt.exact.categorical_support(5))


def test_flax_nnx_encoder():
    """Statistical: the gradient in an nnx.Linear encoder's parameters of the vmapped per-datapoint loss,
    split into graph and state for jax, is unbiased against the exact estimator through the same module."""
    model = nnx.Linear(4, 5, rngs=nnx.Rngs(0))
    graph, state = nnx.split(model)

    def grads(est, key):
        return jax.grad(lambda s: per_datapoint_loss(est, nnx.merge(graph, s)(DATA), key))(state)

    estimates = jit(jax.vmap(lambda k: grads(SAMPLED, k)))(jax.random.split(jax.random.key(0), 2000))
    lt.testing.assert_unbiased(estimates, grads(EXACT, jax.random.key(0)))


def test_equinox_decoder_as_fs_own_parameters():
    """Statistical: an eqx.nn.MLP inside f, in the equinox idiom (its arrays passed to est.loss, its static
    part closed over, as for jax.vmap), differentiated with the logits, is unbiased against the exact estimator."""
    params, static = eqx.partition(eqx.nn.MLP(1, 1, width_size=8, depth=1, key=jax.random.key(1)), eqx.is_array)
    logits = jnp.array([0.5, -0.3, 1.0, 0.0, -1.0])

    def f_decoder(x, arrays):
        return eqx.combine(arrays, static)(jnp.atleast_1d(x).astype(jnp.float32))[0] ** 2

    def grads(est, key):
        return jax.grad(lambda lg, p: est.loss(lg, est.init(lg), key, p)[0], argnums=(0, 1))(logits, params)

    sampled = lt.score_function(f_decoder, CATEGORICAL, num_samples=4, baseline=lt.baselines.leave_one_out())
    exact = lt.exact.estimator(f_decoder, CATEGORICAL, lt.exact.categorical_support(5))
    estimates = jit(jax.vmap(lambda k: grads(sampled, k)))(jax.random.split(jax.random.key(2), 2000))
    lt.testing.assert_unbiased(estimates, grads(exact, jax.random.key(0)))


@pytest.mark.parametrize("library", ["distrax", "numpyro"])
def test_distrax_and_numpyro_distributions_as_families(library):
    """Statistical: E[(x − 1)²] for x ~ N(μ, σ²) from a distrax or NumPyro Normal adapted as a Family; the score
    function with leave-one-out is unbiased against the closed form ∇[(μ − 1)² + σ²]."""
    make = {"distrax": lambda p: distrax.Normal(p["loc"], jnp.exp(p["log_scale"])),
            "numpyro": lambda p: nd.Normal(p["loc"], jnp.exp(p["log_scale"]))}[library]
    family = lt.families.from_distribution(make)
    est = lt.score_function(lambda x: jnp.sum((x - 1.0) ** 2), family, num_samples=8,
                            baseline=lt.baselines.leave_one_out())
    params = {"loc": jnp.array([0.3, 2.0]), "log_scale": jnp.array([-0.5, 0.2])}
    estimates = lt.testing.draw_estimates(est, params, jax.random.key(3), num_estimates=2000)
    exact = {"loc": 2 * (params["loc"] - 1.0), "log_scale": 2 * jnp.exp(2 * params["log_scale"])}
    lt.testing.assert_unbiased(estimates, exact)


def test_optax_chain_with_a_schedule_skips_non_finite_steps():
    """optax.apply_if_finite around a clipped Adam with a decaying schedule: a step whose f is NaN (the
    estimator's contract: every gradient NaN) leaves the parameters unchanged and counts as an error; finite
    steps move them."""
    schedule = optax.exponential_decay(0.1, transition_steps=10, decay_rate=0.5)
    optimizer = optax.apply_if_finite(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule)),
                                      max_consecutive_errors=5)
    est = lt.score_function(lambda x, bad: jnp.where(bad, jnp.nan, (x - 2.0) ** 2 + 0.0 * x), CATEGORICAL,
                            num_samples=4, baseline=lt.baselines.leave_one_out())
    logits = jnp.zeros(5)

    @jax.jit
    def step(logits, opt_state, key, bad):
        grads, _, _ = est.estimate(logits, (), key, bad)
        updates, opt_state = optimizer.update(grads, opt_state, logits)
        return optax.apply_updates(logits, updates), opt_state

    opt_state = optimizer.init(logits)
    skipped, opt_state = step(logits, opt_state, jax.random.key(0), True)
    np.testing.assert_array_equal(skipped, logits)
    assert int(opt_state.notfinite_count) == 1
    moved, opt_state = step(logits, opt_state, jax.random.key(1), False)
    assert np.all(np.isfinite(moved)) and not np.allclose(moved, logits)
    assert int(opt_state.notfinite_count) == 0
