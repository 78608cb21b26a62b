"""The exact oracles agree with each other and with known closed forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

PARAMS = {"loc": jnp.array([0.7, -1.2]), "log_scale": jnp.array([-0.3, 0.25])}
CLOSED_FORMS = [
    (lambda x: jnp.sum((x - 1.5) ** 2), lt.exact.normal_quadratic(1.5)),
    (lambda x: jnp.sum(jnp.exp(-0.8 * x**2)), lt.exact.normal_exp_square(0.8)),
    (lambda x: jnp.sum(jnp.cos(1.7 * x)), lt.exact.normal_cosine(1.7)),
]


@pytest.mark.parametrize("index", range(len(CLOSED_FORMS)))
def test_quadrature_matches_closed_forms_value_and_gradient(index):
    f, closed = CLOSED_FORMS[index]
    quad = lt.exact.gaussian_quadrature(f, num_points=40)
    (value_q, grad_q), (value_c, grad_c) = jit(lambda p: (jax.value_and_grad(quad)(p), jax.value_and_grad(closed)(p)))(
        PARAMS)
    np.testing.assert_allclose(value_q, value_c, rtol=1e-5)
    for leaf_q, leaf_c in zip(jax.tree_util.tree_leaves(grad_q), jax.tree_util.tree_leaves(grad_c)):
        np.testing.assert_allclose(leaf_q, leaf_c, rtol=1e-4, atol=1e-6)


def test_step_closed_form_matches_fine_quadrature_of_the_density():
    mu, sigma, k = 0.4, 1.3, 0.3
    x = np.linspace(k, mu + 12 * sigma, 200_001)
    density = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    integral = np.trapezoid(density, x)
    value = lt.exact.normal_step(k)({"loc": jnp.float32(mu), "log_scale": jnp.log(jnp.float32(sigma))})
    np.testing.assert_allclose(value, integral, rtol=1e-5)


def test_enumeration_bernoulli_closed_form():
    """E[Σ b_d] = Σ σ(logit_d), and its gradient σ'(logit)."""
    logits = jnp.array([-1.0, 0.3, 2.0])
    exact = lt.exact.expectation(jnp.sum, lt.families.bernoulli(), lt.exact.bernoulli_support(3))
    np.testing.assert_allclose(exact(logits), jnp.sum(jax.nn.sigmoid(logits)), rtol=1e-6)
    sig = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(jax.grad(exact)(logits), sig * (1 - sig), rtol=1e-5)


def test_supports():
    assert lt.exact.bernoulli_support(4).shape == (16, 4)
    assert lt.exact.categorical_support(3).shape == (3,)
    support = lt.exact.categorical_support(3, 2)
    assert support.shape == (9, 2) and len({tuple(map(int, row)) for row in support}) == 9
    with pytest.raises(ValueError, match="`num_variables`"):
        lt.exact.bernoulli_support(0)


def test_expectation_rejects_ragged_support():
    with pytest.raises(ValueError, match="leading axis"):
        lt.exact.expectation(lambda x: x[0] * x[1], lt.families.categorical(), (jnp.arange(3), jnp.arange(4)))


def test_quadrature_rejects_too_many_dimensions():
    f = lambda x: jnp.sum(x)
    params = {"loc": jnp.zeros(6), "log_scale": jnp.zeros(6)}
    with pytest.raises(ValueError, match="too many"):
        lt.exact.gaussian_quadrature(f, num_points=64)(params)


# --- The exact oracles under the estimator contract ----------------------------------------------------------------


def bernoulli_square(b, w):
    return jnp.dot(w, b) ** 2


def bernoulli_square_closed_form(logits, w):
    """E[(w·b)²] = Σ_d w_d² p_d (1 - p_d) + (w·p)², p = σ(logits)."""
    p = jax.nn.sigmoid(logits)
    return jnp.sum(w**2 * p * (1 - p)) + jnp.dot(w, p) ** 2


def test_enumeration_estimator_exact_in_params_and_args_to_second_order():
    """Value, gradients and the (θ, w) Hessian of ``lt.exact.estimator``'s loss equal the closed form's; any key."""
    est = lt.exact.estimator(bernoulli_square, lt.families.bernoulli(), lt.exact.bernoulli_support(3))
    logits, w = jnp.array([-1.0, 0.3, 2.0]), jnp.array([0.5, -1.0, 2.0])

    def derivatives(loss):
        return loss(logits, w), jax.grad(loss, argnums=(0, 1))(logits, w), jax.hessian(loss, argnums=(0, 1))(logits, w)

    @jit
    def compare(key):
        return (derivatives(lambda p, a: est.loss(p, est.init(p), key, a)[0]),
                derivatives(bernoulli_square_closed_form), est.estimate(logits, (), key, w))

    for key in (jax.random.key(0), jax.random.key(1)):
        got, expected, (grads, state, aux) = compare(key)
        for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grads, expected[1][0], rtol=1e-5)
    assert state == () and aux["f"].shape == (8,)
    np.testing.assert_allclose(aux["f"], jax.vmap(lambda b: bernoulli_square(b, w))(lt.exact.bernoulli_support(3)))


def test_quadrature_estimator_exact_in_params_and_args_to_second_order():
    """E[Σ cos(k x_d)] with k an arg: value, gradients and the (θ, k) Hessian against the closed form."""
    est = lt.exact.quadrature_estimator(lambda x, k: jnp.sum(jnp.cos(k * x)), num_points=40)
    closed = lambda p, k: lt.exact.normal_cosine(k)(p)
    k = jnp.float32(1.7)

    def derivatives(loss):
        return loss(PARAMS, k), jax.grad(loss, argnums=(0, 1))(PARAMS, k), jax.hessian(loss, argnums=(0, 1))(PARAMS, k)

    got, expected, (_, state, aux) = jit(lambda: (
        derivatives(lambda p, a: est.loss(p, (), jax.random.key(0), a)[0]), derivatives(closed),
        est.estimate(PARAMS, est.init(PARAMS), jax.random.key(0), k)))()
    for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    assert state == () and aux["f"].shape == (40**2,)


def test_estimators_reject_bad_supports_and_dimensions():
    with pytest.raises(ValueError, match="exact.estimator: .*leading axis"):
        lt.exact.estimator(lambda x: x[0] * x[1], lt.families.categorical(), (jnp.arange(3), jnp.arange(4)))
    with pytest.raises(ValueError, match="exact.estimator: `support` holds no arrays"):
        lt.exact.estimator(jnp.sum, lt.families.categorical(), ())
    est = lt.exact.quadrature_estimator(jnp.sum, num_points=64)
    params = {"loc": jnp.zeros(6), "log_scale": jnp.zeros(6)}
    with pytest.raises(ValueError, match="exact.quadrature_estimator: .*too many"):
        est.loss(params, (), jax.random.key(0))
