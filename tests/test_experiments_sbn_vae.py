"""Tests of experiments.sbn_vae: the enumerated ELBO against lt.graph with every site enumerated, and a tiny run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt
from experiments import sbn_vae

CONFIG = dataclasses.replace(sbn_vae.QUICK, num_train=40, num_test=40, num_steps=6, eval_every=6, num_variance_draws=30,
                             variance_batch_size=2, methods=("disarm_loo",))


def test_exact_elbo_is_the_enumerated_graph():
    """The matrix-product ELBO and its gradient equal lt.graph's with both layers enumerated (the same sum)."""
    params = sbn_vae.init_params(jax.random.key(0))
    x = (jax.random.uniform(jax.random.key(1), (sbn_vae.PIXELS,)) < 0.4).astype(jnp.float32)
    est = lt.graph(sbn_vae.elbo_terms, num_samples=1,
                   sites={"z1": lt.sites.enumerate(lt.exact.bernoulli_support(sbn_vae.Z1)),
                          "z2": lt.sites.enumerate(lt.exact.bernoulli_support(sbn_vae.Z2))})
    value, grads = jax.jit(jax.value_and_grad(lambda p: est.loss(p, est.init(p), jax.random.key(2), x)[0]))(params)
    exact, exact_grads = jax.jit(jax.value_and_grad(sbn_vae.exact_elbo))(params, x)
    np.testing.assert_allclose(value, exact, rtol=1e-5)
    # Float32 sums of 4096 terms of size ~40 in two orders: rounding of order 1e-5 absolute.
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(exact_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_tiny_run_trains_and_reports():
    """A few steps of DisARM/leave-one-out training raise the exact ELBO, and the table reports the method with
    its variance and verdict."""
    results = sbn_vae.run(CONFIG)
    curve = results["runs"]["disarm_loo"][0]["curve"]
    assert curve[-1]["train_elbo"] > curve[0]["train_elbo"] + 1.0
    assert "| disarm_loo |" in sbn_vae.format_table(results)
    assert results["gradients"]["disarm_loo"]["initial"]["encoder_variance"] > 0
