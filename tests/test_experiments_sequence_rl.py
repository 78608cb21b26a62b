"""Tests of experiments.sequence_rl: the verifier, the cached sampler against teacher forcing and π, every run's
loss gradient, and a tiny jitted, vmapped run through to the table."""

import dataclasses
import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt
from experiments import common
from experiments import sequence_rl as sr

# P = 4 digits of 0..4, END = 5, T = 6; a one-layer transformer of width 8.
TINY = dataclasses.replace(sr.QUICK, max_response=6, d_model=8, num_heads=2, num_prompts=2, group_size=3,
                           num_steps=4, log_every=2, num_seeds=2, runs=("ppo_rho_k3",))
END = TINY.end


def perturbed_params(key: jax.Array) -> sr.Params:
    """The initial parameters with N(0, 0.5²) noise on every leaf: a policy far from uniform."""
    k_init, k_noise = jax.random.split(key)
    params = sr.init_params(TINY, k_init)
    leaves, tree = jax.tree.flatten(params)
    noise = [jax.random.normal(k, leaf.shape) for k, leaf in zip(jax.random.split(k_noise, len(leaves)), leaves)]
    return jax.tree.unflatten(tree, [leaf + 0.5 * n for leaf, n in zip(leaves, noise)])


def test_reward_on_hand_made_responses():
    """Prompt (3, 1, 4, 1), sorted (1, 1, 3, 4): the answer is the first 4 tokens, the tail before END is ignored,
    and an END among the first 4 or no END at all scores 0."""
    prompt = jnp.array([3, 1, 4, 1])
    cases = {
        (1, 1, 3, 4, END, 0): 1.0,
        (1, 1, 3, 4, 2, END): 1.0,        # a tail of chatter
        (1, 1, 3, 4, END, END): 1.0,      # padding after END is ignored
        (1, 1, 0, 4, END, 3): 0.75,
        (4, 3, 1, 1, END, 0): 0.0,
        (1, 1, 3, END, 4, END): 0.0,      # too short
        (1, 1, 3, 4, 2, 2): 0.0,          # truncated at T
    }
    tokens = jnp.array(list(cases), jnp.int32)
    rewards = jax.jit(jax.vmap(lambda y: sr.reward(TINY, prompt, y)))(tokens)
    np.testing.assert_allclose(rewards, list(cases.values()))


@pytest.fixture(scope="module")
def sampled():
    """2000 responses to one prompt from a perturbed policy: tokens, the sampler's log-probs, the teacher-forced
    logits of the same tokens."""
    prompts = jnp.tile(jnp.array([[3, 1, 4, 1]], jnp.int32), (2000, 1))

    @functools.partial(jax.jit, compiler_options=common.FAST_COMPILE)
    def draw(key):
        k_params, k_sample = jax.random.split(key)
        params = perturbed_params(k_params)
        tokens, log_probs = sr.sample(TINY, params, prompts, k_sample)
        return tokens, log_probs, sr.token_logits(TINY, params, prompts, tokens)

    return jax.tree.map(np.asarray, draw(jax.random.key(1)))


def test_sampler_matches_teacher_forcing_and_respects_end(sampled):
    """The cached decoder's log-probs equal the teacher-forced ones at every position; tokens are digits or END;
    the mask is 1 up to and including the first END and 0 after it, or 1 throughout without an END."""
    tokens, log_probs, logits = sampled
    assert tokens.shape == log_probs.shape == (2000, TINY.max_response) and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() <= END
    np.testing.assert_allclose(log_probs, lt.rl.sequence.token_log_probs(logits, tokens), rtol=1e-4, atol=1e-4)
    mask = np.asarray(lt.rl.sequence.response_mask(tokens, END))
    is_end = tokens == END
    ended = is_end.any(axis=1)
    length = np.where(ended, np.argmax(is_end, axis=1) + 1, TINY.max_response)
    np.testing.assert_array_equal(mask, np.arange(TINY.max_response) < length[:, None])
    assert 0.05 < ended.mean() < 1.0 and len(np.unique(length)) > 2


def test_sampler_draws_from_the_policy(sampled):
    """Statistical: the first token's indicators over 2000 draws are centred on softmax of its logits."""
    tokens, _, logits = sampled
    indicators = np.eye(TINY.num_values + 1)[tokens[:, 0]]
    lt.testing.assert_unbiased(indicators, np.asarray(jax.nn.softmax(logits[0, 0]), np.float64))


def synthetic_batch(key: jax.Array) -> tuple[sr.Batch, jax.Array]:
    """B = 3 prompts × G = 4 random responses, uniform rewards, π_old in (0.05, 0.9) per token, π_ref uniform;
    and log π_θ = log π_old + N(0, 0.1²), so that ratios and clips are live."""
    b, g, t = 3, 4, TINY.max_response
    keys = jax.random.split(key, 4)
    tokens = jax.random.randint(keys[0], (b, g, t), 0, END + 1)
    old = jnp.log(jax.random.uniform(keys[1], (b, g, t), minval=0.05, maxval=0.9))
    batch = sr.Batch(jnp.zeros((b, g, TINY.num_digits), jnp.int32), tokens, lt.rl.sequence.response_mask(tokens, END),
                     jax.random.uniform(keys[2], (b, g)), old, jnp.full((b, g, t), jnp.log(1 / (END + 1))))
    return batch, old + 0.1 * jax.random.normal(keys[3], (b, g, t))


def test_every_run_has_a_finite_loss_gradient_that_ignores_padding():
    """On a synthetic batch, every run's loss has a finite gradient in log π_θ(y_t), nonzero somewhere and exactly
    zero where the mask is 0."""

    @functools.partial(jax.jit, compiler_options=common.FAST_COMPILE)
    def gradients(key):
        batch, log_prob_t = synthetic_batch(key)
        return batch.mask_t, {name: jax.value_and_grad(lambda lp: sr.loss(TINY, name, lp, batch))(log_prob_t)
                              for name in sr.RUNS}

    mask, out = jax.tree.map(np.asarray, gradients(jax.random.key(2)))
    assert 0 < mask.mean() < 1
    for name, (value, grad) in out.items():
        assert np.isfinite(value) and np.all(np.isfinite(grad)), name
        assert np.any(grad != 0) and np.all(grad[mask == 0] == 0), name


@pytest.fixture(scope="module")
def results():
    """The tiny run, compiled with XLA's fastest options (it runs a few steps)."""
    with mock.patch.object(sr, "COMPILER_OPTIONS", common.FAST_COMPILE):
        return sr.run(TINY)


@pytest.mark.slow
def test_tiny_run_is_jitted_vmapped_and_sensible(results):
    """One run × two seeds × two chunks: rewards and success in [0, 1], lengths in [1, T], KL ≥ 0 and finite."""
    assert list(results["runs"]) == list(TINY.runs) and results["steps"] == [2, 4]
    for r in results["runs"].values():
        for metric in ("reward", "success", "length", "kl"):
            values = np.asarray(r[metric], float)
            assert values.shape == (TINY.num_seeds, 2) and np.all(np.isfinite(values)), metric
        assert np.all((np.asarray(r["reward"]) >= 0) & (np.asarray(r["reward"]) <= 1))
        assert np.all((np.asarray(r["length"]) >= 1) & (np.asarray(r["length"]) <= TINY.max_response))
        assert np.all(np.asarray(r["kl"]) >= 0)
        assert r["train_seconds"] > 0 and r["compile_seconds"] > 0


@pytest.mark.slow
def test_table_has_one_row_per_run(results):
    lines = sr.format_table(results).splitlines()
    assert lines[0].startswith("| run | final reward | fully correct |") and lines[1].startswith("|---|")
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == [sr.LABELS[name] for name in TINY.runs]
    assert [row["run"] for row in sr.summary_rows(results)] == list(TINY.runs)
