"""The magic box and DiCE sums: higher-order derivatives of the loss against jax.hessian of exact expectations.

Statistical tests: many independent Hessian estimates, `lt.testing.assert_unbiased`.
The Gaussian Hessians (θθ and the mixed θ-args block, with and without
leave-one-out, chunked) are in tests/test_estimators.py and tests/test_layout.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def test_magic_box_value_and_derivatives():
    l = lambda t: 3.0 * t**2
    np.testing.assert_allclose(lt.magic_box(l(1.5)), 1.0)
    # d/dt box(l(t)) = l'(t); d²/dt² = l''(t) + l'(t)².
    np.testing.assert_allclose(jax.grad(lambda t: lt.magic_box(l(t)))(1.5), 9.0)
    np.testing.assert_allclose(jax.grad(jax.grad(lambda t: lt.magic_box(l(t))))(1.5), 6.0 + 81.0)
    # Its value is 1 even where l is not finite.
    np.testing.assert_array_equal(lt.magic_box(jnp.array([-jnp.inf, jnp.nan])), [1.0, 1.0])


def test_dice_sum_value_and_derivatives():
    """Σ_i (f_i - sg b_i) ⊡(l_i) + sg b_i: value Σ f, ∂/∂θ = Σ (f_i - b_i) ∂l_i + ∂f_i, b not differentiated."""
    x = jnp.array([1.0, -2.0, 0.5])

    def total(theta, phi, c):
        values = phi * x**2
        log_probs = theta * x
        return lt.dice_sum(values, log_probs, c * jnp.ones(3))

    theta, phi, c = 0.3, 1.5, 2.0
    values = phi * x**2
    np.testing.assert_allclose(total(theta, phi, c), jnp.sum(values), rtol=1e-6)
    d_theta, d_phi, d_c = jax.grad(total, argnums=(0, 1, 2))(theta, phi, c)
    np.testing.assert_allclose(d_theta, jnp.sum((values - c) * x), rtol=1e-6)
    np.testing.assert_allclose(d_phi, jnp.sum(x**2), rtol=1e-6)
    assert d_c == 0.0
    # ∂²/∂θ² = Σ (f_i - b_i) x_i²; ∂²/∂θ∂φ = Σ x_i² x_i.
    np.testing.assert_allclose(jax.grad(jax.grad(total), argnums=0)(theta, phi, c), jnp.sum((values - c) * x**2),
                               rtol=1e-6)
    np.testing.assert_allclose(jax.grad(jax.grad(total), argnums=1)(theta, phi, c), jnp.sum(x**3), rtol=1e-6)


CATEGORICAL = lt.families.categorical()
VALUES = jnp.array([1.0, -2.0, 0.5, 3.0])
CATEGORICAL_LOGITS = jnp.array([0.2, -0.3, 0.0, 0.4])
HESSIAN_ESTIMATORS = {
    "plain": lt.score_function(lambda x: VALUES[x], CATEGORICAL, num_samples=32),
    "leave_one_out": lt.score_function(lambda x: VALUES[x], CATEGORICAL, num_samples=32,
                                       baseline=lt.baselines.leave_one_out()),
}


def test_hessian_categorical_with_and_without_a_baseline():
    """Statistical: Hessian of E[f] over a 4-way categorical, without a baseline (DiCE) and with leave-one-out
    (Loaded DiCE)."""
    one = lambda key: {name: jax.hessian(lambda p: est.loss(p, (), k)[0])(CATEGORICAL_LOGITS) for (name, est), k in
                       zip(HESSIAN_ESTIMATORS.items(), jax.random.split(key))}
    draws = jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 1000))
    exact = lt.exact.expectation(lambda x: VALUES[x], CATEGORICAL, lt.exact.categorical_support(4))
    expected = jax.hessian(exact)(CATEGORICAL_LOGITS)
    for name in HESSIAN_ESTIMATORS:
        lt.testing.assert_unbiased(draws[name], expected)


def test_third_derivative_bernoulli():
    """Statistical: d³/dθ³ E[f(b)] for one Bernoulli through three nested jax.grad calls."""
    family = lt.families.bernoulli()
    f = lambda b: 2.0 + 3.0 * jnp.sum(b)
    exact = lt.exact.expectation(f, family, jnp.array([0.0, 1.0]))
    est = lt.score_function(f, family, num_samples=16)
    third = lambda fn: jax.grad(jax.grad(jax.grad(fn)))
    logit = jnp.float32(0.7)
    draws = jit(jax.vmap(lambda k: third(lambda q: est.loss(q, (), k)[0])(logit)))(
        jax.random.split(jax.random.key(2), 2000))
    lt.testing.assert_unbiased(draws, third(exact)(logit))
