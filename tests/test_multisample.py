"""VIMCO against the exact gradient of a K-sample bound, by enumerating all K-tuples.

Stochastic tests here are statistical: many independent estimates from a fixed
key, and `lt.testing.assert_unbiased` (a Bonferroni z-test with the standard
error measured from those estimates) against the exact gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt
from logtrick.multisample import vimco

NUM_ESTIMATES = 400
K = 3
THETA = jnp.array([0.5, -0.3, 1.0, 0.0, -1.0])
PHI = jnp.log(jnp.array([0.05, 0.4, 0.1, 0.3, 0.15])) - 1.0
TUPLES = lt.exact.categorical_support(5, K)
FAMILY = lt.families.categorical()


def log_weight_given(phi):
    """l(θ, x) = log p_φ(x) - log q(x|θ): depends on θ directly and closes over φ."""
    return lambda theta, x: phi[x] - jax.nn.log_softmax(theta)[x]


def exact_bound(theta, phi):
    """E[log (1/K) Σ_k exp(l_k)] summed over all 5^K tuples."""
    log_q = jax.nn.log_softmax(theta)[TUPLES]
    log_weights = phi[TUPLES] - log_q
    bounds = jax.nn.logsumexp(log_weights, axis=1) - jnp.log(K)
    return jnp.sum(jnp.exp(jnp.sum(log_q, axis=1)) * bounds)


def naive_grad(theta, phi, key):
    """Score function with learning signal L for every sample, plus the direct term."""
    xs = FAMILY.sample(theta, key, K)

    def surrogate(t):
        log_weights = jax.vmap(lambda x: log_weight_given(phi)(t, x))(xs)
        bound = jax.nn.logsumexp(log_weights) - jnp.log(K)
        log_probs = jax.vmap(lambda x: FAMILY.log_prob(t, x))(xs)
        return bound + jax.lax.stop_gradient(bound) * jnp.sum(log_probs)

    return jax.grad(surrogate)(theta)


def total_variance(estimates):
    return float(np.var(np.asarray(estimates), axis=0, ddof=1).sum())


def test_vimco_unbiased_through_params_and_closure_and_below_naive():
    """Statistical: 5 classes, K = 3, exact over 125 tuples.

    Checks ``estimate`` (θ) and ``jax.grad`` of ``surrogate`` w.r.t. θ and the
    closed-over decoder parameter φ, that the surrogate's value is the bound,
    and that VIMCO's variance is below the score function with the bound
    itself as every sample's learning signal.
    """

    def per_key(key):
        est = vimco(log_weight_given(PHI), FAMILY, num_samples=K)
        grads, _, aux = est.estimate(THETA, (), key)
        outer = jax.value_and_grad(
            lambda t, p: vimco(log_weight_given(p), FAMILY, num_samples=K).surrogate(t, (), key), argnums=(0, 1))
        return grads, outer(THETA, PHI), naive_grad(THETA, PHI, key), aux

    keys = jax.random.split(jax.random.key(0), NUM_ESTIMATES)
    grads, (value, (outer_theta, outer_phi)), naive, aux = jax.jit(jax.vmap(per_key))(keys)
    expected_theta, expected_phi = jax.jit(jax.grad(exact_bound, argnums=(0, 1)))(THETA, PHI)

    lt.testing.assert_unbiased(grads, expected_theta)
    lt.testing.assert_unbiased((outer_theta, outer_phi), (expected_theta, expected_phi))
    lt.testing.assert_unbiased(naive, expected_theta)
    np.testing.assert_allclose(outer_theta, grads, rtol=1e-5, atol=1e-6)
    ratio = total_variance(grads) / total_variance(naive)
    print(f"VIMCO / naive score-function variance ratio, K = {K}: {ratio:.4f}")
    assert ratio < 1.0

    assert aux["f"].shape == aux["learning_signal"].shape == (NUM_ESTIMATES, K)
    assert aux["bound"].shape == (NUM_ESTIMATES,)
    np.testing.assert_allclose(aux["bound"], jax.nn.logsumexp(aux["f"], axis=1) - np.log(K), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, aux["bound"], rtol=1e-6)


def test_vimco_bad_arguments():
    with pytest.raises(ValueError, match="`num_samples` must be an int >= 2"):
        vimco(log_weight_given(PHI), FAMILY, num_samples=1)
    est = vimco(lambda theta, x: theta * x, FAMILY, num_samples=K)
    with pytest.raises(ValueError, match="`log_weight` must return a scalar"):
        est.estimate(THETA, (), jax.random.key(0))
