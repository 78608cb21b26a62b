"""Baselines: values subtracted from f that keep the score-function estimator unbiased.

A baseline b_i may depend on anything but the sample x_i it is paired with,
since then E[b_i grad log p(x_i|θ)] = E[b_i] E[grad log p(x_i|θ)] = 0.
A :class:`Baseline` is a pair of pure functions; its state (if any) lives in
the estimator's state and is threaded through by the caller::

    state = baseline.init()
    b, state = baseline.apply(values, state)    # values, b: shape (num_samples,)

A per-coordinate baseline (:func:`optimal`) also reads the per-sample squared
scores and returns one baseline per sample and parameter coordinate::

    state = baseline.init(params)
    b, state = baseline.apply(values, state, squared_scores)   # pytrees like params, leading axis N

:func:`group_normalised` (GRPO) breaks the rule on purpose and is biased.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class Baseline(NamedTuple):
    """A baseline as pure functions.

    Attributes:
      init: ``init() -> state``.
      apply: ``apply(values, state) -> (b, new_state)`` with ``values`` the
        f-values of the current samples, shape ``(num_samples,)``, and ``b``
        the baseline paired with each sample, same shape. ``b_i`` must not
        depend on ``values[i]``.
      min_samples: the fewest samples the baseline is defined for.
      per_coordinate: if True, ``init(params)`` takes the params and
        ``apply(values, state, squared_scores)`` also takes the per-sample
        squared scores (s_i)² — a pytree like params whose leaves have leading
        axis N — and returns ``b`` of that structure.
    """

    init: Callable[[], Any]
    apply: Callable[..., tuple[Any, Any]]
    min_samples: int = 1
    per_coordinate: bool = False


def none() -> Baseline:
    """No baseline: b = 0."""
    return Baseline(init=lambda: (), apply=lambda values, state: (jnp.zeros_like(values), state))


def leave_one_out() -> Baseline:
    """The mean of the *other* samples' values: b_i = (Σ_j f_j - f_i) / (N - 1).

    Unbiased because b_i is independent of x_i; needs at least 2 samples.

    References:
      Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
      Free!", 2019.
    """

    def apply(values, state):
        n = values.shape[0]
        return (jnp.sum(values) - values) / (n - 1), state

    return Baseline(init=lambda: (), apply=apply, min_samples=2)


class MovingAverageState(NamedTuple):
    """State of :func:`moving_average`: the biased average and the step count."""

    average: jax.Array
    count: jax.Array


def moving_average(decay: float) -> Baseline:
    """Exponential moving average of the mean f-value of *previous* calls.

    b = m_t / (1 - decay^t) (bias-corrected; 0 on the first call), then
    m_{t+1} = decay m_t + (1 - decay) mean(f). The current samples are used only
    after b is formed, so the estimator stays unbiased.

    Args:
      decay: in [0, 1); larger is smoother.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"moving_average: `decay` must be in [0, 1), got {decay}")

    def init():
        return MovingAverageState(average=jnp.zeros(()), count=jnp.zeros((), jnp.int32))

    def apply(values, state):
        correction = 1.0 - decay ** state.count.astype(values.dtype)
        b = jnp.where(state.count > 0, state.average / jnp.where(state.count > 0, correction, 1.0), 0.0)
        average = decay * state.average + (1.0 - decay) * jnp.mean(values)
        return jnp.full_like(values, b), MovingAverageState(average.astype(state.average.dtype), state.count + 1)

    return Baseline(init=init, apply=apply)


class OptimalState(NamedTuple):
    """State of :func:`optimal`: decayed sums of f s² and s² over previous calls, pytrees like params."""

    numerator: Any
    denominator: Any


def optimal(decay: float = 0.0) -> Baseline:
    """The variance-minimising baseline per parameter coordinate, from other samples.

    For coordinate j of θ the variance of (f - c_j) s_j, s = grad_θ log p(x|θ),
    is least at c_j = E[f s_j²] / E[s_j²]. Sample i gets the estimate

        c_ij = (A_j + Σ_{k≠i} f_k s_kj²) / (B_j + Σ_{k≠i} s_kj²),

    with A, B the sums of f s² and s² over previous calls weighted by
    decay^(calls since; 0: this batch only), and the leave-one-out mean of f where the
    denominator vanishes. c_ij does not depend on x_i, so the estimator stays
    unbiased. From one batch the ratio is noisy where s⁴ is heavy-tailed
    (Gaussian scales), and at N = 2 it *is* leave-one-out; a decay near 1 pools
    previous batches. Measured (``tests/test_baselines.py``, a Gaussian with f
    even about its mean, N = 16): variance 0.51-0.61 of leave-one-out's with
    decay 0.9 after 20 calls, 0.85-0.98 with decay 0 (0.65-0.81 at N = 64).

    Cost: the baseline is made of per-sample squared scores, so
    :func:`logtrick.score_function` computes them (``vmap`` of ``grad`` of
    log p: memory N × number of params) besides its one reverse pass; use it
    for distribution parameters (logits, locations), not network weights. It
    does not combine with ``chunk_size`` or ``antithetic``. The control-variate
    part of the surrogate is linear in θ, so ``jax.hessian`` of the surrogate is
    the no-baseline DiCE Hessian (unbiased, not variance-reduced).

    Args:
      decay: in [0, 1); weight of the previous calls' sums.

    Example::

        est = lt.score_function(f, lt.families.bernoulli(), num_samples=8,
                                baseline=lt.baselines.optimal(decay=0.9))

    References:
      Weaver and Tao, "The Optimal Reward Baseline for Gradient-Based
      Reinforcement Learning", 2001. Greensmith, Bartlett and Baxter,
      "Variance Reduction Techniques for Gradient Estimates in Reinforcement
      Learning", 2004. Mohamed et al., "Monte Carlo Gradient Estimation in
      Machine Learning", 2020 (§7.4).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"optimal: `decay` must be in [0, 1), got {decay}")

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return OptimalState(numerator=zeros, denominator=zeros)

    def apply(values, state, squared_scores):
        mean_of_others = (jnp.sum(values) - values) / (values.shape[0] - 1)

        def per_leaf(s2, numerator, denominator):
            f = values.reshape((-1,) + (1,) * (s2.ndim - 1)).astype(s2.dtype)
            num = numerator + jnp.sum(f * s2, axis=0) - f * s2
            den = denominator + jnp.sum(s2, axis=0) - s2
            ok = den > 1e-12 * jnp.max(jnp.abs(s2), axis=0, initial=1.0)
            c = jnp.where(ok, num / jnp.where(ok, den, 1.0), mean_of_others.reshape(f.shape).astype(s2.dtype))
            return c, decay * (numerator + jnp.sum(f * s2, axis=0)), decay * (denominator + jnp.sum(s2, axis=0))

        out = jax.tree_util.tree_map(per_leaf, squared_scores, state.numerator, state.denominator)
        treedef = jax.tree_util.tree_structure(squared_scores)
        c, numerator, denominator = (treedef.unflatten(leaves) for leaves in
                                     zip(*treedef.flatten_up_to(out)))
        return c, OptimalState(numerator, denominator)

    return Baseline(init=init, apply=apply, min_samples=2, per_coordinate=True)


def _normalise_group(values: jax.Array, eps: float) -> jax.Array:
    """(v - mean v) / (std v + eps) along axis 0 (population std).

    Shift-invariant: v is shifted by its first entry first, without which
    float rounding turns a group of equal values (std ≈ 1e-8) into results of
    order 0.1 instead of 0.
    """
    values = values - values[:1]
    return (values - jnp.mean(values, axis=0)) / (jnp.std(values, axis=0) + eps)


def group_normalised(eps: float = 1e-6) -> Baseline:
    """GRPO's group normalisation: f_i - b_i = (f_i - mean f) / (std f + eps). BIASED.

    Not a baseline in the unbiased sense: b_i depends on f_i (through the mean
    and the standard deviation), and dividing by the group's std rescales the
    gradient by a sample-dependent factor, so E[estimate] is neither grad E[f]
    nor parallel to it. Provided because it is widely used (GRPO); its bias is
    measured in ``tests/test_baselines.py`` against the exact gradient: on 5
    independent Bernoulli variables with f(b) = (Σ_j w_j b_j - 1)² and N = 4,
    the mean estimate is 0.61 times as long as grad E[f], at 5° from it; the
    z-test rejects it at max |z| = 49 with 3000 estimates.

    Args:
      eps: added to the standard deviation (a group of equal f gives 0).

    References:
      Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning
      in Open Language Models", 2024. Liu et al., "Understanding R1-Zero-Like
      Training: A Critical Perspective", 2025.
    """
    if not eps >= 0.0:
        raise ValueError(f"group_normalised: `eps` must be >= 0, got {eps}")

    def apply(values, state):
        return values - _normalise_group(values, eps), state

    return Baseline(init=lambda: (), apply=apply, min_samples=2)
