"""Sequence RL: one training step with lt.rl.sequence's RLOO and GRPO losses vs the same step in plain JAX.

The step is ``experiments.sequence_rl.make_step`` for the runs ``rloo`` and
``grpo`` (the experiment's default config, one seed): B·G responses sampled
token by token from the transformer, the reference's log-probabilities, the
k1 KL penalty to go, advantages, the policy loss, its gradient and one Adam
update, plus the batch's totals. The hand-written step below shares with it
only the model (``sample``, which returns the sampled tokens'
log-probabilities, and ``token_logits``), the verifier and optax's Adam; the
response mask, the log-softmax gather, the KL to go, RLOO's and GRPO's
advantages, GRPO's clipped ratio, the masked means and the totals are written
with jnp, no logtrick. Same state and key draw the same batch, and the two
losses have the same gradient on it (checked).

Timed: the compiled step (``step``) and, on one fixed batch, the part that
follows the sampling (``update``: teacher-forced log-probabilities, loss,
gradient, Adam), where the losses differ undiluted. After a warm-up of each,
``repeats`` interleaved samples per entry, each ≥ ``min_sample_seconds`` of
back-to-back calls; medians of wall and process CPU time; ratios are the
median over rounds of the paired ratio. The hand-written RLOO step compiled a
second time is the noise floor. Compile time (trace, lower, compile) is
reported separately.

    python -m benchmarks.sequence_rl            # writes its section of benchmarks/RESULTS.md
    python -m benchmarks.sequence_rl --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from benchmarks.common import interleaved_times, paired_ratio, publish
from experiments import sequence_rl as sr

SECTION = "## Sequence RL: training step, lt.rl.sequence losses vs hand-written"
COMMAND = "python -m benchmarks.sequence_rl"
RUNS = ("rloo", "grpo")
NOISE_FLOOR = "hand-written rloo step, compiled again"

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark configuration.

    Attributes:
      train: the experiment's configuration (model, B, G, T, β, ε); one seed.
      repeats: timed samples per entry.
      min_sample_seconds: each sample chains calls until it lasts this long.
      target: the largest acceptable library / hand-written time ratio.
    """

    train: sr.Config = sr.Config()
    repeats: int = 25
    min_sample_seconds: float = 0.1
    target: float = 1.1


def plain_log_probs(config: sr.Config, params: Any, prompts: jax.Array, tokens: jax.Array) -> jax.Array:
    """log π(y_t | x, y_<t): log-softmax of the teacher-forced logits gathered at the tokens, (B, G, T)."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    logits = sr.token_logits(config, params, prompts.reshape(-1, prompts.shape[-1]), flat)
    return jnp.take_along_axis(jax.nn.log_softmax(logits), flat[..., None], axis=-1)[..., 0].reshape(tokens.shape)


def plain_batch(config: sr.Config, params: Any, ref_params: Any, key: jax.Array) -> sr.Batch:
    """``sr.draw_batch`` with the mask and the reference's log-probabilities written by hand."""
    b, g = config.num_prompts, config.group_size
    k_prompts, k_sample = jax.random.split(key)
    prompts = jnp.repeat(jax.random.randint(k_prompts, (b, config.num_digits), 0, config.num_values), g, axis=0)
    tokens, log_prob_t = sr.sample(config, params, prompts, k_sample)
    is_end = tokens == config.end
    mask_t = (jnp.cumsum(is_end, axis=-1) - is_end == 0).astype(jnp.float32)
    rewards = jax.vmap(lambda x, y: sr.reward(config, x, y))(prompts, tokens)
    grouped = lambda a: a.reshape(b, g, *a.shape[1:])  # noqa: E731
    prompts, tokens = grouped(prompts), grouped(tokens)
    return sr.Batch(prompts, tokens, grouped(mask_t), grouped(rewards), grouped(log_prob_t),
                    sg(plain_log_probs(config, ref_params, prompts, tokens)))


def kl_to_go(config: sr.Config, batch: sr.Batch) -> jax.Array:
    """β Σ_{s≥t} mask_s (log π_old(y_s) - log π_ref(y_s)), (B, G, T)."""
    k1_t = (batch.log_prob_t - batch.ref_log_prob_t) * batch.mask_t
    return config.beta * jnp.flip(jnp.cumsum(jnp.flip(k1_t, -1), -1), -1)


def plain_rloo_loss(config: sr.Config, log_prob_t: jax.Array, batch: sr.Batch) -> jax.Array:
    """A_i = G/(G-1) (r_i - mean r) per group, minus the KL to go; -Σ mask sg(A_t) log π_t / (B·G·T)."""
    r = batch.rewards
    advantages = (r - jnp.mean(r, axis=1, keepdims=True)) * r.shape[1] / (r.shape[1] - 1)
    advantages_t = sg(advantages[..., None] - kl_to_go(config, batch))
    return -jnp.sum(batch.mask_t * advantages_t * log_prob_t) / batch.mask_t.size


def plain_grpo_loss(config: sr.Config, log_prob_t: jax.Array, batch: sr.Batch) -> jax.Array:
    """A_i = (r_i - mean r) / (std r + 1e-6) per group, minus the KL to go; PPO's clipped ρ_t A_t; per-response
    token mean, mean over responses."""
    r = batch.rewards
    advantages = (r - jnp.mean(r, axis=1, keepdims=True)) / (jnp.std(r, axis=1, keepdims=True) + 1e-6)
    advantages_t = sg(advantages[..., None] - kl_to_go(config, batch))
    ratio = jnp.exp(log_prob_t - batch.log_prob_t)
    eps = config.clip_epsilon
    loss_t = jnp.maximum(-ratio * advantages_t, -jnp.clip(ratio, 1 - eps, 1 + eps) * advantages_t)
    per_response = jnp.sum(loss_t * batch.mask_t, axis=-1) / jnp.maximum(jnp.sum(batch.mask_t, axis=-1), 1.0)
    return jnp.mean(per_response)


PLAIN_LOSSES = {"rloo": plain_rloo_loss, "grpo": plain_grpo_loss}


def plain_totals(batch: sr.Batch) -> sr.Totals:
    """``sr.totals`` by hand: k3 = e^δ - 1 - δ, δ = log π_ref - log π_old."""
    lengths = jnp.sum(batch.mask_t, axis=-1)
    correct = batch.rewards == 1.0
    delta = batch.ref_log_prob_t - batch.log_prob_t
    return sr.Totals(jnp.sum(batch.rewards), jnp.sum(correct), jnp.sum(lengths), jnp.sum(lengths * correct),
                     jnp.sum((jnp.expm1(delta) - delta) * batch.mask_t))


def make_gradient(config: sr.Config, run: str, plain: bool) -> Callable[[Any, sr.Batch], Any]:
    """``gradient(params, batch)`` of the run's loss at teacher-forced log-probabilities, library or hand-written."""

    def objective(params, batch):
        if plain:
            return PLAIN_LOSSES[run](config, plain_log_probs(config, params, batch.prompts, batch.tokens), batch)
        return sr.loss(config, run, sr.policy_log_probs(config, params, batch.prompts, batch.tokens), batch)

    return jax.grad(objective)


def make_update(config: sr.Config, run: str, plain: bool) -> Callable[[sr.TrainState, sr.Batch], sr.TrainState]:
    """``update(state, batch)``: log-probabilities, loss, gradient and one Adam step."""
    optimizer, gradient = optax.adam(config.learning_rate), make_gradient(config, run, plain)

    def update(state, batch):
        updates, opt_state = optimizer.update(gradient(state.params, batch), state.opt_state)
        return sr.TrainState(optax.apply_updates(state.params, updates), opt_state, state.ref_params)

    return update


def make_plain_step(config: sr.Config, run: str) -> Callable[[sr.TrainState, jax.Array], tuple[sr.TrainState, Any]]:
    """The hand-written counterpart of ``sr.make_step(config, run)``."""
    update = make_update(config, run, plain=True)

    def step(state, key):
        batch = plain_batch(config, state.params, state.ref_params, key)
        return update(state, batch), plain_totals(batch)

    return step


def compiled(fn: Callable, *args: Any) -> tuple[Callable, float]:
    """``fn`` compiled for ``args`` with the experiment's options, and the seconds it took."""
    start = time.perf_counter()
    out = jax.jit(fn).lower(*args).compile(sr.COMPILER_OPTIONS)
    return out, time.perf_counter() - start


def assert_same(library: Any, plain: Any, what: str) -> None:
    """Two pytrees equal to float32 rounding, relative to the largest entry of either."""
    want, got = (np.asarray(ravel_pytree(tree)[0], np.float64) for tree in (library, plain))
    scale = max(float(np.max(np.abs(want))), 1e-12)
    if not np.allclose(got, want, rtol=1e-4, atol=1e-5 * scale):
        raise AssertionError(f"{what}: library and hand-written differ by {np.max(np.abs(got - want)):.3g} "
                             f"(largest entry {scale:.3g})")


def run(config: Config) -> dict[str, Any]:
    """Checks the steps agree, then times every entry; returns medians, ratios and compile times."""
    train = config.train
    k_init, k_trained, k_step = jax.random.split(jax.random.key(train.seed), 3)
    state = sr.init_state(train, k_init)
    # A policy a few steps into training, so that rewards, KL and the clip are not trivial.
    warm, _ = jax.jit(sr.make_chunk(train, "rloo"), compiler_options=sr.COMPILER_OPTIONS)(state, k_trained)
    batch = jax.jit(lambda s, k: sr.draw_batch(train, s.params, s.ref_params, k))(warm, k_step)
    calls, compile_seconds = {}, {}
    for name in RUNS:
        entries = {f"library {name} step": (sr.make_step(train, name), (warm, k_step)),
                   f"hand-written {name} step": (make_plain_step(train, name), (warm, k_step)),
                   f"library {name} update": (make_update(train, name, plain=False), (warm, batch)),
                   f"hand-written {name} update": (make_update(train, name, plain=True), (warm, batch))}
        if name == "rloo":
            entries[NOISE_FLOOR] = (make_plain_step(train, name), (warm, k_step))
        for entry, (fn, args) in entries.items():
            compiled_fn, compile_seconds[entry] = compiled(fn, *args)
            calls[entry] = lambda f=compiled_fn, a=args: f(*a)
        # The same batch (its totals), and the same gradient on it; Adam's updates of near-zero gradient
        # coordinates amplify rounding, so they are not compared.
        assert_same(calls[f"library {name} step"]()[1], calls[f"hand-written {name} step"]()[1], f"{name} totals")
        gradients = [jax.jit(make_gradient(train, name, plain))(warm.params, batch) for plain in (False, True)]
        assert_same(*gradients, f"{name} gradient")
    times = interleaved_times(calls, repeats=config.repeats, min_sample_seconds=config.min_sample_seconds)
    tokens = train.num_prompts * train.group_size * train.max_response
    out = {}
    for entry, t in times.items():
        reference = NOISE_FLOOR.replace(", compiled again", "") if entry == NOISE_FLOOR else (
            entry.replace("library", "hand-written") if entry.startswith("library") else None)
        out[entry] = {"wall": statistics.median(t.wall), "cpu": statistics.median(t.cpu),
                      "tokens_per_second": tokens / statistics.median(t.wall), "compile": compile_seconds[entry]}
        if reference is not None:
            out[entry]["ratio_wall"] = paired_ratio(t.wall, times[reference].wall)
            out[entry]["ratio_cpu"] = paired_ratio(t.cpu, times[reference].cpu)
    return out


def table(results: dict[str, Any]) -> str:
    """Markdown: per entry, median wall and CPU time, tokens/s, the ratio to its hand-written twin, compile."""
    lines = ["| entry | wall time (median) | CPU time | response tokens/s | / hand-written (CPU / wall) | compile |",
             "|---|---:|---:|---:|---:|---:|"]
    for entry, r in results.items():
        ratio = f"{r['ratio_cpu']:.3f}× / {r['ratio_wall']:.3f}×" if "ratio_cpu" in r else ""
        lines.append(f"| {entry} | {r['wall'] * 1e3:.2f} ms | {r['cpu'] * 1e3:.2f} ms | {r['tokens_per_second']:,.0f} "
                     f"| {ratio} | {r['compile']:.2f} s |")
    return "\n".join(lines)


def targets(results: dict[str, Any], target: float) -> str:
    """The target, library ≤ ``target``× the hand-written step, met or missed (CPU time; wall alongside)."""
    lines = []
    for name in RUNS:
        for part in ("step", "update"):
            r = results[f"library {name} {part}"]
            met = r["ratio_cpu"] <= target
            lines.append(f"- library {name} {part} ≤ {target:g}× hand-written: {'met' if met else 'MISSED'} "
                         f"({r['ratio_cpu']:.3f}× CPU time, {r['ratio_wall']:.3f}× wall time)")
    floor = results[NOISE_FLOOR]
    lines.append(f"- noise floor, {NOISE_FLOOR} against the first: {floor['ratio_cpu']:.3f}× CPU time, "
                 f"{floor['ratio_wall']:.3f}× wall time")
    return "\n".join(lines)


def section(config: Config, command: str, results: dict[str, Any], machine_info: str) -> str:
    """The RESULTS.md section for this benchmark."""
    t = config.train
    return "\n\n".join([
        SECTION,
        f"Command: `{command}`. One training step of `experiments.sequence_rl` (runs `rloo` and `grpo`, one seed): "
        f"B = {t.num_prompts} prompts × G = {t.group_size} responses of T = {t.max_response} tokens sampled "
        f"token by token with a key-value cache from a {t.num_layers}-layer causal transformer (d = {t.d_model}, "
        f"{t.num_heads} heads), the reference's log-probabilities, the k1 KL penalty to go (β = {t.beta:g}), "
        "advantages, the policy loss (GRPO: clipped ratio, per-response token mean; RLOO: token sum), gradient, "
        "one Adam update, and the batch's totals. Library: `experiments.sequence_rl.make_step`, whose loss is "
        "`lt.rl.sequence` (`response_mask`, `token_log_probs`, `kl_in_reward`, `rloo_advantages` / "
        "`grpo_advantages`, `policy_loss`, `kl_estimates`). Hand-written: the same step with everything but the "
        "model (`sample`, `token_logits`), the verifier and Adam in plain jnp (`benchmarks/sequence_rl.py`); the "
        "same state and key draw the same batch, and the losses have the same gradient on it (checked). `update`: "
        "the part after sampling on one fixed batch (teacher-forced log-probabilities, loss, gradient, Adam), "
        "where the losses differ undiluted. "
        f"{config.repeats} interleaved samples per entry after a warm-up, each ≥ {config.min_sample_seconds:g} s "
        "of back-to-back calls; medians of wall and process CPU time (all threads); “/ hand-written” is the median "
        "over rounds of the paired ratio, and the target is read off the CPU time. Tokens/s: the B·G·T sampled "
        "response positions per second of wall time. Compile: trace, lower and compile, with the experiment's "
        "XLA options.",
        f"Machine: {machine_info}.",
        table(results),
        targets(results, config.target),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke configuration; prints the table, leaves RESULTS.md alone")
    args = parser.parse_args()
    config = Config(train=sr.QUICK, repeats=3, min_sample_seconds=0.01) if args.quick else Config()
    results = run(config)
    publish(SECTION, COMMAND, "\n".join([table(results), targets(results, config.target)]),
            lambda command, machine_info: section(config, command, results, machine_info), quick=args.quick)


if __name__ == "__main__":
    main()
