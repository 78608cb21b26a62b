"""Returns and advantages for one trajectory (returns) or one group of episodes (advantages).

Conventions follow rlax: time-major arrays of one trajectory, ``r_t`` the
reward after the action at step t and ``discount_t = γ (1 - done_t)`` the
discount applied to what follows it. A zero discount marks the end of an
episode: nothing after it leaks back, so a trajectory may hold several
episodes from an auto-resetting environment. The caller ``vmap``s over
trajectories.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from logtrick.baselines import leave_one_out_mean, normalise_group


def _check_trajectory(r_t: jax.Array, discount_t: jax.Array) -> None:
    chex.assert_rank([r_t, discount_t], 1)
    chex.assert_type([r_t, discount_t], float)
    chex.assert_equal_shape([r_t, discount_t])


def discounted_returns(r_t: ArrayLike, discount_t: ArrayLike, v_t: ArrayLike = 0.0) -> jax.Array:
    """Discounted returns from each step, bootstrapped at the end, as in rlax.

    G_t = r_t + discount_t G_{t+1},  G_T = v (the last entry of ``v_t``).

    Computed by a reverse ``jax.lax.scan``. A zero discount at an episode's
    last step cuts the sum there, so G_t never includes the next episode.

    Args:
      r_t: rewards, shape (T,), float.
      discount_t: discounts γ (1 - done_t), shape (T,), float.
      v_t: bootstrap value for the state after the last step: a scalar, or
        shape (T,) of which only the last entry is used (rlax's convention).

    Returns:
      G_t, shape (T,).

    Example::

        rewards, dones = jnp.array([1.0, 2.0, 4.0]), jnp.array([0.0, 1.0, 0.0])
        g = lt.rl.discounted_returns(rewards, 0.5 * (1.0 - dones))     # [2.0, 2.0, 4.0]

    References:
      Sutton and Barto, "Reinforcement Learning: An Introduction", 2018.
    """
    r_t, discount_t, v_t = jnp.asarray(r_t), jnp.asarray(discount_t), jnp.asarray(v_t)
    _check_trajectory(r_t, discount_t)
    chex.assert_rank(v_t, {0, 1})
    chex.assert_type(v_t, float)
    if v_t.ndim == 1:
        chex.assert_equal_shape([r_t, v_t])
        v_t = v_t[-1]

    def step(g, reward_discount):
        reward, discount = reward_discount
        g = reward + discount * g
        return g, g

    _, g_t = jax.lax.scan(step, v_t.astype(r_t.dtype), (r_t, discount_t), reverse=True)
    return g_t


def episode_starts(discount_t: ArrayLike) -> jax.Array:
    """Whether each step begins an episode: step 0 and every step after a zero discount.

    Args:
      discount_t: discounts γ (1 - done_t), shape (T,), float.

    Returns:
      Flags, shape (T,), bool.
    """
    discount_t = jnp.asarray(discount_t)
    chex.assert_rank(discount_t, 1)
    return jnp.concatenate([jnp.ones((1,), bool), discount_t[:-1] == 0])


def discount_from_start(discount_t: ArrayLike) -> jax.Array:
    """Γ_t = Π_{t₀≤t'<t} discount_t', the discount of step t from the start t₀ of its episode.

    Γ_t = 1 at an episode's first step (step 0, or the step after a zero
    discount), so Σ_t Γ_t r_t sums each episode's discounted return.

    Args:
      discount_t: discounts γ (1 - done_t), shape (T,), float.

    Returns:
      Γ_t, shape (T,).

    Example::

        lt.rl.discount_from_start(jnp.array([0.5, 0.5, 0.0, 0.5]))   # [1.0, 0.5, 0.25, 1.0]
    """
    discount_t = jnp.asarray(discount_t)
    chex.assert_rank(discount_t, 1)
    chex.assert_type(discount_t, float)

    def step(acc, discount):
        return jnp.where(discount == 0, 1.0, acc * discount).astype(acc.dtype), acc

    _, gamma_t = jax.lax.scan(step, jnp.ones((), discount_t.dtype), discount_t)
    return gamma_t


def reward_to_go(r_t: ArrayLike, discount_t: ArrayLike) -> jax.Array:
    """Rewards from step t on, discounted from the start of t's episode.

    Q̂_t = Σ_{t'≥t} γ^{t'-t₀} r_{t'} = γ^{t-t₀} G_t,  t₀ the first step of t's
    episode (the step after a zero discount, or 0).

    This is the weight of ∇ log π(a_t|s_t) for which Σ_t Q̂_t ∇ log π(a_t|s_t)
    is an unbiased gradient of the discounted objective E[Σ_t γ^t r_t]
    ("causality": an action cannot change earlier rewards). Weighting by
    :func:`discounted_returns` instead drops the γ^{t-t₀} and estimates a
    direction that is not the gradient of any objective (Nota and Thomas).
    With a chunk that starts mid-episode, t₀ is the chunk's first step.

    Args:
      r_t: rewards, shape (T,), float.
      discount_t: discounts γ (1 - done_t), shape (T,), float.

    Returns:
      Q̂_t, shape (T,).

    References:
      Williams, "Simple statistical gradient-following algorithms for
      connectionist reinforcement learning", 1992.
      Thomas, "Bias in Natural Actor-Critic Algorithms", 2014.
      Nota and Thomas, "Is the Policy Gradient a Gradient?", 2020.
    """
    r_t, discount_t = jnp.asarray(r_t), jnp.asarray(discount_t)
    _check_trajectory(r_t, discount_t)
    return discount_from_start(discount_t) * discounted_returns(r_t, discount_t)


def episode_returns(r_t: ArrayLike, discount_t: ArrayLike) -> jax.Array:
    """The whole discounted return of the episode each step belongs to.

    R_t = Σ_{t'∈episode(t)} γ^{t'-t₀} r_{t'} = G_{t₀}: the weight of every
    ∇ log π(a_t|s_t) in REINFORCE without reward-to-go.

    Args:
      r_t: rewards, shape (T,), float.
      discount_t: discounts γ (1 - done_t), shape (T,), float.

    Returns:
      R_t, shape (T,), constant within each episode.
    """
    r_t, discount_t = jnp.asarray(r_t), jnp.asarray(discount_t)
    _check_trajectory(r_t, discount_t)
    g_t = discounted_returns(r_t, discount_t)
    starts = episode_starts(discount_t)

    def step(current, g_start):
        g, start = g_start
        current = jnp.where(start, g, current)
        return current, current

    _, out = jax.lax.scan(step, g_t[0], (g_t, starts))
    return out


def advantages(returns_t: ArrayLike, v_t: ArrayLike) -> jax.Array:
    """Advantages against a learned value baseline: A_t = G_t - stop_gradient(v_t).

    Unbiased as a policy-gradient weight when v_t depends only on the state
    s_t; train v_t with :func:`logtrick.rl.value_loss`.

    Args:
      returns_t: return targets, e.g. :func:`reward_to_go`, shape (T,).
      v_t: value predictions, shape (T,).

    Returns:
      A_t, shape (T,), with no gradient to either input.

    References:
      Sutton et al., "Policy Gradient Methods for Reinforcement Learning with
      Function Approximation", 2000.
    """
    returns_t, v_t = jnp.asarray(returns_t), jnp.asarray(v_t)
    chex.assert_rank([returns_t, v_t], 1)
    chex.assert_type([returns_t, v_t], float)
    chex.assert_equal_shape([returns_t, v_t])
    return jax.lax.stop_gradient(returns_t - v_t)


def _check_group(returns: jax.Array, caller: str) -> None:
    chex.assert_rank(returns, {1, 2})
    chex.assert_type(returns, float)
    if returns.shape[0] < 2:
        raise ValueError(f"{caller}: need at least 2 episodes along axis 0, got {returns.shape[0]}")


def leave_one_out_advantages(returns: ArrayLike) -> jax.Array:
    """RLOO advantages over a group of G episodes (axis 0).

    A_i = R_i - (1/(G-1)) Σ_{j≠i} R_j = G/(G-1) (R_i - mean_j R_j).

    Unbiased: the baseline of episode i depends only on the other, independent
    episodes. Given per-step returns of shape (G, T), e.g. :func:`reward_to_go`
    of each episode, the baseline is taken per time step over the group.

    Args:
      returns: shape (G,) or (G, T), G ≥ 2, float.

    Returns:
      Advantages of the same shape, with no gradient.

    References:
      Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
      Free!", 2019.
      Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization
      for Learning from Human Feedback in LLMs", 2024.
    """
    returns = jnp.asarray(returns)
    _check_group(returns, "leave_one_out_advantages")
    return jax.lax.stop_gradient(returns - leave_one_out_mean(returns))


def group_normalised_advantages(returns: ArrayLike, *, eps: float = 1e-6) -> jax.Array:
    """GRPO advantages over a group of G episodes (axis 0): A_i = (R_i - mean R) / (std R + eps).

    ``std`` is the population standard deviation (ddof=0). BIASED as a
    policy-gradient weight: the mean includes R_i itself (a factor (G-1)/G on
    the RLOO advantage) and the standard deviation both depends on R_i and
    rescales the gradient, so the expectation is not ∇J (nor parallel to it
    in general). Per-step returns of shape (G, T) are normalised per step.

    Args:
      returns: shape (G,) or (G, T), G ≥ 2, float.
      eps: added to the standard deviation.

    Returns:
      Advantages of the same shape, with no gradient.

    References:
      Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning
      in Open Language Models", 2024.
      Liu et al., "Understanding R1-Zero-Like Training: A Critical
      Perspective", 2025.
    """
    returns = jnp.asarray(returns)
    _check_group(returns, "group_normalised_advantages")
    return jax.lax.stop_gradient(normalise_group(returns, eps))
