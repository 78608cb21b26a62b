"""Tabular MDPs and bandits, where every sampled policy derivative has an exact counterpart.

The policy is a softmax over a logits table, π(a|s) = softmax(logits[s])_a.
:func:`exact_return` computes J(logits) = E[Σ_{t<H} γ^t r(s_t, a_t)] by
dynamic programming, differentiably, so ``jax.grad`` and ``jax.hessian`` of it
are the exact derivatives that sampled episodes (:func:`sample_episodes`)
estimate: through :func:`reinforce`, an estimator under the library's
contract, or :func:`logtrick.rl.dice_objective` for any order::

    key = jax.random.key(0)
    mdp = lt.rl.tabular.random_mdp(key, num_states=4, num_actions=3)
    logits = jnp.zeros((4, 3))
    exact = jax.grad(lt.rl.tabular.exact_return, argnums=1)(mdp, logits, horizon=5, gamma=0.9)
    est = lt.rl.tabular.reinforce(mdp, horizon=5, gamma=0.9, num_episodes=16, baseline="leave_one_out")
    sampled, _, _ = est.estimate(logits, est.init(logits), key)
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from logtrick.base import Estimator, from_loss
from logtrick.dice import magic_box
from logtrick.rl import returns

# The `baseline` choices of reinforce, policy_gradient and bandit_gradient.
BASELINES = (None, "leave_one_out", "grpo", "value")


class MDP(NamedTuple):
    """A finite MDP with expected rewards.

    Attributes:
      transitions: P(s'|s, a), shape (S, A, S); rows sum to 1.
      rewards: r(s, a), shape (S, A); the reward is deterministic given (s, a).
      initial: the initial-state distribution, shape (S,).
    """

    transitions: jax.Array
    rewards: jax.Array
    initial: jax.Array


class Episodes(NamedTuple):
    """N sampled episodes of H steps.

    Attributes:
      states: s_{i,t}, shape (N, H), int32.
      actions: a_{i,t}, shape (N, H), int32.
      rewards: r(s_{i,t}, a_{i,t}), undiscounted, shape (N, H).
    """

    states: jax.Array
    actions: jax.Array
    rewards: jax.Array


def random_mdp(key: jax.Array, num_states: int, num_actions: int) -> MDP:
    """A random MDP: Dirichlet(1, …, 1) transition rows and initial state, Uniform(0, 1) rewards.

    Each Dirichlet(1, …, 1) draw is a vector of i.i.d. Exponential(1) variables
    normalised to sum to 1. Rewards are all positive, the case where REINFORCE
    without a baseline is noisiest.
    """
    s, a = num_states, num_actions
    # Drawn 1-D and reshaped: XLA compiles threefry for a multi-dimensional shape far more slowly.
    u = jax.random.uniform(key, (s * a * s + s * a + s,), minval=jnp.finfo(jnp.float32).tiny)
    exponentials = -jnp.log(u)
    transitions = exponentials[: s * a * s].reshape(s, a, s)
    initial = exponentials[s * a * s + s * a:]
    return MDP(
        transitions=transitions / jnp.sum(transitions, axis=-1, keepdims=True),
        rewards=u[s * a * s: s * a * s + s * a].reshape(s, a),
        initial=initial / jnp.sum(initial),
    )


def _check_policy(mdp: MDP, logits: jax.Array, horizon: int, caller: str) -> None:
    chex.assert_rank(logits, 2)
    chex.assert_type(logits, float)
    num_states, num_actions = logits.shape
    chex.assert_shape(mdp.transitions, (num_states, num_actions, num_states))
    chex.assert_shape(mdp.rewards, (num_states, num_actions))
    chex.assert_shape(mdp.initial, (num_states,))
    _check_count(horizon, 1, "horizon", caller)


def _check_count(value: int, minimum: int, name: str, caller: str, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{caller}: `{name}` must be an int >= {minimum}{why}, got {value!r}")


def _check_gamma(gamma: float, caller: str) -> None:
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"{caller}: `gamma` must be in (0, 1], got {gamma!r}")


def _state_values(mdp: MDP, policy: jax.Array, horizon: int, gamma: float) -> jax.Array:
    """V_t(s) = E[Σ_{k=t}^{H-1} γ^{k-t} r_k | s_t = s] for t < H, shape (H, S), by backward induction."""

    def step(v_next, _):
        q = mdp.rewards + gamma * mdp.transitions @ v_next
        v = jnp.sum(policy * q, axis=-1)
        return v, v

    _, v = jax.lax.scan(step, jnp.zeros_like(mdp.initial), None, length=horizon)
    return v[::-1]


def exact_return(mdp: MDP, logits: ArrayLike, *, horizon: int, gamma: float) -> jax.Array:
    """The exact finite-horizon return of the softmax policy, by dynamic programming.

    J(θ) = E[Σ_{t<H} γ^t r(s_t, a_t)] = Σ_s ρ₀(s) V_0(s), with
    V_t(s) = Σ_a π(a|s) [r(s,a) + γ Σ_{s'} P(s'|s,a) V_{t+1}(s')], V_H = 0.

    Differentiable to any order in ``logits``: ``jax.grad`` of it (argnums=1)
    is the exact policy gradient.

    Args:
      mdp: the :class:`MDP`.
      logits: policy logits, shape (S, A), float.
      horizon: H, the number of steps.
      gamma: the discount γ in (0, 1].

    Returns:
      J, a scalar.
    """
    logits = jnp.asarray(logits)
    _check_policy(mdp, logits, horizon, "exact_return")
    _check_gamma(gamma, "exact_return")
    values = _state_values(mdp, jax.nn.softmax(logits), horizon, gamma)
    return mdp.initial @ values[0]


def _stateless(params) -> tuple:
    del params
    return ()


def _no_args(args: tuple, caller: str) -> None:
    if args:
        raise TypeError(f"{caller}: `loss`/`estimate` take no extra arguments (the rewards are the MDP's), "
                        f"got {len(args)}")


def exact_estimator(mdp: MDP, *, horizon: int, gamma: float) -> Estimator:
    """:func:`exact_return` under the estimator contract: exact-gradient training as one more estimator.

    ``loss(logits, state, key) = J(logits)``; the key is ignored, state ``()``.

    Args:
      mdp: the :class:`MDP`.
      horizon: H.
      gamma: the discount γ in (0, 1].

    Returns:
      An :class:`logtrick.Estimator`; ``aux["f"]`` is J.

    Example::

        mdp = lt.rl.tabular.random_mdp(jax.random.key(0), num_states=4, num_actions=3)
        est = lt.rl.tabular.exact_estimator(mdp, horizon=5, gamma=0.9)
        grads, _, _ = est.estimate(jnp.zeros((4, 3)), (), jax.random.key(1))
    """
    _check_count(horizon, 1, "horizon", "exact_estimator")
    _check_gamma(gamma, "exact_estimator")

    def loss(logits, state, key, *args):
        del key
        _no_args(args, "exact_estimator")
        value = exact_return(mdp, logits, horizon=horizon, gamma=gamma)
        return value, (state, {"f": jax.lax.stop_gradient(value)})

    return from_loss(_stateless, loss, caller="exact_estimator")


def _inverse_cdf(probs: jax.Array, u: jax.Array) -> jax.Array:
    """The outcome k with F(k-1) ≤ u < F(k), for u ~ Uniform(0, 1): a draw from ``probs``."""
    return jnp.sum(jnp.cumsum(probs)[:-1] <= u).astype(jnp.int32)


def _episode(mdp: MDP, policy: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One episode driven by uniforms ``u`` of shape (2H + 1,): states, actions, rewards, each (H,)."""

    def step(s, u_t):
        a = _inverse_cdf(policy[s], u_t[0])
        s_next = _inverse_cdf(mdp.transitions[s, a], u_t[1])
        return s_next, (s, a, mdp.rewards[s, a])

    _, out = jax.lax.scan(step, _inverse_cdf(mdp.initial, u[0]), u[1:].reshape(-1, 2))
    return out


def sample_episodes(mdp: MDP, logits: ArrayLike, key: jax.Array, *, horizon: int, num_episodes: int) -> Episodes:
    """N independent episodes of H steps from the softmax policy (no gradient).

    s_0 ~ ρ₀, a_t ~ softmax(logits[s_t]), s_{t+1} ~ P(·|s_t, a_t), by inverse
    CDFs of uniforms, ``lax.scan`` over steps and ``vmap`` over episodes.

    Args:
      mdp: the :class:`MDP`.
      logits: policy logits, shape (S, A), float; under ``stop_gradient``.
      key: a PRNG key.
      horizon: H.
      num_episodes: N.

    Returns:
      :class:`Episodes`, each field (N, H).

    Example::

        mdp = lt.rl.tabular.random_mdp(jax.random.key(0), num_states=4, num_actions=3)
        episodes = lt.rl.tabular.sample_episodes(mdp, jnp.zeros((4, 3)), jax.random.key(1),
                                                 horizon=5, num_episodes=8)
        episodes.rewards.shape                                  # (8, 5)
    """
    logits = jnp.asarray(logits)
    _check_policy(mdp, logits, horizon, "sample_episodes")
    _check_count(num_episodes, 1, "num_episodes", "sample_episodes")
    policy = jax.nn.softmax(jax.lax.stop_gradient(logits))
    # Drawn 1-D and reshaped: XLA compiles threefry for a multi-dimensional shape far more slowly.
    u = jax.random.uniform(key, (num_episodes * (2 * horizon + 1),), mdp.rewards.dtype)
    u = u.reshape(num_episodes, 2 * horizon + 1)
    return Episodes(*jax.vmap(lambda u_i: _episode(mdp, policy, u_i))(u))


def log_probs(logits: ArrayLike, episodes: Episodes) -> jax.Array:
    """log π(a_{i,t}|s_{i,t}) of the sampled actions, differentiable in ``logits``.

    Args:
      logits: policy logits, shape (S, A), float.
      episodes: :class:`Episodes`, each field (N, H).

    Returns:
      Shape (N, H).
    """
    logits = jnp.asarray(logits)
    chex.assert_rank(logits, 2)
    chex.assert_equal_shape([episodes.states, episodes.actions])
    return jax.nn.log_softmax(logits)[episodes.states, episodes.actions]


def _advantages(weights: jax.Array, baseline: str | None, mdp: MDP, policy: jax.Array, states: jax.Array,
                gamma: float) -> jax.Array:
    """The per-step weights (N, H) minus the baseline, under ``stop_gradient``."""
    if baseline == "leave_one_out":
        return returns.leave_one_out_advantages(weights)
    if baseline == "grpo":
        return returns.group_normalised_advantages(weights)
    if baseline == "value":
        horizon = weights.shape[1]
        values = _state_values(mdp, policy, horizon, gamma)
        discount_t = gamma ** jnp.arange(horizon, dtype=weights.dtype)
        return jax.vmap(returns.advantages)(weights, discount_t * values[jnp.arange(horizon), states])
    return jax.lax.stop_gradient(weights)


def reinforce(
    mdp: MDP,
    *,
    horizon: int,
    gamma: float,
    num_episodes: int,
    baseline: str | None = None,
    reward_to_go: bool = True,
) -> Estimator:
    """REINFORCE from ``num_episodes`` sampled episodes, under the estimator contract.

    ``loss(logits, state, key)`` samples N episodes (:func:`sample_episodes`) and returns

    S = (1/N) Σ_i [R_i + Σ_{t<H} sg(A_{i,t}) (□(log π(a_{i,t}|s_{i,t})) − 1)],

    R_i = Σ_t γ^t r_{i,t} the discounted return, □ = :func:`logtrick.magic_box`:
    its value (1/N) Σ_i R_i estimates J = :func:`exact_return`, and its
    gradient in ``logits`` is the REINFORCE estimate
    ∇̂J = (1/N) Σ_i Σ_t A_{i,t} ∇ log π(a_{i,t}|s_{i,t}), A_{i,t} = W_{i,t} − b_{i,t},
    with W the reward-to-go Σ_{t'≥t} γ^{t'} r_{t'} (:func:`logtrick.rl.reward_to_go`)
    or, with ``reward_to_go=False``, the whole return R_i.

    Baselines b_{i,t}:
      - ``None``: b = 0. Unbiased.
      - ``"leave_one_out"``: RLOO, the mean of W_{j,t} over the other episodes
        at the same step. Unbiased.
      - ``"grpo"``: A = group-normalised W (:func:`logtrick.rl.group_normalised_advantages`).
        Biased: its mean is not ∇J (the tests measure it).
      - ``"value"``: b_{i,t} = γ^t V_t(s_{i,t}), the exact expected reward-to-go
        from s_{i,t} under the current policy (dynamic programming, no
        gradient). Unbiased, since it depends on the state only; the ideal
        learned value baseline.

    The MDP is a constant of the estimator: derivatives in it are not estimated.

    Args:
      mdp: the :class:`MDP`.
      horizon: H, steps per episode.
      gamma: the discount γ in (0, 1], a Python float.
      num_episodes: N (≥ 2 for the group baselines).
      baseline: one of ``None, "leave_one_out", "grpo", "value"``.
      reward_to_go: weight each step by the rewards from it on, not the whole return.

    Returns:
      An :class:`logtrick.Estimator` over logits of shape (S, A), state
      ``()``; ``aux["f"]`` holds the returns R_i, shape (N,).

    Example::

        mdp = lt.rl.tabular.random_mdp(jax.random.key(0), num_states=4, num_actions=3)
        est = lt.rl.tabular.reinforce(mdp, horizon=5, gamma=0.9, num_episodes=16, baseline="leave_one_out")
        logits = jnp.zeros((4, 3))
        (value, _), grads = jax.value_and_grad(est.loss, has_aux=True)(logits, (), jax.random.key(1))

    References:
      Williams, "Simple statistical gradient-following algorithms for
      connectionist reinforcement learning", 1992.
      Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
      Free!", 2019.
      Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning
      in Open Language Models", 2024.
    """
    _check_count(horizon, 1, "horizon", "reinforce")
    _check_gamma(gamma, "reinforce")
    if baseline not in BASELINES:
        raise ValueError(f"reinforce: `baseline` must be one of {BASELINES}, got {baseline!r}")
    minimum = 2 if baseline in ("leave_one_out", "grpo") else 1
    _check_count(num_episodes, minimum, "num_episodes", "reinforce", f" for baseline={baseline!r}")
    weights_fn = returns.reward_to_go if reward_to_go else returns.episode_returns

    def loss(logits, state, key, *args):
        _no_args(args, "reinforce")
        logits = jnp.asarray(logits)
        episodes = sample_episodes(mdp, logits, key, horizon=horizon, num_episodes=num_episodes)
        discounts = jnp.full_like(episodes.rewards, gamma)
        episode_return = jax.vmap(returns.discounted_returns)(episodes.rewards, discounts)[:, 0]
        weights = jax.vmap(weights_fn)(episodes.rewards, discounts)
        policy = jax.nn.softmax(jax.lax.stop_gradient(logits))
        adv = _advantages(weights, baseline, mdp, policy, episodes.states, gamma)
        scores = jnp.sum(adv * (magic_box(log_probs(logits, episodes)) - 1.0), axis=1)
        return jnp.mean(episode_return + scores), (state, {"f": jax.lax.stop_gradient(episode_return)})

    return from_loss(_stateless, loss, caller="reinforce")


def policy_gradient(
    mdp: MDP,
    logits: ArrayLike,
    key: jax.Array,
    *,
    horizon: int,
    gamma: float,
    num_episodes: int,
    reward_to_go: bool = True,
    baseline: str | None = None,
) -> jax.Array:
    """The REINFORCE estimate of ∇J: the grads of :func:`reinforce`'s ``estimate``.

    Args:
      mdp: the :class:`MDP`.
      logits: policy logits, shape (S, A), float.
      key: a PRNG key.
      horizon: as for :func:`reinforce`.
      gamma: as for :func:`reinforce`.
      num_episodes: as for :func:`reinforce`.
      reward_to_go: as for :func:`reinforce`.
      baseline: as for :func:`reinforce`.

    Returns:
      The estimate of ∇J, shape (S, A): an ascent direction.
    """
    est = reinforce(mdp, horizon=horizon, gamma=gamma, num_episodes=num_episodes, baseline=baseline,
                    reward_to_go=reward_to_go)
    return est.estimate(logits, (), key)[0]


def bandit_exact(logits: ArrayLike, means: ArrayLike) -> jax.Array:
    """The expected reward of a softmax policy on a K-armed bandit: J = Σ_a π(a) μ(a).

    Args:
      logits: shape (K,), float.
      means: the arms' rewards μ, shape (K,), float.

    Returns:
      J, a scalar, differentiable in ``logits``.
    """
    logits, means = jnp.asarray(logits), jnp.asarray(means)
    chex.assert_rank([logits, means], 1)
    chex.assert_type([logits, means], float)
    chex.assert_equal_shape([logits, means])
    return jax.nn.softmax(logits) @ means


def bandit_mdp(means: ArrayLike) -> MDP:
    """The K-armed bandit with rewards μ as a one-state MDP (use horizon 1)."""
    means = jnp.asarray(means)
    chex.assert_rank(means, 1)
    k = means.shape[0]
    return MDP(transitions=jnp.ones((1, k, 1), means.dtype), rewards=means[None], initial=jnp.ones((1,), means.dtype))


def bandit_gradient(
    logits: ArrayLike,
    means: ArrayLike,
    key: jax.Array,
    *,
    num_samples: int,
    baseline: str | None = None,
) -> jax.Array:
    """A REINFORCE estimate of ∇ :func:`bandit_exact` from ``num_samples`` pulls.

    ∇̂J = (1/N) Σ_i (μ(a_i) - b_i) ∇ log π(a_i),  a_i ~ π: :func:`reinforce`
    on :func:`bandit_mdp` with horizon 1, with the same baseline choices.

    Args:
      logits: shape (K,), float.
      means: the arms' rewards μ, shape (K,), float.
      key: a PRNG key.
      num_samples: N.
      baseline: one of ``None, "leave_one_out", "grpo", "value"``.

    Returns:
      The estimate of ∇J, shape (K,).
    """
    logits, means = jnp.asarray(logits), jnp.asarray(means)
    chex.assert_rank([logits, means], 1)
    chex.assert_equal_shape([logits, means])
    grads = policy_gradient(bandit_mdp(means), logits[None], key, horizon=1, gamma=1.0,
                            num_episodes=num_samples, baseline=baseline)
    return grads[0]
