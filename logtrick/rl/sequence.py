"""Sequence-level policy gradients for autoregressive token policies: advantages, losses, KL penalties, an exact oracle.

A batch holds B prompts with G sampled responses each, padded to T tokens::

    log_prob_t   (B, G, T)   log π_θ(y_t | x, y_<t) of the sampled tokens (differentiable)
    mask_t       (B, G, T)   1 on response tokens, up to and including the end token; 0 on padding
    rewards      (B, G)      one scalar reward per response

Log-probabilities under the sampling (old) and reference policies have the
shape of ``log_prob_t`` and no gradient. Losses are to be minimised (rlax's
convention); the objective they ascend is

    J(θ) = E_{y~π_θ}[r(y)] - β KL(π_θ ‖ π_ref),   KL = E_{y~π_θ}[log π_θ(y) - log π_ref(y)],

with log π(y) = Σ_t mask_t log π(y_t | y_<t). A training loss is
``policy_loss(...)`` with advantages from one of the ``*_advantages``
functions, plus, for the KL penalty, either :func:`kl_in_reward` (a
stop-gradient penalty folded into the rewards or per-token advantages) or
``β · kl_loss(...)`` (differentiated). On policy, one step, the expected
gradients are (Schulman 2020; Tang and Munos 2025):

    k1 as a loss                    0 (E ∇ log π = 0)
    k2 as a loss                    ∇ KL(π_θ‖π_ref) at sequence level; per token, a per-token KL only
    k3 as a loss                    ∇ KL(π_ref‖π_θ), the forward KL (per token: a per-token forward KL)
    k1 in the reward                ∇ KL(π_θ‖π_ref), at sequence or token level (reward to go)
    ρ·k3, ρ = π_θ/π_old             ∇ KL(π_θ‖π_ref) at sequence level with ρ differentiable, on and off
                                    policy; with ρ detached, the forward KL; per token, a per-token KL only

:func:`exact_objective` over :func:`enumerate_responses` gives J itself for
policies small enough to list, so ``jax.grad`` of it is the reference the
estimators are tested against.

References:
  Schulman, "Approximating KL Divergence", 2020. Shao et al., "DeepSeekMath",
  2024 (GRPO). Liu et al., "Understanding R1-Zero-Like Training: A Critical
  Perspective", 2025 (Dr. GRPO). Ahmadian et al., "Back to Basics", 2024
  (RLOO). Hu et al., "REINFORCE++", 2025. Li et al., "ReMax", 2024. Schulman
  et al., "Proximal Policy Optimization Algorithms", 2017. Tang and Munos, "On
  a Few Pitfalls in KL Divergence Gradient Estimation for RL", 2025.
"""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from logtrick.baselines import leave_one_out_mean

sg = jax.lax.stop_gradient

AGGREGATIONS = ("token_mean", "sequence_mean", "token_sum")
KL_ESTIMATORS = ("k1", "k2", "k3")
KL_LEVELS = ("token", "sequence")


def _check_choice(value: str, choices: tuple[str, ...], name: str, caller: str) -> None:
    if value not in choices:
        raise ValueError(f"{caller}: `{name}` must be one of {choices}, got {value!r}")


def _check_tokens(caller: str, **arrays: jax.Array) -> None:
    """Every array is (B, G, T) float, all of one shape; errors name the argument."""
    shape = None
    for name, array in arrays.items():
        if jnp.ndim(array) != 3 or not jnp.issubdtype(jnp.result_type(array), jnp.floating):
            raise ValueError(f"{caller}: `{name}` must be a float array of shape (B, G, T), got "
                             f"{jnp.result_type(array)} of shape {jnp.shape(array)}")
        if shape is not None and jnp.shape(array) != shape:
            raise ValueError(f"{caller}: `{name}` has shape {jnp.shape(array)}, the others {shape}")
        shape = jnp.shape(array)


def _check_rewards(rewards: jax.Array, caller: str, minimum_group: int = 1) -> None:
    if jnp.ndim(rewards) != 2 or not jnp.issubdtype(jnp.result_type(rewards), jnp.floating):
        raise ValueError(f"{caller}: `rewards` must be a float array of shape (B, G), got "
                         f"{jnp.result_type(rewards)} of shape {jnp.shape(rewards)}")
    if rewards.shape[1] < minimum_group:
        raise ValueError(f"{caller}: needs groups of at least {minimum_group} responses, got G = {rewards.shape[1]}")


# ---------------------------------------------------------------- tokens


def token_log_probs(logits_t: ArrayLike, tokens_t: ArrayLike) -> jax.Array:
    """log π(y_t | y_<t) of the given tokens: ``log_softmax(logits_t)`` at ``tokens_t``.

    Args:
      logits_t: shape (..., T, V), float.
      tokens_t: shape (..., T), int.

    Returns:
      Shape (..., T).
    """
    logits_t, tokens_t = jnp.asarray(logits_t), jnp.asarray(tokens_t)
    chex.assert_equal_shape_prefix([logits_t, tokens_t], tokens_t.ndim)
    chex.assert_type(tokens_t, int)
    return jnp.take_along_axis(jax.nn.log_softmax(logits_t), tokens_t[..., None], axis=-1)[..., 0]


def response_mask(tokens_t: ArrayLike, end_token: int) -> jax.Array:
    """1 on the tokens of a response up to and including its first ``end_token``, 0 after it.

    A response without an end token is truncated at T: every position is 1.

    Args:
      tokens_t: shape (..., T), int.
      end_token: the end-of-response token id.

    Returns:
      Float, shape (..., T).
    """
    tokens_t = jnp.asarray(tokens_t)
    chex.assert_type(tokens_t, int)
    ended_before = jnp.cumsum(tokens_t == end_token, axis=-1) - (tokens_t == end_token)
    return (ended_before == 0).astype(jnp.float32)


def sequence_log_probs(log_prob_t: ArrayLike, mask_t: ArrayLike) -> jax.Array:
    """log π(y) = Σ_t mask_t log π(y_t | y_<t), over the last axis."""
    return jnp.sum(jnp.asarray(log_prob_t) * jnp.asarray(mask_t), axis=-1)


# ---------------------------------------------------------------- advantages, (B, G) -> (B, G), no gradient


def reinforce_advantages(rewards: ArrayLike) -> jax.Array:
    """A_i = r_i: plain REINFORCE, unbiased."""
    rewards = jnp.asarray(rewards)
    _check_rewards(rewards, "reinforce_advantages")
    return sg(rewards)


def rloo_advantages(rewards: ArrayLike) -> jax.Array:
    """A_i = r_i - mean_{j≠i} r_j within each group (RLOO, Ahmadian et al. 2024): unbiased, G ≥ 2."""
    rewards = jnp.asarray(rewards)
    _check_rewards(rewards, "rloo_advantages", minimum_group=2)
    return sg(rewards - jax.vmap(leave_one_out_mean)(rewards))


def grpo_advantages(rewards: ArrayLike, *, eps: float = 1e-6) -> jax.Array:
    """A_i = (r_i - mean_j r_j) / (std_j r_j + eps) within each group (GRPO): biased (the std depends on r_i).

    A KL penalty subtracted from the rewards before this normalisation is rescaled by each group's 1/std (in a
    group of equal task rewards the advantages become the normalised penalty's noise); subtract
    :func:`kl_in_reward`'s token-level penalty from the normalised advantages instead.
    """
    rewards = jnp.asarray(rewards)
    _check_rewards(rewards, "grpo_advantages", minimum_group=2)
    centred = rewards - jnp.mean(rewards, axis=1, keepdims=True)
    return sg(centred / (jnp.std(rewards, axis=1, keepdims=True) + eps))


def dr_grpo_advantages(rewards: ArrayLike) -> jax.Array:
    """A_i = r_i - mean_j r_j within each group (Dr. GRPO): (G-1)/G times RLOO's, unbiased up to that factor."""
    rewards = jnp.asarray(rewards)
    _check_rewards(rewards, "dr_grpo_advantages", minimum_group=2)
    return sg(rewards - jnp.mean(rewards, axis=1, keepdims=True))


def reinforce_pp_advantages(rewards: ArrayLike, *, eps: float = 1e-6) -> jax.Array:
    """A_i = (r_i - mean r) / (std r + eps) over the whole batch (REINFORCE++'s global normalisation): biased."""
    rewards = jnp.asarray(rewards)
    _check_rewards(rewards, "reinforce_pp_advantages")
    return sg((rewards - jnp.mean(rewards)) / (jnp.std(rewards) + eps))


def baseline_advantages(rewards: ArrayLike, baseline: ArrayLike) -> jax.Array:
    """A_i = r_i - b for a per-prompt baseline b of shape (B,), e.g. ReMax's greedy response reward.

    Unbiased when b does not depend on the sampled responses (a greedy
    decode is deterministic given the prompt and θ).
    """
    rewards, baseline = jnp.asarray(rewards), jnp.asarray(baseline)
    _check_rewards(rewards, "baseline_advantages")
    if baseline.shape != rewards.shape[:1]:
        raise ValueError(f"baseline_advantages: `baseline` must have shape (B,) = {rewards.shape[:1]}, "
                         f"got {baseline.shape}")
    return sg(rewards - baseline[:, None])


# ---------------------------------------------------------------- losses


def aggregate(loss_t: ArrayLike, mask_t: ArrayLike, mode: str, *, max_length: int | None = None) -> jax.Array:
    """Per-token terms (B, G, T) to one scalar, as the libraries do.

    ``"token_mean"``: Σ mask·l / Σ mask over the batch (every token weighs
    the same; DAPO). ``"sequence_mean"``: the mean over responses of each
    response's token mean (GRPO's 1/|o|: a long response's tokens weigh
    less). ``"token_sum"``: Σ mask·l / (B·G·max_length), a constant
    (Dr. GRPO; ``max_length`` defaults to T). Only ``"token_sum"`` keeps the
    sum over a response's tokens whose gradient is the sequence-level
    estimator, up to a constant factor.
    """
    loss_t, mask_t = jnp.asarray(loss_t), jnp.asarray(mask_t)
    _check_choice(mode, AGGREGATIONS, "mode", "aggregate")
    _check_tokens("aggregate", loss_t=loss_t, mask_t=mask_t)
    masked = loss_t * mask_t
    if mode == "token_mean":
        return jnp.sum(masked) / jnp.maximum(jnp.sum(mask_t), 1.0)
    if mode == "sequence_mean":
        return jnp.mean(jnp.sum(masked, axis=-1) / jnp.maximum(jnp.sum(mask_t, axis=-1), 1.0))
    length = loss_t.shape[-1] if max_length is None else max_length
    return jnp.sum(masked) / (loss_t.shape[0] * loss_t.shape[1] * length)


def policy_loss(
    log_prob_t: ArrayLike,
    advantages: ArrayLike,
    mask_t: ArrayLike,
    *,
    old_log_prob_t: ArrayLike | None = None,
    clip_epsilon: float | None = None,
    aggregation: str = "token_sum",
    max_length: int | None = None,
) -> jax.Array:
    """The (PPO-clipped) policy-gradient loss, aggregated over tokens.

    ρ_t = exp(log π_θ(y_t) - log π_old(y_t)), l_t = -ρ_t A_t, or with clipping
    l_t = -min(ρ_t A_t, clip(ρ_t, 1 - ε, 1 + ε) A_t). On policy
    (``old_log_prob_t`` None: π_old = sg π_θ) ρ_t = 1 and ∇l_t = -A_t ∇ log
    π_θ(y_t): with ``aggregation="token_sum"`` and sequence advantages, the
    gradient is -(1/(B·G·T)) Σ_i A_i ∇ log π_θ(y_i), the score-function
    estimate scaled by 1/T.

    Args:
      log_prob_t: (B, G, T), differentiable.
      advantages: (B, G) per response, or (B, G, T) per token (e.g. with a
        token-level KL in the reward); no gradient is taken through them.
      mask_t: (B, G, T).
      old_log_prob_t: (B, G, T) under the sampling policy, or None (on policy).
      clip_epsilon: ε > 0 for PPO's clipped surrogate, or None.
      aggregation: one of :data:`AGGREGATIONS` (see :func:`aggregate`).
      max_length: ``"token_sum"``'s constant, the generation budget (default T).

    Returns:
      A scalar loss.

    Example::

        lp = jnp.log(jnp.full((2, 4, 5), 0.25))           # B = 2 prompts, G = 4 responses, T = 5 tokens
        rewards = jnp.arange(8.0).reshape(2, 4)
        loss = lt.rl.sequence.policy_loss(lp, lt.rl.sequence.rloo_advantages(rewards), jnp.ones((2, 4, 5)))
    """
    log_prob_t, advantages, mask_t = map(jnp.asarray, (log_prob_t, advantages, mask_t))
    _check_tokens("policy_loss", log_prob_t=log_prob_t, mask_t=mask_t)
    if advantages.shape == log_prob_t.shape[:2]:
        advantages = advantages[..., None]
    elif advantages.shape != log_prob_t.shape:
        raise ValueError(f"policy_loss: `advantages` must have shape (B, G) or (B, G, T) = {log_prob_t.shape}, "
                         f"got {advantages.shape}")
    old = sg(log_prob_t) if old_log_prob_t is None else sg(jnp.asarray(old_log_prob_t))
    ratio = jnp.exp(log_prob_t - old)
    loss_t = -ratio * sg(advantages)
    if clip_epsilon is not None:
        if not clip_epsilon > 0:
            raise ValueError(f"policy_loss: `clip_epsilon` must be > 0, got {clip_epsilon!r}")
        clipped = -jnp.clip(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * sg(advantages)
        loss_t = jnp.maximum(loss_t, clipped)
    return aggregate(loss_t, mask_t, aggregation, max_length=max_length)


def kl_estimates(log_prob: ArrayLike, ref_log_prob: ArrayLike, estimator: str) -> jax.Array:
    """Schulman's estimators of KL(π_θ ‖ π_ref) from log π_θ and log π_ref of samples of π_θ, elementwise.

    With δ = log π_ref - log π_θ: k1 = -δ (unbiased, can be negative),
    k2 = δ²/2 (biased, low variance), k3 = e^δ - 1 - δ (unbiased, ≥ 0).
    """
    _check_choice(estimator, KL_ESTIMATORS, "estimator", "kl_estimates")
    delta = jnp.asarray(ref_log_prob) - jnp.asarray(log_prob)
    if estimator == "k1":
        return -delta
    if estimator == "k2":
        return 0.5 * delta**2
    return jnp.expm1(delta) - delta


def kl_in_reward(
    log_prob_t: ArrayLike,
    ref_log_prob_t: ArrayLike,
    mask_t: ArrayLike,
    *,
    beta: float,
    estimator: str = "k1",
    level: str = "sequence",
) -> jax.Array:
    """The KL penalty as part of the reward, under stop-gradient: what to subtract from the rewards or advantages.

    ``level="sequence"``: β Σ_t mask_t k_t per response, shape (B, G): subtract it from the
    rewards before computing advantages. ``level="token"``: β Σ_{s≥t} mask_s k_s, the penalty to
    go from token t, shape (B, G, T): subtract it from per-token advantages (causality: token t's
    score only sees the penalty of tokens at and after it). With k1 either gives the score-function
    estimate of ∇ KL(π_θ‖π_ref) on policy.
    """
    log_prob_t, ref_log_prob_t, mask_t = map(jnp.asarray, (log_prob_t, ref_log_prob_t, mask_t))
    _check_tokens("kl_in_reward", log_prob_t=log_prob_t, ref_log_prob_t=ref_log_prob_t, mask_t=mask_t)
    _check_choice(level, KL_LEVELS, "level", "kl_in_reward")
    k_t = sg(kl_estimates(log_prob_t, ref_log_prob_t, estimator)) * mask_t
    if level == "sequence":
        return beta * jnp.sum(k_t, axis=-1)
    return beta * jnp.flip(jnp.cumsum(jnp.flip(k_t, -1), -1), -1)


def kl_loss(
    log_prob_t: ArrayLike,
    ref_log_prob_t: ArrayLike,
    mask_t: ArrayLike,
    *,
    estimator: str,
    level: str = "token",
    aggregation: str = "token_sum",
    old_log_prob_t: ArrayLike | None = None,
    ratio: str = "detached",
) -> jax.Array:
    """The KL penalty as a differentiated loss term (multiply by β and add to the policy loss).

    ``level="token"``: per-token k_t(θ) aggregated with ``aggregation``;
    ``level="sequence"``: k_i of response i's log-ratio Σ_t mask_t (log π_ref -
    log π_θ), spread as k_i / |o_i| over its tokens and aggregated the same
    way, so that it keeps weight β against a :func:`policy_loss` of the same
    aggregation (with ``"token_sum"``: (1/(B·G·T)) Σ_i k_i). Off policy
    (``old_log_prob_t`` given), each term is weighted by the importance ratio
    ρ = π_θ / π_old, per token (token level) or per response (sequence level),
    ``"detached"`` (under stop-gradient) or ``"differentiable"``. On policy
    ρ = 1 in value; a differentiable ρ still adds its gradient: at sequence
    level that makes ρ·k3 the reverse-KL gradient, on and off policy; per
    token, ρ_t·k3_t gives only the per-token KL gradient (each token's
    context held fixed), like k2 per token.

    Args:
      log_prob_t: (B, G, T), differentiable.
      ref_log_prob_t: (B, G, T) under the reference policy.
      mask_t: (B, G, T).
      estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (:func:`kl_estimates`).
      level: ``"token"`` or ``"sequence"``.
      aggregation: for ``level="token"``, one of :data:`AGGREGATIONS`.
      old_log_prob_t: (B, G, T) under the sampling policy, or None (π_old = sg π_θ).
      ratio: ``"detached"`` or ``"differentiable"``.

    Returns:
      A scalar.
    """
    log_prob_t, ref_log_prob_t, mask_t = map(jnp.asarray, (log_prob_t, ref_log_prob_t, mask_t))
    _check_tokens("kl_loss", log_prob_t=log_prob_t, ref_log_prob_t=ref_log_prob_t, mask_t=mask_t)
    _check_choice(level, KL_LEVELS, "level", "kl_loss")
    _check_choice(ratio, ("detached", "differentiable"), "ratio", "kl_loss")
    old = sg(log_prob_t) if old_log_prob_t is None else sg(jnp.asarray(old_log_prob_t))
    log_ratio_t = (log_prob_t - old) * mask_t
    if level == "token":
        weight_t = jnp.exp(log_ratio_t)
        weight_t = sg(weight_t) if ratio == "detached" else weight_t
        return aggregate(weight_t * kl_estimates(log_prob_t, ref_log_prob_t, estimator), mask_t, aggregation)
    weight = jnp.exp(jnp.sum(log_ratio_t, axis=-1))
    weight = sg(weight) if ratio == "detached" else weight
    k = kl_estimates(sequence_log_probs(log_prob_t, mask_t), sequence_log_probs(ref_log_prob_t, mask_t), estimator)
    length = jnp.maximum(jnp.sum(mask_t, axis=-1, keepdims=True), 1.0)
    return aggregate(jnp.broadcast_to((weight * k)[..., None] / length, mask_t.shape), mask_t, aggregation)


# ---------------------------------------------------------------- the exact oracle


def enumerate_responses(vocab_size: int, max_length: int, end_token: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct response of at most ``max_length`` tokens: ended by ``end_token`` or truncated at T.

    A response is y_1..y_l with y_l = end_token and no earlier end token
    (l ≤ T), or T tokens without one; positions after the end are padded
    with ``end_token`` and masked out. There are Σ_{l=1}^{T} (V-1)^{l-1} +
    (V-1)^T of them.

    Returns:
      ``(tokens, mask)``: int32 (S, T) and float32 (S, T), as numpy arrays.
    """
    if not 0 <= end_token < vocab_size:
        raise ValueError(f"enumerate_responses: `end_token` must be in [0, {vocab_size}), got {end_token}")
    others = [v for v in range(vocab_size) if v != end_token]
    responses = [prefix + (end_token,) for length in range(max_length)
                 for prefix in itertools.product(others, repeat=length)]
    responses += list(itertools.product(others, repeat=max_length))
    tokens = np.full((len(responses), max_length), end_token, np.int32)
    mask = np.zeros((len(responses), max_length), np.float32)
    for i, response in enumerate(responses):
        tokens[i, :len(response)] = response
        mask[i, :len(response)] = 1.0
    return tokens, mask


def exact_objective(log_probs: ArrayLike, rewards: ArrayLike, ref_log_probs: ArrayLike, *, beta: float) -> jax.Array:
    """J(θ) = Σ_y π_θ(y) r(y) - β Σ_y π_θ(y) (log π_θ(y) - log π_ref(y)), over an enumerated support.

    Args:
      log_probs: log π_θ(y) of every response (shape (S,), or (B, S) for B
        prompts, averaged over them), differentiable in θ; each row must sum
        to one in probability (all responses listed, e.g. by
        :func:`enumerate_responses`).
      rewards: r(y), the same shape.
      ref_log_probs: log π_ref(y), the same shape.
      beta: β ≥ 0.

    Returns:
      The scalar J; ``jax.grad`` of it is the exact gradient.
    """
    log_probs, rewards, ref_log_probs = map(jnp.asarray, (log_probs, rewards, ref_log_probs))
    chex.assert_equal_shape([log_probs, rewards, ref_log_probs])
    probs = jnp.exp(log_probs)
    return jnp.mean(jnp.sum(probs * (rewards - beta * (log_probs - ref_log_probs)), axis=-1))
