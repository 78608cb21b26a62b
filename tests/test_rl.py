"""Tests of logtrick.rl returns, advantages, losses and the DiCE objective against hand computations and numpy loops.

Test data comes from numpy: drawing it with jax.random would compile a sampler per shape.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from logtrick import rl

# Two episodes in one trajectory: the discount is 0 where the first one ends.
REWARDS = jnp.array([1.0, 2.0, 4.0, 8.0, 2.0, 4.0, 8.0])
DISCOUNTS = jnp.array([0.5, 0.5, 0.5, 0.0, 0.5, 0.5, 0.5])


def _numpy_returns(rewards, dones, gamma):
    """Per-step G_t, reward-to-go γ^{t-t₀} G_t and episode return G_{t₀}, by explicit loops."""
    num_steps = len(rewards)
    g = np.zeros(num_steps)
    running = 0.0
    for t in reversed(range(num_steps)):
        running = rewards[t] + (0.0 if dones[t] else gamma * running)
        g[t] = running
    to_go, episode = np.zeros(num_steps), np.zeros(num_steps)
    start = 0
    for t in range(num_steps):
        if t > 0 and dones[t - 1]:
            start = t
        to_go[t] = gamma ** (t - start) * g[t]
        episode[t] = g[start]
    return g, to_go, episode


def test_returns_by_hand():
    """The two-episode example worked out by hand; the bootstrap value stops at the boundary."""
    np.testing.assert_allclose(rl.discounted_returns(REWARDS, DISCOUNTS, 16.0), [4, 6, 8, 8, 8, 12, 16])
    np.testing.assert_allclose(rl.discounted_returns(REWARDS, DISCOUNTS), [4, 6, 8, 8, 6, 8, 8])
    np.testing.assert_allclose(rl.reward_to_go(REWARDS, DISCOUNTS), [4, 3, 2, 1, 6, 4, 2])
    np.testing.assert_allclose(rl.episode_returns(REWARDS, DISCOUNTS), [4, 4, 4, 4, 6, 6, 6])
    np.testing.assert_allclose(rl.discounted_returns(REWARDS, DISCOUNTS, jnp.full(7, 16.0)),
                               rl.discounted_returns(REWARDS, DISCOUNTS, 16.0))


def test_returns_with_auto_resets_match_numpy_loop_under_jit_and_vmap():
    """A batch of trajectories with random episode ends, jitted and vmapped, against numpy loops."""
    gamma, shape = 0.9, (3, 40)
    rng = np.random.default_rng(0)
    rewards = jnp.asarray(rng.normal(size=shape), jnp.float32)
    dones = jnp.asarray(rng.random(shape) < 0.2)
    discounts = gamma * (1.0 - dones.astype(jnp.float32))
    batched = jax.jit(jax.vmap(lambda r, d: (rl.discounted_returns(r, d), rl.reward_to_go(r, d),
                                             rl.episode_returns(r, d))))
    outs = batched(rewards, discounts)
    for i in range(shape[0]):
        expected = _numpy_returns(np.asarray(rewards[i], np.float64), np.asarray(dones[i]), gamma)
        for got, want in zip(outs, expected):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)


def test_returns_do_not_leak_across_episode_boundary():
    changed = REWARDS.at[4:].set(100.0)
    for fn in (rl.discounted_returns, rl.reward_to_go, rl.episode_returns):
        np.testing.assert_array_equal(fn(changed, DISCOUNTS)[:4], fn(REWARDS, DISCOUNTS)[:4])


@pytest.mark.parametrize("fn", [rl.discounted_returns, rl.reward_to_go, rl.episode_returns])
def test_returns_shape_checks(fn):
    with pytest.raises(AssertionError):
        fn(REWARDS[None], DISCOUNTS[None])
    with pytest.raises(AssertionError):
        fn(REWARDS, DISCOUNTS[:-1])
    with pytest.raises(AssertionError):
        fn(REWARDS.astype(jnp.int32), DISCOUNTS)


def test_advantages_stop_gradient():
    returns, values = jnp.array([1.0, 2.0]), jnp.array([0.5, 0.25])
    np.testing.assert_allclose(rl.advantages(returns, values), [0.5, 1.75])
    grads = jax.grad(lambda r, v: jnp.sum(rl.advantages(r, v)), argnums=(0, 1))(returns, values)
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)
    with pytest.raises(AssertionError):
        rl.advantages(returns, values[:1])


def test_leave_one_out_advantages():
    returns = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), jnp.float32)
    expected = np.stack([returns[i] - np.delete(np.asarray(returns), i, axis=0).mean(axis=0) for i in range(5)])
    np.testing.assert_allclose(rl.leave_one_out_advantages(returns), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rl.leave_one_out_advantages(returns[:, 0]), expected[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 episodes"):
        rl.leave_one_out_advantages(returns[:1])


def test_group_normalised_advantages():
    returns = jnp.array([[1.0, 5.0], [2.0, 5.0], [6.0, 5.0]])
    adv = rl.group_normalised_advantages(returns)
    np.testing.assert_allclose(adv[:, 0], (returns[:, 0] - 3.0) / (np.std([1.0, 2.0, 6.0]) + 1e-6), rtol=1e-5)
    np.testing.assert_allclose(adv[:, 1], 0.0)  # a constant group gives zero advantages, not NaN
    with pytest.raises(ValueError, match="at least 2 episodes"):
        rl.group_normalised_advantages(returns[:1])


@pytest.fixture(scope="module")
def trajectory():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    actions = jnp.asarray(rng.integers(0, 3, 6), jnp.int32)
    adv = jnp.asarray(rng.normal(size=6), jnp.float32)
    weights = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    return logits, actions, adv, weights


def test_policy_gradient_loss_matches_rlax_gradient(trajectory):
    """The gradient is that of rlax's -mean(w A log π); the value is -mean(w A); A gets no gradient."""
    logits, actions, adv, weights = trajectory

    def rlax_form(logits):
        log_pi = jnp.take_along_axis(jax.nn.log_softmax(logits), actions[:, None], axis=-1)[:, 0]
        return -jnp.mean(weights * adv * log_pi)

    loss_fn = jax.jit(rl.policy_gradient_loss)
    np.testing.assert_allclose(loss_fn(logits, actions, adv, weights), -jnp.mean(weights * adv), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(loss_fn)(logits, actions, adv, weights), jax.grad(rlax_form)(logits),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(jax.grad(loss_fn, argnums=2)(logits, actions, adv, weights), 0.0)


def test_policy_gradient_loss_shape_checks(trajectory):
    logits, actions, adv, weights = trajectory
    with pytest.raises(AssertionError):
        rl.policy_gradient_loss(logits[0], actions, adv, weights)
    with pytest.raises(AssertionError):
        rl.policy_gradient_loss(logits, actions[:-1], adv[:-1], weights[:-1])
    with pytest.raises(AssertionError):
        rl.policy_gradient_loss(logits, actions.astype(jnp.float32), adv, weights)


def test_entropy_loss(trajectory):
    logits, _, _, weights = trajectory
    np.testing.assert_allclose(rl.entropy_loss(jnp.zeros((4, 3)), jnp.ones(4)), -np.log(3.0), rtol=1e-6)
    probs = jax.nn.softmax(logits)
    entropy = -jnp.sum(probs * jnp.log(probs), axis=-1)
    np.testing.assert_allclose(rl.entropy_loss(logits, weights), -jnp.mean(weights * entropy), rtol=1e-5)
    with pytest.raises(AssertionError):
        rl.entropy_loss(logits, weights[:-1])


def test_value_loss_trains_value_only():
    values, targets, weights = jnp.array([0.0, 1.0, 2.0]), jnp.array([1.0, 1.0, 0.0]), jnp.array([1.0, 1.0, 0.5])
    np.testing.assert_allclose(rl.value_loss(values, targets, weights), (0.5 + 0.0 + 0.5 * 0.5 * 4.0) / 3.0)
    grad_v, grad_target = jax.grad(rl.value_loss, argnums=(0, 1))(values, targets, weights)
    np.testing.assert_allclose(grad_v, -weights * (targets - values) / 3.0)
    np.testing.assert_array_equal(grad_target, 0.0)


@pytest.mark.parametrize("value", [4.0 / 3.0, 5.0 / 6.0, 0.1])
def test_group_advantages_of_equal_returns_are_exactly_zero(value):
    """Float rounding must not turn a group with no signal into a gradient."""
    returns = jnp.full((8,), value, jnp.float32)
    assert jnp.all(rl.group_normalised_advantages(returns) == 0.0)
    assert jnp.all(rl.leave_one_out_advantages(returns) == 0.0)


def test_dice_objective_derivatives_in_closed_form():
    """Value Σ_t Γ_t r_t; ∂/∂log π_t = Q̂_t - b_t; ∂²/∂log π_s ∂log π_t = Q̂_m - b_m, m = max(s, t), within an
    episode and 0 across the boundary; the rewards get the pathwise Γ_t, the baseline nothing."""
    rng = np.random.default_rng(3)
    log_pi, b = (jnp.asarray(rng.normal(size=REWARDS.shape), jnp.float32) for _ in range(2))

    @jax.jit
    def derivatives(log_pi, rewards, b):
        out = {}
        for name, baseline in (("none", None), ("b", b)):
            objective = lambda l, r, c: rl.dice_objective(l, r, DISCOUNTS, c)
            out[name] = (objective(log_pi, rewards, baseline), jax.grad(objective)(log_pi, rewards, baseline),
                         jax.hessian(objective)(log_pi, rewards, baseline))
        return out, jax.grad(lambda r, c: rl.dice_objective(log_pi, r, DISCOUNTS, c), argnums=(0, 1))(rewards, b)

    out, (grad_r, grad_b) = derivatives(log_pi, REWARDS, b)
    to_go = np.asarray(rl.reward_to_go(REWARDS, DISCOUNTS))
    episode = np.array([0, 0, 0, 0, 1, 1, 1])
    later = np.maximum.outer(np.arange(7), np.arange(7))
    same = episode[:, None] == episode[None, :]
    for name, offset in (("none", np.zeros(7)), ("b", np.asarray(b))):
        value, grad, hessian = out[name]
        np.testing.assert_allclose(value, 4.0 + 6.0, rtol=1e-6)
        np.testing.assert_allclose(grad, to_go - offset, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(hessian, np.where(same, (to_go - offset)[later], 0.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_r, [1.0, 0.5, 0.25, 0.125, 1.0, 0.5, 0.25], rtol=1e-6)
    np.testing.assert_array_equal(grad_b, 0.0)


def test_dice_objective_shape_checks():
    with pytest.raises(AssertionError):
        rl.dice_objective(REWARDS[None], REWARDS[None], DISCOUNTS[None])
    with pytest.raises(AssertionError):
        rl.dice_objective(REWARDS[:-1], REWARDS, DISCOUNTS)
    with pytest.raises(AssertionError):
        rl.dice_objective(REWARDS, REWARDS, DISCOUNTS, REWARDS[:-1])
    with pytest.raises(AssertionError):
        rl.dice_objective(REWARDS, REWARDS.astype(jnp.int32), DISCOUNTS)
