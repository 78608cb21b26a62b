"""Derivatives of `lt.rl.dice_objective` on a tabular MDP against dynamic programming.

Two agents act at once, each with its own logits table, so the mixed second
derivative across their parameters (what LOLA needs) is checked too.
Statistical tests: many independent estimates, `lt.testing.assert_unbiased`
against ``jax.grad`` / ``jax.hessian`` of `lt.rl.tabular.exact_return`.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

import logtrick as lt
from logtrick.rl import tabular

HORIZON, GAMMA, EPISODES, ESTIMATES = 3, 0.9, 8, 2000
# Compiled to run once on small arrays: LLVM's optimisations would cost more than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
NUM_STATES, NUM_MOVES = 3, 2


def joint_logits(theta_1: jax.Array, theta_2: jax.Array) -> jax.Array:
    """log π(a|s) of the joint action a = 2 a_1 + a_2, agent k playing softmax(θ_k[s]): shape (S, 4)."""
    log_1, log_2 = jax.nn.log_softmax(theta_1), jax.nn.log_softmax(theta_2)
    return (log_1[:, :, None] + log_2[:, None, :]).reshape(NUM_STATES, NUM_MOVES * NUM_MOVES)


def objective(mdp: tabular.MDP, params: tuple[jax.Array, jax.Array], key: jax.Array, loaded: bool) -> jax.Array:
    """The mean DiCE objective of N sampled episodes, with the leave-one-out baseline if ``loaded``."""
    logits = joint_logits(*params)
    episodes = tabular.sample_episodes(mdp, logits, key, horizon=HORIZON, num_episodes=EPISODES)
    discounts = jnp.full_like(episodes.rewards, GAMMA)
    b = None
    if loaded:
        b = lt.baselines.leave_one_out_mean(jax.vmap(lt.rl.reward_to_go)(episodes.rewards, discounts), axis=0)
    log_pi = tabular.log_probs(logits, episodes)
    return jnp.mean(jax.vmap(lt.rl.dice_objective)(log_pi, episodes.rewards, discounts, b))


def per_step(mdp: tabular.MDP, params: tuple[jax.Array, jax.Array], key: jax.Array) -> jax.Array:
    """Σ_t Q̂_t □(log π_t): the REINFORCE surrogate, whose Hessian misses the cross-step terms."""
    logits = joint_logits(*params)
    episodes = tabular.sample_episodes(mdp, logits, key, horizon=HORIZON, num_episodes=EPISODES)
    to_go = jax.vmap(lt.rl.reward_to_go)(episodes.rewards, jnp.full_like(episodes.rewards, GAMMA))
    return jnp.mean(jnp.sum(to_go * lt.magic_box(tabular.log_probs(logits, episodes)), axis=1))


def derivatives(fn, params, v):
    """Value, gradient, Hessian (its off-diagonal blocks the mixed ∂²/∂θ₁∂θ₂) and forward-over-reverse HVP."""
    hvp = jax.jvp(jax.grad(fn), (params,), (v,))[1]
    return {"value": fn(params), "grad": jax.grad(fn)(params), "hessian": jax.hessian(fn)(params), "hvp": hvp}


@pytest.fixture(scope="module")
def problem():
    k_mdp, k_1, k_2, k_v = jax.random.split(jax.random.key(0), 4)
    mdp = tabular.random_mdp(k_mdp, NUM_STATES, NUM_MOVES * NUM_MOVES)
    params = tuple(0.5 * jax.random.normal(k, (NUM_STATES, NUM_MOVES)) for k in (k_1, k_2))
    v = tuple(jax.random.normal(k, (NUM_STATES, NUM_MOVES)) for k in jax.random.split(k_v))
    exact = jit(lambda m, p, u: derivatives(
        lambda q: tabular.exact_return(m, joint_logits(*q), horizon=HORIZON, gamma=GAMMA), p, u))(mdp, params, v)
    return mdp, params, v, exact


@pytest.fixture(scope="module")
def estimates(problem):
    """Every estimate from one compiled function, all surrogates on the same episodes per key."""
    mdp, params, v, _ = problem

    def draw(key):
        out = {name: derivatives(lambda q: objective(mdp, q, key, loaded), params, v)
               for name, loaded in (("dice", False), ("loaded_dice", True))}
        out["per_step"] = {"grad": jax.grad(lambda q: per_step(mdp, q, key))(params),
                           "hessian": jax.hessian(lambda q: per_step(mdp, q, key))(params)}
        return out

    return jit(jax.vmap(draw))(jax.random.split(jax.random.key(2), ESTIMATES))


@pytest.mark.parametrize("name", ["dice", "loaded_dice"])
def test_value_gradient_hessian_mixed_and_hvp(problem, estimates, name):
    """Statistical: the objective's value, jax.grad, jax.hessian (mixed blocks included) and HVP against DP.

    Vmapped over keys under jit; the HVP is jax.jvp of jax.grad, the exact one
    the same of ``exact_return``.
    """
    *_, exact = problem
    lt.testing.assert_unbiased(estimates[name], exact)


def test_per_step_surrogate_has_a_biased_hessian(problem, estimates):
    """Statistical, a check of the test's power: Σ_t Q̂_t □(log π_t) has the right gradient, not the right Hessian."""
    *_, exact = problem
    lt.testing.assert_unbiased(estimates["per_step"]["grad"], exact["grad"])
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(estimates["per_step"]["hessian"], exact["hessian"])
