"""Families of distributions: a ``sample`` and a ``log_prob`` pure function.

A family is all an estimator needs to know about a distribution::

    sample(params, key, num_samples) -> xs     # every leaf has leading axis num_samples
    log_prob(params, x) -> scalar              # for ONE sample x

and, optionally, ``log_prob_elements(params, x)``: the log-probability of each
independent element of a factorised family, whose sum is ``log_prob``
(:func:`logtrick.graph` credits each element of a site with only the costs it
reaches); ``inverse_cdf(params, u)``: the sample as a function of uniform noise,
one uniform per element (used by ``sampler="rqmc"``); ``weak_derivative``: the
decomposition ∂_θ p = c_θ (p⁺ − p⁻) of :func:`logtrick.measure_valued`.
The built-in families wrap ``jax.random`` and ``jax.scipy.stats``;
:func:`from_distribution` adapts distribution objects of other libraries
(numpyro, distrax, TensorFlow Probability on JAX).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy import special, stats

Params = Any
Sample = Any


class WeakDerivative(NamedTuple):
    """The weak derivative of a family: ∂_θ p(x|θ) = c_θ (p⁺_θ(x) − p⁻_θ(x)) for each coordinate of θ.

    For each parameter coordinate θ_j, p⁺ and p⁻ are distributions and c_θ ≥ 0
    a constant, so ∂_θj E_p[f] = c_j (E_{p⁺_j}[f] − E_{p⁻_j}[f]): a difference
    of two expectations that needs f's values only (Pflug 1989). The built-in
    families draw x⁺ and x⁻ as the base sample x with the one element that θ_j
    governs redrawn, so other elements are shared.

    Attributes:
      num_uniforms: m, uniforms per element of a sample that one draw uses.
      decompose: ``decompose(params, u, coupling) -> (x, c, positive,
        negative)`` for uniforms u of shape ``(m,) + x.shape``: the base sample
        ``x = inverse_cdf(params, u[0])``; ``c``, a pytree like params; and
        ``positive``, ``negative``, pytrees like params whose leaf for a
        params leaf of shape P has shape ``P + x.shape``: at index j, a draw of
        p⁺_j (p⁻_j). ``coupling`` draws x⁺_j and x⁻_j from shared noise where
        the family has a coupling (a lower-variance difference); each is
        distributed as p±_j either way.
    """

    num_uniforms: int
    decompose: Callable[[Params, jax.Array, bool], tuple[Sample, Params, Params, Params]]


def _replace_each(x: jax.Array, values: jax.Array) -> jax.Array:
    """Copies of x with one element replaced: out[i, e] = x with x[i] := values[i, e].

    Args:
      x: shape S.
      values: shape S + E.

    Returns:
      Shape S + E + S.
    """
    shape, extra = jnp.shape(x), jnp.shape(values)[jnp.ndim(x):]
    size = math.prod(shape)
    eye = jnp.eye(size, dtype=bool).reshape((size,) + (1,) * len(extra) + (size,))
    out = jnp.where(eye, values.reshape((size,) + extra + (1,)).astype(x.dtype),
                    x.reshape((1,) + (1,) * len(extra) + (size,)))
    return out.reshape(shape + extra + shape)


class Family(NamedTuple):
    """A distribution p(x|θ) given as two pure functions of the params θ.

    Attributes:
      sample: ``sample(params, key, num_samples) -> xs``; each leaf of ``xs``
        has leading axis ``num_samples``. ``xs`` may be any pytree.
      log_prob: ``log_prob(params, x) -> scalar``, log p(x|θ) for one sample
        ``x`` (``xs`` without its leading axis); differentiable in ``params``.
      antithetic_sample: optional; ``antithetic_sample(params, key, n) -> xs``
        for even n: n/2 draws followed by their n/2 reflections (x_{i+n/2} is
        x_i with its noise reflected: ε → -ε, u → 1 - u). Each draw is
        distributed as p(x|θ); a pair is negatively correlated. Used by
        ``score_function(..., antithetic=True)``.
      log_prob_elements: optional; ``log_prob_elements(params, x) -> array`` of
        shape ``batch``, the log-probabilities of x's independent elements (each
        leaf of x has shape ``batch + event``), summing to ``log_prob(params, x)``.
        The built-in families are factorised and have it (``batch`` = x's shape,
        or the logits' batch shape for :func:`categorical`).
      inverse_cdf: optional; ``inverse_cdf(params, u) -> x``, one sample from
        uniforms u in (0, 1) of x's shape (one per element, an array x):
        x ~ p(x|θ) when u ~ U(0, 1), each element a nondecreasing function of
        its uniform. ``sampler="rqmc"`` feeds it quasi-random points; it is
        differentiable in params where the sample is (the normal's).
      weak_derivative: optional; a :class:`WeakDerivative`, for
        :func:`logtrick.measure_valued`.
    """

    sample: Callable[[Params, jax.Array, int], Sample]
    log_prob: Callable[[Params, Sample], jax.Array]
    antithetic_sample: Callable[[Params, jax.Array, int], Sample] | None = None
    log_prob_elements: Callable[[Params, Sample], jax.Array] | None = None
    inverse_cdf: Callable[[Params, jax.Array], Sample] | None = None
    weak_derivative: WeakDerivative | None = None


def normal() -> Family:
    """Diagonal Gaussian N(loc, diag(exp(log_scale))²).

    Params: ``{"loc": array, "log_scale": array}`` of the same shape (any rank,
    scalars included). A sample has that shape. The sample is reparameterised
    (``loc + exp(log_scale) * eps``), so ``family.sample`` also serves as the
    ``rsample`` of :func:`logtrick.pathwise`. Antithetic pairs use ε and -ε.
    ``inverse_cdf`` is ``loc + exp(log_scale) Φ⁻¹(u)``, reparameterised too.

    Weak derivative (Mohamed et al. 2020, table 1), per coordinate:
    ∂_μ: c = 1/(σ√(2π)), x⁺ = μ + σW, x⁻ = μ − σW' with W, W' Rayleigh (the
    Weibull(√2, 2)), W' = W when coupled; ∂_{log σ} = σ ∂_σ: c = 1, x⁺ = μ + σM
    with M double-sided Maxwell, x⁻ = μ + σε with ε ~ N(0, 1), ε = U·M for
    U ~ U(0, 1) when coupled (a uniform times a double-sided Maxwell is a
    standard normal). Six uniforms per element.
    """

    def transform(params, eps):
        return params["loc"] + jnp.exp(params["log_scale"]) * eps

    def noise(params, key, num_samples):
        loc = params["loc"]
        return jax.random.normal(key, (num_samples,) + jnp.shape(loc), jnp.result_type(loc))

    def sample(params, key, num_samples):
        return transform(params, noise(params, key, num_samples))

    def antithetic_sample(params, key, num_samples):
        eps = noise(params, key, num_samples // 2)
        return transform(params, jnp.concatenate([eps, -eps]))

    def log_prob_elements(params, x):
        return stats.norm.logpdf(x, params["loc"], jnp.exp(params["log_scale"]))

    def log_prob(params, x):
        return jnp.sum(log_prob_elements(params, x))

    def inverse_cdf(params, u):
        return transform(params, special.ndtri(u))

    def decompose(params, u, coupling):
        loc, scale = params["loc"], jnp.exp(params["log_scale"])
        x = inverse_cdf(params, u[0])
        rayleigh = jnp.sqrt(-2.0 * jnp.log(u[1]))
        rayleigh_minus = rayleigh if coupling else jnp.sqrt(-2.0 * jnp.log(u[2]))
        z = special.ndtri(u[4])
        maxwell = jnp.sign(z) * jnp.sqrt(-2.0 * jnp.log(u[3]) + z**2)  # χ²₃ = χ²₂ + χ²₁, sign(z) ⫫ z²
        normal_minus = u[5] * maxwell if coupling else special.ndtri(u[5])
        c = {"loc": 1.0 / (scale * math.sqrt(2.0 * math.pi)), "log_scale": jnp.ones_like(scale)}
        positive = {"loc": _replace_each(x, loc + scale * rayleigh),
                    "log_scale": _replace_each(x, loc + scale * maxwell)}
        negative = {"loc": _replace_each(x, loc - scale * rayleigh_minus),
                    "log_scale": _replace_each(x, loc + scale * normal_minus)}
        return x, c, positive, negative

    return Family(sample, log_prob, antithetic_sample, log_prob_elements, inverse_cdf, WeakDerivative(6, decompose))


def antithetic_bernoulli(logits: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The antithetic Bernoulli pair of uniform noise u: b = 1[u < σ(θ)], b̃ = 1[1 - u < σ(θ)].

    Each of b, b̃ is Bernoulli(σ(θ)); together they are the most negatively
    correlated pair with those marginals. The one convention of the library:
    :func:`bernoulli`'s ``antithetic_sample`` and the ARM and DisARM estimators
    of :mod:`logtrick.discrete` use it.

    Args:
      logits: θ, any shape.
      u: U(0, 1) noise of shape ``batch + logits.shape``.

    Returns:
      ``(b, b_partner)``, floats 0 or 1 of u's shape and dtype.

    Example::

        b, b_partner = lt.families.antithetic_bernoulli(jnp.zeros(3), jnp.array([0.1, 0.5, 0.9]))
        # b = [1, 0, 0], b_partner = [0, 0, 1]
    """
    p = jax.nn.sigmoid(logits)
    return (u < p).astype(u.dtype), (1.0 - u < p).astype(u.dtype)


def bernoulli() -> Family:
    """Independent Bernoulli variables with the given logits.

    Params: a logits array of any shape. A sample is a float array of 0s and 1s
    of that shape; ``log_prob`` sums over its elements. Antithetic pairs share
    the uniform noise, as in :func:`antithetic_bernoulli`; ``inverse_cdf`` is
    b = 1[u < σ(θ)]. Weak derivative in the logit θ_j: c = σ(θ_j) σ(-θ_j),
    x⁺ = x with b_j = 1, x⁻ = x with b_j = 0 (one uniform per element).
    """

    def sample(logits, key, num_samples):
        shape = (num_samples,) + jnp.shape(logits)
        bits = jax.random.bernoulli(key, jax.nn.sigmoid(logits), shape)
        return bits.astype(jnp.result_type(logits))

    def antithetic_sample(logits, key, num_samples):
        u = jax.random.uniform(key, (num_samples // 2,) + jnp.shape(logits), jnp.result_type(logits))
        return jnp.concatenate(antithetic_bernoulli(logits, u))

    def log_prob(logits, x):
        # x log σ(θ) + (1 - x) log σ(-θ) = x θ - softplus(θ): a dot product, so that a vmap over
        # outcomes (or datapoints) becomes a matrix product rather than an (outcomes, ...) temporary.
        return jnp.vdot(x, logits) - jnp.sum(jax.nn.softplus(logits))

    def log_prob_elements(logits, x):
        return x * logits - jax.nn.softplus(logits)

    def inverse_cdf(logits, u):
        return (u < jax.nn.sigmoid(logits)).astype(u.dtype)

    def decompose(logits, u, coupling):
        del coupling  # x⁺ and x⁻ are deterministic given x
        x = inverse_cdf(logits, u[0])
        c = jax.nn.sigmoid(logits) * jax.nn.sigmoid(-logits)
        return x, c, _replace_each(x, jnp.ones_like(x)), _replace_each(x, jnp.zeros_like(x))

    return Family(sample, log_prob, antithetic_sample, log_prob_elements, inverse_cdf, WeakDerivative(1, decompose))


def categorical() -> Family:
    """Independent categorical variables with logits along the last axis.

    Params: logits of shape ``batch + (num_classes,)``. A sample is an int32
    array of shape ``batch``; ``log_prob`` sums over the batch elements.
    ``inverse_cdf`` takes one uniform per variable: x = #{k : P(X ≤ k) < u}.

    Weak derivative in the logit θ_dk of variable d (the Hahn-Jordan split of
    ∂π_d = π_dk (e_k − π_d)): c = π_dk (1 − π_dk), x⁺ = x with x_d = k,
    x⁻ = x with x_d drawn from π_d conditioned on ≠ k, the other outcomes;
    when coupled x⁻_d = x_d whenever x_d ≠ k (which is so distributed). Two
    uniforms per variable.
    """

    def sample(logits, key, num_samples):
        shape = (num_samples,) + jnp.shape(logits)[:-1]
        return jax.random.categorical(key, logits, shape=shape)

    def log_prob_elements(logits, x):
        return jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None], axis=-1)[..., 0]

    def log_prob(logits, x):
        return jnp.sum(log_prob_elements(logits, x))

    def inverse_cdf(logits, u):
        return _categorical_quantile(jax.nn.softmax(logits), u)

    def decompose(logits, u, coupling):
        probs = jax.nn.softmax(logits)
        num_classes = probs.shape[-1]
        x = _categorical_quantile(probs, u[0])
        others = jnp.where(jnp.eye(num_classes, dtype=bool), -jnp.inf, logits[..., None, :])  # batch + (K, K)
        redrawn = _categorical_quantile(jax.nn.softmax(others), u[1][..., None])  # batch + (K,)
        classes = jnp.arange(num_classes)
        if coupling:
            redrawn = jnp.where(x[..., None] != classes, x[..., None], redrawn)
        positive = _replace_each(x, jnp.broadcast_to(classes, probs.shape))
        return x, probs * (1.0 - probs), positive, _replace_each(x, redrawn)

    return Family(sample, log_prob, log_prob_elements=log_prob_elements, inverse_cdf=inverse_cdf,
                  weak_derivative=WeakDerivative(2, decompose))


def _categorical_quantile(probs: jax.Array, u: jax.Array) -> jax.Array:
    """The class k with P(X < k) < u ≤ P(X ≤ k), for probs of shape batch + (K,) and u of shape batch."""
    below = jnp.sum(jnp.cumsum(probs, axis=-1)[..., :-1] < u[..., None], axis=-1)
    return below.astype(jnp.int32)


def _poisson_quantile(rate: jax.Array, u: jax.Array) -> jax.Array:
    """The least k with P(X ≤ k) = Q(k + 1, λ) ≥ u (regularised upper incomplete gamma), by bisection.

    The search runs on stop-gradient rates between -1 and λ + 20√λ + 30, past
    which less than 1e-40 of the mass lies: 40 halvings reach one integer.
    """
    rate = jax.lax.stop_gradient(rate)

    def cdf(k):
        return jnp.where(k < 0, 0.0, special.gammaincc(jnp.maximum(k, 0.0) + 1.0, rate))

    def halve(_, bounds):
        lo, hi = bounds
        mid = jnp.floor((lo + hi) / 2)
        above = cdf(mid) >= u
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    hi = jnp.ceil(rate + 20.0 * jnp.sqrt(rate) + 30.0)
    _, hi = jax.lax.fori_loop(0, 40, halve, (jnp.full_like(hi, -1.0), hi))
    return hi.astype(jnp.int32)


def poisson() -> Family:
    """Independent Poisson variables with rate ``exp(log_rate)``.

    Params: a log-rate array of any shape. A sample is an int32 array of that
    shape; ``log_prob`` sums over its elements. ``inverse_cdf`` bisects the
    CDF (exact up to float rounding of the CDF).

    Weak derivative in the log-rate: ∂_λ E[f(x)] = E[f(x + 1) − f(x)], so
    c = λ (∂_{log λ} = λ ∂_λ), x⁺ = x with x_j + 1, x⁻ = x (coupled) or x with
    x_j redrawn (uncoupled). Two uniforms per element.
    """

    def sample(log_rate, key, num_samples):
        shape = (num_samples,) + jnp.shape(log_rate)
        return jax.random.poisson(key, jnp.exp(log_rate), shape)

    def log_prob_elements(log_rate, x):
        return x * log_rate - jnp.exp(log_rate) - special.gammaln(x + 1.0)

    def log_prob(log_rate, x):
        return jnp.sum(log_prob_elements(log_rate, x))

    def inverse_cdf(log_rate, u):
        return _poisson_quantile(jnp.exp(log_rate), u)

    def decompose(log_rate, u, coupling):
        rate = jnp.exp(log_rate)
        x = _poisson_quantile(rate, u[0])
        minus = x if coupling else _poisson_quantile(rate, u[1])
        return x, rate, _replace_each(x, x + 1), _replace_each(x, minus)

    return Family(sample, log_prob, log_prob_elements=log_prob_elements, inverse_cdf=inverse_cdf,
                  weak_derivative=WeakDerivative(2, decompose))


def from_distribution(make_distribution: Callable[[Params], Any]) -> Family:
    """Adapts duck-typed distribution objects (numpyro, distrax, TFP-on-JAX).

    ``make_distribution(params)`` must return an object with ``sample`` and
    ``log_prob``. Sampling is called with keywords, ``sample(key=...,
    sample_shape=(n,))`` (numpyro) or ``sample(seed=..., sample_shape=(n,))``
    (distrax, TFP), whichever the object's signature names. The log-probability
    is summed over any batch dimensions, i.e. they are treated as independent;
    unsummed, it is the family's ``log_prob_elements``.

    Example::

        import numpyro.distributions as nd
        family = lt.families.from_distribution(
            lambda p: nd.Normal(p["loc"], jnp.exp(p["log_scale"])))
    """

    def sample(params, key, num_samples):
        dist = make_distribution(params)
        names = inspect.signature(dist.sample).parameters
        if "key" in names:
            return dist.sample(key=key, sample_shape=(num_samples,))
        if "seed" in names:
            return dist.sample(seed=key, sample_shape=(num_samples,))
        raise TypeError(
            f"{type(dist).__name__}.sample takes neither `key` nor `seed`; "
            "cannot adapt it as a Family")

    def log_prob_elements(params, x):
        return make_distribution(params).log_prob(x)

    def log_prob(params, x):
        return jnp.sum(log_prob_elements(params, x))

    return Family(sample, log_prob, log_prob_elements=log_prob_elements)
