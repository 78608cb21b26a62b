"""Exact expectations, differentiable in the params: the ground truth.

Each function here returns ``params -> E_{x~p(x|θ)}[f(x)]`` computed without
sampling, so ``jax.grad`` (or ``jax.hessian``) of it is the reference that
every estimator is tested against. :func:`estimator` and
:func:`quadrature_estimator` offer the same sums under the estimator contract,
so exact-gradient training is one more entry in a table of estimators.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.scipy import stats

from logtrick import _checks
from logtrick.base import Estimator, from_loss
from logtrick.families import Family

Params = Any


def _support_size(support: Any, caller: str) -> int:
    leaves = jax.tree_util.tree_leaves(support)
    if not leaves:
        raise ValueError(f"{caller}: `support` holds no arrays")
    size = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else 0
    _checks.samples(support, size, caller=caller, source="`support`")
    return size


def _sum_over(f: Callable, family: Family, support: Any, size: int, params: Any, args: tuple, caller: str):
    """(Σ_i p(x_i|θ) f(x_i, *args), the f values) over a stacked support."""
    values = _checks.per_sample(lambda x: f(x, *args), support, size, caller=caller, name="f")
    log_probs = _checks.per_sample(
        lambda x: family.log_prob(params, x), support, size, caller=caller, name="family.log_prob")
    return jnp.sum(jnp.exp(log_probs) * values), values


def expectation(f: Callable[[Any], jax.Array], family: Family, support: Any) -> Callable[[Params], jax.Array]:
    """E[f] by enumeration: Σ_i p(x_i|θ) f(x_i) over a finite support.

    Args:
      f: ``f(x) -> scalar`` for one outcome.
      family: the distribution; ``log_prob`` must be normalised over ``support``.
      support: every outcome, stacked along a leading axis (any pytree).

    Returns:
      ``params -> scalar``, differentiable to any order.

    Example::

        f = lambda b: jnp.sum(b) ** 2
        exact = lt.exact.expectation(f, lt.families.bernoulli(), lt.exact.bernoulli_support(5))
        reference = jax.grad(exact)(jnp.zeros(5))
    """
    size = _support_size(support, "expectation")
    return lambda params: _sum_over(f, family, support, size, params, (), "expectation")[0]


def estimator(f: Callable[..., jax.Array], family: Family, support: Any) -> Estimator:
    """The exact expectation by enumeration, under the estimator contract.

    ``loss(params, state, key, *args) = Σ_i p(x_i|θ) f(x_i, *args)``: its value
    is E[f] and its derivatives of every order, in params and args, are exact.
    The key is ignored; state ``()``.

    Args:
      f: ``f(x, *args) -> scalar`` for one outcome.
      family: the distribution; ``log_prob`` must be normalised over ``support``.
      support: every outcome, stacked along a leading axis (any pytree).

    Returns:
      An :class:`logtrick.Estimator`; ``aux["f"]``, f at every outcome.

    Example::

        est = lt.exact.estimator(lambda b, w: jnp.dot(w, b) ** 2, lt.families.bernoulli(),
                                 lt.exact.bernoulli_support(3))
        value, _ = est.loss(jnp.zeros(3), (), jax.random.key(0), jnp.ones(3))
    """
    size = _support_size(support, "exact.estimator")

    def loss(params, state, key, *args):
        del key
        value, values = _sum_over(f, family, support, size, params, args, "exact.estimator")
        return value, (state, {"f": jax.lax.stop_gradient(values)})

    return from_loss(lambda params: (), loss, caller="exact.estimator")


def bernoulli_support(num_variables: int) -> jax.Array:
    """All 2^D binary vectors of length D, shape (2^D, D), float32."""
    if num_variables < 1 or num_variables > 24:
        raise ValueError(f"bernoulli_support: `num_variables` must be in [1, 24], got {num_variables}")
    return jnp.asarray(list(itertools.product([0.0, 1.0], repeat=num_variables)), jnp.float32)


def categorical_support(num_classes: int, num_variables: int | None = None) -> jax.Array:
    """All outcomes of categorical variables.

    Returns shape (K,) for one variable (``num_variables=None``), else
    (K^D, D), int32.
    """
    if num_variables is None:
        return jnp.arange(num_classes, dtype=jnp.int32)
    if num_classes ** num_variables > 2 ** 24:
        raise ValueError(f"categorical_support: {num_classes}^{num_variables} outcomes is too many to enumerate")
    return jnp.asarray(list(itertools.product(range(num_classes), repeat=num_variables)), jnp.int32)


def _hermite_rule(num_points: int, caller: str) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = scipy.special.roots_hermite(num_points)
    if not (np.all(np.isfinite(nodes)) and np.all(np.isfinite(weights))):
        raise ValueError(f"{caller}: no finite Gauss-Hermite rule for num_points={num_points}")
    return nodes, weights


def _quadrature(f: Callable, rule: tuple[np.ndarray, np.ndarray], params: Params, args: tuple, caller: str):
    """(Σ_j w_j f(loc + √2 σ ⊙ t_j, *args) / π^{D/2}, the f values) on the tensor-product grid."""
    nodes, weights = rule
    loc, log_scale = params["loc"], params["log_scale"]
    shape = jnp.shape(loc)
    dim = int(np.prod(shape, dtype=int))
    if len(nodes) ** dim > 2 ** 22:
        raise ValueError(f"{caller}: {len(nodes)}^{dim} nodes is too many; use fewer dimensions")
    grid = np.stack(np.meshgrid(*([nodes] * dim), indexing="ij"), -1).reshape(-1, dim)
    w = np.prod(np.stack(np.meshgrid(*([weights] * dim), indexing="ij"), -1).reshape(-1, dim), axis=1)
    dtype = jnp.result_type(loc)
    xs = loc + np.sqrt(2.0) * jnp.exp(log_scale) * jnp.asarray(grid, dtype).reshape((-1,) + shape)
    values = _checks.per_sample(lambda x: f(x, *args), xs, xs.shape[0], caller=caller, name="f")
    return jnp.sum(jnp.asarray(w / np.pi ** (dim / 2), dtype) * values), values


def gaussian_quadrature(f: Callable[[jax.Array], jax.Array], *, num_points: int = 64) -> Callable[[Params], jax.Array]:
    """E[f(x)], x ~ N(loc, diag(exp(log_scale))²), by Gauss-Hermite quadrature.

    E[f(x)] ≈ π^{-D/2} Σ_j w_j f(loc + √2 σ ⊙ t_j) on the tensor-product grid of
    ``num_points`` nodes per dimension. Exact for polynomials of degree
    < 2 num_points; accurate for smooth f. Differentiable in the params (through
    f), so ``jax.grad`` of it is a reference gradient for smooth f. The params
    are those of :func:`logtrick.families.normal`. Features of f much narrower
    than σ (e.g. exp(-k x²) with k σ² ≫ 1) need many nodes: compare against a
    doubled ``num_points``.

    Args:
      f: ``f(x) -> scalar`` with x of the shape of ``params["loc"]``.
      num_points: nodes per dimension; num_points ** D must stay below 2**22.

    Example::

        exact = lt.exact.gaussian_quadrature(lambda x: jnp.sum(jnp.cos(x)), num_points=32)
        exact({"loc": jnp.zeros(2), "log_scale": jnp.zeros(2)})   # 2 exp(-1/2)
    """
    rule = _hermite_rule(num_points, "gaussian_quadrature")
    return lambda params: _quadrature(f, rule, params, (), "gaussian_quadrature")[0]


def quadrature_estimator(f: Callable[..., jax.Array], *, num_points: int = 64) -> Estimator:
    """:func:`gaussian_quadrature` under the estimator contract, for the params of :func:`logtrick.families.normal`.

    ``loss(params, state, key, *args)`` is the quadrature of f(x, *args); the
    key is ignored; state ``()``. Its derivatives in params and args are those
    of the quadrature (exact for polynomial f of degree < 2 num_points).

    Example::

        est = lt.exact.quadrature_estimator(lambda x, k: jnp.sum(jnp.cos(k * x)), num_points=16)
        params = {"loc": jnp.zeros(1), "log_scale": jnp.zeros(1)}
        grads, _, _ = est.estimate(params, (), jax.random.key(0), 2.0)
    """
    rule = _hermite_rule(num_points, "exact.quadrature_estimator")

    def loss(params, state, key, *args):
        del key
        value, values = _quadrature(f, rule, params, args, "exact.quadrature_estimator")
        return value, (state, {"f": jax.lax.stop_gradient(values)})

    return from_loss(lambda params: (), loss, caller="exact.quadrature_estimator")


# Closed forms for the Gaussian test functions of Mohamed et al. 2020 (section 3).
# Each is E[Σ_d g(x_d)] for x ~ N(loc, diag(exp(log_scale))²), params of families.normal().


def _elementwise_sum(g):
    def exact(params):
        return jnp.sum(g(params["loc"], jnp.exp(params["log_scale"])))

    return exact


def normal_quadratic(k: float) -> Callable[[Params], jax.Array]:
    """E[Σ_d (x_d - k)²] = Σ_d (μ_d - k)² + σ_d²."""
    return _elementwise_sum(lambda mu, sigma: (mu - k) ** 2 + sigma**2)


def normal_exp_square(k: float) -> Callable[[Params], jax.Array]:
    """E[Σ_d exp(-k x_d²)] = Σ_d exp(-k μ_d² / (1 + 2kσ_d²)) / √(1 + 2kσ_d²)."""

    def g(mu, sigma):
        s = 1.0 + 2.0 * k * sigma**2
        return jnp.exp(-k * mu**2 / s) / jnp.sqrt(s)

    return _elementwise_sum(g)


def normal_cosine(k: float) -> Callable[[Params], jax.Array]:
    """E[Σ_d cos(k x_d)] = Σ_d exp(-k²σ_d²/2) cos(k μ_d)."""
    return _elementwise_sum(lambda mu, sigma: jnp.exp(-0.5 * (k * sigma) ** 2) * jnp.cos(k * mu))


def normal_step(k: float) -> Callable[[Params], jax.Array]:
    """E[Σ_d 1{x_d > k}] = Σ_d Φ((μ_d - k)/σ_d): a non-smooth f with a smooth expectation."""
    return _elementwise_sum(lambda mu, sigma: stats.norm.cdf((mu - k) / sigma))
