"""Tests of experiments.cartpole: a jitted, vmapped run whose return rises (and falls with the gradient's sign
flipped); returns that stop at auto-resets; the tracker."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from experiments import cartpole

GAMMA = 0.9
NUM_ENVS, NUM_STEPS = 3, 100
NUM_SEEDS = 16
IMPROVEMENT_THRESHOLD = scipy.stats.t.ppf(1 - 1e-3, NUM_SEEDS - 1)


@pytest.fixture(scope="module")
def batch() -> cartpole.Batch:
    """One rollout of the uniform random policy: episodes of about 20 steps, so several auto-resets per env."""
    env, env_params = gymnax.make("CartPole-v1")

    def uniform(obs):
        return jnp.zeros(obs.shape[:-1] + (env.num_actions,))

    rollout = jax.jit(lambda key: cartpole.rollout(env, env_params, uniform, key, NUM_ENVS, NUM_STEPS))
    return jax.tree.map(np.asarray, rollout(jax.random.key(1)))


@pytest.fixture(scope="module")
def trained() -> tuple[np.ndarray, cartpole.Metrics]:
    """The quick configuration trained on NUM_SEEDS seeds with the surrogate and with its sign flipped (the
    gradient pointing downhill), same keys: ``(signs, metrics)``, one jitted, vmapped call."""

    def train(key, sign):
        return cartpole.make_train(cartpole.QUICK, lambda l, b, g: sign * cartpole.reinforce_loss(l, b, g))(key)

    keys = jax.random.split(jax.random.key(0), NUM_SEEDS)
    keys, signs = jnp.concatenate([keys, keys]), jnp.repeat(jnp.array([1.0, -1.0]), NUM_SEEDS)
    metrics = jax.jit(jax.vmap(train)).lower(keys, signs).compile(cartpole.COMPILER_OPTIONS)(keys, signs)
    return np.asarray(signs), jax.tree.map(np.asarray, metrics)


def assert_return_improves(recent: np.ndarray) -> float:
    """Asserts that the mean return of the last window rises from the first update to the last, a paired
    one-sided t-test over seeds at α = 1e-3; returns t."""
    gain = recent[:, -1] - recent[:, 0]
    t = gain.mean() / (gain.std(ddof=1) / np.sqrt(gain.size))
    assert t > IMPROVEMENT_THRESHOLD, f"return not shown to improve: mean gain {gain.mean():.2f}, t = {t:.2f}"
    return t


def test_quick_train_runs_jitted_and_vmapped(trained):
    """The quick configuration trains in one jitted, vmapped call, with finite, sensible curves."""
    config, (_, metrics) = cartpole.QUICK, trained
    assert metrics.recent_return.shape == metrics.episodes.shape == (2 * NUM_SEEDS, config.num_updates)
    assert np.all(np.isfinite(metrics.recent_return))
    assert np.all(metrics.episodes[:, 0] > 0) and np.all(np.diff(metrics.episodes, axis=1) >= 0)
    assert np.all((metrics.recent_return >= 1.0) & (metrics.recent_return <= config.num_steps))
    assert np.all((metrics.solved_update >= -1) & (metrics.solved_update < config.num_updates))


def test_training_improves_the_return_and_a_flipped_gradient_does_not(trained):
    """Statistical: in 5 updates the surrogate's gradient raises the mean episode return over NUM_SEEDS seeds;
    the same check rejects the sign-flipped surrogate, which lowers it just as surely."""
    signs, metrics = trained
    assert_return_improves(metrics.recent_return[signs > 0])
    with pytest.raises(AssertionError, match="not shown to improve"):
        assert_return_improves(metrics.recent_return[signs < 0])
    assert_return_improves(-metrics.recent_return[signs < 0])


def test_auto_resets_happen(batch):
    """Every env ends several episodes, and the observation after each end is a fresh reset state."""
    assert np.all(batch.dones.sum(axis=0) >= 2)
    t, e = np.nonzero(batch.dones[:-1])
    assert np.all(np.abs(batch.obs[t + 1, e]) <= 0.05)


def test_reward_to_go_does_not_leak_across_auto_resets(batch):
    """Q_{e,t} from the rollout equals Σ_{k=t}^{end} γ^{k-start} r_k summed over t's own episode alone.

    Episodes are split at the rollout's dones; the last, cut-off one ends at
    the rollout's end. CartPole's rewards are all 1, so any leak would add.
    """
    q = np.asarray(jax.jit(cartpole.rewards_to_go, static_argnums=1)(batch, GAMMA))
    assert q.shape == (NUM_STEPS, NUM_ENVS)
    for e in range(NUM_ENVS):
        ends = np.flatnonzero(batch.dones[:, e]) + 1
        for start, stop in zip(np.concatenate([[0], ends]), np.concatenate([ends, [NUM_STEPS]])):
            for t in range(start, stop):
                expected = sum(GAMMA ** (k - start) * batch.rewards[k, e] for k in range(t, stop))
                np.testing.assert_allclose(q[t, e], expected, rtol=1e-5)


def test_episode_returns_and_mask(batch):
    """At each episode end the recorded return is the episode's length (reward 1 per step); the mask
    keeps exactly the steps up to each env's last episode end."""
    for e in range(NUM_ENVS):
        ends = np.flatnonzero(batch.dones[:, e])
        lengths = np.diff(np.concatenate([[-1], ends]))
        np.testing.assert_array_equal(batch.episode_returns[ends, e], lengths)
        assert np.sum(batch.episode_returns[:, e] != 0) == len(ends)
        mask = np.asarray(cartpole.complete_episodes(jnp.asarray(batch.dones)))[:, e]
        np.testing.assert_array_equal(mask, np.arange(NUM_STEPS) <= ends[-1])


def test_tracker_keeps_the_last_window_returns():
    """Pushes of fewer and of more episodes than the window: the buffer holds the last `window` returns."""
    rng = np.random.default_rng(0)
    window = 5
    tracker = cartpole.Tracker(jnp.zeros(window), jnp.zeros((), jnp.int32))
    push = jax.jit(cartpole.track)
    seen: list[float] = []
    for num_done in (3, 0, 4, 12, 1):
        dones = np.zeros(24)
        dones[rng.choice(24, num_done, replace=False)] = 1.0
        returns = rng.integers(1, 500, 24) * dones
        tracker = push(tracker, jnp.asarray(returns.reshape(6, 4)), jnp.asarray(dones.reshape(6, 4)))
        seen += returns[dones > 0].tolist()
        assert int(tracker.count) == len(seen)
        filled = min(len(seen), window)
        np.testing.assert_array_equal(np.sort(np.asarray(tracker.returns)[:filled]), np.sort(seen[-window:]))
