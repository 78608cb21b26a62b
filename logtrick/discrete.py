"""Gradient estimators for factorised Bernoulli latents: ARM, DisARM, RELAX, REBAR, Gumbel-softmax.

Every estimator here differentiates E_{b~p(b|θ)}[f(b, *args)] with respect to
logits θ (one floating array of any shape), b_d ~ Bernoulli(σ(θ_d))
independently, and ``f(b, *args) -> scalar`` for one sample b (a float array
of 0s and 1s of θ's shape). As everywhere in logtrick, ``loss(logits, state,
key, *args)`` is a scalar whose value estimates E[f]; its logits derivative is
the estimator's, its derivative in ``args`` (and in whatever f closes over) is
the pathwise mean of ∇ f(b, *args) over the same samples.

Two kinds of noise, u ~ U(0, 1)^shape(θ):

    antithetic pairs (ARM, DisARM):  b = 1[u < σ(θ)], b̃ = 1[1 - u < σ(θ)]
                                     (:func:`logtrick.families.antithetic_bernoulli`),
    logistic (RELAX, REBAR, Gumbel): z = θ + logit u,  b = H(z) = 1[u > σ(-θ)].

The conditional z̃ ~ p(z | b, θ) of RELAX and REBAR is z̃ = θ + logit(ũ) with ũ
uniform on the interval of u that gives b: ũ = σ(-θ) + v σ(θ) for b = 1 and
ũ = v σ(-θ) for b = 0, v ~ U(0, 1) fresh, so z̃ is reparameterised through θ.

The estimators, each averaged over its draws::

    arm             g = (f(b̃) - f(b)) (u - ½)
    disarm          g = ½ (f(b) - f(b̃)) (-1)^{b̃} 1[b ≠ b̃] σ(|θ|)          (= E[g_arm | b, b̃])
    relax           g = (f(b) - c_φ(z̃)) ∇_θ log p(b|θ) + ∇_θ c_φ(z) - ∇_θ c_φ(z̃)
    rebar           relax with c_φ(z) = η f(σ(z / λ))
    gumbel_softmax  g = ∇_θ f(σ(z / τ)), or straight-through; biased

All return a :class:`logtrick.Estimator` built with :func:`logtrick.from_loss`
(the usual non-finite guard on f).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from logtrick import _checks
from logtrick.base import Estimator, from_loss
from logtrick.dice import magic_box
from logtrick.families import antithetic_bernoulli, bernoulli

CVParams = Any
sg = jax.lax.stop_gradient


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
    return jnp.asarray(params)


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


def _antithetic_pairs(f, logits, key, n, args, caller):
    """u for n/2 pairs (drawn as ``bernoulli().antithetic_sample`` draws it), the samples [b; b̃], f at them."""
    u = jax.random.uniform(key, (n // 2,) + logits.shape, logits.dtype)
    samples = sg(jnp.concatenate(antithetic_bernoulli(logits, u)))
    values = _checks.per_sample(lambda b: f(b, *args), samples, n, caller=caller, name="f")
    return u, samples, values


def disarm_weight(logits: jax.Array, b: jax.Array, b_partner: jax.Array) -> jax.Array:
    """DisARM's factor (-1)^{b̃} 1[b ≠ b̃] σ(|θ|), elementwise: g = ½ (f(b) - f(b̃)) × it (see :func:`disarm`).

    Args:
      logits: θ; b, b_partner: an antithetic pair drawn at θ (0/1 floats), all one shape.
    """
    return (1 - 2 * b_partner) * (b != b_partner) * jax.nn.sigmoid(jnp.abs(logits))


def _first_order_loss(logits: jax.Array, grad: jax.Array, values: jax.Array) -> jax.Array:
    """mean f + <sg(g), θ - sg(θ)>: value mean f, θ-derivative g, args-derivative mean ∇f (first order only)."""
    return jnp.mean(values) + jnp.sum(sg(grad) * (logits - sg(logits)))


def _stateless_init(caller):
    def init(params):
        _logits(params, caller)
        return ()

    return init


def arm(f: Callable[..., jax.Array], *, num_samples: int) -> Estimator:
    """The Augment-REINFORCE-Merge (ARM) estimator for Bernoulli logits.

    ∇_θ E[f(b)] = E_u[(f(b̃) - f(b)) (u - ½)],  b = 1[u < σ(θ)], b̃ = 1[1 - u < σ(θ)],
    one u ~ U(0,1)^D per antithetic pair; averaged over num_samples / 2 pairs.

    The loss is mean f + <sg(g), θ - sg(θ)> over the 2 × num_samples / 2 f
    values: its first derivative in θ is the ARM estimate g, in ``args`` the
    mean of ∇_args f over both members of every pair (each member is a draw
    from p(b|θ)). Higher derivatives of it are not estimates of anything.

    Args:
      f: ``f(b, *args) -> scalar`` for one sample b (0/1 floats, θ's shape); a
        black box in b, differentiated in ``args``.
      num_samples: f evaluations per estimate, two per pair, so even (≥ 2).

    Returns:
      An :class:`logtrick.Estimator` on logits θ (one floating array, any
      shape); state ``()``; ``aux``: ``"samples"``, shape (num_samples,) +
      θ.shape, b of every pair then b̃ of every pair, as
      ``lt.families.bernoulli().antithetic_sample`` draws them from the same
      key; ``"f"``, f at them, shape (num_samples,).

    Example::

        est = lt.discrete.arm(lambda b, w: jnp.sum((b - w) ** 2), num_samples=8)
        logits, w = jnp.zeros(3), jnp.full(3, 0.4)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), jax.random.key(0), w)

    References:
      Yin and Zhou, "ARM: Augment-REINFORCE-Merge Gradient for Stochastic
      Binary Networks", 2019.
    """
    n = _even_num_samples(num_samples, "arm")

    def loss(params, state, key, *args):
        logits = _logits(params, "arm")
        u, samples, values = _antithetic_pairs(f, logits, key, n, args, "arm")
        f_b, f_partner = jnp.split(sg(values), 2)
        grad = jnp.mean(_per_sample(f_partner - f_b, logits.ndim) * (u - 0.5), axis=0)
        return _first_order_loss(logits, grad, values), (state, {"f": sg(values), "samples": samples})

    return from_loss(_stateless_init("arm"), loss, caller="arm")


def disarm(f: Callable[..., jax.Array], *, num_samples: int) -> Estimator:
    """The DisARM estimator: ARM with the noise u integrated out given (b, b̃).

    g_d = ½ (f(b) - f(b̃)) (-1)^{b̃_d} 1[b_d ≠ b̃_d] σ(|θ_d|),  (b, b̃) as in
    :func:`arm`; averaged over num_samples / 2 pairs. g_d = E[g_ARM,d | b, b̃],
    so every coordinate's variance is at most ARM's, at the same cost. The
    factor is symmetric in (b, b̃). The loss is that of :func:`arm` with this
    g: first order only, its args-derivative the pathwise mean of ∇_args f.

    Args:
      f: ``f(b, *args) -> scalar`` for one sample b; a black box in b,
        differentiated in ``args``.
      num_samples: f evaluations per estimate, two per pair, so even (≥ 2).

    Returns:
      An :class:`logtrick.Estimator` on logits θ; state ``()``; ``aux`` as in
      :func:`arm`. With the same key the pairs are those of :func:`arm`.

    Example::

        est = lt.discrete.disarm(lambda b, w: jnp.sum((b - w) ** 2), num_samples=8)
        logits, w = jnp.zeros(3), jnp.full(3, 0.4)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), jax.random.key(0), w)

    References:
      Dong, Mnih and Tucker, "DisARM: An Antithetic Gradient Estimator for
      Binary Latent Variables", 2020.
    """
    n = _even_num_samples(num_samples, "disarm")

    def loss(params, state, key, *args):
        logits = _logits(params, "disarm")
        _, samples, values = _antithetic_pairs(f, logits, key, n, args, "disarm")
        b, b_partner = jnp.split(samples, 2)
        f_b, f_partner = jnp.split(sg(values), 2)
        weight = disarm_weight(logits, b, b_partner)
        grad = jnp.mean(0.5 * _per_sample(f_b - f_partner, logits.ndim) * weight, axis=0)
        return _first_order_loss(logits, grad, values), (state, {"f": sg(values), "samples": samples})

    return from_loss(_stateless_init("disarm"), loss, caller="disarm")


class _Draws(NamedTuple):
    """RELAX's noise and samples for n draws: u, v ~ U(0, 1) of shape (n,) + θ.shape, and b = H(z(θ, u))."""

    u: jax.Array
    v: jax.Array
    samples: jax.Array


class _Relaxation(NamedTuple):
    """What RELAX needs of a discrete family, for n stacked draws (each function maps over the leading axis).

    Attributes:
      perturbed: ``perturbed(θ, u) -> z``, the continuous noise variable, reparameterised through θ.
      hard: ``hard(z) -> b``, the discrete sample H(z).
      conditional: ``conditional(θ, b, v) -> z̃``, a draw of p(z | b, θ) from fresh uniforms v,
        reparameterised through θ.
      log_prob: ``log_prob(θ, b) -> (n,)``, log p(b|θ).
    """

    perturbed: Callable[[jax.Array, jax.Array], jax.Array]
    hard: Callable[[jax.Array], jax.Array]
    conditional: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    log_prob: Callable[[jax.Array, jax.Array], jax.Array]


_BERNOULLI_RELAXATION = _Relaxation(
    perturbed=lambda theta, u: theta + _logit(u),
    hard=lambda z: (z > 0).astype(z.dtype),
    conditional=_conditional_logistic,
    log_prob=_bernoulli_log_prob,
)


def _relax_loss(control, theta, phi, draws, values, args, relaxation):
    """mean over draws of (f - c(z̃')) ⊡(log p(b|θ)) + c(z̃') + [c(z) - c(z')] - [c(z̃) - c(z̃')].

    ' evaluates c at stop_gradient(z): the value is mean f, the θ-derivative
    ĝ, and the args-derivatives of the c terms cancel, leaving mean ∇_args f.
    """
    z = relaxation.perturbed(theta, draws.u)
    z_cond = relaxation.conditional(theta, draws.samples, draws.v)
    c_cond = control(phi, sg(z_cond), args)
    per_draw = ((values - c_cond) * magic_box(relaxation.log_prob(theta, draws.samples)) + c_cond
                + control(phi, z, args) - control(phi, sg(z), args)
                - control(phi, z_cond, args) + c_cond)
    return jnp.mean(per_draw)


def _cv_loss(phi, control, theta, draws, values, args, relaxation):
    """Σ_d ĝ_d², ĝ = ∇_θ of :func:`_relax_loss`, a differentiable function of φ."""
    return jnp.sum(jax.grad(_relax_loss, argnums=1)(control, theta, phi, draws, values, args, relaxation) ** 2)


def _cv_step(optimizer, state: RelaxState, cv_grads) -> RelaxState:
    """One optimizer step on the control variate's parameters; the state unchanged without an optimizer."""
    if optimizer is None:
        return state
    updates, opt_state = optimizer.update(cv_grads, state.opt_state, state.cv_params)
    return RelaxState(optax.apply_updates(state.cv_params, updates), opt_state)


def relax(
    f: Callable[..., jax.Array],
    control_variate: Callable[..., jax.Array],
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

    The loss, per draw, is
    (f - c(z̃')) ⊡(log p(b|θ)) + c(z̃') + [c(z) - c(z')] - [c(z̃) - c(z̃')],
    ⊡ = :func:`logtrick.magic_box`, ' evaluating c at stop_gradient(z). Its
    value is f, its θ-derivative ĝ, its args-derivative ∇_args f (the c
    terms' args-derivatives cancel exactly); first order only.

    The control variate is trained to minimise cv_loss = Σ_d ĝ_d², whose
    expected φ-gradient is that of the estimator's variance (E ĝ does not
    depend on φ). Every call computes ĝ (through ``params`` only, with the
    incoming φ) and the φ-gradient of Σ ĝ² into ``aux``, so the caller can
    train φ with any optimizer, e.g. on ``aux["cv_grads"]`` averaged over a
    vmapped batch; with ``optimizer`` the estimator also takes that step
    itself and returns the new φ in its state.

    Args:
      f: ``f(b, *args) -> scalar`` for one sample b; a black box in b,
        differentiated in ``args``.
      control_variate: ``control_variate(cv_params, z, *args) -> scalar`` for
        one z (θ's shape), ``args`` those of ``loss``; differentiable in z and
        cv_params.
      cv_params: initial control-variate parameters (any pytree).
      num_samples: draws b per estimate (= discrete f evaluations), ≥ 1.
      optimizer: an optax transformation the estimator applies to cv_params
        on every call; None leaves them to the caller.

    Returns:
      An :class:`logtrick.Estimator` on logits θ; state :class:`RelaxState`
      (the input state when ``optimizer`` is None); ``aux``: ``"f"``, shape
      (num_samples,); ``"samples"``, b, shape (num_samples,) + θ.shape;
      ``"cv_loss"``, scalar Σ_d ĝ_d²; ``"cv_grads"``, its gradient in φ, a
      pytree like cv_params.

    Example::

        f = lambda b, w: jnp.sum((b - w) ** 2)
        cv = lambda phi, z, w: jnp.dot(phi["w"], jnp.tanh(z)) + phi["c"]
        est = lt.discrete.relax(f, cv, {"w": jnp.zeros(3), "c": jnp.zeros(())})
        logits, w = jnp.zeros(3), jnp.full(3, 0.4)
        state = est.init(logits)
        grads, state, aux = jax.jit(est.estimate)(logits, state, jax.random.key(0), w)
        phi = jax.tree_util.tree_map(lambda p, g: p - 0.01 * g, state.cv_params, aux["cv_grads"])
        state = state._replace(cv_params=phi)

    References:
      Grathwohl, Choi, Wu, Roeder and Duvenaud, "Backpropagation through the
      Void: Optimizing control variates for black-box gradient estimation", 2018.
    """
    return _relax_with(_BERNOULLI_RELAXATION, f, control_variate, cv_params, num_samples=num_samples,
                       optimizer=optimizer, caller="relax")


def _relax_with(relaxation: _Relaxation, f: Callable[..., jax.Array], control_variate: Callable[..., jax.Array],
                cv_params: CVParams, *, num_samples: int, optimizer: optax.GradientTransformation | None,
                caller: str, check_logits: Callable[[Any, str], jax.Array] = _logits) -> Estimator:
    """RELAX for any discrete family given as a :class:`_Relaxation` (:func:`relax` is the Bernoulli one).

    ``check_logits(params, caller)`` validates the params and returns the logits.
    """
    n = _checks.num_samples(num_samples, minimum=1, caller=caller)
    if not callable(control_variate):
        raise TypeError(f"{caller}: `control_variate` must be callable, got {type(control_variate).__name__}")
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"{caller}: `optimizer` must be an optax.GradientTransformation or None, got {type(optimizer).__name__}")

    def init(params):
        check_logits(params, caller)
        return RelaxState(cv_params, () if optimizer is None else optimizer.init(cv_params))

    def control(phi, zs, args):
        return _checks.per_sample(lambda z: control_variate(phi, z, *args), zs, n, caller=caller,
                                  name="control_variate")

    def loss(params, state, key, *args):
        logits = check_logits(params, caller)
        u, v = _uniform(key, (2, n) + logits.shape, logits.dtype)
        draws = _Draws(u, v, sg(relaxation.hard(relaxation.perturbed(logits, u))))
        values = _checks.per_sample(lambda b: f(b, *args), draws.samples, n, caller=caller, name="f")
        value = _relax_loss(control, logits, state.cv_params, draws, values, args, relaxation)
        cv_loss, cv_grads = jax.value_and_grad(_cv_loss)(state.cv_params, control, sg(logits), draws, sg(values),
                                                         sg(args), relaxation)
        aux = {"f": sg(values), "samples": draws.samples, "cv_loss": cv_loss, "cv_grads": cv_grads}
        return value, (_cv_step(optimizer, state, cv_grads), aux)

    return from_loss(init, loss, caller=caller)


def rebar(
    f: Callable[..., jax.Array],
    *,
    num_samples: int = 1,
    temperature: float = 0.5,
    scale: float = 1.0,
    optimizer: optax.GradientTransformation | None = None,
) -> Estimator:
    """REBAR: :func:`relax` with the control variate η f(σ(z / λ), *args), the concrete relaxation of f.

    c_φ(z) = η f(σ(z / λ), *args),  φ = {"scale": η, "log_temperature": log λ};
    ĝ, the loss and its aux as in :func:`relax`. f must accept relaxed
    inputs in [0, 1] and be differentiable there.

    Args:
      f: ``f(b, *args) -> scalar``; also called on σ(z/λ) ∈ (0, 1)^D.
      num_samples: draws b per estimate, ≥ 1.
      temperature: initial λ > 0.
      scale: initial η.
      optimizer: an optax transformation the estimator applies to φ on every
        call; None leaves φ to the caller (``aux["cv_grads"]``).

    Returns:
      An :class:`logtrick.Estimator` on logits θ; state :class:`RelaxState`
      with ``cv_params = {"log_temperature": (), "scale": ()}``; aux as in
      :func:`relax`. Each draw costs one f on b and two on relaxed inputs.

    Example::

        import optax

        est = lt.discrete.rebar(lambda b: jnp.sum((b - 0.4) ** 2), num_samples=4, optimizer=optax.adam(1e-2))
        logits = jnp.zeros(3)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), jax.random.key(0))

    References:
      Tucker, Mnih, Maddison, Lawson and Sohl-Dickstein, "REBAR: Low-variance,
      unbiased gradient estimates for discrete latent variable models", 2017.
    """
    temperature = _positive(temperature, "temperature", "rebar")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale):
        raise ValueError(f"rebar: `scale` must be a finite number, got {scale!r}")
    cv_params = {"log_temperature": jnp.asarray(np.log(temperature), jnp.float32),
                 "scale": jnp.asarray(scale, jnp.float32)}

    def control_variate(phi, z, *args):
        return phi["scale"] * f(jax.nn.sigmoid(z / jnp.exp(phi["log_temperature"])), *args)

    return relax(f, control_variate, cv_params, num_samples=num_samples, optimizer=optimizer)


def gumbel_softmax(
    f: Callable[..., jax.Array],
    *,
    num_samples: int,
    temperature: float = 0.5,
    straight_through: bool = False,
) -> Estimator:
    """The binary Concrete (Gumbel-softmax) relaxation: a biased, low-variance pathwise gradient.

    y = σ(z / τ), z = θ + logit u. Relaxed: the loss is mean f(y, *args), its
    derivatives those of E[f(σ(z/τ), *args)], in θ and in ``args``, not those
    of E[f(b, *args)]. Straight-through: the forward value is f(b, *args),
    b = H(z), and the θ-gradient flows through y (b_st = b + y - sg(y), which
    equals b exactly in the forward pass), ĝ = mean ∇f(b) · ∂y/∂θ, biased;
    its args-derivative is the pathwise mean of ∇_args f(b, *args) at the
    discrete b, unbiased. The bias shrinks with τ while the variance grows.

    Args:
      f: ``f(x, *args) -> scalar``, differentiable, for x ∈ [0, 1]^D of θ's shape.
      num_samples: draws per estimate, ≥ 1.
      temperature: τ > 0; smaller is less biased and noisier.
      straight_through: forward on the discrete b instead of the relaxed y.

    Returns:
      An :class:`logtrick.Estimator` on logits θ; state ``()``; ``aux["f"]``,
      shape (num_samples,): f(y) relaxed, f(b) straight-through.

    Example::

        est = lt.discrete.gumbel_softmax(lambda x, w: jnp.sum((x - w) ** 2), num_samples=8, temperature=0.5)
        logits, w = jnp.zeros(3), jnp.full(3, 0.4)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), jax.random.key(0), w)

    References:
      Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", 2017.
      Maddison, Mnih and Teh, "The Concrete Distribution: A Continuous Relaxation
      of Discrete Random Variables", 2017.
      Bengio, Léonard and Courville, "Estimating or Propagating Gradients Through
      Stochastic Neurons for Conditional Computation", 2013.
    """
    n = _checks.num_samples(num_samples, minimum=1, caller="gumbel_softmax")
    tau = _positive(temperature, "temperature", "gumbel_softmax")

    def loss(params, state, key, *args):
        logits = _logits(params, "gumbel_softmax")
        z = logits + _logit(_uniform(key, (n,) + logits.shape, logits.dtype))
        xs = jax.nn.sigmoid(z / tau)
        if straight_through:
            xs = sg((z > 0).astype(logits.dtype)) + (xs - sg(xs))
        values = _checks.per_sample(lambda x: f(x, *args), xs, n, caller="gumbel_softmax", name="f")
        return jnp.mean(values), (state, {"f": sg(values)})

    return from_loss(_stateless_init("gumbel_softmax"), loss, caller="gumbel_softmax")
