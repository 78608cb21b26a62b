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


def hand_estimates(xs, chunk):
    """From the N samples, in numpy: the baselines, and the value, ∇_w and ∇_θ of the leave-one-out score function
    and of pathwise, with the baseline over all N samples (``chunk=None``) or, the broken variant, per chunk."""
    loc, scale, w = (np.asarray(a, np.float64) for a in (PARAMS["loc"], np.exp(PARAMS["log_scale"]), W))
    xs = np.asarray(xs, np.float64)
    values = np.cos(2.0 * xs) @ w
    groups = values.reshape(-1, chunk or len(values))
    b = ((groups.sum(axis=1, keepdims=True) - groups) / (groups.shape[1] - 1)).reshape(-1)
    z = (xs - loc) / scale
    score = {"loc": z / scale, "log_scale": z**2 - 1.0}
    slope = -2.0 * w * np.sin(2.0 * xs)  # ∂f/∂x
    estimates = {"value": values.mean(), "w": np.cos(2.0 * xs).mean(axis=0),
                 "score_function": {k: np.mean((values - b)[:, None] * s, axis=0) for k, s in score.items()},
                 "pathwise": {"loc": slope.mean(axis=0), "log_scale": np.mean(slope * (xs - loc), axis=0)}}
    return b, estimates


def test_chunks_are_drawn_from_split_keys_and_summed_with_one_baseline():
    """24 samples in 3 chunks of 8, chunk c drawn from ``jax.random.split(key, 3)[c]``: value, ∇_θ, ∇_w and the
    baselines on one key equal the unchunked formulas written out in numpy on those 24 samples, with one
    leave-one-out baseline over all of them; a dropped chunk or baselines taken within each chunk would differ."""
    n, chunk = 24, 8
    sf = lt.score_function(f, NORMAL, num_samples=n, chunk_size=chunk, baseline=lt.baselines.leave_one_out())
    pw = lt.pathwise(f, NORMAL.sample, num_samples=n, chunk_size=chunk)

    @jit
    def run(key):
        (value, (_, aux)), (sf_grads, sf_w) = jax.value_and_grad(sf.loss, argnums=(0, 3), has_aux=True)(
            PARAMS, (), key, W)
        pw_grads, pw_w = jax.grad(lambda p, w: pw.loss(p, (), key, w)[0], argnums=(0, 1))(PARAMS, W)
        xs = jnp.concatenate([NORMAL.sample(PARAMS, k, chunk) for k in jax.random.split(key, n // chunk)])
        return value, aux, sf_grads, sf_w, pw_grads, pw_w, xs

    value, aux, sf_grads, sf_w, pw_grads, pw_w, xs = run(jax.random.key(3))
    assert aux["f"].shape == aux["baseline"].shape == (n,) and "samples" not in aux
    got = {"value": value, "w": sf_w, "score_function": sf_grads, "pathwise": pw_grads}

    def check(want):
        for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)

    baselines, estimates = hand_estimates(xs, None)
    np.testing.assert_allclose(aux["baseline"], baselines, rtol=1e-5)
    np.testing.assert_allclose(pw_w, sf_w, rtol=1e-5, atol=1e-6)
    check(estimates)
    for broken in (hand_estimates(xs[:-chunk], None)[1], hand_estimates(xs, chunk)[1]):
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            check(broken)


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
