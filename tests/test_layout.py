"""Sample layout: chunked estimation is unbiased to any order, in params and args, with memory flat in N.

Stochastic tests are statistical: many independent estimates from a fixed key
and `lt.testing.assert_unbiased` against the closed form's derivatives. One
jitted, vmapped function draws every chunked estimator at once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
NORMAL = lt.families.normal()
PARAMS = {"loc": jnp.array([0.5, -1.0]), "log_scale": jnp.array([0.0, -0.5])}
W = jnp.array([1.0, -0.5])


def f(x, w):
    """Σ_d w_d cos(2 x_d)."""
    return jnp.dot(w, jnp.cos(2.0 * x))


def exact(params, w):
    """E[f] = Σ_d w_d exp(-2σ_d²) cos(2μ_d)."""
    return jnp.dot(w, jnp.exp(-2.0 * jnp.exp(2.0 * params["log_scale"])) * jnp.cos(2.0 * params["loc"]))


CHUNKED = {
    "score_function": lt.score_function(f, NORMAL, num_samples=64, chunk_size=16),
    "leave_one_out": lt.score_function(f, NORMAL, num_samples=64, chunk_size=16, baseline=lt.baselines.leave_one_out()),
    "antithetic": lt.score_function(f, NORMAL, num_samples=64, chunk_size=16, antithetic=True,
                                    baseline=lt.baselines.leave_one_out()),
    "pathwise": lt.pathwise(f, NORMAL.sample, num_samples=16, chunk_size=4),
}
SECOND_ORDER = ("leave_one_out",)


def derivatives(est, key, second_order):
    """Value, ∇_θ (``estimate``), ∇_w and, if ``second_order``, the (θ, w) Hessian of one chunked draw."""
    grads, _, _ = est.estimate(PARAMS, (), key, W)
    loss = lambda p, w: est.loss(p, (), key, w)[0]
    value, w_grad = jax.value_and_grad(loss, argnums=1)(PARAMS, W)
    if not second_order:
        return value, grads, w_grad
    return value, grads, w_grad, jax.hessian(loss, argnums=(0, 1))(PARAMS, W)


@functools.cache
def chunked_draws():
    one = lambda key: {name: derivatives(est, k, name in SECOND_ORDER) for (name, est), k in
                       zip(CHUNKED.items(), jax.random.split(key, len(CHUNKED)))}
    return jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 600))


@functools.cache
def expected():
    return jit(lambda: (exact(PARAMS, W), *jax.grad(exact, argnums=(0, 1))(PARAMS, W),
                        jax.hessian(exact, argnums=(0, 1))(PARAMS, W)))()


@pytest.mark.parametrize("name", CHUNKED)
def test_chunked_value_params_args_and_hessian_unbiased(name):
    """Statistical: 64 samples in 4 chunks of 16 (pathwise 16 in 4 of 4): value and gradients; with leave-one-out
    also the full (θ, w) Hessian, mixed ∂²/∂θ∂w included, through the checkpointed scan."""
    draws = chunked_draws()[name]
    lt.testing.assert_unbiased(draws, expected()[:len(draws)])


def test_single_chunk_equals_unchunked_and_chunked_aux():
    key = jax.random.key(3)
    whole = lt.score_function(f, NORMAL, num_samples=32)
    one_chunk = lt.score_function(f, NORMAL, num_samples=32, chunk_size=32)
    (g1, _, a1), (g2, _, a2), (_, _, aux) = jit(lambda k: [est.estimate(PARAMS, (), k, W) for est in (
        whole, one_chunk, CHUNKED["leave_one_out"])])(key)
    assert jnp.array_equal(a1["f"], a2["f"]) and jnp.array_equal(g1["loc"], g2["loc"])
    assert aux["f"].shape == aux["baseline"].shape == (64,) and "samples" not in aux


def temp_bytes(num_samples, chunk_size, dim=200):
    params = {"loc": jnp.zeros(dim), "log_scale": jnp.zeros(dim)}
    est = lt.score_function(lambda x: jnp.sum(x**2), NORMAL, num_samples=num_samples, chunk_size=chunk_size,
                            baseline=lt.baselines.leave_one_out())
    compiled = jax.jit(est.estimate).lower(params, (), jax.random.key(0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_flat_in_num_samples():
    """10^4 → 10^6 samples of a 200-d Gaussian in chunks of 1000: temporaries grow only by the N f-values."""
    small, large = temp_bytes(10**4, 1000), temp_bytes(10**6, 1000)
    f_values = 4 * 10**6 * 3  # f, baseline and their difference, float32
    assert large < small + f_values
    assert large < 10**6 * 200 * 4 / 20  # far below one N x D array


def test_chunk_sum_sums_and_stacks():
    chunks = jnp.arange(12.0).reshape(4, 3)
    total, stacked = lt.layout.chunk_sum(lambda c: (jnp.sum(c**2), c[0]), chunks)
    np.testing.assert_allclose(total, np.sum(np.arange(12.0) ** 2))
    np.testing.assert_array_equal(stacked, [0.0, 3.0, 6.0, 9.0])
    np.testing.assert_allclose(jax.grad(lambda c: lt.layout.chunk_sum(lambda x: (jnp.sum(x**2), None), c)[0])(chunks),
                               2 * chunks)


def test_sample_layout():
    layout = lt.layout.sample_layout(12, 4, None, minimum=1, caller="me")
    assert (layout.num_samples, layout.chunk, layout.num_chunks) == (12, 4, 3)
    assert lt.layout.sample_layout(12, None, None, minimum=1, caller="me").num_chunks == 1
    with pytest.raises(ValueError, match="me: `num_samples` must be an int >= 2"):
        lt.layout.sample_layout(1, None, None, minimum=2, caller="me")
    with pytest.raises(ValueError, match="me: `num_samples` and `chunk_size` must be multiples of 2"):
        lt.layout.sample_layout(12, 3, None, minimum=1, multiple=2, caller="me")
    with pytest.raises(TypeError, match="me: `sample_sharding`"):
        lt.layout.sample_layout(12, 4, "samples", minimum=1, caller="me")


@pytest.mark.parametrize("chunk_size", [0, 3, 2.0, True])
def test_chunk_size_validation(chunk_size):
    with pytest.raises(ValueError, match="score_function: `chunk_size` must be a positive int dividing"):
        lt.score_function(f, NORMAL, num_samples=16, chunk_size=chunk_size)
    with pytest.raises(ValueError, match="pathwise: `chunk_size`"):
        lt.pathwise(f, NORMAL.sample, num_samples=16, chunk_size=chunk_size)
