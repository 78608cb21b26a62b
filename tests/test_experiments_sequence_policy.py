"""Tests of experiments.sequence_policy: the exact objective, the sampler, and the estimators against ∇J."""

import functools
import itertools

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


def python_reward(y):
    """(1/L) Σ_t [y_t = target_t] + bonus · [y reads the same backwards], in plain python."""
    matches = sum(a == b for a, b in zip(y, CONFIG.target)) / len(y)
    return matches + CONFIG.palindrome_bonus * (tuple(y) == tuple(reversed(y)))


def brute_force_log_probs(params):
    """log π(y) of every sequence y, in base-V order: the tree of prefixes expanded depth by depth in a python loop,
    each prefix's next-token distribution from one decoding step of the policy network on its parent's state."""
    model = sp.GRUStep(CONFIG.vocab_size, CONFIG.hidden)
    h, tokens, log_p = jnp.zeros((1, CONFIG.hidden)), jnp.full((1,), CONFIG.vocab_size), jnp.zeros(1)
    for _ in range(CONFIG.length):
        h, logits = jax.vmap(model.apply, (None, 0, 0))(params, h, tokens)
        log_p = (log_p[:, None] + jax.nn.log_softmax(logits)).reshape(-1)  # child p·V + v of prefix p
        h = jnp.repeat(h, CONFIG.vocab_size, axis=0)
        tokens = jnp.tile(jnp.arange(CONFIG.vocab_size), len(log_p) // CONFIG.vocab_size)
    return log_p


SEQUENCES = list(itertools.product(range(CONFIG.vocab_size), repeat=CONFIG.length))
REWARDS = {  # R(y) in base-V order; the broken variants: no palindrome bonus, and each sequence's tokens reversed
    "reward": np.array([python_reward(y) for y in SEQUENCES]),
    "no bonus": np.array([python_reward(y) - CONFIG.palindrome_bonus * (y == y[::-1]) for y in SEQUENCES]),
    "reversed": np.array([python_reward(y[::-1]) for y in SEQUENCES]),
}


@pytest.fixture(scope="module")
def reference(params):
    """Brute force: log π of every sequence, and for each reward table J = Σ_y π(y) R(y) and its gradient,
    flattened (one reverse pass through the enumeration per table)."""

    @functools.partial(jax.jit, compiler_options=common.FAST_COMPILE)
    def enumerate_all(p, rewards):
        probs, pullback = jax.vjp(lambda q: jnp.exp(brute_force_log_probs(q)), p)
        return probs, jax.vmap(lambda r: ravel_pytree(pullback(r)[0])[0])(rewards)

    probs, grads = enumerate_all(params, jnp.asarray(np.stack(list(REWARDS.values())), jnp.float32))
    probs, grads = np.asarray(probs, np.float64), np.asarray(grads, np.float64)
    return np.log(probs), {name: (probs @ r, g) for (name, r), g in zip(REWARDS.items(), grads)}


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


def test_exact_objective_against_brute_force_enumeration(tables, reference, drawn):
    """The experiment's sequences, log π (prefix sharing and teacher forcing), R, J and the "exact" method's ∇J
    equal a brute-force enumeration of the 81 sequences, prefix by prefix in a python loop, with R in plain python;
    a J or ∇J without the palindrome bonus, or with every sequence's tokens read in reverse, would not."""
    np.testing.assert_array_equal(sp.all_sequences(CONFIG), SEQUENCES)
    log_probs, teacher_forced, rewards, objective = tables
    brute_log_probs, objectives = reference
    np.testing.assert_allclose(np.exp(brute_log_probs).sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(log_probs, brute_log_probs, atol=1e-5)
    np.testing.assert_allclose(teacher_forced, brute_log_probs, atol=1e-5)
    np.testing.assert_allclose(rewards, REWARDS["reward"], rtol=1e-6)

    def check(want):
        np.testing.assert_allclose(objective, want[0], rtol=1e-5)
        np.testing.assert_allclose(drawn[0], want[1], rtol=1e-4, atol=1e-6)

    check(objectives["reward"])
    for broken in ("no bonus", "reversed"):
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            check(objectives[broken])


def test_sampler_draws_from_the_policy(params, tables):
    """Statistical: indicators of 4000 sampled sequences are centred on π(y) for all 81 y (Bonferroni test)."""
    ys = jax.jit(jax.vmap(lambda k: sp.sample(CONFIG, params, k)), compiler_options=common.FAST_COMPILE)(
        jax.random.split(jax.random.key(2), 4000))
    codes = np.asarray(ys) @ CONFIG.vocab_size ** np.arange(CONFIG.length - 1, -1, -1)
    indicators = np.eye(CONFIG.vocab_size ** CONFIG.length)[codes]
    lt.testing.assert_unbiased(indicators, np.exp(np.asarray(tables[0], np.float64)))


@pytest.mark.parametrize("estimator", ["reinforce", "rloo"])
def test_unbiased_estimators(drawn, reference, estimator):
    """Statistical: 2000 estimates (G = 8) tested against the brute-force ∇J, all 475 coordinates."""
    # Some coordinates of ∇J are about 1e-6, with standard errors below the default atol's floor of 1e-6.
    lt.testing.assert_unbiased(drawn[1][estimator], reference[1]["reward"][1], atol=1e-8)


def test_grpo_is_biased(drawn, reference):
    """Statistical: the same test rejects GRPO; its mean is a multiple c > 1 of ∇J to first order, and each
    estimate is a positive multiple of the RLOO estimate from the same group."""
    exact, estimates = reference[1]["reward"][1], drawn[1]
    with pytest.raises(AssertionError, match="estimates are biased"):
        lt.testing.assert_unbiased(estimates["grpo"], exact, atol=1e-8)
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
