"""Tests of experiments.categorical_vae: the exact sums against enumeration, and a tiny run of two methods (each
estimator is checked against the exact gradient in tests/test_categorical.py)."""

import dataclasses
import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import logtrick as lt
from experiments import categorical_vae as cv
from experiments import common
from experiments import discrete_vae as dv

# The experiment's D = 4 latents of K = 8 classes (4096 configurations), a linear VAE, M = 2, four steps.
CONFIG = dataclasses.replace(cv.QUICK, num_train=200, batch_size=8, num_samples=2, num_steps=4, eval_every=2,
                             variance_steps=(4,), num_variance_draws=30, variance_batch_size=4, learning_rate=1e-2,
                             num_seeds=2, models=("linear",),
                             methods=("exact", "reinforce_loo"))


@pytest.fixture(scope="module")
def data():
    return dv.load_data(CONFIG)


@pytest.fixture(scope="module")
def result():
    """One tiny run of every method of CONFIG, compiled without LLVM's optimisations (each function runs briefly)."""
    with mock.patch.object(cv, "COMPILER_OPTIONS", common.FAST_COMPILE):
        return cv.run(CONFIG)


@pytest.fixture(scope="module")
def exact_checks(data):
    """At perturbed initial parameters, for 2 held-out images: exact_terms, the same terms by lt.exact sums one
    image at a time, and the gradients of -mean ELBO from each (flattened); one compiled function."""
    vae = cv.make_vae(CONFIG, "linear")
    xs = data.test[:2]
    family = lt.families.categorical()
    support = lt.exact.categorical_support(CONFIG.num_classes, CONFIG.num_variables)
    log_prior = -CONFIG.num_variables * jnp.log(CONFIG.num_classes)

    def one_image(params, x):
        logits = cv.encode(vae, params["encoder"], x)
        log_lik = lambda z: cv.log_likelihood(vae, params["decoder"], x, jax.nn.one_hot(z, CONFIG.num_classes))
        expected = lt.exact.expectation(log_lik, family, support)(logits)
        kl = lt.exact.expectation(lambda z: family.log_prob(logits, z) - log_prior, family, support)(logits)
        return expected, kl, jax.nn.logsumexp(jax.vmap(log_lik)(support)) + log_prior

    def terms_loss(params):
        expected, kl, _ = cv.exact_terms(vae, params, xs)
        return -jnp.mean(expected - kl)

    def enumerated_loss(params):
        expected, kl, _ = jax.vmap(functools.partial(one_image, params))(xs)
        return -jnp.mean(expected - kl)

    @functools.partial(jax.jit, compiler_options=common.FAST_COMPILE)
    def fn(key):
        k_init, k_noise = jax.random.split(key)
        flat, unravel = ravel_pytree(cv.init_params(CONFIG, vae, k_init, jnp.mean(data.train, axis=0)))
        params = unravel(flat + 0.3 * jax.random.normal(k_noise, flat.shape))
        return (cv.exact_terms(vae, params, xs), jax.vmap(functools.partial(one_image, params))(xs),
                *(ravel_pytree(jax.grad(loss)(params))[0] for loss in (terms_loss, enumerated_loss)))

    return fn(jax.random.key(0))


def test_exact_terms_match_enumeration(exact_checks):
    """E_q[log p(x|z)], KL and log p(x) against lt.exact sums over the 4096 configurations, one image at a time,
    and the ELBO's gradient from exact_terms against that of those sums (the ``exact`` method's gradient is
    checked against exact_terms' in :func:`test_tiny_run`)."""
    terms, enumerated, terms_grad, enumerated_grad = exact_checks
    for got, want in zip(terms, enumerated):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(terms[0] - terms[1] < terms[2])   # ELBO < log p(x)
    np.testing.assert_allclose(terms_grad, enumerated_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_tiny_run(result):
    """Finite curves and gradient statistics of shape (seeds, checkpoints), ELBO ≤ log p(x), the exact method's
    gradient equal to exact_terms' (relative bias ~0, no variance), evaluation counts K^D and M, one table row
    per method."""
    runs = result["runs"]["linear"]["methods"]
    assert tuple(runs) == CONFIG.methods
    for method, r in runs.items():
        for name in ("train_elbo", "test_elbo", "train_log_likelihood", "test_log_likelihood"):
            curves = np.asarray(r[name])
            assert curves.shape == (CONFIG.num_seeds, CONFIG.num_steps // CONFIG.eval_every + 1)
            assert np.all(np.isfinite(curves)), (method, name)
        for split in ("train", "test"):
            assert np.all(np.asarray(r[f"{split}_elbo"]) <= np.asarray(r[f"{split}_log_likelihood"]) + 1e-4)
        for name in ("grad_variance", "relative_bias", "bias_floor", "cosine_of_mean", "max_abs_z"):
            values = np.asarray(r[name])
            assert values.shape == (CONFIG.num_seeds, len(CONFIG.variance_steps))
            assert np.all(np.isfinite(values)), (method, name)
    assert np.all(np.asarray(runs["exact"]["grad_variance"]) < 1e-12)
    assert np.all(np.asarray(runs["exact"]["relative_bias"]) < 1e-4)
    assert np.all(np.asarray(runs["reinforce_loo"]["grad_variance"]) > 0)
    assert result["evaluations"] == {"exact": 4096, "reinforce_loo": 2}
    table = cv.format_table(result).splitlines()
    assert len(table) == 2 + len(CONFIG.methods)
    assert all(f"| linear | {cv.METHODS[m].label} |" in line for m, line in zip(CONFIG.methods, table[2:]))


@pytest.mark.slow
def test_exact_training_increases_the_elbo(result):
    """Four Adam steps on the exact gradient raise the exact ELBO of the training set, on every seed."""
    curves = np.asarray(result["runs"]["linear"]["methods"]["exact"]["train_elbo"])
    assert np.all(curves[:, -1] > curves[:, 0] + 0.1), curves
