"""Which gradient each loss of ``lt.rl.sequence`` follows: the configurations libraries ship, against exact gradients.

On policies small enough to list every response, the objective

    J(θ) = E_{y~π_θ}[r(y)] − β KL(π_θ ‖ π_ref),   KL(π_θ ‖ π_ref) = E_{y~π_θ}[log π_θ(y) − log π_ref(y)],

and its gradient are exact sums (``sq.exact_objective`` over ``sq.enumerate_responses``). Three problems, each
with B = 2 prompts (one logits table each) and groups of G = 4 responses per prompt:

    bandit     one token out of V = 5 (T = 1); rewards uniform on [0, 1]
    sequence   a tabular autoregressive policy, logits indexed by (position, previous token), V = 4 tokens with an
               end token, T = 4 (121 responses of 1 to 4 tokens); rewards uniform on [0, 1]
    length     the same shape with a correctness reward: 1 if the first token is 1 and the response ends within 3
               tokens, else 0, so that every long response is wrong; one hard prompt and one easy one

and a random π_ref. A row (:class:`Row`) is one training loss: ``policy_loss`` with an advantage (REINFORCE, RLOO,
GRPO, Dr. GRPO, REINFORCE++, or ReMax's greedy-response baseline) and an aggregation (token_mean, sequence_mean,
token_sum), optionally with a KL term: k1/k2/k3 in the reward (``kl_in_reward``, sequence or token level) or as a
loss (``β · kl_loss``, token or sequence level, the importance ratio ρ = π_θ/π_old detached or differentiable); on
policy, or off policy (the batch drawn from π_old, θ's logits plus noise, with the ratios ``policy_loss`` and
``kl_loss`` compute). The rows: advantage × aggregation without KL (β = 0); the KL options with RLOO and token_sum
(β = 0.1); GRPO as it ships (sequence_mean, k3 as a per-token loss); Dr. GRPO with k1 in the reward; off policy.

An estimate is ĝ = −∇_θ of a row's loss of one batch. Each of M = 1024 independent estimates averages K = 2048
batches, 2²¹ batches per problem and sampler: by ``lt.testing.estimates_needed`` on the estimates themselves, the
rows with a baseline detect a relative bias well under 1% with 95% power (each row's
``detectable_relative_bias``; REINFORCE's, without a baseline, about 1%). Per row, against its target ∇J (∇E[r]
when β = 0):

    relative bias      ‖E ĝ − ∇J‖ / ‖∇J‖, and the cosine of E ĝ and ∇J
    scale c*           ⟨E ĝ, ∇J⟩ / ‖∇J‖², and the bias after it, ‖E ĝ − c* ∇J‖ / ‖c* ∇J‖
    max |z|            of ``lt.testing.check_unbiased`` against ∇J, against f ∇J for the factor f the library
                       documents (1/T for token_sum, times (G − 1)/G for Dr. GRPO), and against some multiple of ∇J:
                       the estimates less their component along ∇J, tested against 0 (nothing fitted enters)
    verdict            "unbiased", "unbiased up to a constant factor f", or "biased"

and for a KL row, ``follows``: its KL term's estimates (the row's less the same row's without KL, on the same
batches) tested against −β f ∇D for

    reverse KL             D = KL(π ‖ π_ref)
    forward KL             D = KL(π_ref ‖ π)
    per-token reverse KL   D = Σ_t E_{y~μ}[mask_t KL(π(·|y_<t) ‖ π_ref(·|y_<t))], with the sampler μ's visiting
                           probabilities held fixed (μ = π_θ, or π_old off policy)
    per-token forward KL   the same with the two policies swapped
    zero                   D = 0

The length study gives dE[length]/ds, the rate of change of the exact expected length along the unit direction of
E ĝ and along that of ∇E[r].

The derivations the table reproduces (on policy, one step; s = ∇ log π(y), δ = log π_ref(y) − log π(y)):

    k1 as a loss             E[−∇δ] = E[s] = 0: no KL gradient (either level)
    k2 as a loss, sequence   ∇ δ²/2 = −δ s, whose mean is ∇KL(π ‖ π_ref): the reverse KL
    k3 as a loss, sequence   ∇(e^δ − 1 − δ) = (1 − π_ref/π) s, mean −Σ_y π_ref(y) ∇log π(y) = ∇KL(π_ref ‖ π)
    k2, k3 per token         the same at each token's context, the contexts' distribution untouched: per-token KLs
    k1 in the reward         the score function of log π − log π_ref: the reverse KL (per token, as a reward to go)
    ρ·k3, ρ differentiable   ∇(ρ k3) = −ρ δ s: the reverse KL on and off policy at sequence level; per token the
                             per-token reverse KL (on policy the same as k2 per token)
    ρ·k3, ρ detached         ρ ∇k3: the forward KL (sequence), the per-token forward KL (per token)
    k2, k3 in the reward     Σ_t k_t is not log π − log π_ref: neither

and for the advantages: REINFORCE, RLOO and a fixed baseline are unbiased, Dr. GRPO's group mean costs a factor
(G − 1)/G and token_sum a factor 1/T; a std (GRPO, REINFORCE++) or a sampled token count (token_mean,
sequence_mean) in a denominator biases.

Where a measurement disagrees with a paper, and why:

- DeepSeek-V3.2 calls ρ_t k3_t, with the per-token ratio ρ_t = π_θ(y_t|y_<t)/π_old(y_t|y_<t), an unbiased KL
  estimate. Its gradient is unbiased for the KL of each visited context, hence exact in the bandit (T = 1), but on
  the sequence policy it follows the per-token reverse KL, not ∇KL(π ‖ π_ref), on and off policy: the sequence KL's
  gradient also holds the effect of token t on the contexts of the tokens after it, which no per-token term sees
  (Tang and Munos 2025; ``kl_in_reward(level="token")`` carries it as a reward to go). At sequence level ρ·k3 is
  exact.
- Liu et al. (Dr. GRPO) argue that GRPO's std normalisation weighs each prompt by 1/std, up-weighting too easy and
  too hard ones. With a binary reward the exact expectation for one prompt is E ĝ = c(p) ∇p, c(p) = E[σ_k]/(p(1−p)),
  k ~ Bin(G, p) correct answers, σ_k = √(k(G − k))/G (a group of equal rewards gives 0): for G = 4, c only goes
  from 1.62 (p = ½) to 1.73 (p → 0). The length study's hard prompt (p = 0.09) weighs 1.05 times its easy one
  (p = 0.47), not the 1.75 of 1/√(p(1 − p)): the direction bias is real (the test rejects it) but small; with
  continuous rewards (the sequence problem), whose std varies between groups, it is many times larger.
- Their length bias of sequence_mean's 1/|o| is confirmed: with wrong answers long, E ĝ shortens responses more
  slowly than ∇E[r] does. token_mean (DAPO's) and GRPO's std move it the same way, much less; token_sum follows
  ∇E[r].
- Off policy, ``policy_loss`` weighs each token by its own ratio, not the sequence's: exact in the bandit, biased on
  the sequence policy (PPO's usual approximation), so the off-policy sequence rows are biased as a whole while their
  KL terms follow the derivations.

    python -m experiments.kl_truth_table [--quick]

writes ``results/kl_truth_table.json``.

References:
  Schulman, "Approximating KL Divergence", 2020. Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical
  Reasoning in Open Language Models", 2024 (GRPO). Liu et al., "Understanding R1-Zero-Like Training: A Critical
  Perspective", 2025 (Dr. GRPO). Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", 2025.
  Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in
  LLMs", 2024 (RLOO). Hu et al., "REINFORCE++", 2025. Li et al., "ReMax", 2024. DeepSeek-AI, "DeepSeek-V3.2: Pushing
  the Frontier of Open Large Language Models", 2025. Tang and Munos, "On a Few Pitfalls in KL Divergence Gradient
  Estimation for RL", 2025.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import logtrick as lt
from experiments import common
from logtrick.rl import sequence as sq

END = 0  # the end token
SHORT = 3  # the length study's correct answers have at most this many tokens, the end token included
EMPTY_LOGIT = -4.0  # the length study's logit of an empty answer
EASY_LOGIT = 1.5  # the length study's odd prompts' logits of answering 1 and of ending after it
ALTERNATIVES = ("reverse KL", "forward KL", "per-token reverse KL", "per-token forward KL", "zero")

# advantage name: (rewards (B, G), baseline (B,)) -> advantages (B, G)
ADVANTAGES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "reinforce": lambda rewards, baseline: sq.reinforce_advantages(rewards),
    "rloo": lambda rewards, baseline: sq.rloo_advantages(rewards),
    "grpo": lambda rewards, baseline: sq.grpo_advantages(rewards),
    "dr_grpo": lambda rewards, baseline: sq.dr_grpo_advantages(rewards),
    "reinforce_pp": lambda rewards, baseline: sq.reinforce_pp_advantages(rewards),
    "baseline": sq.baseline_advantages,
}


class Row(NamedTuple):
    """One configuration of the library's losses.

    Attributes:
      advantage: a key of :data:`ADVANTAGES` ("baseline": ReMax's greedy-response reward).
      aggregation: one of ``sq.AGGREGATIONS``.
      kl: "none", or the estimator "k1", "k2", "k3".
      kl_where: "none", "reward" (``sq.kl_in_reward``) or "loss" (``β · sq.kl_loss``).
      kl_level: "none", "token" or "sequence".
      ratio: "none", or ``sq.kl_loss``'s importance ratio, "detached" or "differentiable".
      on_policy: False: the batch is drawn from π_old and both losses get its log-probabilities.
      clip: PPO clipping of the policy loss.
    """

    advantage: str
    aggregation: str = "token_sum"
    kl: str = "none"
    kl_where: str = "none"
    kl_level: str = "none"
    ratio: str = "none"
    on_policy: bool = True
    clip: bool = False

    @property
    def name(self) -> str:
        parts = [self.advantage, self.aggregation] + ["PPO clip"] * self.clip
        if self.kl_where == "reward":
            parts.append(f"{self.kl} in reward ({self.kl_level})")
        elif self.kl_where == "loss" and (self.ratio == "differentiable" or not self.on_policy):
            parts.append(f"ρ·{self.kl} loss ({self.kl_level}, ρ {self.ratio})")
        elif self.kl_where == "loss":
            parts.append(f"{self.kl} loss ({self.kl_level})")
        return ", ".join(parts + ["off policy"] * (not self.on_policy))

    @property
    def base(self) -> Row:
        """The same row without its KL term: the difference of their gradients is the KL term's."""
        return self._replace(kl="none", kl_where="none", kl_level="none", ratio="none")


def _kl_rows(advantage: str, aggregation: str, where: str, levels: tuple[str, ...], *, ratio: str = "none",
             estimators: tuple[str, ...] = sq.KL_ESTIMATORS, on_policy: bool = True) -> list[Row]:
    return [Row(advantage, aggregation, k, where, level, ratio, on_policy) for level in levels for k in estimators]


SEQUENCE_ROWS = (
    [Row(a, g) for a in ADVANTAGES for g in sq.AGGREGATIONS]
    + _kl_rows("rloo", "token_sum", "reward", ("sequence",))
    + _kl_rows("rloo", "token_sum", "reward", ("token",), estimators=("k1",))
    + _kl_rows("rloo", "token_sum", "loss", sq.KL_LEVELS, ratio="detached")
    + _kl_rows("rloo", "token_sum", "loss", sq.KL_LEVELS, ratio="differentiable", estimators=("k3",))
    + [Row("grpo", "sequence_mean", "k3", "loss", "token", "detached"),   # what GRPO ships
       Row("dr_grpo", "token_sum", "k1", "reward", "sequence")]           # the fix
    + [Row("rloo", on_policy=False), Row("rloo", on_policy=False, clip=True)]
    + [row for ratio in ("differentiable", "detached")
       for row in _kl_rows("rloo", "token_sum", "loss", sq.KL_LEVELS, ratio=ratio, estimators=("k3",),
                           on_policy=False)]
)
# One token: every aggregation is the same, and token and sequence level coincide.
BANDIT_ROWS = (
    [Row(a) for a in ADVANTAGES]
    + _kl_rows("rloo", "token_sum", "reward", ("sequence",))
    + _kl_rows("rloo", "token_sum", "loss", ("sequence",), ratio="detached")
    + _kl_rows("rloo", "token_sum", "loss", ("token",), ratio="differentiable", estimators=("k3",))
    + [Row("rloo", on_policy=False), Row("rloo", on_policy=False, clip=True)]
    + [row for ratio in ("differentiable", "detached")
       for row in _kl_rows("rloo", "token_sum", "loss", ("token",), ratio=ratio, estimators=("k3",),
                           on_policy=False)]
)
# The length study: GRPO's std and 1/|o|, and the fix, on the correctness reward.
LENGTH_ROWS = tuple(Row(a, g) for a in ("rloo", "grpo", "dr_grpo") for g in sq.AGGREGATIONS)
ROWS = {"bandit": BANDIT_ROWS, "sequence": SEQUENCE_ROWS, "length": LENGTH_ROWS}


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      vocab_size: V of the sequence policy, token 0 the end token.
      max_length: T of the sequence policy.
      bandit_actions: V of the bandit (T = 1).
      num_prompts: B, one tabular policy and one reward table each.
      group_size: G responses per prompt.
      beta: β of the KL rows.
      old_scale: π_old's logits are θ's plus this times standard normal noise.
      clip_epsilon: ε of the PPO-clipped rows.
      num_estimates: M, the independent estimates tested per row.
      batches_per_estimate: K, independent batches of B × G responses averaged into one estimate.
      num_blocks: the estimates are drawn in this many compiled calls (the progress bar's steps).
      policies: the keys of :data:`ROWS` to run.
      only: row names to run (with the rows without KL they are compared with); empty: all.
      significance: α of every test.
      seed: PRNG seed (the policies, references and rewards too).
    """

    vocab_size: int = 4
    max_length: int = 4
    bandit_actions: int = 5
    num_prompts: int = 2
    group_size: int = 4
    beta: float = 0.1
    old_scale: float = 0.5
    clip_epsilon: float = 0.2
    num_estimates: int = 1024
    batches_per_estimate: int = 2048
    num_blocks: int = 16
    policies: tuple[str, ...] = tuple(ROWS)
    only: tuple[str, ...] = ()
    significance: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if self.num_estimates % self.num_blocks:
            raise ValueError(f"Config: `num_estimates` ({self.num_estimates}) must be a multiple of `num_blocks` "
                             f"({self.num_blocks})")
        unknown = set(self.policies) - set(ROWS)
        if unknown:
            raise ValueError(f"Config: `policies` must be among {tuple(ROWS)}, got {sorted(unknown)}")


QUICK = Config(num_estimates=320, batches_per_estimate=64, num_blocks=4)


class Tables(NamedTuple):
    """Logits of token t after the previous token (the end token before the first), shape (B, T, V, V)."""

    theta: jax.Array
    old: jax.Array
    ref: jax.Array


class Problem(NamedTuple):
    """An enumerable policy: every response (S of them), the tables, and per-prompt rewards and baselines."""

    tokens: jax.Array              # (S, T) int
    mask: jax.Array                # (S, T)
    tables: Tables
    rewards: jax.Array             # (B, S)
    baseline: jax.Array            # (B,), the reward of θ's greedy response


class Batch(NamedTuple):
    """One batch: (B, G, T) token arrays, (B, G) rewards, a (B,) baseline."""

    log_prob_t: jax.Array
    old_log_prob_t: jax.Array
    ref_log_prob_t: jax.Array
    mask_t: jax.Array
    rewards: jax.Array
    baseline: jax.Array


def previous_tokens(tokens: jax.Array) -> jax.Array:
    """y_{t-1} for each token of ``tokens`` (..., T), the end token before the first."""
    return jnp.concatenate([jnp.full(tokens.shape[:-1] + (1,), END, tokens.dtype), tokens[..., :-1]], axis=-1)


def token_log_probs(table: jax.Array, tokens: jax.Array) -> jax.Array:
    """log π(y_t | y_<t) of a tabular autoregressive policy, logits ``table[t, y_{t-1}]`` (the end token before the
    first): table (T, V, V), tokens (..., T). Written with one-hot contractions, whose transposes (the gradient)
    are contractions too, not scatters."""
    vocab = table.shape[-1]
    logits = jnp.einsum("...tp,tpv->...tv", jax.nn.one_hot(previous_tokens(tokens), vocab), table)
    return jnp.sum(jax.nn.one_hot(tokens, vocab) * jax.nn.log_softmax(logits), axis=-1)


def prompt_token_log_probs(tables: jax.Array, tokens: jax.Array) -> jax.Array:
    """:func:`token_log_probs` of a batch, each prompt under its own table: tables (B, T, V, V), tokens
    (K, B, G, T) -> (K, B, G, T)."""
    return jax.vmap(token_log_probs, (0, 1), 1)(tables, tokens)


def response_log_probs(tables: jax.Array, problem: Problem) -> jax.Array:
    """log π(y) of every response for each prompt's table, (B, S)."""
    return jax.vmap(lambda table: sq.sequence_log_probs(token_log_probs(table, problem.tokens), problem.mask))(tables)


def reachable(vocab_size: int, max_length: int) -> np.ndarray:
    """The table entries any response reads: (t, previous) with previous the end token exactly when t = 0."""
    first = np.arange(max_length)[:, None, None] == 0
    after_end = np.arange(vocab_size)[None, :, None] == END
    return np.broadcast_to(first == after_end, (max_length, vocab_size, vocab_size))


def greedy_response(table: np.ndarray) -> tuple[int, ...]:
    """The argmax token at each step until the end token or T tokens."""
    response, previous = [], END
    for t in range(table.shape[0]):
        previous = int(np.argmax(table[t, previous]))
        response.append(previous)
        if previous == END:
            break
    return tuple(response)


def correctness_rewards(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """1 for a correct answer: first token 1, ended within ``SHORT`` tokens; else 0 (every long response)."""
    return ((tokens[:, 0] == 1) & (tokens == END).any(axis=1) & (mask.sum(axis=1) <= SHORT)).astype(np.float32)


def make_problem(config: Config, policy: str) -> Problem:
    """Random θ and π_ref, π_old = θ + ``old_scale`` · noise, and the reward table of ``policy``.

    "bandit" and "sequence": rewards uniform on [0, 1]. "length": :func:`correctness_rewards`; θ ends at once
    (an empty answer, short and wrong) with logit ``EMPTY_LOGIT``, so that wrong answers are long, and the odd
    prompts are easy: their logits of the answer 1 and of ending after it are ``EASY_LOGIT``.
    """
    vocab, length = (config.bandit_actions, 1) if policy == "bandit" else (config.vocab_size, config.max_length)
    tokens, mask = sq.enumerate_responses(vocab, length, END)
    rng = np.random.default_rng([config.seed, list(ROWS).index(policy)])
    shape = (config.num_prompts, length, vocab, vocab)
    theta, ref, noise = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
    if policy == "length":
        theta[:, 0, END, END] = EMPTY_LOGIT
        theta[1::2, 0, END, 1] = theta[1::2, 1, 1, END] = EASY_LOGIT
        rewards = np.tile(correctness_rewards(tokens, mask), (config.num_prompts, 1))
    else:
        rewards = rng.uniform(size=(config.num_prompts, len(tokens))).astype(np.float32)
    index = {tuple(t[m > 0].tolist()): i for i, (t, m) in enumerate(zip(tokens, mask))}
    greedy = [index[greedy_response(table)] for table in theta]
    tables = Tables(theta, theta + config.old_scale * noise, ref)
    problem = Problem(tokens, mask, tables, rewards, rewards[np.arange(config.num_prompts), greedy])
    return jax.tree_util.tree_map(jnp.asarray, problem)


def advantages(row: Row, batch: Batch, beta: float) -> jax.Array:
    """The row's advantages, (B, G), or (B, G, T) with a token-level KL penalty in the reward."""
    advantage = ADVANTAGES[row.advantage]
    if row.kl_where != "reward":
        return advantage(batch.rewards, batch.baseline)
    penalty = sq.kl_in_reward(batch.log_prob_t, batch.ref_log_prob_t, batch.mask_t, beta=beta, estimator=row.kl,
                              level=row.kl_level)
    if row.kl_level == "sequence":
        return advantage(batch.rewards - penalty, batch.baseline)
    return advantage(batch.rewards, batch.baseline)[..., None] - penalty


def row_loss(row: Row, batch: Batch, *, beta: float, clip_epsilon: float) -> jax.Array:
    """The row's training loss of one batch: ``policy_loss``, plus ``β · kl_loss`` (same aggregation) for a KL
    loss row."""
    old = None if row.on_policy else batch.old_log_prob_t
    loss = sq.policy_loss(batch.log_prob_t, advantages(row, batch, beta), batch.mask_t, old_log_prob_t=old,
                          clip_epsilon=clip_epsilon if row.clip else None, aggregation=row.aggregation)
    if row.kl_where != "loss":
        return loss
    kl = sq.kl_loss(batch.log_prob_t, batch.ref_log_prob_t, batch.mask_t, estimator=row.kl, level=row.kl_level,
                    aggregation=row.aggregation, old_log_prob_t=old, ratio=row.ratio)
    return loss + beta * kl


def sample_batches(problem: Problem, sampler: jax.Array, key: jax.Array, num_batches: int,
                   group_size: int) -> tuple[jax.Array, Batch]:
    """``num_batches`` batches drawn exactly from ``sampler``'s tables: the tokens (K, B, G, T) and the batches
    (fields with a leading K axis), with the sampler's log-probabilities in place of θ's (the caller's)."""
    num_prompts = sampler.shape[0]
    cdf = jnp.cumsum(jnp.exp(response_log_probs(sampler, problem)), axis=-1)        # inverse-CDF sampling
    uniforms = jax.random.uniform(key, (num_prompts, num_batches * group_size), maxval=cdf[:, -1:])
    index = jax.vmap(lambda c, u: jnp.minimum(jnp.searchsorted(c, u, side="right"), c.size - 1))(cdf, uniforms)
    index = index.reshape(num_prompts, num_batches, group_size).transpose(1, 0, 2)
    tokens = problem.tokens[index]
    old, ref = prompt_token_log_probs(sampler, tokens), prompt_token_log_probs(problem.tables.ref, tokens)
    prompts = jnp.arange(num_prompts)[None, :, None]
    return tokens, Batch(old, old, ref, problem.mask[index], problem.rewards[prompts, index],
                         jnp.broadcast_to(problem.baseline, (num_batches, num_prompts)))


def make_draw(config: Config, rows: tuple[Row, ...], coordinates: np.ndarray) -> Callable:
    """``draw(problem, keys) -> (len(keys), len(rows), P)``: per key, ĝ = -∇ loss of each row averaged over K
    batches, at the P ``coordinates`` (flat indices) of θ.

    The on-policy rows share K batches from θ, the off-policy rows K batches from π_old. Each row's gradient is
    ``jax.grad`` of its loss, taken with respect to θ's token log-probabilities and pulled back to θ in one
    vmapped pass for all rows (the chain rule through the log-probabilities every loss reads θ by).
    """
    num_batches = config.batches_per_estimate
    loss_fns = [jax.vmap(functools.partial(row_loss, row, beta=config.beta, clip_epsilon=config.clip_epsilon))
                for row in rows]

    def gradients(problem, sampler, key, members):
        tokens, batch = sample_batches(problem, sampler, key, num_batches, config.group_size)
        log_prob_t, pullback = jax.vjp(lambda q: prompt_token_log_probs(q, tokens), problem.tables.theta)
        cotangents = jnp.stack([
            jax.grad(lambda x, i=i: jnp.mean(loss_fns[i](batch._replace(log_prob_t=x))))(log_prob_t)
            for i in members])
        grads = jax.vmap(pullback)(cotangents)[0]
        return -grads.reshape(len(members), -1)[:, coordinates]

    on = [i for i, row in enumerate(rows) if row.on_policy]
    off = [i for i, row in enumerate(rows) if not row.on_policy]
    order = np.argsort(on + off)

    def one(problem, key):
        k_on, k_off = jax.random.split(key)
        parts = [gradients(problem, sampler, k, members)
                 for sampler, k, members in ((problem.tables.theta, k_on, on), (problem.tables.old, k_off, off))
                 if members]
        return jnp.concatenate(parts)[order]

    return lambda problem, keys: jax.lax.map(lambda k: one(problem, k), keys)


def exact_gradients(problem: Problem, coordinates: np.ndarray, *,
                    compiler_options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """∇ of E[r], KL(π‖π_ref), KL(π_ref‖π), E[length] and of the per-token KLs, at ``coordinates``.

    The per-token KLs sum each context's next-token KL over the contexts the sampler visits, with the
    visiting probabilities held fixed: Σ_t E_{y~sampler}[mask_t KL(π(·|y_<t) ‖ π_ref(·|y_<t))] (and with the
    arguments swapped), once for θ ("on") and once for π_old ("off") as the sampler.
    """
    grads = jax.jit(_exact_gradients, compiler_options=compiler_options)(problem)
    return {name: np.asarray(grad, np.float64).reshape(-1)[coordinates] for name, grad in grads.items()}


def _exact_gradients(problem: Problem) -> dict[str, jax.Array]:
    ref = response_log_probs(problem.tables.ref, problem)
    lengths = jnp.sum(problem.mask, axis=1)

    def token_kl(tables, sampler, forward):
        visits = jnp.einsum("bs,st,stp->btp", jnp.exp(response_log_probs(sampler, problem)), problem.mask,
                            jax.nn.one_hot(previous_tokens(problem.tokens), tables.shape[-1]))
        log_p, log_q = jax.nn.log_softmax(tables), jax.nn.log_softmax(problem.tables.ref)
        log_p, log_q = (log_q, log_p) if forward else (log_p, log_q)
        return jnp.mean(jnp.sum(visits * jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1), axis=(1, 2)))

    objectives = {
        "reward": lambda q: sq.exact_objective(response_log_probs(q, problem), problem.rewards, ref, beta=0.0),
        "reverse KL": lambda q: -sq.exact_objective(response_log_probs(q, problem), 0.0 * ref, ref, beta=1.0),
        "forward KL": lambda q: jnp.mean(jnp.sum(jnp.exp(ref) * (ref - response_log_probs(q, problem)), -1)),
        "length": lambda q: jnp.mean(jnp.exp(response_log_probs(q, problem)) @ lengths),
    }
    for name, sampler in (("on", problem.tables.theta), ("off", problem.tables.old)):
        objectives[f"per-token reverse KL {name}"] = lambda q, s=sampler: token_kl(q, s, False)
        objectives[f"per-token forward KL {name}"] = lambda q, s=sampler: token_kl(q, s, True)
    return {name: jax.grad(objective)(problem.tables.theta) for name, objective in objectives.items()}


def known_factor(row: Row, max_length: int, group_size: int) -> fractions.Fraction | None:
    """The constant E ĝ / ∇J the library documents: 1/T for ``token_sum`` (for any aggregation when T = 1),
    times (G-1)/G for Dr. GRPO; None where there is none (a std or a random token count divides)."""
    if row.advantage in ("grpo", "reinforce_pp") or (row.aggregation != "token_sum" and max_length > 1):
        return None
    factor = fractions.Fraction(1, max_length)
    return factor * fractions.Fraction(group_size - 1, group_size) if row.advantage == "dr_grpo" else factor


def project_out(estimates: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Each estimate less its component along ``direction``: centred on 0 exactly when E ĝ is parallel to it."""
    return estimates - np.outer(estimates @ direction / (direction @ direction), direction)


def check(estimates: np.ndarray, expected: np.ndarray, factor: fractions.Fraction | None,
          significance: float) -> lt.testing.UnbiasedReport:
    """``check_unbiased`` against ``factor`` · expected, or, with no known factor, against some multiple of it."""
    if factor is None:
        return lt.testing.check_unbiased(project_out(estimates, expected), np.zeros_like(expected),
                                         significance=significance)
    return lt.testing.check_unbiased(estimates, float(factor) * expected, significance=significance)


def verdict(direct: lt.testing.UnbiasedReport, scaled: lt.testing.UnbiasedReport, factor: fractions.Fraction | None,
            scale: float) -> str:
    """"unbiased" (E ĝ = ∇J); "unbiased up to a constant factor f" (E ĝ = f ∇J, f the known factor, or, with none
    known, some fitted c* > 0); "biased"; or "inconclusive" (tails too heavy for the test at this M)."""
    if direct.verdict == "consistent":
        return "unbiased"
    if factor == 1 or (factor is None and scale <= 0):
        return direct.verdict
    if scaled.verdict != "consistent":
        return scaled.verdict
    if factor is None:
        return f"unbiased up to a factor c* = {scale:.3g} (fitted at this θ)"
    return f"unbiased up to a constant factor {factor}"


def follows(row: Row, kl_part: np.ndarray, exact: dict[str, np.ndarray], *, beta: float,
            factor: fractions.Fraction | None, per_token: bool, significance: float) -> tuple[str, dict[str, float]]:
    """Which KL gradient the row's KL term follows: its estimates (the row's less its base row's, same batches)
    tested against -β · factor · ∇D for each alternative D (up to a positive multiple if no factor is known)
    and against 0. Returns the matching alternatives joined by " / " ("neither" if none, "inconclusive" if none
    and a test could not judge) and each test's max |z|."""
    sampler = "on" if row.on_policy else "off"
    names = ALTERNATIVES if per_token else ("reverse KL", "forward KL", "zero")
    matches, z, inconclusive = [], {}, False
    for name in names:
        if name == "zero":
            report = lt.testing.check_unbiased(kl_part, np.zeros(kl_part.shape[1]), significance=significance)
            aligned = True
        else:
            target = -beta * exact[f"{name} {sampler}" if name.startswith("per-token") else name]
            report = check(kl_part, target, factor, significance)
            aligned = factor is not None or kl_part.mean(axis=0) @ target > 0
        z[name] = report.max_abs_z
        inconclusive |= report.verdict == "inconclusive"
        if report.verdict == "consistent" and aligned:
            matches.append(name)
    return " / ".join(matches) or ("inconclusive" if inconclusive else "neither"), z


def detectable_relative_bias(estimates: np.ndarray, expected: np.ndarray, significance: float) -> float | None:
    """The smallest relative bias that ``lt.testing.estimates_needed`` says these M estimates detect with 95% power,
    by bisection on its logarithm (to 0.3%); None if their tails need more estimates than M at any bias."""
    def detected(log_bias):
        return lt.testing.estimates_needed(estimates, expected, relative_bias=10**log_bias,
                                           significance=significance) <= len(estimates)

    low, high = -4.0, 1.0
    if not detected(high):
        return None
    for _ in range(12):
        middle = (low + high) / 2
        low, high = (low, middle) if detected(middle) else (middle, high)
    return 10**high


def analyse(row: Row, estimates: np.ndarray, base: np.ndarray | None, exact: dict[str, np.ndarray],
            config: Config, max_length: int) -> dict[str, Any]:
    """One row of the table from its M estimates (M, P) and, for a KL row, its base row's."""
    target = exact["reward"] - (config.beta * exact["reverse KL"] if row.kl != "none" else 0.0)
    mean, norm = estimates.mean(axis=0), np.linalg.norm(target)
    scale = float(mean @ target / norm**2)
    factor = known_factor(row, max_length, config.group_size)
    direct = lt.testing.check_unbiased(estimates, target, significance=config.significance)
    scaled = check(estimates, target, factor, config.significance)
    parallel = check(estimates, target, None, config.significance)
    out = {"name": row.name, **row._asdict(),
           "targets": "∇(E[r] − β KL(π‖π_ref))" if row.kl != "none" else "∇E[r]",
           "relative_bias": float(np.linalg.norm(mean - target) / norm),
           "cosine": float(mean @ target / (np.linalg.norm(mean) * norm)),
           "scale": scale,
           "bias_after_scale": float(np.linalg.norm(mean - scale * target) / abs(scale * norm)),
           "known_factor": None if factor is None else str(factor),
           "max_abs_z": direct.max_abs_z,
           "max_abs_z_known_factor": scaled.max_abs_z if factor is not None else None,
           "max_abs_z_after_scale": parallel.max_abs_z,
           "threshold": direct.threshold,
           "verdict": verdict(direct, scaled, factor, scale),
           "detectable_relative_bias": detectable_relative_bias(
               estimates, (float(factor) if factor is not None else scale) * target, config.significance)}
    if base is not None:
        out["follows"], out["follows_z"] = follows(row, estimates - base, exact, beta=config.beta, factor=factor,
                                                   per_token=max_length > 1, significance=config.significance)
    if max_length > 1:
        slopes = estimates @ exact["length"] / np.linalg.norm(mean)
        out.update(length_slope=float(slopes.mean()), length_slope_se=float(slopes.std(ddof=1) / np.sqrt(len(slopes))),
                   length_slope_exact=float(target @ exact["length"] / norm))
    return out


def selected_rows(config: Config, policy: str) -> tuple[Row, ...]:
    """The policy's rows in ``config.only`` (all if empty) and the base rows of their KL rows."""
    rows = ROWS[policy]
    if not config.only:
        return tuple(rows)
    chosen = {row for row in rows if row.name in config.only}
    chosen |= {row.base for row in chosen if row.kl != "none"}
    return tuple(row for row in rows if row in chosen)


def describe(problem: Problem, exact: dict[str, np.ndarray], config: Config) -> dict[str, Any]:
    """The policy's sizes and exact quantities: E[r] per prompt, E[length], its mean weighted by r and by 1 - r
    (correct and wrong answers for the length study), both KLs, the norms of ∇E[r] and β ∇KL(π‖π_ref)."""
    log_p, ref = np.asarray(jax.jit(jax.vmap(response_log_probs, (0, None)))(
        jnp.stack([problem.tables.theta, problem.tables.ref]), problem), np.float64)
    p, lengths, r = np.exp(log_p), np.asarray(problem.mask).sum(axis=1), np.asarray(problem.rewards)
    return {"num_responses": int(problem.tokens.shape[0]), "max_length": int(problem.tokens.shape[1]),
            "num_params": int(exact["length"].size),
            "expected_reward": np.sum(p * r, axis=1).tolist(),
            "expected_length": float(np.mean(p @ lengths)),
            "expected_length_correct": float(np.mean((p * r) @ lengths / np.sum(p * r, axis=1))),
            "expected_length_wrong": float(np.mean((p * (1 - r)) @ lengths / np.sum(p * (1 - r), axis=1))),
            "reverse_kl": float(np.mean(np.sum(p * (log_p - ref), axis=1))),
            "forward_kl": float(np.mean(np.sum(np.exp(ref) * (ref - log_p), axis=1))),
            "reward_gradient_norm": float(np.linalg.norm(exact["reward"])),
            "kl_gradient_norm": float(config.beta * np.linalg.norm(exact["reverse KL"])),
            "batches": config.num_estimates * config.batches_per_estimate}


def run(config: Config, *, progress: bool = False, compiler_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every row of every policy; returns JSON-ready results. ``compiler_options`` go to ``jax.jit``."""
    out_rows, policies = [], {}
    for policy in config.policies:
        problem = make_problem(config, policy)
        rows = selected_rows(config, policy)
        max_length, vocab = problem.tokens.shape[1], problem.tables.theta.shape[-1]
        coordinates = np.flatnonzero(np.broadcast_to(reachable(vocab, max_length), problem.tables.theta.shape))
        draw = jax.jit(make_draw(config, rows, coordinates), compiler_options=compiler_options)
        keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), len(policies)), config.num_estimates)
        blocks = [np.asarray(draw(problem, block), np.float64)
                  for block in tqdm(keys.reshape(config.num_blocks, -1), desc=f"{policy} ({len(rows)} rows)",
                                    disable=not progress)]
        estimates = dict(zip(rows, np.concatenate(blocks).transpose(1, 0, 2)))
        exact = exact_gradients(problem, coordinates, compiler_options=compiler_options)
        policies[policy] = describe(problem, exact, config)
        for row in rows:
            base = estimates[row.base] if row.kl != "none" else None
            out_rows.append({"policy": policy, **analyse(row, estimates[row], base, exact, config, max_length)})
    return {"config": dataclasses.asdict(config), "seed": config.seed, "policies": policies, "rows": out_rows}


def format_table(results: dict[str, Any]) -> str:
    """Markdown: the sequence policy's rows, then the length study's."""
    config = results["config"]
    rows = [r for r in results["rows"] if r["policy"] == "sequence"]
    lines = ["| configuration | policy | targets | relative bias | cosine | scale c* | bias after scale | verdict "
             "| KL term follows |", "|" + " --- |" * 9]
    for r in rows:
        cells = [r["name"], r["policy"], r["targets"], f"{r['relative_bias']:.3f}", f"{r['cosine']:.4f}",
                 f"{r['scale']:.3f}", f"{r['bias_after_scale']:.3f}", r["verdict"], r.get("follows", "")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| configuration (length study) | relative bias | cosine | verdict | dE[length]/ds along E ĝ "
              "| along ∇E[r] |", "|" + " --- |" * 6]
    for r in results["rows"]:
        if r["policy"] == "length":
            lines.append(f"| {r['name']} | {r['relative_bias']:.3f} | {r['cosine']:.4f} | {r['verdict']} "
                         f"| {r['length_slope']:+.4f} ± {r['length_slope_se']:.4f} | {r['length_slope_exact']:+.4f} |")
    detectable = [r["detectable_relative_bias"] for r in rows if r["detectable_relative_bias"] is not None]
    lines += ["", f"{config['num_estimates']} estimates per row, each the mean of {config['batches_per_estimate']} "
                  f"batches of B = {config['num_prompts']} prompts × G = {config['group_size']} responses; "
                  f"β = {config['beta']}; biased if max |z| > {results['rows'][0]['threshold']:.2f} "
                  f"(α = {config['significance']}); relative biases from {min(detectable):.2%} to "
                  f"{max(detectable):.2%} (median {np.median(detectable):.2%}) detected with 95% power"
                  + (f", {len(rows) - len(detectable)} rows too heavy-tailed to tell." if len(detectable) < len(rows)
                     else ".")]
    return "\n".join(lines)


def main() -> None:
    common.main(__doc__, "kl_truth_table", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=format_table, plots={})


if __name__ == "__main__":
    main()
