"""Tests of logtrick.rl.tabular: the sampler, and `reinforce` against the exact return and its jax.grad.

The stochastic tests are statistical: z-tests on many independent, jitted
estimates with the standard error measured from those estimates, at a fixed
key and a false-rejection probability of at most 1e-3 each.
"""

import functools
import itertools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt
from logtrick.rl import tabular

HORIZON, GAMMA = 5, 0.9
NUM_EPISODES = 8
NUM_ESTIMATES = 4000
# Compiled to run once on small arrays: LLVM's optimisations would cost more than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
UNBIASED = [(False, None), (True, None), (False, "leave_one_out"), (True, "leave_one_out"),
            (False, "value"), (True, "value")]
MDP_VARIANTS = UNBIASED + [(True, "grpo")]
BANDIT_MEANS = jnp.array([1.0, 2.0, 3.0])
BANDIT_LOGITS = jnp.array([0.5, 0.0, -0.5])
TINY = (3, 0.8)  # horizon and gamma of the MDP checked by enumeration
PG_KWARGS = dict(horizon=HORIZON, gamma=GAMMA, num_episodes=NUM_EPISODES, baseline="leave_one_out")


def _sparse(mdp: tabular.MDP) -> tabular.MDP:
    """The MDP with state 0 unreachable after the first step."""
    transitions = mdp.transitions.at[:, :, 0].set(0.0)
    return mdp._replace(transitions=transitions / transitions.sum(axis=-1, keepdims=True))


@jit
def _setup(key):
    """The problem, its exact return and gradient, and every single-call check's outputs, in one compiled call."""
    k_mdp, k_logits, k_estimate, k_sample = jax.random.split(key, 4)
    mdp = tabular.random_mdp(k_mdp, num_states=4, num_actions=3)
    logits = jax.random.normal(k_logits, (4, 3))
    value, grad = jax.value_and_grad(tabular.exact_return, argnums=1)(mdp, logits, horizon=HORIZON, gamma=GAMMA)
    est = tabular.reinforce(mdp, **PG_KWARGS)
    exact_est = tabular.exact_estimator(mdp, horizon=HORIZON, gamma=GAMMA)
    calls = {
        "estimate": est.estimate(logits, est.init(logits), k_estimate),
        "policy_gradient": tabular.policy_gradient(mdp, logits, k_estimate, **PG_KWARGS),
        "loss_grad": jax.grad(lambda x: est.loss(x, (), k_estimate)[0])(logits),
        "exact_estimator": jax.value_and_grad(exact_est.loss, has_aux=True)(logits, exact_est.init(logits), key),
        "episodes": tabular.sample_episodes(_sparse(mdp), logits, k_sample, horizon=HORIZON, num_episodes=64),
    }
    calls["log_probs"] = tabular.log_probs(logits, calls["episodes"])
    k_tiny_mdp, k_tiny_logits = jax.random.split(k_mdp)
    tiny_mdp = tabular.random_mdp(k_tiny_mdp, num_states=2, num_actions=2)
    tiny_logits = jax.random.normal(k_tiny_logits, (2, 2))
    calls["tiny"] = (tiny_mdp, tiny_logits, tabular.exact_return(tiny_mdp, tiny_logits, horizon=TINY[0], gamma=TINY[1]))
    return mdp, logits, {"value": value, "grad": grad}, calls


@pytest.fixture(scope="module")
def setup():
    return _setup(jax.random.key(0))


@pytest.fixture(scope="module")
def problem(setup):
    return setup[:3]


@pytest.fixture(scope="module")
def mdp_estimates(problem):
    """``NUM_ESTIMATES`` independent (loss value, grads) of `reinforce` per (reward_to_go, baseline), one compiled call.

    Every variant's i-th estimate uses the same key, hence the same episodes
    (common random numbers), so variances are compared estimate by estimate.
    """
    mdp, logits, _ = problem
    estimators = [tabular.reinforce(mdp, horizon=HORIZON, gamma=GAMMA, num_episodes=NUM_EPISODES,
                                    reward_to_go=reward_to_go, baseline=baseline)
                  for reward_to_go, baseline in MDP_VARIANTS]

    def all_variants(key):
        return [jax.value_and_grad(est.loss, has_aux=True)(logits, est.init(logits), key) for est in estimators]

    estimates = jit(jax.vmap(all_variants))(jax.random.split(jax.random.key(1), NUM_ESTIMATES))
    return {variant: {"value": np.asarray(value, np.float64), "grad": np.asarray(grad, np.float64)}
            for variant, ((value, _), grad) in zip(MDP_VARIANTS, estimates)}


@pytest.fixture(scope="module")
def bandit_estimates():
    """As ``mdp_estimates``, per baseline of the bandit gradient."""

    def all_baselines(key):
        return [tabular.bandit_gradient(BANDIT_LOGITS, BANDIT_MEANS, key, num_samples=NUM_EPISODES, baseline=b)
                for b in tabular.BASELINES]

    estimates = jit(jax.vmap(all_baselines))(jax.random.split(jax.random.key(2), NUM_ESTIMATES))
    return {b: np.asarray(e, np.float64) for b, e in zip(tabular.BASELINES, estimates)}


def test_exact_return_matches_enumeration(setup):
    """DP return equals a brute-force sum over all (s_0, a_0, …, s_{H-1}, a_{H-1}) for a tiny MDP."""
    mdp, logits, exact = setup[3]["tiny"]
    horizon, gamma = TINY
    p, r, rho = (np.asarray(x, np.float64) for x in mdp)
    pi = np.asarray(jax.nn.softmax(logits), np.float64)
    total = 0.0
    for path in itertools.product(range(2), repeat=2 * horizon):
        states, actions = path[0::2], path[1::2]
        prob = rho[states[0]]
        for t in range(horizon):
            prob *= pi[states[t], actions[t]]
            if t + 1 < horizon:
                prob *= p[states[t], actions[t], states[t + 1]]
        total += prob * sum(gamma**t * r[states[t], actions[t]] for t in range(horizon))
    np.testing.assert_allclose(exact, total, rtol=1e-5)


def test_bandit_exact_is_horizon_one_mdp():
    mdp = tabular.bandit_mdp(BANDIT_MEANS)
    np.testing.assert_allclose(tabular.bandit_exact(BANDIT_LOGITS, BANDIT_MEANS),
                               tabular.exact_return(mdp, BANDIT_LOGITS[None], horizon=1, gamma=1.0), rtol=1e-6)


@pytest.mark.parametrize("reward_to_go,baseline", UNBIASED)
def test_reinforce_unbiased(problem, mdp_estimates, reward_to_go, baseline):
    """Statistical: the loss value is centred on exact_return, its logits gradient on jax.grad(exact_return)."""
    _, _, exact = problem
    lt.testing.assert_unbiased(mdp_estimates[reward_to_go, baseline], exact)


def test_reward_to_go_and_baselines_reduce_variance(mdp_estimates):
    """Statistical: each refinement has measurably lower total variance than what it refines."""
    grads = {variant: e["grad"] for variant, e in mdp_estimates.items()}
    plain, to_go = grads[False, None], grads[True, None]
    lt.testing.assert_variance_ratio(to_go, plain, at_most=1.0)
    lt.testing.assert_variance_ratio(grads[False, "leave_one_out"], plain, at_most=1.0)
    lt.testing.assert_variance_ratio(grads[True, "leave_one_out"], to_go, at_most=1.0)
    lt.testing.assert_variance_ratio(grads[True, "value"], to_go, at_most=1.0)


def _min_over_scales_max_abs_z(estimates, exact):
    """min over c of max_i |z_i(c)|, z_i(c) = (mean_i - c exact_i) / se_i, and the minimising c.

    Above the Bonferroni threshold, the z-test rejects "the mean is c ∇J" for
    every c at once: the estimator is not a rescaled gradient. max_i |·| is
    convex and piecewise linear in c, so its minimum lies where two pieces meet.
    """
    m = estimates.shape[0]
    se = estimates.std(axis=0, ddof=1) / np.sqrt(m)
    a, b = (estimates.mean(axis=0) / se).ravel(), (np.asarray(exact) / se).ravel()
    candidates = [(a[i] - s * a[j]) / (b[i] - s * b[j]) for i, j in itertools.product(range(a.size), repeat=2)
                  for s in (1.0, -1.0) if b[i] != s * b[j]]
    values = [np.max(np.abs(a - c * b)) for c in candidates]
    best = int(np.argmin(values))
    return values[best], candidates[best]


def _bonferroni_threshold(num_coordinates, significance=1e-3):
    return statistics.NormalDist().inv_cdf(1.0 - significance / (2.0 * num_coordinates))


def test_grpo_is_biased_and_not_a_rescaled_gradient(problem, mdp_estimates):
    """Statistical: the z-test rejects GRPO's mean as ∇J, and as c ∇J for every scale c; its value is still J's."""
    _, _, expected = problem
    exact, estimates = expected["grad"], mdp_estimates[True, "grpo"]["grad"]
    lt.testing.assert_unbiased(mdp_estimates[True, "grpo"]["value"], expected["value"])
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(estimates, exact)
    max_abs_z, scale = _min_over_scales_max_abs_z(estimates, exact)
    assert max_abs_z > _bonferroni_threshold(exact.size), (max_abs_z, scale)


@pytest.mark.parametrize("baseline", [None, "leave_one_out", "value"])
def test_bandit_gradient_unbiased(bandit_estimates, baseline):
    """Statistical: the sampled bandit gradient is centred on jax.grad(bandit_exact)."""
    exact = jax.grad(tabular.bandit_exact)(BANDIT_LOGITS, BANDIT_MEANS)
    lt.testing.assert_unbiased(bandit_estimates[baseline], exact)


def test_bandit_leave_one_out_reduces_variance_and_grpo_is_biased(bandit_estimates):
    """Statistical: RLOO beats no baseline; GRPO's mean is rejected as ∇J and as any c ∇J."""
    lt.testing.assert_variance_ratio(bandit_estimates["leave_one_out"], bandit_estimates[None], at_most=1.0)
    exact = jax.grad(tabular.bandit_exact)(BANDIT_LOGITS, BANDIT_MEANS)
    grpo = bandit_estimates["grpo"]
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(grpo, exact)
    max_abs_z, scale = _min_over_scales_max_abs_z(grpo, exact)
    assert max_abs_z > _bonferroni_threshold(exact.size), (max_abs_z, scale)


def test_policy_gradient_is_the_reinforce_estimate(setup):
    """policy_gradient(…) is reinforce(…).estimate's grads, and the estimate the loss's jax.grad, for the same key."""
    *_, calls = setup
    grads, state, aux = calls["estimate"]
    assert state == () and aux["f"].shape == (NUM_EPISODES,)
    np.testing.assert_array_equal(calls["policy_gradient"], grads)
    np.testing.assert_allclose(calls["loss_grad"], grads, rtol=1e-6, atol=1e-7)


def test_exact_estimator_is_exact_return(setup):
    _, _, exact, calls = setup
    (value, (state, aux)), grads = calls["exact_estimator"]
    np.testing.assert_allclose(value, exact["value"], rtol=1e-6)
    np.testing.assert_allclose(grads, exact["grad"], rtol=1e-6, atol=1e-7)  # float32 rounding of two exact sums
    assert state == () and aux["f"] == value


def test_sample_episodes_follow_the_mdp(setup):
    """Shapes, dtypes, rewards r(s, a), and transitions only where P(s'|s, a) > 0 (a sparse MDP)."""
    mdp, logits, _, calls = setup
    episodes, mdp = calls["episodes"], _sparse(mdp)
    assert episodes.states.shape == episodes.actions.shape == episodes.rewards.shape == (64, HORIZON)
    assert episodes.states.dtype == episodes.actions.dtype == jnp.int32
    np.testing.assert_array_equal(episodes.rewards, mdp.rewards[episodes.states, episodes.actions])
    assert np.all(episodes.states[:, 1:] != 0)
    np.testing.assert_allclose(calls["log_probs"], jax.nn.log_softmax(logits)[episodes.states, episodes.actions])


def test_input_checks(problem):
    mdp, logits, _ = problem
    kwargs = dict(horizon=HORIZON, gamma=GAMMA, num_episodes=NUM_EPISODES)
    key = jax.random.key(6)
    with pytest.raises(AssertionError):
        tabular.policy_gradient(mdp, logits[:, :2], key, **kwargs)
    with pytest.raises(AssertionError):
        tabular.exact_return(mdp._replace(initial=mdp.initial[:3]), logits, horizon=HORIZON, gamma=GAMMA)
    with pytest.raises(ValueError, match="baseline"):
        tabular.policy_gradient(mdp, logits, key, baseline="mean", **kwargs)
    with pytest.raises(ValueError, match="num_episodes"):
        tabular.policy_gradient(mdp, logits, key, horizon=HORIZON, gamma=GAMMA, num_episodes=1,
                                baseline="leave_one_out")
    with pytest.raises(ValueError, match="gamma"):
        tabular.policy_gradient(mdp, logits, key, horizon=HORIZON, gamma=0.0, num_episodes=NUM_EPISODES)
    with pytest.raises(ValueError, match="horizon"):
        tabular.exact_return(mdp, logits, horizon=0, gamma=GAMMA)
    with pytest.raises(AssertionError):
        tabular.bandit_exact(BANDIT_LOGITS, BANDIT_MEANS[:2])
    with pytest.raises(ValueError, match="num_episodes"):
        tabular.sample_episodes(mdp, logits, key, horizon=HORIZON, num_episodes=0)
    with pytest.raises(ValueError, match="baseline"):
        tabular.reinforce(mdp, baseline="mean", **kwargs)
    est = tabular.reinforce(mdp, **kwargs)
    with pytest.raises(TypeError, match="no extra arguments"):
        est.loss(logits, (), key, jnp.ones(3))
