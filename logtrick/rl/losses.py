"""Policy-gradient, entropy and value losses for one trajectory, to minimise, and the DiCE objective.

Signatures follow rlax (``logits_t`` (T, A), ``a_t`` (T,), per-step weights
``w_t`` (T,), a mean over time); the caller ``vmap``s over trajectories.
:func:`dice_objective` is the one objective to maximise: a surrogate of the
return whose derivatives of every order are unbiased.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from logtrick.dice import magic_box
from logtrick.rl.returns import discount_from_start, episode_starts


def policy_gradient_loss(logits_t: ArrayLike, a_t: ArrayLike, adv_t: ArrayLike, w_t: ArrayLike) -> jax.Array:
    """The REINFORCE loss: its gradient is minus the score-function estimate.

    L = -(1/T) Σ_t w_t stop_gradient(A_t) magic_box(log π(a_t|s_t)),
    ∇L = -(1/T) Σ_t w_t A_t ∇ log π(a_t|s_t).

    The gradient equals that of ``rlax.policy_gradient_loss``; the value is
    -(1/T) Σ_t w_t A_t (the DiCE surrogate, as in
    :func:`logtrick.score_function`) rather than -(1/T) Σ_t w_t A_t log π.
    Advantages are always under ``stop_gradient``. For an unbiased gradient
    of E[Σ_t γ^t r_t], use A_t from :func:`logtrick.rl.reward_to_go` minus
    any baseline that does not depend on a_t.

    Args:
      logits_t: action logits at each step, shape (T, A), float.
      a_t: sampled actions, shape (T,), int.
      adv_t: advantages (or returns), shape (T,), float.
      w_t: per-step weights, e.g. a mask of valid steps, shape (T,), float.

    Returns:
      A scalar loss.

    Example::

        logits = jnp.zeros((2, 3, 4))                      # two trajectories, three steps, four actions
        actions = jnp.array([[0, 3, 1], [2, 2, 0]])
        adv = jnp.array([[1.0, -0.5, 0.2], [0.3, 0.0, -1.0]])
        mask = jnp.ones((2, 3))
        loss = jax.vmap(lt.rl.policy_gradient_loss)(logits, actions, adv, mask).mean()

    References:
      Williams, "Simple statistical gradient-following algorithms for
      connectionist reinforcement learning", 1992.
    """
    logits_t, a_t, adv_t, w_t = map(jnp.asarray, (logits_t, a_t, adv_t, w_t))
    chex.assert_rank([logits_t, a_t, adv_t, w_t], [2, 1, 1, 1])
    chex.assert_type([logits_t, a_t, adv_t, w_t], [float, int, float, float])
    chex.assert_equal_shape([a_t, adv_t, w_t])
    chex.assert_equal_shape_prefix([logits_t, a_t], 1)
    log_pi = jnp.take_along_axis(jax.nn.log_softmax(logits_t), a_t[:, None], axis=-1)[:, 0]
    return -jnp.mean(w_t * jax.lax.stop_gradient(adv_t) * magic_box(log_pi))


def entropy_loss(logits_t: ArrayLike, w_t: ArrayLike) -> jax.Array:
    """Negative mean entropy of the softmax policies: L = -(1/T) Σ_t w_t H(π_t).

    H(π) = -Σ_a π(a) log π(a). Add ``β * entropy_loss`` to a loss as an
    entropy bonus.

    Args:
      logits_t: shape (T, A), float.
      w_t: per-step weights, shape (T,), float.

    Returns:
      A scalar loss.

    References:
      Williams and Peng, "Function Optimization using Connectionist
      Reinforcement Learning Algorithms", 1991.
    """
    logits_t, w_t = jnp.asarray(logits_t), jnp.asarray(w_t)
    chex.assert_rank([logits_t, w_t], [2, 1])
    chex.assert_type([logits_t, w_t], float)
    chex.assert_equal_shape_prefix([logits_t, w_t], 1)
    log_pi = jax.nn.log_softmax(logits_t)
    entropy = -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)
    return -jnp.mean(w_t * entropy)


def value_loss(v_t: ArrayLike, target_t: ArrayLike, w_t: ArrayLike) -> jax.Array:
    """Squared error of a learned value baseline: L = (1/T) Σ_t w_t ½ (stop_gradient(G_t) - v_t)².

    Args:
      v_t: value predictions, shape (T,), float.
      target_t: return targets, e.g. :func:`logtrick.rl.reward_to_go`, shape (T,).
      w_t: per-step weights, shape (T,), float.

    Returns:
      A scalar loss; its gradient reaches ``v_t`` only.
    """
    v_t, target_t, w_t = map(jnp.asarray, (v_t, target_t, w_t))
    chex.assert_rank([v_t, target_t, w_t], 1)
    chex.assert_type([v_t, target_t, w_t], float)
    chex.assert_equal_shape([v_t, target_t, w_t])
    return jnp.mean(w_t * 0.5 * (jax.lax.stop_gradient(target_t) - v_t) ** 2)


def _episode_log_probs(log_pi_t: jax.Array, discount_t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """L_<t and L_≤t, the log-probabilities of t's episode's actions before and up to t.

    Cumulative sums less the sum before the episode's first step, so that
    derivatives (all ``magic_box`` reads) flow without a ``lax.scan``.
    """
    first = jax.lax.cummax(jnp.where(episode_starts(discount_t), jnp.arange(log_pi_t.shape[0]), 0))
    upto = jnp.cumsum(log_pi_t)
    before = jnp.concatenate([jnp.zeros((1,), upto.dtype), upto[:-1]])
    offset = before[first]
    return before - offset, upto - offset


def dice_objective(log_pi_t: ArrayLike, r_t: ArrayLike, discount_t: ArrayLike, b_t: ArrayLike | None = None
                   ) -> jax.Array:
    """The DiCE objective of one trajectory: the return, with derivatives of every order unbiased.

    S = Σ_t Γ_t r_t □(L_≤t) + Σ_t sg(b_t) (□(L_<t) − □(L_≤t)),

    L_≤t = Σ_{t'≤t} log π(a_t'|s_t') the log-probability of the actions up to
    step t, L_<t the same before t, Γ_t = Π_{t₀≤t'<t} discount_t' the discount
    from the episode's start, □ = :func:`logtrick.magic_box`. Its value is the
    discounted return Σ_t Γ_t r_t; each reward is boxed with the actions that
    precede it (DiCE), so every derivative of S in the policy parameters,
    mixed ones across several agents' parameters included, is unbiased for
    that of the expected return. The baseline term has value 0 and
    zero-mean derivatives of every order for any b_t that does not depend on
    the trajectory's actions from t on (Loaded DiCE); b_t should estimate the
    reward-to-go Σ_{t'≥t} Γ_t' r_t' (:func:`logtrick.rl.reward_to_go`), e.g.
    its leave-one-out mean over a group of episodes,
    ``lt.baselines.leave_one_out_mean(reward_to_go, axis=0)``.

    A zero discount ends an episode: Γ and L restart after it, so rewards of
    one episode are not boxed with the actions of an earlier one. Rewards are
    not under ``stop_gradient`` (a learned reward's parameters get the
    pathwise gradient); the baseline is. The caller ``vmap``s over
    trajectories; the first-order gradient is that of reward-to-go REINFORCE
    with advantages Q̂_t − b_t.

    Args:
      log_pi_t: log π(a_t|s_t) of the sampled actions (the sum over agents
        for several), differentiable in the policy parameters, shape (T,).
      r_t: rewards, shape (T,), float.
      discount_t: discounts γ (1 - done_t), shape (T,), float.
      b_t: baselines, shape (T,), float, or None for none.

    Returns:
      S, a scalar, to maximise.

    Example::

        actions = jnp.array([[0, 2, 1], [1, 1, 0]])          # two episodes of three steps
        rewards = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
        discounts = jnp.full((2, 3), 0.9)

        def objective(theta):
            log_pi = jax.nn.log_softmax(theta)[actions]
            b = lt.baselines.leave_one_out_mean(jax.vmap(lt.rl.reward_to_go)(rewards, discounts), axis=0)
            return jnp.mean(jax.vmap(lt.rl.dice_objective)(log_pi, rewards, discounts, b))

        hessian = jax.hessian(objective)(jnp.zeros(3))        # (3, 3), unbiased

    References:
      Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
      Estimator", 2018.
      Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
      Computation Graphs", 2019.
      Farquhar et al., "Loaded DiCE: Trading off Bias and Variance in
      Any-Order Score Function Estimators for Reinforcement Learning", 2019.
    """
    log_pi_t, r_t, discount_t = map(jnp.asarray, (log_pi_t, r_t, discount_t))
    chex.assert_rank([log_pi_t, r_t, discount_t], 1)
    chex.assert_type([log_pi_t, r_t, discount_t], float)
    chex.assert_equal_shape([log_pi_t, r_t, discount_t])
    before_t, upto_t = _episode_log_probs(log_pi_t, discount_t)
    value = jnp.sum(discount_from_start(discount_t) * r_t * magic_box(upto_t))
    if b_t is None:
        return value
    b_t = jax.lax.stop_gradient(jnp.asarray(b_t))
    chex.assert_type(b_t, float)
    chex.assert_equal_shape([b_t, r_t])
    return value + jnp.sum(b_t * (magic_box(before_t) - magic_box(upto_t)))
