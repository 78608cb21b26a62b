"""Tests of experiments.sequence_policy: the exact objective, the sampler, and the estimators against ∇J."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import logtrick as lt
from experiments import common
from experiments import sequence_policy as sp

# V = 3, L = 4: 81 sequences, 475 parameters.
CONFIG = sp.Config(vocab_size=3, target=(0, 1, 2, 2), hidden=8, num_estimates=2000)


@pytest.fixture(scope="module")
def params():
    return jax.jit(lambda k: sp.init_params(CONFIG, k))(jax.random.key(0))


KEYS = jax.random.split(jax.random.key(1), CONFIG.num_estimates)


@pytest.fixture(scope="module")
def draw():
    return jax.jit(sp.make_draw(CONFIG), compiler_options=common.FAST_COMPILE)


@pytest.fixture(scope="module")
def drawn(params, draw):
    """The exact gradient (through the "exact" method) and num_estimates independent estimates of each
    estimator, flattened."""
    exact = sp.METHODS["exact"](CONFIG)
    exact = jax.jit(lambda p: ravel_pytree(exact.estimate(p, (), jax.random.key(0))[0])[0],
                    compiler_options=common.FAST_COMPILE)(params)
    estimates, _ = draw(params, KEYS)
    return np.asarray(exact, np.float64), {e: np.asarray(x, np.float64) for e, x in estimates.items()}


def test_reward_is_matches_plus_palindrome_bonus():
    rewards = jax.vmap(lambda y: sp.reward(CONFIG, jnp.asarray(y)))(
        jnp.asarray([(0, 1, 2, 2), (0, 1, 1, 0), (2, 2, 2, 2), (1, 0, 0, 0)]))
    np.testing.assert_allclose(rewards, [1.0, 0.5 + 1.0, 0.5 + 1.0, 0.0])


@pytest.fixture(scope="module")
def tables(params):
    """Over all 81 sequences: log π by prefix sharing and by teacher forcing, R; and J."""
    ys = sp.all_sequences(CONFIG)

    @functools.partial(jax.jit, compiler_options=common.FAST_COMPILE)
    def evaluate(p):
        return (sp.all_log_probs(CONFIG, p), jax.vmap(lambda y: sp.log_prob(CONFIG, p, y))(ys),
                jax.vmap(lambda y: sp.reward(CONFIG, y))(ys), sp.exact_objective(CONFIG, p))

    return evaluate(params)


def test_exact_objective_sums_over_all_sequences(tables):
    """π sums to 1 over the V^L sequences, the prefix-sharing log-probabilities equal
    teacher-forced ones, and J is Σ π(y) R(y)."""
    ys = np.asarray(sp.all_sequences(CONFIG))
    assert ys.shape == (81, 4) and len({tuple(y) for y in ys}) == 81
    log_probs, teacher_forced, rewards, objective = tables
    np.testing.assert_allclose(np.exp(np.asarray(log_probs, np.float64)).sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(log_probs, teacher_forced, atol=1e-5)
    np.testing.assert_allclose(objective, np.exp(log_probs) @ rewards, rtol=1e-5)


def test_sampler_draws_from_the_policy(params, tables):
    """Statistical: indicators of 4000 sampled sequences are centred on π(y) for all 81 y (z-test)."""
    ys = jax.jit(jax.vmap(lambda k: sp.sample(CONFIG, params, k)), compiler_options=common.FAST_COMPILE)(
        jax.random.split(jax.random.key(2), 4000))
    codes = np.asarray(ys) @ CONFIG.vocab_size ** np.arange(CONFIG.length - 1, -1, -1)
    indicators = np.eye(CONFIG.vocab_size ** CONFIG.length)[codes]
    lt.testing.assert_unbiased(indicators, np.exp(np.asarray(tables[0], np.float64)))


@pytest.mark.parametrize("estimator", ["reinforce", "rloo"])
def test_unbiased_estimators(drawn, estimator):
    """Statistical: 2000 estimates (G = 8) z-tested against jax.grad of the exact J, all 475 coordinates."""
    exact, estimates = drawn
    lt.testing.assert_unbiased(estimates[estimator], exact)


def test_grpo_is_biased(drawn):
    """Statistical: the same z-test rejects GRPO; its mean is a multiple c > 1 of ∇J to first order, and each
    estimate is a positive multiple of the RLOO estimate from the same group."""
    exact, estimates = drawn
    with pytest.raises(AssertionError, match="estimates are biased"):
        lt.testing.assert_unbiased(estimates["grpo"], exact)
    stats = sp.accuracy(estimates["grpo"], exact)
    assert stats["best_scale"] > 1.5 and stats["cosine_of_mean"] > 0.95
    assert stats["max_abs_z"] > stats["threshold"]
    grpo, rloo = estimates["grpo"], estimates["rloo"]
    nonzero = np.linalg.norm(rloo, axis=1) > 0
    cosine = np.sum(grpo * rloo, axis=1)[nonzero] / (
        np.linalg.norm(grpo, axis=1) * np.linalg.norm(rloo, axis=1))[nonzero]
    np.testing.assert_allclose(cosine, 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.linalg.norm(grpo, axis=1) == 0, ~nonzero)


def test_group_of_equal_rewards_gives_exactly_zero_estimates(params, draw):
    """RLOO's and GRPO's estimates are exactly zero where, and only where, a group's rewards are all equal:
    at a policy that favours token 0 (bias +4), where about a third of the groups are all (0, 0, 0, 0)."""
    dense = params["params"]["Dense_0"]
    peaked = {"params": {**params["params"], "Dense_0": {**dense, "bias": dense["bias"].at[0].add(4.0)}}}
    estimates, rewards = draw(peaked, KEYS)
    equal = np.all(np.asarray(rewards) == np.asarray(rewards)[:, :1], axis=1)
    assert 0.1 < equal.mean() < 0.9
    for estimator in ("rloo", "grpo"):
        np.testing.assert_array_equal(np.linalg.norm(np.asarray(estimates[estimator]), axis=1) == 0, equal)
