"""Estimators specific to the diagonal Gaussian of :func:`logtrick.families.normal`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp

from logtrick import _checks
from logtrick.base import Estimator, from_loss
from logtrick.dice import magic_box
from logtrick.families import normal

Params = Any
sg = jax.lax.stop_gradient


def _gaussian_params(params: Params, caller: str) -> tuple[jax.Array, jax.Array]:
    """``(loc, log_scale)``, checked to be arrays of the same shape (D,)."""
    if not isinstance(params, Mapping) or set(params) != {"loc", "log_scale"}:
        keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{caller}: `params` must be a mapping with keys 'loc' and 'log_scale', got {keys}")
    loc, log_scale = params["loc"], params["log_scale"]
    if jnp.ndim(loc) != 1 or jnp.shape(log_scale) != jnp.shape(loc):
        raise ValueError(
            f"{caller}: `params` 'loc' and 'log_scale' must both have shape (D,), "
            f"got {jnp.shape(loc)} and {jnp.shape(log_scale)}")
    return loc, log_scale


def delta_method(f: Callable[..., jax.Array], *, num_samples: int) -> Estimator:
    """Score function with a second-order Taylor (delta-method) control variate.

    For x ~ N(μ, diag(σ²)), μ = loc, σ = exp(log_scale), expand f about
    μ₀ = stop_gradient(μ)::

        f̃(x) = f(μ₀) + g₀ᵀ(x - μ₀) + ½ (x - μ₀)ᵀ H₀ (x - μ₀),  g₀ = ∇f(μ₀), H₀ = ∇²f(μ₀),
        E_θ[f̃] = f(μ₀) + g₀ᵀ(μ - μ₀) + ½ [(μ - μ₀)ᵀ H₀ (μ - μ₀) + Σ_j H₀_jj σ_j²],
        grad_θ E[f] ≈ (1/N) Σ_i (f(x_i) - f̃(x_i)) grad_θ log p(x_i|θ) + grad_θ E_θ[f̃].

    f̃ is fixed (g₀, H₀ under ``stop_gradient``); E_θ[f̃] is differentiated in
    closed form. The estimate is exact when f is quadratic. The loss is
    (1/N) Σ_i (f_i - f̃_i) magic_box(log p(x_i|θ)) + E_θ[f̃], so its derivatives
    of any order are unbiased. Costs one Hessian of f (D² memory) per estimate.

    Args:
      f: ``f(x, *args) -> scalar`` for one sample x of shape (D,); twice
        differentiable in x. The score term treats f as a black box; only its
        derivatives at μ₀ are taken for the control variate, which is constant
        in ``args``, so their gradient is the pathwise mean of ∇_args f.
      num_samples: N, samples per estimate.

    Returns:
      An :class:`Estimator` for the params ``{"loc": (D,), "log_scale": (D,)}``
      of :func:`logtrick.families.normal`; state ``()``. The loss's value
      is (1/N) Σ_i (f_i - f̃_i) + E_θ[f̃]. ``aux``: ``"f"`` and
      ``"control_variate"`` (f̃(x_i)), both shape (N,).

    Example::

        est = lt.delta_method(lambda x: jnp.sum(jnp.cos(x)), num_samples=16)
        params = {"loc": jnp.zeros(5), "log_scale": jnp.full(5, -1.0)}
        grads, _, aux = jax.jit(est.estimate)(params, est.init(params), jax.random.key(0))

    References:
      Mohamed, Rosca, Figurnov and Mnih, "Monte Carlo Gradient Estimation in
      Machine Learning", 2020, section 7.
      Paisley, Blei and Jordan, "Variational Bayesian Inference with Stochastic
      Search", 2012.
    """
    caller = "delta_method"
    n = _checks.num_samples(num_samples, minimum=1, caller=caller)
    family = normal()

    def loss(params, state, key, *args):
        loc, log_scale = _gaussian_params(params, caller)
        xs = sg(family.sample(params, key, n))
        values = _checks.per_sample(lambda x: f(x, *args), xs, n, caller=caller, name="f")
        mu0 = sg(loc)
        f_at = lambda x: f(x, *args)
        f0, g0 = jax.value_and_grad(f_at)(mu0)
        f0, g0, h0 = sg((f0, g0, jax.hessian(f_at)(mu0)))

        def taylor(d):
            return f0 + d @ g0 + 0.5 * d @ h0 @ d

        cv = jax.vmap(taylor)(xs - mu0)
        expected_cv = taylor(loc - mu0) + 0.5 * jnp.sum(jnp.diag(h0) * jnp.exp(2.0 * log_scale))
        log_probs = _checks.per_sample(lambda x: family.log_prob(params, x), xs, n, caller=caller,
                                       name="family.log_prob")
        value = jnp.mean((values - cv) * magic_box(log_probs)) + expected_cv
        return value, (state, {"f": sg(values), "control_variate": cv})

    return from_loss(lambda params: (), loss, caller=caller)
