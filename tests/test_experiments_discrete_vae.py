"""Tests of experiments.discrete_vae: the exact sums, a tiny run, and the RELAX loss gradient against the exact one."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import logtrick as lt
from experiments import discrete_vae as dv

# D = 4 latents (16 configurations), hidden width 4, a few steps.
CONFIG = dataclasses.replace(dv.QUICK, num_train=200, num_latents=4, hidden=4, batch_size=8, num_steps=4, eval_every=2,
                             variance_steps=(4,), num_variance_draws=4, variance_batch_size=6, num_seeds=2,
                             models=("linear",), methods=("vimco",))


@pytest.fixture(scope="module")
def data() -> dv.Data:
    return dv.load_data(CONFIG)


@pytest.fixture(scope="module")
def vae() -> dv.VAE:
    return dv.make_vae(CONFIG, "nonlinear")


@pytest.fixture(scope="module")
def params(vae, data) -> dv.Params:
    """The experiment's initial nonlinear-VAE parameters plus N(0, 0.3²) noise, in one compiled call."""

    def init(key):
        k_init, k_noise = jax.random.split(key)
        flat, unravel = ravel_pytree(dv.init_params(CONFIG, vae, k_init, jnp.mean(data.train, axis=0)))
        return unravel(flat + 0.3 * jax.random.normal(k_noise, flat.shape))

    return jax.jit(init, compiler_options=dv.COMPILER_OPTIONS)(jax.random.key(0))


def test_exact_terms_match_enumeration(vae, params, data):
    """E_q[log p(x|b)], KL and log p(x) of the nonlinear VAE against lt.exact sums, one image at a time."""
    support = lt.exact.bernoulli_support(CONFIG.num_latents)
    bernoulli = lt.families.bernoulli()

    def one_image(x):
        logits = vae.encoder.apply(params["encoder"], x)
        log_lik = jax.vmap(lambda b: dv.log_likelihood(vae, params["decoder"], x, b))(support)
        expected = lt.exact.expectation(lambda b: dv.log_likelihood(vae, params["decoder"], x, b), bernoulli, support)
        kl = lt.exact.expectation(lambda b: bernoulli.log_prob(logits, b) - dv.log_prior(b), bernoulli, support)
        return expected(logits), kl(logits), jax.nn.logsumexp(log_lik) - jnp.log(support.shape[0])

    xs = data.test[:3]
    got, want = jax.jit(lambda xs: (dv.exact_terms(vae, params, xs), jax.vmap(one_image)(xs)),
                        compiler_options=dv.COMPILER_OPTIONS)(xs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_tiny_run():
    """A VIMCO run of two vmapped seeds: finite curves, ELBO ≤ log p(x), a positive gradient variance, a table."""
    result = dv.run(CONFIG)
    r = result["runs"]["linear"]["methods"]["vimco"]
    for name in ("train_elbo", "test_elbo", "train_log_likelihood", "test_log_likelihood"):
        curves = np.asarray(r[name])
        assert curves.shape == (CONFIG.num_seeds, CONFIG.num_steps // CONFIG.eval_every + 1)
        assert np.all(np.isfinite(curves))
    for split in ("train", "test"):
        assert np.all(np.asarray(r[f"{split}_elbo"]) <= np.asarray(r[f"{split}_log_likelihood"]) + 1e-4)
    assert np.asarray(r["grad_variance"]).shape == (CONFIG.num_seeds, len(CONFIG.variance_steps))
    assert np.all(np.asarray(r["grad_variance"]) > 0) and np.all(np.asarray(r["exact_grad_sq_norm"]) > 0)
    assert dv.format_table(result).count("\n") == 2


def test_relax_loss_gradient_is_unbiased_and_trains_the_control_variate(vae, params, data):
    """Statistical: the gradient of the RELAX loss matches the exact ELBO gradient, encoder and decoder.

    2000 independent gradients of the batch loss (nonlinear VAE, 3 images),
    z-tested against jax.grad of the exact loss; each step also returns a
    moved control variate.
    """
    xs = data.train[:3]
    loss = dv.make_loss(CONFIG, vae, "relax")
    state = jax.jit(lambda: dv.init_estimator_state(CONFIG, "relax", vae), compiler_options=dv.COMPILER_OPTIONS)()

    def exact_loss(p):
        expected, kl, _ = dv.exact_terms(vae, p, xs)
        return -jnp.mean(expected - kl)

    @functools.partial(jax.jit, compiler_options=dv.COMPILER_OPTIONS)
    def draw(keys):
        grads, states = jax.vmap(lambda k: jax.grad(loss, has_aux=True)(params, state, xs, k))(keys)
        moved = jax.vmap(lambda cv: ravel_pytree(cv)[0] - ravel_pytree(state.cv_params)[0])(states.cv_params)
        return jax.vmap(lambda g: ravel_pytree(g)[0])(grads), ravel_pytree(jax.grad(exact_loss)(params))[0], moved

    estimates, exact, moved = draw(jax.random.split(jax.random.key(3), 2000))
    lt.testing.assert_unbiased(estimates, exact)
    assert np.all(np.max(np.abs(moved), axis=1) > 0)
