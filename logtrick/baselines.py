"""Baselines: values subtracted from f that keep the score-function estimator unbiased.

A baseline b_i may depend on anything but the sample x_i it is paired with,
since then E[b_i grad log p(x_i|θ)] = E[b_i] E[grad log p(x_i|θ)] = 0.
A :class:`Baseline` is a pair of pure functions; its state (if any) lives in
the estimator's state and is threaded through by the caller::

    state = baseline.init(params)
    b, state = baseline.apply(values, state)    # values, b: shape (num_samples,)

:func:`group_normalised` (GRPO) breaks the rule on purpose and is biased. The
per-coordinate optimal baseline is a control variate, not a baseline: it is
:func:`logtrick.control_variates.optimal`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


class Baseline(NamedTuple):
    """A baseline as pure functions.

    Attributes:
      init: ``init(params) -> state`` (optax's convention: params are passed
        whether or not the state needs them).
      apply: ``apply(values, state) -> (b, new_state)`` with ``values`` the
        f-values of the current samples, shape ``(num_samples,)``, and ``b``
        the baseline paired with each sample, same shape. ``b_i`` must not
        depend on ``values[i]``.
      min_samples: the fewest samples the baseline is defined for.
    """

    init: Callable[[Any], Any]
    apply: Callable[[jax.Array, Any], tuple[jax.Array, Any]]
    min_samples: int = 1


def _stateless(params: Any) -> tuple:
    del params
    return ()


def leave_one_out_mean(values: ArrayLike, axis: int = 0) -> jax.Array:
    """The mean of the *other* entries along ``axis``: m_i = (Σ_j v_j - v_i) / (n - 1).

    Computed on v - v_0 and shifted back, so that it does not lose the
    differences to rounding when the values share a large offset, and a group
    of equal values gives m_i = v_i exactly (an advantage v_i - m_i of exactly 0).

    Args:
      values: an array with at least 2 entries along ``axis``.
      axis: the axis of the group.

    Returns:
      m, the shape of ``values``.

    Example::

        lt.baselines.leave_one_out_mean(jnp.array([1.0, 2.0, 6.0]))   # [4.0, 3.5, 1.5]
    """
    values = jnp.asarray(values)
    n = values.shape[axis]
    if n < 2:
        raise ValueError(f"leave_one_out_mean: need at least 2 entries along axis {axis}, got {n}")
    shift = jax.lax.index_in_dim(values, 0, axis, keepdims=True)
    centred = values - shift
    return (jnp.sum(centred, axis=axis, keepdims=True) - centred) / (n - 1) + shift


def none() -> Baseline:
    """No baseline: b = 0."""
    return Baseline(init=_stateless, apply=lambda values, state: (jnp.zeros_like(values), state))


def leave_one_out() -> Baseline:
    """The mean of the *other* samples' values: b_i = (Σ_j f_j - f_i) / (N - 1).

    Unbiased because b_i is independent of x_i; needs at least 2 samples. See
    :func:`leave_one_out_mean`.

    References:
      Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
      Free!", 2019.
    """
    return Baseline(init=_stateless, apply=lambda values, state: (leave_one_out_mean(values), state), min_samples=2)


class MovingAverageState(NamedTuple):
    """State of :func:`moving_average`: the biased average and the step count."""

    average: jax.Array
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, a name callers use


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

    def init(params):
        del params
        return MovingAverageState(average=jnp.zeros(()), count=jnp.zeros((), jnp.int32))

    def apply(values, state):
        correction = 1.0 - decay ** state.count.astype(values.dtype)
        b = jnp.where(state.count > 0, state.average / jnp.where(state.count > 0, correction, 1.0), 0.0)
        average = decay * state.average + (1.0 - decay) * jnp.mean(values)
        return jnp.full_like(values, b), MovingAverageState(average.astype(state.average.dtype), state.count + 1)

    return Baseline(init=init, apply=apply)


def normalise_group(values: ArrayLike, eps: float = 1e-6) -> jax.Array:
    """(v - mean v) / (std v + eps) along axis 0 (population std): GRPO's advantage.

    Shift-invariant: v is shifted by its first entry first, without which
    float rounding turns a group of equal values (std ≈ 1e-8) into results of
    order 0.1 instead of 0.

    Args:
      values: shape (G, ...), G ≥ 2.
      eps: added to the standard deviation.

    Returns:
      The normalised values, the shape of ``values``.
    """
    values = jnp.asarray(values)
    values = values - values[:1]
    return (values - jnp.mean(values, axis=0)) / (jnp.std(values, axis=0) + eps)


def group_normalised(eps: float = 1e-6) -> Baseline:
    """GRPO's group normalisation: f_i - b_i = (f_i - mean f) / (std f + eps). BIASED.

    Not a baseline in the unbiased sense: b_i depends on f_i (through the mean
    and the standard deviation), and dividing by the group's std rescales the
    gradient by a sample-dependent factor, so E[estimate] is neither grad E[f]
    nor parallel to it. Provided because it is widely used (GRPO); its bias is
    measured against the exact gradient in ``tests/test_baselines.py`` and
    reported in the README.

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
        return values - normalise_group(values, eps), state

    return Baseline(init=_stateless, apply=apply, min_samples=2)
