"""Control variates that keep the score-function estimator unbiased.

A control variate is a function f̃ whose expectation E_θ[f̃] is known as a
differentiable function of θ. Then

    grad_θ E[f] = E[(f(x) - f̃(x)) grad_θ log p(x|θ)] + grad_θ E_θ[f̃],

so the score term only has to carry the part of f that f̃ does not explain.
The same identity with exact sums over part of a discrete support gives
Rao-Blackwellisation (:func:`sum_and_sample`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp

from logtrick import _checks
from logtrick import baselines as baselines_lib
from logtrick.dice import magic_box
from logtrick.estimators import Estimator, _from_surrogate
from logtrick.families import normal

Params = Any


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


def delta_method(f: Callable[[jax.Array], jax.Array], *, num_samples: int) -> Estimator:
    """Score function with a second-order Taylor (delta-method) control variate.

    For x ~ N(μ, diag(σ²)), μ = loc, σ = exp(log_scale), expand f about
    μ₀ = stop_gradient(μ)::

        f̃(x) = f(μ₀) + g₀ᵀ(x - μ₀) + ½ (x - μ₀)ᵀ H₀ (x - μ₀),  g₀ = ∇f(μ₀), H₀ = ∇²f(μ₀),
        E_θ[f̃] = f(μ₀) + g₀ᵀ(μ - μ₀) + ½ [(μ - μ₀)ᵀ H₀ (μ - μ₀) + Σ_j H₀_jj σ_j²],
        grad_θ E[f] ≈ (1/N) Σ_i (f(x_i) - f̃(x_i)) grad_θ log p(x_i|θ) + grad_θ E_θ[f̃].

    f̃ is fixed (g₀, H₀ under ``stop_gradient``); E_θ[f̃] is differentiated in
    closed form. The estimate is exact when f is quadratic. The surrogate is
    (1/N) Σ_i (f_i - f̃_i) magic_box(log p(x_i|θ)) + E_θ[f̃], so its derivatives
    of any order are unbiased. Costs one Hessian of f (D² memory) per estimate.

    Args:
      f: ``f(x) -> scalar`` for one sample x of shape (D,); twice differentiable.
        The score term treats f as a black box; only its derivatives at μ₀ are
        taken.
      num_samples: N, samples per estimate.

    Returns:
      An :class:`Estimator` for the params ``{"loc": (D,), "log_scale": (D,)}``
      of :func:`logtrick.families.normal`; state ``()``. The surrogate's value
      is (1/N) Σ_i (f_i - f̃_i) + E_θ[f̃]. ``aux``: ``"f"`` and
      ``"control_variate"`` (f̃(x_i)), both shape (N,).

    Example::

        est = lt.delta_method(lambda x: jnp.sum(jnp.cos(x)), num_samples=16)
        params = {"loc": jnp.zeros(5), "log_scale": jnp.full(5, -1.0)}
        grads, _, aux = jax.jit(est.estimate)(params, est.init(params), key)

    References:
      Mohamed, Rosca, Figurnov and Mnih, "Monte Carlo Gradient Estimation in
      Machine Learning", 2020, section 7.
      Paisley, Blei and Jordan, "Variational Bayesian Inference with Stochastic
      Search", 2012.
    """
    n = _checks.num_samples(num_samples, minimum=1, caller="delta_method")
    family = normal()

    def surrogate_with_aux(params, state, key):
        loc, log_scale = _gaussian_params(params, "delta_method")
        xs = jax.lax.stop_gradient(family.sample(params, key, n))
        values = jax.lax.stop_gradient(_checks.per_sample(f, xs, n, caller="delta_method", name="f"))
        mu0 = jax.lax.stop_gradient(loc)
        f0, g0 = jax.value_and_grad(f)(mu0)
        h0 = jax.hessian(f)(mu0)
        f0, g0, h0 = jax.lax.stop_gradient((f0, g0, h0))

        def taylor(d):
            return f0 + d @ g0 + 0.5 * d @ h0 @ d

        cv = jax.vmap(taylor)(xs - mu0)
        d = loc - mu0
        expected_cv = taylor(d) + 0.5 * jnp.sum(jnp.diag(h0) * jnp.exp(2.0 * log_scale))
        log_probs = _checks.per_sample(
            lambda x: family.log_prob(params, x), xs, n, caller="delta_method", name="family.log_prob")
        total = jnp.mean((values - cv) * magic_box(log_probs)) + expected_cv
        return total, (state, {"f": values, "control_variate": cv})

    return _from_surrogate(lambda params: (), surrogate_with_aux)


def sum_and_sample(
    f: Callable[[jax.Array], jax.Array],
    *,
    num_summed: int,
    num_samples: int,
    baseline: baselines_lib.Baseline | None = None,
) -> Estimator:
    """Rao-Blackwellised score function: sum the likeliest classes, sample the rest.

    For one categorical variable q = softmax(logits) over K classes, let C be the
    ``num_summed`` most probable classes and q_C = Σ_{c∈C} q_c. Then::

        ĝ = (1/N) Σ_i [ Σ_{c∈C} q_c (f(c) - b_i) ∇log q_c + (1 - q_C)(f(x_i) - b_i) ∇log q(x_i) ],
        x_i ~ q(· | x ∉ C)   (Gumbel-max with the classes of C masked out),

    with q_c, 1 - q_C, C and b_i under ``stop_gradient``. Without a baseline
    this is the exact sum over C plus an unbiased estimate of the sum over the
    rest. The baseline b_i must multiply the summed classes' score terms too:
    E[ĝ_i | b_i] = ∇E[f] - b_i [Σ_{c∈C} ∇q_c + Σ_{x∉C} ∇q_x] = ∇E[f] - b_i ∇1 =
    ∇E[f] for b_i independent of x_i, whereas subtracting it from the sampled
    term alone leaves the bias -b_i (1 - q_C) E[∇log q(x) | x ∉ C] = b_i ∇q_C,
    which is not zero. Averaged over i, the summed classes use the mean baseline
    b̄ = (1/N) Σ_i b_i.

    The surrogate is Σ_{c∈C} q_c (f(c) - b̄) magic_box(log q_c)
    + (1 - q_C)(1/N) Σ_i (f(x_i) - b_i) magic_box(log q(x_i)) + b̄; its value is
    Σ_{c∈C} q_c f(c) + (1 - q_C)(1/N) Σ_i f(x_i), an unbiased estimate of E[f].

    Args:
      f: ``f(x) -> scalar`` for one class x, an int32 scalar; a black box.
      num_summed: how many of the likeliest classes are summed exactly,
        1 ≤ num_summed < K.
      num_samples: N, draws from the remaining classes; f is evaluated
        num_summed + N times per estimate.
      baseline: a :class:`logtrick.baselines.Baseline` applied to the f values
        of the N draws; default none. ``leave_one_out`` needs N ≥ 2.

    Returns:
      An :class:`Estimator` for params = logits of shape (K,). ``aux``: ``"f"``
      and ``"baseline"`` for the draws, shape (N,); ``"f_summed"`` and
      ``"summed_classes"`` (int32), shape (num_summed,). If any f value is
      non-finite (summed or drawn), the grads are NaN and the state is
      unchanged.

    Example::

        payoff = jnp.arange(8.0)
        est = lt.sum_and_sample(lambda x: payoff[x], num_summed=2, num_samples=4)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), key)

    References:
      Liu, Regier, Tripuraneni, Jordan and McAuliffe, "Rao-Blackwellized
      Stochastic Gradients for Discrete Distributions", 2019.
    """
    baseline = baselines_lib.none() if baseline is None else baseline
    if isinstance(num_summed, bool) or not isinstance(num_summed, int) or num_summed < 1:
        raise ValueError(f"sum_and_sample: `num_summed` must be an int >= 1, got {num_summed!r}")
    n = _checks.num_samples(num_samples, minimum=baseline.min_samples, caller="sum_and_sample")
    m = num_summed

    def init(params):
        del params
        return baseline.init()

    def surrogate_with_aux(logits, state, key):
        if jnp.ndim(logits) != 1:
            raise ValueError(f"sum_and_sample: `params` must be logits of shape (K,), got shape {jnp.shape(logits)}")
        num_classes = jnp.shape(logits)[0]
        if m >= num_classes:
            raise ValueError(f"sum_and_sample: `num_summed` must be < K={num_classes}, got {m}")
        log_q = jax.nn.log_softmax(logits)
        fixed = jax.lax.stop_gradient(logits)
        _, summed = jax.lax.top_k(fixed, m)
        masked = fixed.at[summed].set(-jnp.inf)
        xs = jax.random.categorical(key, masked, shape=(n,))
        q_summed = jnp.exp(jax.lax.stop_gradient(log_q)[summed])
        rest_mass = jnp.exp(jax.nn.logsumexp(masked) - jax.nn.logsumexp(fixed))
        all_values = _checks.per_sample(f, jnp.concatenate([summed, xs]), m + n, caller="sum_and_sample", name="f")
        all_values = jax.lax.stop_gradient(all_values)
        f_summed, values = all_values[:m], all_values[m:]
        b, new_state = baseline.apply(values, state)
        b = jax.lax.stop_gradient(b)
        b_mean = jnp.mean(b)
        total = (
            jnp.sum(q_summed * (f_summed - b_mean) * magic_box(log_q[summed]))
            + rest_mass * jnp.mean((values - b) * magic_box(log_q[xs]))
            + b_mean)
        aux = {"f": values, "baseline": b, "f_summed": f_summed, "summed_classes": summed}
        return total, (new_state, aux)

    return _from_surrogate(init, surrogate_with_aux, guarded=("f", "f_summed"))
