"""VIMCO: score-function gradients of multi-sample bounds, log (1/K) Σ_k w_k."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from logtrick import _checks
from logtrick.dice import magic_box
from logtrick.estimators import Estimator, _from_surrogate
from logtrick.families import Family

Params = Any


def _learning_signals(log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The bound L = log (1/K) Σ_j e^{l_j} and the signals L - L_{-k}, shape (K,).

    L_{-k} is the bound with l_k replaced by the mean of the others, so it does
    not depend on x_k.
    """
    k = log_weights.shape[0]
    log_k = jnp.log(jnp.asarray(k, log_weights.dtype))
    bound = jax.nn.logsumexp(log_weights) - log_k
    others_mean = (jnp.sum(log_weights) - log_weights) / (k - 1)
    replaced = jnp.where(jnp.eye(k, dtype=bool), others_mean[:, None], log_weights[None, :])
    return bound, bound - (jax.nn.logsumexp(replaced, axis=1) - log_k)


def vimco(
    log_weight: Callable[[Params, Any], jax.Array],
    family: Family,
    *,
    num_samples: int,
) -> Estimator:
    """The VIMCO estimator of the gradient of a K-sample bound.

    For L = log (1/K) Σ_k exp(l_k), l_k = log_weight(θ, x_k), x_k ~ q(·|θ) i.i.d.::

        grad_θ E[L] ≈ Σ_k L̂(k) grad_θ log q(x_k|θ) + Σ_k w̃_k grad_θ l_k,
        L̂(k) = L - log (1/K) (Σ_{j≠k} e^{l_j} + e^{l̂_{-k}}),   l̂_{-k} = (1/(K-1)) Σ_{j≠k} l_j,
        w̃ = softmax(l).

    The baseline subtracted from L in L̂(k) depends only on x_{-k}, so the
    estimate is unbiased; L̂(k), w̃ and the samples are under ``stop_gradient``
    and computed with logsumexp. The surrogate is
    L(l) + Σ_k L̂(k) (magic_box(log q(x_k|θ)) - 1) with l differentiated: its
    value is L and its gradient the estimate above, also through anything that
    ``log_weight`` closes over (e.g. decoder parameters, when ``surrogate`` is
    used inside an outer ``jax.grad``). First-order only: its higher
    derivatives are not those of E[L]. Uses K × K memory for the signals.

    Args:
      log_weight: ``log_weight(params, x) -> scalar`` for one sample x, e.g.
        log p(x, z) - log q(z|θ); differentiated in ``params``.
      family: the proposal q(x|θ).
      num_samples: K ≥ 2, samples in the bound.

    Returns:
      An :class:`Estimator`; state ``()``. ``aux``: ``"f"``, the log weights
      l, shape (K,); ``"bound"``, L, scalar; ``"learning_signal"``, L̂, shape
      (K,). A non-finite log weight gives NaN grads.

    Example::

        def log_weight(logits, z):
            return log_joint[z] - jax.nn.log_softmax(logits)[z]

        est = lt.vimco(log_weight, lt.families.categorical(), num_samples=5)
        grads, _, aux = jax.jit(est.estimate)(logits, est.init(logits), key)

    References:
      Mnih and Rezende, "Variational Inference for Monte Carlo Objectives", 2016.
      Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders", 2016.
    """
    k = _checks.num_samples(num_samples, minimum=2, caller="vimco")

    def surrogate_with_aux(params, state, key):
        xs = jax.lax.stop_gradient(family.sample(params, key, k))
        _checks.samples(xs, k, caller="vimco", source="family.sample")
        log_weights = _checks.per_sample(
            lambda x: log_weight(params, x), xs, k, caller="vimco", name="log_weight")
        log_probs = _checks.per_sample(
            lambda x: family.log_prob(params, x), xs, k, caller="vimco", name="family.log_prob")
        fixed = jax.lax.stop_gradient(log_weights)
        bound, signals = _learning_signals(fixed)
        log_k = jnp.log(jnp.asarray(k, log_weights.dtype))
        total = jax.nn.logsumexp(log_weights) - log_k + jnp.sum(signals * (magic_box(log_probs) - 1.0))
        return total, (state, {"f": fixed, "bound": bound, "learning_signal": signals})

    return _from_surrogate(lambda params: (), surrogate_with_aux)
