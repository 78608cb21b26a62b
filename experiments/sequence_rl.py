"""RL from scratch with a verifier: a small causal transformer learns to sort digits, by RLOO, GRPO, Dr. GRPO and PPO.

Task: a prompt x of P = 4 digits drawn uniformly from 0..D-1 (D = 5); the
policy writes a response y of at most T = 8 tokens from the digits and END,
token by token. The verifier reads the first P tokens as the answer:

    r(x, y) = (1/P) Σ_{i<P} [y_i = sort(x)_i]   if the response's END comes after them,
    r(x, y) = 0                                  if END is among them (too short) or missing (truncated at T).

The length twist: tokens between the answer and END are ignored, so a fully
correct response may have any length from P + 1 to T. Length is then free of
the reward, and a loss that weighs responses by their length can move it
(GRPO's 1/|y| per response: Liu et al. 2025).

Policy: a pre-norm causal transformer (flax linen; 2 layers, d_model 32, 2
heads, learned positions) over the sequence x, SEP, y; its output layer
starts at zero, so the initial policy, which is also the frozen reference
π_ref, is uniform over the D + 1 tokens. Sampling is autoregressive inside
``jit`` (a key-value cache, one ``lax.scan`` over positions, Gumbel-max
draws); the mask is ``lt.rl.sequence.response_mask`` (up to and including the
first END); the sampler's log-probabilities are π_old's.

Every step draws B prompts and G responses each and takes Adam steps on one
loss built from ``lt.rl.sequence``:

    rloo      rloo_advantages, token_sum
    grpo      grpo_advantages, sequence_mean, PPO clip against π_old (one epoch: ρ = 1, the clip is inactive)
    dr_grpo   dr_grpo_advantages, token_sum
    ppo       rloo_advantages, token_sum, PPO clip, ``ppo_epochs`` full-batch epochs on each batch

each with the KL penalty β KL(π‖π_ref) done right, and done the common wrong
way (the ``_k3`` runs):

    right       k1 in the reward: ``kl_in_reward(level="token")``, β Σ_{s≥t} k1_s subtracted from token t's
                advantage (after GRPO's normalisation, which would otherwise rescale it with the rewards)
    ppo_rho_k3  also right, off policy too: β ρ·k3 at sequence level with a differentiable ρ,
                ``kl_loss(..., estimator="k3", level="sequence", ratio="differentiable")``, aggregated by token
                sum like the policy loss (Σ_i ρ_i k3_i / (B·G·T)); on policy its gradient is β k1(y) ∇log π(y)/T,
                with no baseline
    wrong       β ``kl_loss(..., estimator="k3", level="token", aggregation="sequence_mean")`` added to the
                policy loss, as GRPO ships it: in expectation the gradient of a per-token forward KL(π_ref‖π),
                not of KL(π‖π_ref). Against a token_sum policy loss its weight per response is β T/|y|, not β

Seeds are vmapped, each run is one ``lax.scan`` over steps under ``jit``,
chunked between checkpoints; every run starts from the same parameters per
seed and draws from the same keys. Recorded per chunk: mean reward, fraction
of fully correct responses, mean length (END included) of all, correct and
incorrect responses, and KL(π‖π_ref) of the sampling policy estimated on its
samples by Σ_t mask_t k3_t (unbiased: k3 is, per token, given the prefix).

    python -m experiments.sequence_rl [--quick]

writes ``results/sequence_rl.json`` and ``results/sequence_rl.png``.

Observed (default config, 3 seeds, 600 steps; the table in ``results/sequence_rl.json``):

- Success: RLOO and Dr. GRPO with k1 in the reward pass 80% fully correct
  responses on every seed by step 425 and end at 91% and 85%; PPO (2
  epochs, k1 in the reward) by step 350, ending at 79%. GRPO (69% ± 21%) and
  PPO with ρ·k3 (70% ± 15%) do not within 600 steps. On policy ρ·k3's
  gradient weighs a response's whole score by its whole KL; k1 to go weighs
  token t's score by the KL from t on only, with less variance.
- The wrong KL: with the token_sum methods and PPO the k3 loss stops at
  29–37% fully correct, holding KL(π‖π_ref) at 3.7–4.2 nats against about 7
  for the right penalty; the forward KL it descends keeps mass on every token
  the uniform reference allows. Under GRPO, whose advantages are normalised,
  the same β weighs it less: it ends near GRPO with k1 (74% against 69%,
  KL 7.4 against 7.1).
- GRPO's length effect is visible: with the same KL penalty its responses are
  shorter than those of the token-sum methods, 5.3 tokens against 6.2 with k1
  in the reward (correct and incorrect alike), and with the k3 loss its
  correct responses are shorter (6.3 against 6.7–6.8) and its incorrect ones
  longer (6.1 against 5.8): the per-response 1/|y| favours short responses
  where the advantage is positive and long ones where it is negative. The
  "incorrect responses grow longer" of Liu et al. shows only beside the k3
  loss; with k1 in the reward GRPO shortens both.

References:
  Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization
  for Learning from Human Feedback in LLMs", 2024 (RLOO). Shao et al.,
  "DeepSeekMath", 2024 (GRPO). Liu et al., "Understanding R1-Zero-Like
  Training: A Critical Perspective", 2025 (Dr. GRPO). Schulman et al.,
  "Proximal Policy Optimization Algorithms", 2017. Schulman, "Approximating
  KL Divergence", 2020. Tang and Munos, "On a Few Pitfalls in KL Divergence
  Gradient Estimation for RL", 2025.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import logtrick as lt
from experiments import common

sq = lt.rl.sequence
# XLA:CPU options: LLVM at -O1 without its expensive passes compiles about twice as fast, and runs as fast.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}

Params = Any


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      num_digits: P, the prompt's length.
      num_values: D, digits 0..D-1; END = D, SEP = D + 1.
      max_response: T > P + 1, response tokens sampled (END included).
      d_model: the transformer's width.
      num_heads: attention heads.
      num_layers: transformer blocks.
      num_prompts: B, prompts per step.
      group_size: G ≥ 2, responses per prompt.
      num_steps: training steps (sampled batches), a multiple of ``log_every``.
      log_every: steps per jitted chunk, one checkpoint.
      learning_rate: Adam step size.
      beta: β, the KL coefficient.
      clip_epsilon: ε of the PPO clip.
      ppo_epochs: full-batch epochs on each batch for ``ppo``.
      success: the success criterion, a fraction of fully correct responses in a chunk.
      num_seeds: seeds vmapped in each run.
      runs: names from :data:`RUNS`.
      seed: PRNG seed; seed i uses ``split(key(seed), num_seeds)[i]``.
    """

    num_digits: int = 4
    num_values: int = 5
    max_response: int = 8
    d_model: int = 32
    num_heads: int = 2
    num_layers: int = 2
    num_prompts: int = 16
    group_size: int = 8
    num_steps: int = 600
    log_every: int = 25
    learning_rate: float = 3e-3
    beta: float = 0.05
    clip_epsilon: float = 0.2
    ppo_epochs: int = 2
    success: float = 0.8
    num_seeds: int = 3
    runs: tuple[str, ...] = ("rloo", "rloo_k3", "grpo", "grpo_k3", "dr_grpo", "dr_grpo_k3", "ppo", "ppo_rho_k3",
                             "ppo_k3")
    seed: int = 0

    def __post_init__(self):
        if self.max_response <= self.num_digits + 1:
            raise ValueError(f"Config: `max_response` must exceed num_digits + 1 = {self.num_digits + 1}, "
                             f"got {self.max_response}")
        if self.group_size < 2:
            raise ValueError(f"Config: `group_size` must be >= 2 for the group baselines, got {self.group_size}")
        if self.num_steps % self.log_every:
            raise ValueError(f"Config: `num_steps` must be a multiple of `log_every` ({self.log_every})")
        unknown = set(self.runs) - set(RUNS)
        if unknown:
            raise ValueError(f"Config: unknown `runs` {sorted(unknown)}; choose from {list(RUNS)}")

    @property
    def end(self) -> int:
        """The END token."""
        return self.num_values

    @property
    def sep(self) -> int:
        """The separator between prompt and response, an input only."""
        return self.num_values + 1


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN x), then x + MLP(LN x)."""

    num_heads: int
    decode: bool

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        d = x.shape[-1]
        x = x + nn.MultiHeadDotProductAttention(self.num_heads, decode=self.decode)(nn.LayerNorm()(x), mask=mask)
        return x + nn.Dense(d)(nn.gelu(nn.Dense(4 * d)(nn.LayerNorm()(x))))


class Transformer(nn.Module):
    """Causal transformer: tokens and positions (N, L) int -> logits (N, L, D + 1) of the next token.

    ``decode=True``: one position at a time (L = 1), keys and values in flax's ``"cache"`` collection.
    """

    num_values: int
    max_length: int
    d_model: int
    num_heads: int
    num_layers: int
    decode: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        x = nn.Embed(self.num_values + 2, self.d_model)(tokens) + nn.Embed(self.max_length, self.d_model)(positions)
        mask = None if self.decode else nn.make_causal_mask(tokens)
        for _ in range(self.num_layers):
            x = Block(self.num_heads, self.decode)(x, mask)
        return nn.Dense(self.num_values + 1, kernel_init=nn.initializers.zeros)(nn.LayerNorm()(x))


def _model(config: Config, decode: bool = False) -> Transformer:
    return Transformer(config.num_values, config.num_digits + config.max_response, config.d_model, config.num_heads,
                       config.num_layers, decode)


def init_params(config: Config, key: jax.Array) -> Params:
    """Random transformer parameters; the output layer zero (π uniform)."""
    length = config.num_digits + config.max_response
    return _model(config).init(key, jnp.zeros((1, length), jnp.int32), jnp.arange(length)[None])


def token_logits(config: Config, params: Params, prompts: jax.Array, tokens: jax.Array) -> jax.Array:
    """Teacher-forced logits of every response token: prompts (N, P), tokens (N, T) -> (N, T, D + 1)."""
    sep = jnp.full((prompts.shape[0], 1), config.sep, prompts.dtype)
    inputs = jnp.concatenate([prompts, sep, tokens[:, :-1]], axis=1)
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    return _model(config).apply(params, inputs, positions)[:, config.num_digits:]


def sample(config: Config, params: Params, prompts: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Responses y ~ π(· | x) and log π(y_t | x, y_<t): prompts (N, P) -> tokens (N, T) int32, (N, T); no gradient.

    The prompt goes into the key-value cache one position at a time, then
    SEP and each sampled token: y_t = argmax(logits_t + Gumbel noise). Tokens
    after the first END are drawn too; ``response_mask`` masks them out.
    """
    model, params = _model(config, decode=True), jax.lax.stop_gradient(params)
    (n, p), t, v = prompts.shape, config.max_response, config.num_values + 1
    full = jnp.zeros((n, p + t), jnp.int32)
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(model.init, key, full, full)["cache"])

    def apply(cache, token, position):
        logits, variables = model.apply({**params, "cache": cache}, token[:, None], jnp.full((n, 1), position),
                                        mutable=["cache"])
        return variables["cache"], logits[:, 0]

    def prefill(cache, inputs):
        return apply(cache, *inputs)[0], None

    def decode(carry, inputs):
        cache, token = carry
        position, noise = inputs
        cache, logits = apply(cache, token, position)
        token = jnp.argmax(logits + noise, axis=-1).astype(jnp.int32)
        return (cache, token), (token, sq.token_log_probs(logits, token))

    cache, _ = jax.lax.scan(prefill, cache, (prompts.T, jnp.arange(p)))
    # Drawn 1-D and reshaped: XLA compiles threefry for a multi-dimensional shape more slowly.
    noise = jax.random.gumbel(key, (t * n * v,)).reshape(t, n, v)
    _, (tokens, log_probs) = jax.lax.scan(decode, (cache, jnp.full((n,), config.sep, jnp.int32)),
                                          (jnp.arange(p, p + t), noise))
    return tokens.T, log_probs.T


def reward(config: Config, prompt: jax.Array, tokens: jax.Array) -> jax.Array:
    """The verifier: (1/P) Σ_{i<P} [y_i = sort(x)_i] if END comes after the first P tokens, else 0.

    Tokens between the answer and END are ignored. prompt (P,), tokens (T,) -> a scalar.
    """
    p = config.num_digits
    is_end = tokens == config.end
    ends_after_answer = ~jnp.any(is_end[:p]) & jnp.any(is_end[p:])
    return jnp.where(ends_after_answer, jnp.mean(tokens[:p] == jnp.sort(prompt)), 0.0)


class Batch(NamedTuple):
    """One step's responses: B prompts × G responses.

    Attributes:
      prompts: x, (B, G, P) int.
      tokens: y, (B, G, T) int.
      mask_t: ``response_mask(y, END)``, (B, G, T).
      rewards: r(x, y), (B, G).
      log_prob_t: log π_old(y_t | x, y_<t) from the sampler, (B, G, T).
      ref_log_prob_t: log π_ref(y_t | x, y_<t), (B, G, T).
    """

    prompts: jax.Array
    tokens: jax.Array
    mask_t: jax.Array
    rewards: jax.Array
    log_prob_t: jax.Array
    ref_log_prob_t: jax.Array


def policy_log_probs(config: Config, params: Params, prompts: jax.Array, tokens: jax.Array) -> jax.Array:
    """log π(y_t | x, y_<t) by teacher forcing: prompts (..., P), tokens (..., T) -> (..., T)."""
    flat_prompts, flat_tokens = prompts.reshape(-1, prompts.shape[-1]), tokens.reshape(-1, tokens.shape[-1])
    logits = token_logits(config, params, flat_prompts, flat_tokens)
    return sq.token_log_probs(logits, flat_tokens).reshape(tokens.shape)


def draw_batch(config: Config, params: Params, ref_params: Params, key: jax.Array) -> Batch:
    """B random prompts, G responses each sampled from π, their rewards and log-probabilities (no gradient)."""
    b, g = config.num_prompts, config.group_size
    k_prompts, k_sample = jax.random.split(key)
    prompts = jnp.repeat(jax.random.randint(k_prompts, (b, config.num_digits), 0, config.num_values), g, axis=0)
    tokens, log_prob_t = sample(config, params, prompts, k_sample)
    rewards = jax.vmap(lambda x, y: reward(config, x, y))(prompts, tokens)
    ref_log_prob_t = jax.lax.stop_gradient(policy_log_probs(config, ref_params, prompts, tokens))
    grouped = lambda a: a.reshape(b, g, *a.shape[1:])  # noqa: E731
    return Batch(grouped(prompts), grouped(tokens), grouped(sq.response_mask(tokens, config.end)), grouped(rewards),
                 grouped(log_prob_t), grouped(ref_log_prob_t))


class Method(NamedTuple):
    """How rewards become advantages, and per-token losses one scalar.

    Attributes:
      advantages: rewards (B, G) -> advantages (B, G), one of ``lt.rl.sequence``'s.
      aggregation: one of ``lt.rl.sequence.AGGREGATIONS``.
      clip: PPO's clipped ratio against the sampling policy π_old.
      epochs: full-batch Adam steps on each batch.
    """

    advantages: Callable[[jax.Array], jax.Array]
    aggregation: str
    clip: bool = False
    epochs: int = 1


KLPenalty = Callable[[Config, jax.Array, Batch], tuple[jax.Array, jax.Array]]


def k1_in_reward(config: Config, log_prob_t: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """β Σ_{s≥t} mask_s k1_s (stop-gradient) off token t's advantage: ∇(-β KL(π‖π_ref)) on policy.

    Returns the (B, G, T) penalty and no loss term.
    """
    del log_prob_t
    return sq.kl_in_reward(batch.log_prob_t, batch.ref_log_prob_t, batch.mask_t, beta=config.beta,
                           level="token"), jnp.zeros(())


def rho_k3(config: Config, log_prob_t: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """β Σ_i ρ_i k3_i / (B·G·T), ρ_i = π_θ(y_i)/π_old(y_i) differentiable: ∇ β KL(π‖π_ref)/T, off policy too.

    ``kl_loss`` aggregates it by token sum, the policy loss's aggregation, so that β weighs the KL as the
    reward. Returns a zero penalty and the loss term.
    """
    kl = sq.kl_loss(log_prob_t, batch.ref_log_prob_t, batch.mask_t, estimator="k3", level="sequence",
                    old_log_prob_t=batch.log_prob_t, ratio="differentiable")
    return jnp.zeros(batch.mask_t.shape), config.beta * kl


def k3_token_loss(config: Config, log_prob_t: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """β mean_i (1/|y_i|) Σ_t k3_t as a loss, as GRPO ships it (the wrong way): a zero penalty, the loss term."""
    kl = sq.kl_loss(log_prob_t, batch.ref_log_prob_t, batch.mask_t, estimator="k3", level="token",
                    aggregation="sequence_mean")
    return jnp.zeros(batch.mask_t.shape), config.beta * kl


def methods(config: Config) -> dict[str, Method]:
    """The four methods of the module docstring."""
    return {
        "rloo": Method(sq.rloo_advantages, "token_sum"),
        "grpo": Method(sq.grpo_advantages, "sequence_mean", clip=True),
        "dr_grpo": Method(sq.dr_grpo_advantages, "token_sum"),
        "ppo": Method(sq.rloo_advantages, "token_sum", clip=True, epochs=config.ppo_epochs),
    }


# run: (method, KL penalty); the "_k3" runs add the KL the common wrong way, ppo_rho_k3 the other right way.
RUNS: dict[str, tuple[str, KLPenalty]] = {
    "rloo": ("rloo", k1_in_reward), "rloo_k3": ("rloo", k3_token_loss),
    "grpo": ("grpo", k1_in_reward), "grpo_k3": ("grpo", k3_token_loss),
    "dr_grpo": ("dr_grpo", k1_in_reward), "dr_grpo_k3": ("dr_grpo", k3_token_loss),
    "ppo": ("ppo", k1_in_reward), "ppo_rho_k3": ("ppo", rho_k3), "ppo_k3": ("ppo", k3_token_loss),
}
LABELS = {
    "rloo": "RLOO, k1 in reward", "rloo_k3": "RLOO, k3 loss (wrong)",
    "grpo": "GRPO, k1 in reward", "grpo_k3": "GRPO, k3 loss (wrong)",
    "dr_grpo": "Dr. GRPO, k1 in reward", "dr_grpo_k3": "Dr. GRPO, k3 loss (wrong)",
    "ppo": "PPO-clip, k1 in reward", "ppo_rho_k3": "PPO-clip, ρ·k3", "ppo_k3": "PPO-clip, k3 loss (wrong)",
}
COLORS = {"rloo": "tab:blue", "grpo": "tab:red", "dr_grpo": "tab:green", "ppo": "tab:purple"}
LINESTYLES = {k1_in_reward: "-", rho_k3: ":", k3_token_loss: "--"}
QUICK = Config(d_model=16, num_layers=1, num_prompts=4, group_size=4, num_steps=20, log_every=10, num_seeds=2,
               runs=("dr_grpo", "grpo_k3", "ppo_rho_k3"))


def loss(config: Config, run: str, log_prob_t: jax.Array, batch: Batch) -> jax.Array:
    """The run's loss at log π_θ(y_t | x, y_<t) of the batch's tokens, (B, G, T): policy loss + KL term."""
    name, penalty = RUNS[run]
    method = methods(config)[name]
    penalty_t, kl_term = penalty(config, log_prob_t, batch)
    advantages = method.advantages(batch.rewards)[..., None] - penalty_t
    clip = {"old_log_prob_t": batch.log_prob_t, "clip_epsilon": config.clip_epsilon} if method.clip else {}
    return sq.policy_loss(log_prob_t, advantages, batch.mask_t, aggregation=method.aggregation, **clip) + kl_term


class TrainState(NamedTuple):
    """Policy parameters, Adam state, and the frozen reference policy (the initial one)."""

    params: Params
    opt_state: optax.OptState
    ref_params: Params


class Totals(NamedTuple):
    """Sums over sampled responses (a batch, or a chunk's batches): Σ r, #{r = 1}, Σ |y|, Σ |y| over the fully
    correct ones, and Σ_i Σ_t mask_t k3_t (KL(π_old‖π_ref) per response, summed)."""

    reward: jax.Array
    correct: jax.Array
    length: jax.Array
    correct_length: jax.Array
    kl: jax.Array


def totals(batch: Batch) -> Totals:
    """The :class:`Totals` of one batch."""
    lengths = jnp.sum(batch.mask_t, axis=-1)
    correct = batch.rewards == 1.0
    kl_t = sq.kl_estimates(batch.log_prob_t, batch.ref_log_prob_t, "k3") * batch.mask_t
    return Totals(jnp.sum(batch.rewards), jnp.sum(correct), jnp.sum(lengths), jnp.sum(lengths * correct),
                  jnp.sum(kl_t))


def init_state(config: Config, key: jax.Array) -> TrainState:
    """Fresh parameters, which are also the reference's, and Adam's state."""
    params = init_params(config, key)
    return TrainState(params, optax.adam(config.learning_rate).init(params), params)


def make_step(config: Config, run: str) -> Callable[[TrainState, jax.Array], tuple[TrainState, Totals]]:
    """``step(state, key) -> (state, totals)``: one batch sampled, then the method's epochs of Adam steps on it."""
    optimizer = optax.adam(config.learning_rate)

    def step(state, key):
        batch = draw_batch(config, state.params, state.ref_params, key)

        def epoch(carry, _):
            params, opt_state = carry
            grads = jax.grad(lambda p: loss(config, run, policy_log_probs(config, p, batch.prompts, batch.tokens),
                                            batch))(params)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        epochs = methods(config)[RUNS[run][0]].epochs
        (params, opt_state), _ = jax.lax.scan(epoch, (state.params, state.opt_state), length=epochs)
        return TrainState(params, opt_state, state.ref_params), totals(batch)

    return step


def make_chunk(config: Config, run: str) -> Callable[[TrainState, jax.Array], tuple[TrainState, Totals]]:
    """``chunk(state, key) -> (state, totals)``: ``log_every`` steps in one ``lax.scan``, their totals summed."""
    step = make_step(config, run)

    def chunk(state, key):
        state, per_step = jax.lax.scan(step, state, jax.random.split(key, config.log_every))
        return state, jax.tree.map(lambda x: jnp.sum(x, axis=0), per_step)

    return chunk


def curves(config: Config, chunks: Totals) -> dict[str, np.ndarray]:
    """Per seed and chunk, (num_seeds, num_chunks), from chunk totals: reward, success, length, correct_length,
    wrong_length (NaN where a chunk has no such response) and kl, each a mean over the chunk's responses."""
    t = jax.tree.map(lambda x: np.asarray(x, np.float64), chunks)
    n = config.num_prompts * config.group_size * config.log_every
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"reward": t.reward / n, "success": t.correct / n, "length": t.length / n,
                "correct_length": t.correct_length / t.correct,
                "wrong_length": (t.length - t.correct_length) / (n - t.correct), "kl": t.kl / n}


def train_run(config: Config, run: str, keys: jax.Array, bar: tqdm) -> dict[str, Any]:
    """One run, all seeds vmapped, chunk by chunk: chunk c draws from fold_in(key, c).

    Compile (the initial state and the chunk, ahead of time) and training
    (the chunks to ``block_until_ready``) are timed separately.
    """
    start = time.perf_counter()
    state = jax.jit(jax.vmap(lambda k: init_state(config, k)), compiler_options=COMPILER_OPTIONS)(keys)
    chunk_fn = make_chunk(config, run)
    chunk = jax.jit(jax.vmap(lambda s, k, c: chunk_fn(s, jax.random.fold_in(k, c)), (0, 0, None)))
    chunk = chunk.lower(state, keys, jnp.zeros((), jnp.int32)).compile(COMPILER_OPTIONS)
    compile_seconds = time.perf_counter() - start
    out, train_seconds = [], 0.0
    for c in range(config.num_steps // config.log_every):
        start = time.perf_counter()
        state, chunk_totals = jax.block_until_ready(chunk(state, keys, c))
        train_seconds += time.perf_counter() - start
        out.append(chunk_totals)
        bar.update()
    runs = curves(config, jax.tree.map(lambda *x: np.stack(x, axis=1), *out))
    return {"compile_seconds": compile_seconds, "train_seconds": train_seconds,
            **{name: np.where(np.isnan(c), None, c).tolist() for name, c in runs.items()}}


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """Trains every run of ``config`` on the same seeds' initial parameters and keys; JSON-ready results."""
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    num_chunks = config.num_steps // config.log_every
    bar = tqdm(total=len(config.runs) * num_chunks, disable=not progress, unit="chunk")
    results = {}
    for name in config.runs:
        bar.set_description(name)
        results[name] = train_run(config, name, keys, bar)
    bar.close()
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return {"config": dataclasses.asdict(config), "seeds": list(range(config.num_seeds)),
            "num_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)),
            "steps": [(c + 1) * config.log_every for c in range(num_chunks)], "runs": results}


def _values(curves: list[list[float | None]]) -> np.ndarray:
    """A JSON curve (seeds, chunks) as floats, NaN for None."""
    return np.array([[np.nan if v is None else v for v in seed] for seed in curves], float)


def _seed_mean(values: np.ndarray) -> np.ndarray:
    """The mean over seeds (axis 0) of the non-NaN values; NaN where there are none."""
    counts = np.sum(~np.isnan(values), axis=0)
    return np.nansum(values, axis=0) / np.where(counts > 0, counts, np.nan)


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run: the last chunk's reward, success, KL and lengths (mean, std over seeds), the first step at
    which every seed's chunk success reached ``success`` (None if not) and its wall time, throughput, times."""
    config = results["config"]
    response_tokens = config["num_seeds"] * config["num_prompts"] * config["group_size"] * config["max_response"]
    rows = []
    for name, r in results["runs"].items():
        row = {"run": name}
        for metric in ("reward", "success", "kl", "length", "correct_length", "wrong_length"):
            final = _values(r[metric])[:, -1]
            row[metric] = float(_seed_mean(final[:, None])[0])
            row[f"{metric}_std"] = float(np.nanstd(final, ddof=1)) if np.sum(~np.isnan(final)) > 1 else 0.0
        reached = np.asarray(r["success"]) >= config["success"]
        first = [int(np.argmax(seed)) if seed.any() else None for seed in reached]
        chunk = None if None in first else max(first)
        row["success_step"] = None if chunk is None else results["steps"][chunk]
        row["success_seconds"] = None if chunk is None else (
            r["compile_seconds"] + r["train_seconds"] * (chunk + 1) / len(results["steps"]))
        row["tokens_per_second"] = response_tokens * config["num_steps"] / r["train_seconds"]
        row["train_seconds"], row["compile_seconds"] = r["train_seconds"], r["compile_seconds"]
        rows.append(row)
    return rows


def _number(value: float) -> str:
    return "—" if np.isnan(value) else f"{value:.2f}"


def format_table(results: dict[str, Any]) -> str:
    """The markdown table of :func:`summary_rows`."""
    config = results["config"]
    lines = [f"| run | final reward | fully correct | ≥ {config['success']:.0%} correct at step (s) | final KL | "
             "final length | correct / incorrect length | tokens/s | train | compile |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary_rows(results):
        reached = "—" if row["success_step"] is None else f"{row['success_step']} ({row['success_seconds']:.0f} s)"
        lines.append(
            f"| {LABELS[row['run']]} | {row['reward']:.3f} ± {row['reward_std']:.3f} | "
            f"{row['success']:.1%} ± {row['success_std']:.1%} | {reached} | {row['kl']:.2f} ± {row['kl_std']:.2f} | "
            f"{row['length']:.2f} ± {row['length_std']:.2f} | {_number(row['correct_length'])} / "
            f"{_number(row['wrong_length'])} | "
            f"{row['tokens_per_second']:,.0f} | {row['train_seconds']:.1f} s | {row['compile_seconds']:.1f} s |")
    return "\n".join(lines)


def table_notes(results: dict[str, Any]) -> str:
    """What the columns of :func:`format_table` are."""
    config = results["config"]
    return (f"Final: the last {config['log_every']} of {config['num_steps']} steps' sampled responses "
            f"({config['num_prompts']} prompts × {config['group_size']} responses per step), mean ± std over "
            f"{config['num_seeds']} seeds. Fully correct: r = 1. At step: the first checkpoint by which every seed's "
            f"responses since the previous one were ≥ {config['success']:.0%} fully correct (seconds: compile + "
            "training to it). KL: KL(π‖π_ref) of the sampling policy, Σ_t k3_t per response. Length: tokens up to "
            "and including END (a correct answer has 5 to T). Tokens/s: sampled response positions (all seeds, "
            "padding included) per second of training, compile excluded; PPO's epochs are in its time. "
            f"{results['num_params']:,} parameters.")


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Reward, fully correct fraction, KL to the reference and response lengths against the step, per run
    (mean over seeds; solid: k1 in the reward, dotted: ρ·k3, dashed: the k3 loss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    steps = np.asarray(results["steps"])
    panels = (("reward", "mean reward"), ("success", "fully correct fraction"), ("kl", "KL(π‖π_ref), Σ_t k3_t"),
              ("length", "mean length (END included)"), ("correct_length", "length of fully correct responses"),
              ("wrong_length", "length of the others"))
    fig, axes = plt.subplots(2, 3, figsize=(17, 9), constrained_layout=True)
    for name, r in results["runs"].items():
        method = RUNS[name][0]
        for ax, (metric, _) in zip(axes.flat, panels):
            ax.plot(steps, _seed_mean(_values(r[metric])), color=COLORS[method], ls=LINESTYLES[RUNS[name][1]],
                    lw=1.6, label=LABELS[name])
    for ax, (metric, title) in zip(axes.flat, panels):
        ax.set(title=title, xlabel="step", xlim=(0, steps[-1]))
        ax.grid(alpha=0.3)
    axes[0, 1].axhline(config["success"], color="0.5", lw=0.8)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Sorting {config['num_digits']} digits of 0..{config['num_values'] - 1} by RL from scratch: a "
                 f"{config['num_layers']}-layer transformer (d = {config['d_model']}), {config['num_prompts']} prompts "
                 f"× {config['group_size']} responses per step, β = {config['beta']:g}, Adam lr "
                 f"{config['learning_rate']:g}, mean of {config['num_seeds']} seeds (one point per "
                 f"{config['log_every']} steps)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "sequence_rl", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=lambda results: format_table(results) + "\n" + table_notes(results), plots={"": plot},
                summary=summary_rows)


if __name__ == "__main__":
    main()
