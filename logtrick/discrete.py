"""Gradient estimators for factorised Bernoulli latents: ARM, DisARM, RELAX, REBAR, Gumbel-softmax.

Every estimator here differentiates E_{b~p(b|θ)}[f(b)] with respect to logits θ
(one floating array of any shape), b_d ~ Bernoulli(σ(θ_d)) independently, and
``f(b) -> scalar`` for one sample b (a float array of 0s and 1s of θ's shape).

One convention for the noise, shared by all of them::

    u ~ U(0, 1)^shape(θ),   z = θ + log u - log(1 - u)   (logistic, location θ),
    b  = H(z)          = 1[u > σ(-θ)]                    (so P(b = 1) = σ(θ)),
    b̃ = H(θ - logit u) = 1[u < σ(θ)]                     (the antithetic partner, noise 1 - u).

The pair (b, b̃) is symmetric in law, so which one is called b does not matter
for ARM or DisARM. The conditional z̃ ~ p(z | b, θ) of RELAX and REBAR is
z̃ = θ + logit(ũ) with ũ uniform on the interval of u that gives b:
ũ = σ(-θ) + v σ(θ) for b = 1 and ũ = v σ(-θ) for b = 0, v ~ U(0, 1) fresh, so
z̃ is reparameterised through θ.

The estimators, each averaged over its draws::

    arm             g = (f(b) - f(b̃)) (u - ½)
    disarm          g = ½ (f(b) - f(b̃)) (-1)^{b̃} 1[b ≠ b̃] σ(|θ|)          (= E[g_arm | b, b̃])
    relax           g = (f(b) - c_φ(z̃)) ∇_θ log p(b|θ) + ∇_θ c_φ(z) - ∇_θ c_φ(z̃)
    rebar           relax with c_φ(z) = η f(σ(z / λ))
    gumbel_softmax  g = ∇_θ f(σ(z / τ)), or straight-through; biased

The unbiased ones are checked against exact enumeration of all 2^D outcomes;
the bias of the Gumbel-softmax relaxation is measured. All return a
:class:`logtrick.Estimator` with the usual non-finite guard on f.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from logtrick import _checks
from logtrick.dice import magic_box
from logtrick.base import Estimator, from_loss


def _from_surrogate(init, loss):  # interim, until this module follows the contract
    return from_loss(init, lambda p, s, k, *a: loss(p, s, k), caller="discrete")
from logtrick.families import bernoulli

CVParams = Any


class RelaxState(NamedTuple):
    """State of :func:`relax` and :func:`rebar`.

    Attributes:
      cv_params: the control variate's parameters (any pytree).
      opt_state: the optimizer's state for ``cv_params``; ``()`` without one.
    """

    cv_params: CVParams
    opt_state: Any


def _logits(params: Any, caller: str) -> jax.Array:
    """``params`` as one floating array of logits, or a TypeError naming it."""
    if not isinstance(params, (jax.Array, np.ndarray)):
        raise TypeError(
            f"{caller}: `params` must be a single floating-point array of logits, got {type(params).__name__}")
    if not jnp.issubdtype(params.dtype, jnp.floating):
        raise TypeError(f"{caller}: `params` (logits) must have a floating dtype, got {params.dtype}")
    return params


def _even_num_samples(num_samples: Any, caller: str) -> int:
    n = _checks.num_samples(num_samples, minimum=2, caller=caller)
    if n % 2:
        raise ValueError(
            f"{caller}: `num_samples` counts f evaluations, two per antithetic pair, so it must be even; got {n}")
    return n


def _positive(value: Any, name: str, caller: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{caller}: `{name}` must be a finite number > 0, got {value!r}")
    return float(value)


def _uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """U(0, 1) noise bounded away from 0, so that its logit is finite."""
    return jax.random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)


def _logit(u: jax.Array) -> jax.Array:
    return jnp.log(u) - jnp.log1p(-u)


def _conditional_logistic(logits: jax.Array, b: jax.Array, v: jax.Array) -> jax.Array:
    """z̃ ~ p(z | b, θ), reparameterised through θ: θ + logit(ũ), ũ uniform on {u : H(θ + logit u) = b}.

    b = 1: ũ = σ(-θ) + v σ(θ), logit ũ = log(1 - (1-v) σ(θ)) - log(1-v) - log σ(θ).
    b = 0: ũ = v σ(-θ),        logit ũ = log v + log σ(-θ) - log(1 - v σ(-θ)).
    """
    one = jnp.log1p(-(1 - v) * jax.nn.sigmoid(logits)) - jnp.log1p(-v) - jax.nn.log_sigmoid(logits)
    zero = jnp.log(v) + jax.nn.log_sigmoid(-logits) - jnp.log1p(-v * jax.nn.sigmoid(-logits))
    return logits + jnp.where(b > 0, one, zero)


_bernoulli_log_prob = jax.vmap(bernoulli().log_prob, in_axes=(None, 0))


def _per_sample(values: jax.Array, ndim: int) -> jax.Array:
    """Reshapes (n,) to broadcast against stacked samples of rank ``ndim``."""
    return values.reshape(values.shape + (1,) * ndim)


def _antithetic_pairs(f, logits, key, n, caller):
    """u for n/2 pairs, the pairs (b, b̃), and f at both: (u, b, b̃, f(b), f(b̃), all n values)."""
    m = n // 2
    u = _uniform(key, (m,) + logits.shape, logits.dtype)
    b = jax.lax.stop_gradient((u > jax.nn.sigmoid(-logits)).astype(logits.dtype))
    b_anti = jax.lax.stop_gradient((u < jax.nn.sigmoid(logits)).astype(logits.dtype))
    values = jax.lax.stop_gradient(_checks.per_sample(f, jnp.concatenate([b, b_anti]), n, caller=caller, name="f"))
    return u, b, b_anti, values[:m], values[m:], values


def _gradient_surrogate(logits: jax.Array, grad: jax.Array, values: jax.Array) -> jax.Array:
    """mean f + <sg(g), θ - sg(θ)>: value mean f, first derivative g (first order only)."""
    return jnp.mean(values) + jnp.sum(jax.lax.stop_gradient(grad) * (logits - jax.lax.stop_gradient(logits)))


def _stateless_init(caller):
    def init(params):
        _logits(params, caller)
        return ()

    return init


def arm(f: Callable[[jax.Array], jax.Array], *, num_samples: int) -> Estimator:
    """The Augment-REINFORCE-Merge (ARM) estimator for Bernoulli logits.

    ∇_θ E[f(b)] = E_u[(f(b) - f(b̃)) (u - ½)],  b = 1[u > σ(-θ)], b̃ = 1[u < σ(θ)],
    one u ~ U(0,1)^D per antithetic pair; averaged over num_samples / 2 pairs.

    The surrogate is mean f + <sg(g), θ - sg(θ)>, so its first derivative is the
    estimate g; higher derivatives of it are not estimates of anything.

    Args:
      f: ``f(b) -> scalar`` for one sample b (0/1 floats, θ's shape); a black box.
      num_samples: f evaluations per estimate, two per pair, so even (≥ 2).

    Returns:
      An :class:`logtrick.Estimator` on logits θ (one floating array, any
      shape); state ``()``; ``aux["f"]``, shape (num_samples,): f(b) of every
      pair, then f(b̃) of every pair.

    Example::

        est = lt.discrete.arm(lambda b: jnp.sum((b - 0.4) ** 2), num_samples=8)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), key)

    References:
      Yin and Zhou, "ARM: Augment-REINFORCE-Merge Gradient for Stochastic
      Binary Networks", 2019.
    """
    n = _even_num_samples(num_samples, "arm")

    def surrogate_with_aux(params, state, key):
        logits = _logits(params, "arm")
        u, _, _, f_b, f_anti, values = _antithetic_pairs(f, logits, key, n, "arm")
        grad = jnp.mean(_per_sample(f_b - f_anti, logits.ndim) * (u - 0.5), axis=0)
        return _gradient_surrogate(logits, grad, values), (state, {"f": values})

    return _from_surrogate(_stateless_init("arm"), surrogate_with_aux)


def disarm(f: Callable[[jax.Array], jax.Array], *, num_samples: int) -> Estimator:
    """The DisARM estimator: ARM with the noise u integrated out given (b, b̃).

    g_d = ½ (f(b) - f(b̃)) (-1)^{b̃_d} 1[b_d ≠ b̃_d] σ(|θ_d|),  (b, b̃) as in
    :func:`arm`; averaged over num_samples / 2 pairs. g_d = E[g_ARM,d | b, b̃],
    so every coordinate's variance is at most ARM's, at the same cost. The
    factor is symmetric in (b, b̃). The surrogate is first order only, as for
    :func:`arm`.

    Args:
      f: ``f(b) -> scalar`` for one sample b; a black box.
      num_samples: f evaluations per estimate, two per pair, so even (≥ 2).

    Returns:
      An :class:`logtrick.Estimator` on logits θ; state ``()``; ``aux["f"]``,
      shape (num_samples,), laid out as in :func:`arm`. With the same key the
      pairs are those of :func:`arm`.

    Example::

        est = lt.discrete.disarm(lambda b: jnp.sum((b - 0.4) ** 2), num_samples=8)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), key)

    References:
      Dong, Mnih and Tucker, "DisARM: An Antithetic Gradient Estimator for
      Binary Latent Variables", 2020.
    """
    n = _even_num_samples(num_samples, "disarm")

    def surrogate_with_aux(params, state, key):
        logits = _logits(params, "disarm")
        _, b, b_anti, f_b, f_anti, values = _antithetic_pairs(f, logits, key, n, "disarm")
        weight = (1 - 2 * b_anti) * (b != b_anti) * jax.nn.sigmoid(jnp.abs(logits))
        grad = jnp.mean(0.5 * _per_sample(f_b - f_anti, logits.ndim) * weight, axis=0)
        return _gradient_surrogate(logits, grad, values), (state, {"f": values})

    return _from_surrogate(_stateless_init("disarm"), surrogate_with_aux)


def relax(
    f: Callable[[jax.Array], jax.Array],
    control_variate: Callable[[CVParams, jax.Array], jax.Array],
    cv_params: CVParams,
    *,
    num_samples: int = 1,
    optimizer: optax.GradientTransformation | None = None,
) -> Estimator:
    """The RELAX estimator with a learned, differentiable control variate c_φ(z).

    ĝ = [f(b) - c_φ(z̃)] ∇_θ log p(b|θ) + ∇_θ c_φ(z) - ∇_θ c_φ(z̃),
    z = θ + logit u, b = H(z), z̃ ~ p(z | b, θ) reparameterised through θ (see
    the module docstring); averaged over num_samples draws. Unbiased for every φ:
    E[c(z̃) ∇_θ log p(b|θ) + ∇_θ c(z̃)] = ∇_θ E_b[E[c(z̃)|b]] = ∇_θ E[c(z)] = E[∇_θ c(z)].

    The surrogate, per draw, is
    (f - c(z̃')) ⊡(log p(b|θ)) + c(z̃') + [c(z) - c(z')] - [c(z̃) - c(z̃')],
    with ⊡ = :func:`logtrick.magic_box`, where ' stops the gradient to θ only
    (c is evaluated at stop_gradient(z)),
    so its value is f and its θ-gradient is ĝ, while ĝ stays a differentiable
    function of φ. Each ``estimate`` also takes one ``optimizer`` step on φ
    minimising cv_loss = Σ_d ĝ_d², whose expected φ-gradient is that of the
    estimator's variance. The returned grads are ĝ with the incoming φ.
    First order only: higher θ-derivatives of the surrogate are not estimates.

    Args:
      f: ``f(b) -> scalar`` for one sample b; a black box.
      control_variate: ``control_variate(cv_params, z) -> scalar`` for one z
        (θ's shape); differentiable in z and cv_params.
      cv_params: initial control-variate parameters (any pytree).
      num_samples: draws b per estimate (= discrete f evaluations), ≥ 1.
      optimizer: an optax transformation for cv_params; None keeps φ fixed.

    Returns:
      An :class:`logtrick.Estimator` on logits θ; state :class:`RelaxState`;
      ``aux["f"]`` shape (num_samples,), ``aux["cv_loss"]`` scalar (Σ_d ĝ_d² of
      this estimate, with the incoming φ; without an optimizer it is read off
      the returned grads, so no second gradient pass is spent on it).

    Example::

        cv = lambda phi, z: jnp.dot(phi["w"], jnp.tanh(z)) + phi["c"]
        est = lt.discrete.relax(f, cv, {"w": jnp.zeros(6), "c": jnp.zeros(())},
                                optimizer=optax.adam(1e-2))
        state = est.init(logits)
        grads, state, aux = jax.jit(est.estimate)(logits, state, key)

    References:
      Grathwohl, Choi, Wu, Roeder and Duvenaud, "Backpropagation through the
      Void: Optimizing control variates for black-box gradient estimation", 2018.
    """
    n = _checks.num_samples(num_samples, minimum=1, caller="relax")
    if not callable(control_variate):
        raise TypeError(f"relax: `control_variate` must be callable, got {type(control_variate).__name__}")
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"relax: `optimizer` must be an optax.GradientTransformation or None, got {type(optimizer).__name__}")

    def init(params):
        _logits(params, "relax")
        return RelaxState(cv_params, () if optimizer is None else optimizer.init(cv_params))

    def control(phi, zs):
        return _checks.per_sample(lambda z: control_variate(phi, z), zs, n, caller="relax", name="control_variate")

    def surrogate_with_aux(params, state, key):
        logits = _logits(params, "relax")
        u, v = _uniform(key, (2, n) + logits.shape, logits.dtype)
        bs = jax.lax.stop_gradient((logits + _logit(u) > 0).astype(logits.dtype))
        values = jax.lax.stop_gradient(_checks.per_sample(f, bs, n, caller="relax", name="f"))

        def surrogate_at(theta, phi):
            z = theta + _logit(u)
            z_cond = _conditional_logistic(theta, bs, v)
            c_cond_fixed = control(phi, jax.lax.stop_gradient(z_cond))
            per_draw = ((values - c_cond_fixed) * magic_box(_bernoulli_log_prob(theta, bs)) + c_cond_fixed
                        + control(phi, z) - control(phi, jax.lax.stop_gradient(z))
                        - control(phi, z_cond) + c_cond_fixed)
            return jnp.mean(per_draw)

        def cv_loss(phi):
            g = jax.grad(surrogate_at)(jax.lax.stop_gradient(logits), phi)
            return jnp.sum(g**2)

        value = surrogate_at(logits, state.cv_params)
        if optimizer is None:
            return value, (state, {"f": values})
        loss, cv_grads = jax.value_and_grad(cv_loss)(state.cv_params)
        updates, opt_state = optimizer.update(cv_grads, state.opt_state, state.cv_params)
        new_state = RelaxState(optax.apply_updates(state.cv_params, updates), opt_state)
        return value, (new_state, {"f": values, "cv_loss": jax.lax.stop_gradient(loss)})

    estimator = _from_surrogate(init, surrogate_with_aux)
    if optimizer is not None:
        return estimator

    def estimate(params, state, key):
        grads, new_state, aux = estimator.estimate(params, state, key)
        return grads, new_state, {**aux, "cv_loss": jnp.sum(grads**2)}

    return estimator._replace(estimate=estimate)


def rebar(
    f: Callable[[jax.Array], jax.Array],
    *,
    num_samples: int = 1,
    temperature: float = 0.5,
    scale: float = 1.0,
    optimizer: optax.GradientTransformation | None = None,
) -> Estimator:
    """REBAR: :func:`relax` with the control variate η f(σ(z / λ)), the concrete relaxation of f.

    c_φ(z) = η f(σ(z / λ)),  φ = {"scale": η, "log_temperature": log λ};
    ĝ as in :func:`relax`. f must accept relaxed inputs in [0, 1] and be
    differentiable there. With an ``optimizer``, η and log λ are learned by
    minimising Σ_d ĝ_d² (the variance plus a constant); without, they stay at
    the given values.

    Args:
      f: ``f(b) -> scalar``; also called on σ(z/λ) ∈ (0, 1)^D.
      num_samples: draws b per estimate, ≥ 1.
      temperature: initial λ > 0.
      scale: initial η.
      optimizer: an optax transformation for φ; None keeps φ fixed.

    Returns:
      An :class:`logtrick.Estimator` on logits θ; state :class:`RelaxState`
      with ``cv_params = {"log_temperature": (), "scale": ()}``; aux as in
      :func:`relax`. Each draw costs one f on b and two on relaxed inputs.

    Example::

        est = lt.discrete.rebar(f, num_samples=4, optimizer=optax.adam(1e-2))
        state = est.init(logits)
        grads, state, aux = jax.jit(est.estimate)(logits, state, key)

    References:
      Tucker, Mnih, Maddison, Lawson and Sohl-Dickstein, "REBAR: Low-variance,
      unbiased gradient estimates for discrete latent variable models", 2017.
    """
    temperature = _positive(temperature, "temperature", "rebar")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale):
        raise ValueError(f"rebar: `scale` must be a finite number, got {scale!r}")
    cv_params = {"log_temperature": jnp.asarray(np.log(temperature), jnp.float32),
                 "scale": jnp.asarray(scale, jnp.float32)}

    def control_variate(phi, z):
        return phi["scale"] * f(jax.nn.sigmoid(z / jnp.exp(phi["log_temperature"])))

    return relax(f, control_variate, cv_params, num_samples=num_samples, optimizer=optimizer)


def gumbel_softmax(
    f: Callable[[jax.Array], jax.Array],
    *,
    num_samples: int,
    temperature: float = 0.5,
    straight_through: bool = False,
) -> Estimator:
    """The binary Concrete (Gumbel-softmax) relaxation: a biased, low-variance pathwise gradient.

    y = σ(z / τ), z = θ + logit u. Relaxed: ĝ = mean ∇_θ f(y), unbiased for
    ∇_θ E[f(σ(z/τ))], not for ∇_θ E[f(b)]. Straight-through: the forward value
    is f(b), b = H(z), and the gradient flows through y (b_st = b + y - sg(y),
    which equals b exactly in the forward pass), ĝ = mean ∇f(b) · ∂y/∂θ.

    Bias, measured on the 6-variable problem of ``tests/test_discrete.py`` (a
    quadratic form plus a product of three bits, θ = [-1, 0, .5, 1.5, -.3, .8]),
    as ‖E ĝ - ∇‖ / ‖∇‖ against the exact ∇_θ E[f(b)] (160000 draws): relaxed
    0.14, 0.24, 0.38 and straight-through 0.20, 0.36, 0.54 at τ = 0.25, 0.5, 1.
    Even for linear f the relaxed gradient is biased: ∂_θ E[σ(z/τ)] is 0.86 to
    1.00 times σ'(θ) on those logits at τ = 0.5.

    Args:
      f: ``f(x) -> scalar``, differentiable, for x ∈ [0, 1]^D of θ's shape.
      num_samples: draws per estimate, ≥ 1.
      temperature: τ > 0; smaller is less biased and noisier.
      straight_through: forward on the discrete b instead of the relaxed y.

    Returns:
      An :class:`logtrick.Estimator` on logits θ; state ``()``; ``aux["f"]``,
      shape (num_samples,): f(y) relaxed, f(b) straight-through.

    Example::

        est = lt.discrete.gumbel_softmax(f, num_samples=8, temperature=0.5)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), key)

    References:
      Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", 2017.
      Maddison, Mnih and Teh, "The Concrete Distribution: A Continuous Relaxation
      of Discrete Random Variables", 2017.
      Bengio, Léonard and Courville, "Estimating or Propagating Gradients Through
      Stochastic Neurons for Conditional Computation", 2013.
    """
    n = _checks.num_samples(num_samples, minimum=1, caller="gumbel_softmax")
    tau = _positive(temperature, "temperature", "gumbel_softmax")

    def surrogate_with_aux(params, state, key):
        logits = _logits(params, "gumbel_softmax")
        z = logits + _logit(_uniform(key, (n,) + logits.shape, logits.dtype))
        xs = jax.nn.sigmoid(z / tau)
        if straight_through:
            xs = jax.lax.stop_gradient((z > 0).astype(logits.dtype)) + (xs - jax.lax.stop_gradient(xs))
        values = _checks.per_sample(f, xs, n, caller="gumbel_softmax", name="f")
        return jnp.mean(values), (state, {"f": jax.lax.stop_gradient(values)})

    return _from_surrogate(_stateless_init("gumbel_softmax"), surrogate_with_aux)
