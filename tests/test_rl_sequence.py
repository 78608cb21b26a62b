"""lt.rl.sequence: token blocks, advantages, aggregations, PPO clipping, KL penalties and the exact oracle.

The KL tests are statistical: a tabular autoregressive policy over V = 3 tokens and T = 3 positions (end token
0; 15 responses), batches of B = 4 prompts × G = 4 responses drawn exactly from π (on policy) or from a
perturbed π_old (off policy), 4000 independent batches, and `lt.testing.assert_unbiased` (α = 1e-3) of minus
each loss's gradient against ``jax.grad`` of the exact objective it should ascend.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt
from logtrick.rl import sequence as sq

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
V, T, END, B, G, BETA = 3, 3, 0, 4, 4, 0.5
TOKENS, MASK = map(jnp.asarray, sq.enumerate_responses(V, T, END))
RNG = np.random.default_rng(0)
THETA = jnp.asarray(RNG.normal(size=(T, V, V)), jnp.float32)
OLD = THETA + 0.5 * jnp.asarray(RNG.normal(size=(T, V, V)), jnp.float32)
REF = jnp.asarray(RNG.normal(size=(T, V, V)), jnp.float32)
REWARD = jnp.asarray(RNG.uniform(size=TOKENS.shape[0]), jnp.float32)


def token_log_probs(params, tokens):
    """A tabular policy: logits of token t from (t, the previous token), the first after END."""
    previous = jnp.concatenate([jnp.full(tokens.shape[:-1] + (1,), END), tokens[..., :-1]], axis=-1)
    return sq.token_log_probs(params[jnp.arange(T), previous], tokens)


def response_log_probs(params):
    return sq.sequence_log_probs(token_log_probs(params, TOKENS), MASK)


def objective(params, rewards, beta, divergence="reverse"):
    """E_π[r] − β KL, with KL(π‖π_ref) ("reverse") or KL(π_ref‖π) ("forward"), exactly."""
    if divergence == "reverse":
        return sq.exact_objective(response_log_probs(params), rewards, response_log_probs(REF), beta=beta)
    ref = response_log_probs(REF)
    return (sq.exact_objective(response_log_probs(params), rewards, ref, beta=0.0)
            - beta * jnp.sum(jnp.exp(ref) * (ref - response_log_probs(params))))


def test_enumeration_lists_every_response_once_and_the_oracle_is_the_sum():
    """15 = 1 + 2 + 4 + 8 responses, distinct after masking; the tabular π sums to 1 over them; J is the sum."""
    assert TOKENS.shape == (1 + 2 + 4 + 8, T)
    assert len({tuple(np.asarray(t)[np.asarray(m) > 0]) for t, m in zip(TOKENS, MASK)}) == TOKENS.shape[0]
    np.testing.assert_allclose(jnp.sum(jnp.exp(response_log_probs(THETA))), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(sq.response_mask(TOKENS, END), MASK)
    p, p_ref = jnp.exp(response_log_probs(THETA)), jnp.exp(response_log_probs(REF))
    expected = jnp.sum(p * REWARD) - BETA * jnp.sum(p * jnp.log(p / p_ref))
    np.testing.assert_allclose(objective(THETA, REWARD, BETA), expected, rtol=1e-5)


def test_advantages():
    rewards = jnp.array([[1.0, 2.0, 4.0, 5.0], [0.0, 0.0, 1.0, 3.0]])
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(sq.rloo_advantages(rewards), centred * 4 / 3, rtol=1e-6)
    np.testing.assert_allclose(sq.dr_grpo_advantages(rewards), centred, rtol=1e-6)
    np.testing.assert_allclose(sq.grpo_advantages(rewards, eps=0.0), centred / rewards.std(axis=1, keepdims=True),
                               rtol=1e-6)
    np.testing.assert_allclose(sq.reinforce_pp_advantages(rewards, eps=0.0),
                               (rewards - rewards.mean()) / rewards.std(), rtol=1e-6)
    np.testing.assert_allclose(sq.baseline_advantages(rewards, jnp.array([1.0, 2.0])),
                               rewards - jnp.array([[1.0], [2.0]]))
    with pytest.raises(ValueError, match=r"baseline_advantages: `baseline` must have shape \(B,\)"):
        sq.baseline_advantages(rewards, jnp.ones(3))
    with pytest.raises(ValueError, match="rloo_advantages: needs groups of at least 2"):
        sq.rloo_advantages(jnp.ones((3, 1)))


def test_aggregations_weigh_tokens_as_the_libraries_do():
    """Two responses of lengths 1 and 3 with per-token loss 1: token mean 1, sequence mean 1, token sum 4 / (2·4)."""
    loss_t = jnp.ones((1, 2, 4))
    mask_t = jnp.array([[[1.0, 0, 0, 0], [1.0, 1, 1, 0]]])
    values = {mode: float(sq.aggregate(loss_t * jnp.array([1.0, 2.0])[:, None], mask_t, mode))
              for mode in sq.AGGREGATIONS}
    assert values == pytest.approx({"token_mean": 7 / 4, "sequence_mean": 3 / 2, "token_sum": 7 / 8})
    with pytest.raises(ValueError, match="aggregate: `mode` must be one of"):
        sq.aggregate(loss_t, mask_t, "mean")


def test_ppo_clip_stops_the_gradient_outside_the_trust_region():
    """A = +1: no gradient once ρ > 1 + ε; A = −1: none once ρ < 1 − ε; inside, the gradient is −ρ A ∇ log π."""
    old = jnp.log(jnp.full((1, 1, 1), 0.5))
    mask = jnp.ones((1, 1, 1))
    grad = lambda lp, adv: jax.grad(lambda x: sq.policy_loss(x, adv, mask, old_log_prob_t=old,  # noqa: E731
                                                             clip_epsilon=0.2))(lp)
    assert float(grad(old + 0.5, jnp.ones((1, 1)))[0, 0, 0]) == 0.0
    assert float(grad(old - 0.5, -jnp.ones((1, 1)))[0, 0, 0]) == 0.0
    np.testing.assert_allclose(grad(old + 0.1, jnp.ones((1, 1)))[0, 0, 0], -np.exp(0.1), rtol=1e-6)


def batch_terms(params, key, sampler):
    """One batch drawn from ``sampler`` params: token log-probs under θ, π_old (= sampler), π_ref; mask; rewards."""
    index = jax.random.categorical(key, response_log_probs(sampler), shape=(B, G))
    tokens, mask = TOKENS[index], MASK[index]
    return (token_log_probs(params, tokens), sg_token_log_probs(sampler, tokens), sg_token_log_probs(REF, tokens),
            mask, REWARD[index])


def sg_token_log_probs(params, tokens):
    return jax.lax.stop_gradient(token_log_probs(params, tokens))


def loss_of(name, params, key):
    """Minus a surrogate of J whose gradient each configuration claims; all scaled so that ∇ = −ĝ exactly."""
    on_policy = not name.endswith("off policy")
    lp, old, ref, mask, rewards = batch_terms(params, key, THETA if on_policy else OLD)
    old_arg = None if on_policy else old
    # off policy only the KL term is tested (the rewards' per-token PPO ratios are the usual approximation)
    pg = T * sq.policy_loss(lp, sq.rloo_advantages(rewards), mask) if on_policy else 0.0
    if name == "k1 in the reward, sequence":
        penalised = rewards - sq.kl_in_reward(lp, ref, mask, beta=BETA, level="sequence")
        return T * sq.policy_loss(lp, sq.rloo_advantages(penalised), mask)
    if name == "k1 in the reward, token":
        adv = sq.rloo_advantages(rewards)[..., None] - sq.kl_in_reward(lp, ref, mask, beta=BETA, level="token")
        return T * sq.policy_loss(lp, adv, mask)
    estimator, level = name.split(" ")[0], "sequence" if "sequence" in name else "token"
    ratio = "differentiable" if "differentiable" in name else "detached"
    return pg + BETA * T * sq.kl_loss(lp, ref, mask, estimator=estimator.replace("ρ·", ""), level=level,
                                      old_log_prob_t=old_arg, ratio=ratio)


# configuration: the exact objective its gradient is unbiased for
TRUTHS = {
    "k1 in the reward, sequence": lambda p: objective(p, REWARD, BETA),
    "k1 in the reward, token": lambda p: objective(p, REWARD, BETA),
    "k1 as a loss, token": lambda p: objective(p, REWARD, 0.0),                 # zero expected KL gradient
    "k2 as a loss, sequence": lambda p: objective(p, REWARD, BETA),
    "k3 as a loss, sequence": lambda p: objective(p, REWARD, BETA, "forward"),  # the forward KL
    "ρ·k3 differentiable, sequence": lambda p: objective(p, REWARD, BETA),
    "ρ·k3 differentiable, sequence, off policy": lambda p: objective(p, jnp.zeros_like(REWARD), BETA),
    "ρ·k3 detached, sequence, off policy": lambda p: objective(p, jnp.zeros_like(REWARD), BETA, "forward"),
}
# configurations unbiased for neither KL: k2 and k3 per token see each token's own ratio, not the sequence's
PARTIAL = ("k2 as a loss, token", "k3 as a loss, token")


@pytest.fixture(scope="module")
def kl_estimates():
    def one(key):
        return {name: -jax.grad(lambda p: loss_of(name, p, key))(THETA) for name in (*TRUTHS, *PARTIAL)}

    return jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 4000))


def test_kl_penalties_ascend_the_objectives_the_papers_derive(kl_estimates):
    """Statistical: k1 in the reward (sequence and token level, reward to go), k2 as a sequence-level loss and
    ρ·k3 with a differentiable ratio (on and off policy) are unbiased for ∇(E r − β KL(π‖π_ref)); k1 as a loss
    for ∇E r (its KL gradient has mean zero); k3 as a loss and ρ·k3 with a detached ratio for
    ∇(E r − β KL(π_ref‖π)), the forward KL. One Bonferroni test over all eight."""
    lt.testing.assert_unbiased({name: kl_estimates[name] for name in TRUTHS},
                               {name: jax.grad(truth)(THETA) for name, truth in TRUTHS.items()})


def test_the_common_wrong_kl_gradients_are_rejected(kl_estimates):
    """Statistical: against the reverse-KL objective, k1 and k3 as a loss and the detached ρ·k3 are rejected;
    k2 and k3 as per-token losses are rejected against both the reverse and the forward KL objectives."""
    reverse = jax.grad(lambda p: objective(p, REWARD, BETA))(THETA)
    forward = jax.grad(lambda p: objective(p, REWARD, BETA, "forward"))(THETA)
    reverse_kl_only = jax.grad(lambda p: objective(p, jnp.zeros_like(REWARD), BETA))(THETA)
    wrong = {"k1 as a loss, token": reverse, "k3 as a loss, sequence": reverse,
             "ρ·k3 detached, sequence, off policy": reverse_kl_only,
             "k2 as a loss, token": reverse, "k3 as a loss, token": forward}
    for name, target in wrong.items():
        assert lt.testing.check_unbiased(kl_estimates[name], target).verdict == "biased", name
    assert lt.testing.check_unbiased(kl_estimates["k3 as a loss, token"], reverse).verdict == "biased"


def test_bad_arguments_name_the_argument():
    lp, mask = jnp.zeros((2, 3, 4)), jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"policy_loss: `advantages` must have shape \(B, G\) or \(B, G, T\)"):
        sq.policy_loss(lp, jnp.zeros((2, 4)), mask)
    with pytest.raises(ValueError, match=r"kl_loss: `ref_log_prob_t` has shape \(2, 3, 5\)"):
        sq.kl_loss(lp, jnp.zeros((2, 3, 5)), mask, estimator="k1")
    with pytest.raises(ValueError, match="kl_estimates: `estimator` must be one of"):
        sq.kl_loss(lp, lp, mask, estimator="k4")
    with pytest.raises(ValueError, match=r"policy_loss: `log_prob_t` must be a float array of shape \(B, G, T\)"):
        sq.policy_loss(jnp.zeros((3, 4)), jnp.zeros((3,)), jnp.ones((3, 4)))
