"""A vmapped categorical MLP policy: logtrick's per-state estimator vs a hand-written surrogate.

A policy π_θ(a|s) = softmax(MLP_θ(s)), an MLP 16-256-256-10 (flax linen, ReLU), on S fixed random
states s ~ N(0, I_16), with a fixed random reward table r[s, a] ~ N(0, 1). The objective and its
gradient::

    J(θ) = (1/S) Σ_s E_{a~π_θ(·|s)}[r(s, a)],
    ĝ = (1/S) Σ_s (1/N) Σ_i (r(s, a_si) - b_si) ∇_θ log π_θ(a_si|s),   b the leave-one-out mean over i.

  library       ``jax.vmap`` of ``est.loss`` over the states, ``est = lt.score_function(lambda a, r_s:
                r_s[a], lt.families.categorical(), num_samples=N, baseline=lt.baselines.leave_one_out())``,
                fed ``model.apply(θ, states)``; ``jax.grad`` of the mean
  hand-written  the stop-gradient surrogate (1/S) Σ_s (1/N) Σ_i sg(r_si - b_si) log π_θ(a_si|s) in plain
                JAX, the same samples layout (one key per state, N actions from each)
  exact         ``jax.grad`` of (1/S) Σ_s Σ_a π_θ(a|s) r(s, a), the 10 actions enumerated (for scale)

For the same key the library and the hand-written surrogate draw the same actions, and the script
checks that their gradients agree to float rounding; it checks that the library's gradient is
unbiased against the exact one with ``lt.testing.assert_unbiased`` on M independent estimates
(every coordinate of θ). Times: the compiled gradients, interleaved after a warm-up, medians of
wall and CPU time; the hand-written surrogate compiled twice gives the noise floor of the time
ratios; compile time apart; the count of compiled HLO instructions that touch an array of at least
S·hidden elements (a pass over the activations).

Run from the repository root::

    python -m benchmarks.policy_mlp            # writes its section of benchmarks/RESULTS.md
    python -m benchmarks.policy_mlp --quick    # smoke run, prints only

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
  learning", 1992.
  Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for Free!", 2019.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import logtrick as lt
from benchmarks.common import compile_timed, interleaved_times, large_passes, median_iqr, paired_ratio, publish

SECTION = "## Vmapped categorical MLP policy: per-state estimator vs hand-written surrogate"
COMMAND = "python -m benchmarks.policy_mlp"
sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark configuration.

    Attributes:
      num_states: S, states in the batch.
      obs_dim, hidden, num_actions: the MLP's widths.
      num_samples: N, actions sampled per state.
      num_estimates: M, independent library estimates for the z-test.
      batch_size: estimates computed at once while drawing the M (memory).
      repeats: interleaved timed samples per method.
      min_sample_seconds: each timed sample repeats the call until it lasts this long.
      seed: PRNG seed of the network, the states, the rewards and the sampling keys.
    """

    num_states: int = 4096
    obs_dim: int = 16
    hidden: int = 256
    num_actions: int = 10
    num_samples: int = 4
    num_estimates: int = 400
    batch_size: int = 8
    repeats: int = 40
    min_sample_seconds: float = 0.05
    seed: int = 0


QUICK = Config(num_states=512, num_estimates=100, repeats=5, min_sample_seconds=0.01)


class Problem(NamedTuple):
    """The network, its parameters, the states (S, obs_dim) and the rewards (S, num_actions)."""

    model: nn.Module
    params: Any
    states: jax.Array
    rewards: jax.Array


def make_problem(config: Config) -> Problem:
    """A freshly initialised MLP, s ~ N(0, I), r ~ N(0, 1)."""
    model = nn.Sequential([nn.Dense(config.hidden), nn.relu, nn.Dense(config.hidden), nn.relu,
                           nn.Dense(config.num_actions)])
    k_init, k_states, k_rewards = jax.random.split(jax.random.key(config.seed), 3)
    states = jax.random.normal(k_states, (config.num_states, config.obs_dim))
    rewards = jax.random.normal(k_rewards, (config.num_states, config.num_actions))
    return Problem(model, model.init(k_init, states[:1]), states, rewards)


Gradient = Callable[[Any, jax.Array], Any]


def library_gradient(prob: Problem, num_samples: int) -> Gradient:
    """``(θ, key) -> ĝ``: ``jax.grad`` of the mean over states of the vmapped ``est.loss``."""
    est = lt.score_function(lambda a, r_s: r_s[a], lt.families.categorical(), num_samples=num_samples,
                            baseline=lt.baselines.leave_one_out())
    loss = jax.vmap(est.loss)

    def objective(params, keys):
        logits = prob.model.apply(params, prob.states)
        return jnp.mean(loss(logits, jax.vmap(est.init)(logits), keys, prob.rewards)[0])

    return lambda params, key: jax.grad(objective)(params, jax.random.split(key, prob.states.shape[0]))


def hand_written_gradient(prob: Problem, num_samples: int) -> Gradient:
    """``(θ, key) -> ĝ``: grad of (1/S) Σ_s (1/N) Σ_i sg(r_si - b_si) log π_θ(a_si|s), b leave-one-out."""

    def gradient(params, key):
        keys = jax.random.split(key, prob.states.shape[0])

        def surrogate(params):
            logits = prob.model.apply(params, prob.states)
            actions = sg(jax.vmap(lambda k, l: jax.random.categorical(k, l, shape=(num_samples,)))(keys, logits))
            log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), actions, axis=1)
            r = jnp.take_along_axis(prob.rewards, actions, axis=1)
            advantages = r - (jnp.sum(r, axis=1, keepdims=True) - r) / (num_samples - 1)
            return jnp.mean(sg(advantages) * log_probs)

        return jax.grad(surrogate)(params)

    return gradient


def exact_gradient(prob: Problem) -> Gradient:
    """``(θ, key) -> ∇J``, the key ignored: grad of (1/S) Σ_s Σ_a π_θ(a|s) r(s, a)."""

    def objective(params):
        probs = jax.nn.softmax(prob.model.apply(params, prob.states))
        return jnp.mean(jnp.sum(probs * prob.rewards, axis=1))

    return lambda params, key: jax.grad(objective)(params)


COPY = "hand-written, compiled again"


def _flat(tree: Any) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)])


def check_same_samples(library: Any, hand: Any) -> float:
    """The two gradients for one key agree to float rounding; returns max |Δ| / max |ĝ|."""
    a, b = _flat(library), _flat(hand)
    scale = np.max(np.abs(b))
    if not np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale):
        raise AssertionError(f"library and hand-written gradients differ for the same key: "
                             f"max |Δ| = {np.max(np.abs(a - b)):.3g} (max |ĝ| = {scale:.3g})")
    return float(np.max(np.abs(a - b)) / scale)


def draw(gradient: Gradient, params: Any, key: jax.Array, config: Config) -> Any:
    """M independent estimates, ``config.batch_size`` at a time (``lax.map``), jitted."""
    keys = jax.random.split(key, config.num_estimates)
    return jax.jit(lambda ks: jax.lax.map(lambda k: gradient(params, k), ks, batch_size=config.batch_size))(keys)


def run(config: Config) -> dict[str, Any]:
    """Checks and times the three gradients."""
    prob = make_problem(config)
    ms = {"library": library_gradient(prob, config.num_samples),
          "hand-written": hand_written_gradient(prob, config.num_samples),
          COPY: hand_written_gradient(prob, config.num_samples),
          "exact": exact_gradient(prob)}
    k_draw, k_time = jax.random.split(jax.random.key(config.seed + 1))
    compiled, out = {}, {}
    for name, gradient in ms.items():
        compile_s, fn = compile_timed(gradient, prob.params, k_time)
        compiled[name] = fn
        out[name] = {"compile_s": compile_s,
                     "large_passes": large_passes(fn.as_text(), config.num_states * config.hidden)}
    exact = compiled["exact"](prob.params, k_time)
    mismatch = check_same_samples(compiled["library"](prob.params, k_time), compiled["hand-written"](prob.params, k_time))
    estimates = draw(ms["library"], prob.params, k_draw, config)
    report = lt.testing.assert_unbiased(estimates, exact)
    acc = lt.testing.accuracy(estimates, exact)
    times = interleaved_times({name: (lambda fn=fn: fn(prob.params, k_time)) for name, fn in compiled.items()},
                              repeats=config.repeats, min_sample_seconds=config.min_sample_seconds)
    for name, samples in times.items():
        r = out[name]
        r["median_s"], r["q1_s"], r["q3_s"] = median_iqr(samples.wall)
        r["cpu_s"] = median_iqr(samples.cpu)[0]
        r["wall_ratio"] = paired_ratio(samples.wall, times["hand-written"].wall)
        r["cpu_ratio"] = paired_ratio(samples.cpu, times["hand-written"].cpu)
    num_params = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(prob.params))
    return {"methods": out, "mismatch": mismatch, "max_abs_z": report.max_abs_z, "threshold": report.threshold,
            "relative_rmse": acc.relative_rmse, "cosine": acc.cosine, "num_params": num_params}


def table(results: dict[str, Any]) -> str:
    """Markdown table: median time, interquartile range, ratio to the hand-written surrogate, compile, passes."""
    ms = results["methods"]
    lines = ["| gradient | wall time (median) | IQR | CPU time | / hand-written (wall / CPU) | compile "
             "| activation-sized passes |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in ms.items():
        lines.append(f"| {name} | {r['median_s'] * 1e3:.2f} ms | {r['q1_s'] * 1e3:.2f}–{r['q3_s'] * 1e3:.2f} ms "
                     f"| {r['cpu_s'] * 1e3:.2f} ms | {r['wall_ratio']:.3f}× / {r['cpu_ratio']:.3f}× | {r['compile_s']:.2f} s "
                     f"| {r['large_passes']} |")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> str:
    """The time target, met or missed, and the checks that passed."""
    ms = results["methods"]
    lib, copy = ms["library"], ms[COPY]
    return "\n".join([
        f"- library ≤ 1.05× the hand-written surrogate's time: {'met' if lib['cpu_ratio'] <= 1.05 else 'MISSED'} "
        f"({lib['cpu_ratio']:.3f}× CPU time, {lib['wall_ratio']:.3f}× wall time; noise floor, the hand-written "
        f"surrogate compiled again: {copy['cpu_ratio']:.3f}× CPU, {copy['wall_ratio']:.3f}× wall)",
        f"- same key, same gradient: max |Δ| / max |ĝ| = {results['mismatch']:.1e}",
        f"- unbiased against the exact gradient: max |z| = {results['max_abs_z']:.2f} ≤ {results['threshold']:.2f} "
        f"over all {results['num_params']:,} coordinates (one estimate: relative RMSE "
        f"{results['relative_rmse']:.2f}, mean cosine to the exact gradient {results['cosine']:.2f})",
    ])


def section(config: Config, command: str, results: dict, machine_info: str) -> str:
    """The RESULTS.md section for this benchmark."""
    return "\n\n".join([
        SECTION,
        f"Command: `{command}`. A categorical policy MLP {config.obs_dim}-{config.hidden}-{config.hidden}-"
        f"{config.num_actions} (flax linen, ReLU; {results['num_params']:,} parameters) on S = "
        f"{config.num_states} fixed random states, a fixed random reward table r[s, a] ~ N(0, 1); the "
        f"gradient of (1/S) Σ_s E_{{a~π(·|s)}}[r(s, a)] from N = {config.num_samples} actions per state with "
        "the leave-one-out baseline. library: `jax.vmap` of `est.loss` of `lt.score_function(lambda a, r_s: "
        "r_s[a], lt.families.categorical(), num_samples=N, baseline=lt.baselines.leave_one_out())` over the "
        "states, fed `model.apply(θ, states)`; hand-written: the stop-gradient surrogate in plain JAX with the "
        "same samples layout (one key per state); exact: the 10 actions enumerated. Unbiasedness: "
        f"`lt.testing.assert_unbiased` of M = {config.num_estimates} library estimates against the exact "
        "gradient (α = 10⁻³, Bonferroni over every parameter). Time: the compiled gradient, "
        f"{config.repeats} interleaved timed samples per method after a warm-up, each ≥ "
        f"{config.min_sample_seconds * 1e3:g} ms of back-to-back calls; medians and interquartile ranges of the "
        "wall time, median of the process CPU time (all threads: the work done, which the other jobs on the "
        "shared cores disturb much less); “/ hand-written” is the median over rounds of the ratio of the two "
        "samples timed in the same round, and the target is read off the CPU time; the hand-written surrogate "
        "compiled a second time is the noise floor of these ratios. "
        "Activation-sized passes: instructions of the compiled program's entry computation that read or "
        f"write an array of at least S·hidden = {config.num_states * config.hidden:,} "
        "elements.",
        f"Machine: {machine_info}.",
        table(results),
        targets(results),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=Config.num_samples)
    parser.add_argument("--repeats", type=int, default=Config.repeats)
    parser.add_argument("--quick", action="store_true", help="smaller configuration; prints only")
    args = parser.parse_args()
    config = QUICK if args.quick else Config(num_samples=args.num_samples, repeats=args.repeats)
    results = run(config)
    publish(SECTION, COMMAND, table(results) + "\n" + targets(results),
            lambda command, machine_info: section(config, command, results, machine_info), quick=args.quick)


if __name__ == "__main__":
    main()
