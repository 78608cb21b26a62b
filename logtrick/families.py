"""Families of distributions: a ``sample`` and a ``log_prob`` pure function.

A family is all an estimator needs to know about a distribution::

    sample(params, key, num_samples) -> xs     # every leaf has leading axis num_samples
    log_prob(params, x) -> scalar              # for ONE sample x

and, for a factorised family, ``log_prob_elements(params, x)``: the log-probability
of each independent element, whose sum is ``log_prob`` (:func:`logtrick.graph`
credits each element of a site with only the costs it reaches).
The built-in families wrap ``jax.random`` and ``jax.scipy.stats``;
:func:`from_distribution` adapts distribution objects of other libraries
(numpyro, distrax, TensorFlow Probability on JAX).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy import special, stats

Params = Any
Sample = Any


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
    """

    sample: Callable[[Params, jax.Array, int], Sample]
    log_prob: Callable[[Params, Sample], jax.Array]
    antithetic_sample: Callable[[Params, jax.Array, int], Sample] | None = None
    log_prob_elements: Callable[[Params, Sample], jax.Array] | None = None


def normal() -> Family:
    """Diagonal Gaussian N(loc, diag(exp(log_scale))²).

    Params: ``{"loc": array, "log_scale": array}`` of the same shape (any rank,
    scalars included). A sample has that shape. The sample is reparameterised
    (``loc + exp(log_scale) * eps``), so ``family.sample`` also serves as the
    ``rsample`` of :func:`logtrick.pathwise`. Antithetic pairs use ε and -ε.
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

    return Family(sample, log_prob, antithetic_sample, log_prob_elements)


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
    the uniform noise, as in :func:`antithetic_bernoulli`.
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

    return Family(sample, log_prob, antithetic_sample, log_prob_elements)


def categorical() -> Family:
    """Independent categorical variables with logits along the last axis.

    Params: logits of shape ``batch + (num_classes,)``. A sample is an int32
    array of shape ``batch``; ``log_prob`` sums over the batch elements.
    """

    def sample(logits, key, num_samples):
        shape = (num_samples,) + jnp.shape(logits)[:-1]
        return jax.random.categorical(key, logits, shape=shape)

    def log_prob_elements(logits, x):
        return jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None], axis=-1)[..., 0]

    def log_prob(logits, x):
        return jnp.sum(log_prob_elements(logits, x))

    return Family(sample, log_prob, log_prob_elements=log_prob_elements)


def poisson() -> Family:
    """Independent Poisson variables with rate ``exp(log_rate)``.

    Params: a log-rate array of any shape. A sample is an int32 array of that
    shape; ``log_prob`` sums over its elements.
    """

    def sample(log_rate, key, num_samples):
        shape = (num_samples,) + jnp.shape(log_rate)
        return jax.random.poisson(key, jnp.exp(log_rate), shape)

    def log_prob_elements(log_rate, x):
        return x * log_rate - jnp.exp(log_rate) - special.gammaln(x + 1.0)

    def log_prob(log_rate, x):
        return jnp.sum(log_prob_elements(log_rate, x))

    return Family(sample, log_prob, log_prob_elements=log_prob_elements)


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
