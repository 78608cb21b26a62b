"""Discrete VAE: the cost of one training step per gradient estimator, relative to REINFORCE + leave-one-out.

Every method is ``experiments.discrete_vae.make_train_step`` (one seed, the
experiment's default config: batch of 50 images, 12 latents, K = 4 discrete
f evaluations per image for every estimator, Adam), jitted with the
experiment's ``COMPILER_OPTIONS``, on a fixed minibatch. The step includes
everything the experiment does per step: the encoder, the estimator's loss
(whose decoder gradient comes from the same K samples), the analytic KL, one
reverse pass and the Adam update (and RELAX's Adam step on its control
variate).
After a warm-up of each, the methods are timed round-robin: each timed sample
chains calls (the state returned by one is the input of the next) until it
lasts ``min_sample_seconds``, to ``block_until_ready``; medians. Compile time
(trace, lower, XLA compile of a freshly built step) is the median of
``compile_repeats``, separately.

    python -m benchmarks.discrete_vae            # writes its section of benchmarks/RESULTS.md
    python -m benchmarks.discrete_vae --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm import tqdm

from benchmarks.common import publish
from experiments import discrete_vae as dv

SECTION = "## Discrete VAE: training-step cost per estimator"
COMMAND = "python -m benchmarks.discrete_vae"
REFERENCE = "reinforce_loo"
# RELAX with its control variate held fixed (cv_learning_rate = 0): what the estimator costs without the cv's training.
FIXED_CV = "relax_fixed_cv"
LABELS = {**dv.LABELS, FIXED_CV: "RELAX, control variate fixed"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark configuration.

    Attributes:
      train: the experiment's configuration (model sizes, batch, K).
      models: the VAEs benchmarked, one table block each.
      methods: the methods timed, :data:`REFERENCE` among them, and :data:`FIXED_CV`.
      compile_repeats: fresh compiles timed per method.
      repeats: timed samples per method.
      min_sample_seconds: each timed sample chains steps until it lasts this long.
      target: the largest acceptable step-time ratio to :data:`REFERENCE` (RELAX exempt).
    """

    train: dv.Config = dv.Config()
    models: tuple[str, ...] = dv.MODELS
    methods: tuple[str, ...] = (*dv.METHODS, FIXED_CV)
    compile_repeats: int = 3
    repeats: int = 25
    min_sample_seconds: float = 0.05
    target: float = 1.5


def build(config: dv.Config, model: str, method: str) -> tuple[Callable, dv.TrainState, jax.Array, float]:
    """A freshly traced and compiled training step, its initial state, the minibatch, and the compile seconds.

    ``method`` is one of ``dv.METHODS`` or :data:`FIXED_CV`.
    """
    if method == FIXED_CV:
        config, method = dataclasses.replace(config, cv_learning_rate=0.0), "relax"
    data = dv.load_data(config)
    vae = dv.make_vae(config, model)
    xs = data.train[:config.batch_size]
    start = time.perf_counter()
    params = jax.jit(lambda k: dv.init_params(config, vae, k, np.mean(np.asarray(data.train), axis=0)),
                     compiler_options=dv.COMPILER_OPTIONS)(jax.random.key(0))
    state = jax.jit(lambda p: dv.init_train_state(config, vae, method, p), compiler_options=dv.COMPILER_OPTIONS)(params)
    step = jax.jit(dv.make_train_step(config, vae, method)).lower(state, xs, jax.random.key(1)).compile(
        dv.COMPILER_OPTIONS)
    jax.block_until_ready(state)
    return step, state, xs, time.perf_counter() - start


def chain(step: Callable, state: dv.TrainState, xs: jax.Array, keys: jax.Array) -> tuple[float, dv.TrainState]:
    """Seconds per step of ``len(keys)`` chained steps, to ``block_until_ready``, and the last state."""
    start = time.perf_counter()
    for key in keys:
        state = step(state, xs, key)
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / len(keys), state


def bench(config: Config, model: str) -> dict[str, dict[str, Any]]:
    """Median step and compile seconds of every method on one model, interleaved round-robin after a warm-up."""
    steps, states, xs, calls = {}, {}, None, {}
    keys = jax.random.split(jax.random.key(2), 4096)
    for method in config.methods:
        steps[method], states[method], xs, _ = build(config.train, model, method)
        seconds, states[method] = chain(steps[method], states[method], xs, keys[:20])
        calls[method] = int(min(len(keys), max(5, np.ceil(config.min_sample_seconds / seconds))))
    compile_s = {m: [] for m in config.methods}
    step_s = {m: [] for m in config.methods}
    methods = list(config.methods)
    for r in tqdm(range(max(config.compile_repeats, config.repeats)), desc=model):
        for method in methods[r % len(methods):] + methods[:r % len(methods)]:
            if r < config.compile_repeats:
                compile_s[method].append(build(config.train, model, method)[3])
            if r < config.repeats:
                seconds, states[method] = chain(steps[method], states[method], xs, keys[:calls[method]])
                step_s[method].append(seconds)
    return {m: {"step_s": statistics.median(step_s[m]), "compile_s": statistics.median(compile_s[m]),
                "calls_per_sample": calls[m], "step_s_quartiles": np.quantile(step_s[m], [0.25, 0.75]).tolist()}
            for m in config.methods}


def run(config: Config) -> dict[str, dict[str, dict[str, Any]]]:
    """{model: {method: stats}}."""
    return {model: bench(config, model) for model in config.models}


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: median step time, interquartile range, ratio to REINFORCE + leave-one-out, compile."""
    lines = ["| model | estimator | step time (median) | IQR | × REINFORCE + LOO | compile |",
             "|---|---|---:|---:|---:|---:|"]
    for model, r in results.items():
        reference = r[REFERENCE]["step_s"]
        for method, s in r.items():
            low, high = s["step_s_quartiles"]
            lines.append(f"| {model} | {LABELS[method]} | {s['step_s'] * 1e3:.3f} ms | {low * 1e3:.3f}–"
                         f"{high * 1e3:.3f} ms | {s['step_s'] / reference:.2f}× | {s['compile_s']:.2f} s |")
    return "\n".join(lines)


def targets(config: Config, results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Every estimator but RELAX (and the exact gradient, not an estimator) within ``target`` × REINFORCE + LOO."""
    lines = []
    for model, r in results.items():
        reference = r[REFERENCE]["step_s"]
        checked = {m: s["step_s"] / reference for m, s in r.items() if m not in ("exact", "relax", FIXED_CV, REFERENCE)}
        worst = max(checked, key=checked.get)
        met = checked[worst] <= config.target
        lines.append(f"- {model}: every estimator but RELAX ≤ {config.target:g}× REINFORCE + leave-one-out: "
                     f"{'met' if met else 'MISSED'} (worst {LABELS[worst]}, {checked[worst]:.2f}×)"
                     + (f"; RELAX {r['relax']['step_s'] / reference:.2f}× (exempt)" if "relax" in r else ""))
    return "\n".join(lines)


def interpretation(config: Config, results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A few sentences read off the results."""
    t = config.train
    ratio = {model: {m: s["step_s"] / r[REFERENCE]["step_s"] for m, s in r.items()} for model, r in results.items()}

    def span(method: str) -> str:
        values = [ratio[model][method] for model in results]
        return f"{min(values):.2f}–{max(values):.2f}×" if len(values) > 1 else f"{values[0]:.2f}×"

    return (
        f"At this size (batch {t.batch_size}, K = {t.num_samples}) a step is a few hundred microseconds of many "
        f"small ops. ARM, DisARM and VIMCO cost about what REINFORCE does ({span('arm')}, {span('disarm')}, "
        f"{span('vimco')}): the same "
        "K decoder evaluations per image, forward and back (the encoder gradient formed from the f values, the "
        f"decoder gradient pathwise through the same evaluations). Gumbel straight-through "
        f"({span('gumbel_st')}) also backpropagates through the decoder into the logits. RELAX "
        f"({span('relax')}) is {span(FIXED_CV)} with its control variate held fixed: per draw it also evaluates "
        "the control variate η log p(x|σ(z/λ)) - KL + r_ρ(z, x) at z and at z̃ and differentiates both, two "
        "more decoder passes forward and back. Training the control variate adds the rest: the estimator's "
        "`aux[\"cv_grads\"]`, the gradient w.r.t. (η, λ, ρ) of Σ_d ĝ_d², a reverse pass through the θ-gradient "
        "of the loss (second order), averaged over the batch for the caller's Adam step. Both are the "
        f"algorithm's own work, not overhead. The exact gradient ({span('exact')}) evaluates the decoder at all "
        f"{2 ** t.num_latents} latent configurations, {2 ** t.num_latents // t.num_samples}× the f evaluations of "
        "the estimators per image, but shares that pass across the batch.")


def section(config: Config, command: str, results: dict, machine_info: str) -> str:
    """The RESULTS.md section for this benchmark."""
    t = config.train
    return "\n\n".join([
        SECTION,
        f"Command: `{command}`. One jitted training step of `experiments.discrete_vae` (one seed; batch of "
        f"{t.batch_size} binarised 8×8 digits, {t.num_latents} Bernoulli latents, linear or {t.hidden}-unit "
        f"tanh encoder and decoder, K = {t.num_samples} discrete f evaluations per image for every estimator "
        "(the decoder's gradient from the same evaluations), analytic KL, one reverse pass and Adam; the exact "
        "gradient "
        f"sums over all {2 ** t.num_latents} latent configurations), compiled with "
        "`experiments.discrete_vae.COMPILER_OPTIONS`. Step time: the median over "
        f"{config.repeats} timed samples per method, each at least {config.min_sample_seconds * 1e3:g} ms "
        "of chained steps to `block_until_ready`, methods interleaved after a warm-up; compile: trace, lower "
        f"and XLA compile of a freshly built step, median of {config.compile_repeats}. “RELAX, control variate "
        "fixed” is the same step with `cv_learning_rate = 0`: the estimator without the control variate's training "
        "(its `cv_grads` unused, so compiled away).",
        f"Machine: {machine_info}.",
        table(results),
        targets(config, results),
        interpretation(config, results),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke configuration; prints the table, leaves RESULTS.md alone")
    args = parser.parse_args()
    config = (Config(train=dv.QUICK, models=("linear",), methods=(REFERENCE, "arm", "disarm", "relax", "vimco",
                     "gumbel_st", "exact", FIXED_CV), compile_repeats=1, repeats=3, min_sample_seconds=0.005)
              if args.quick else Config())
    results = run(config)
    publish(SECTION, COMMAND, "\n".join([table(results), targets(config, results), interpretation(config, results)]),
            lambda command, machine_info: section(config, command, results, machine_info), quick=args.quick)


if __name__ == "__main__":
    main()
