"""Categorical VAE: the cost of one training step per estimator, relative to leave-one-out REINFORCE at its budget.

Every method is ``experiments.categorical_vae.make_train_step`` (one seed, the
experiment's default config: batch of 50 images, D = 4 latents of K = 8
classes, Adam), jitted with the experiment's ``COMPILER_OPTIONS``, on a fixed
minibatch. The step includes everything the experiment does per step: the
encoder, the estimator's loss (whose decoder gradient comes from the same f
evaluations), the analytic KL, one reverse pass and the Adam update (and
RELAX's Adam step on its control variate). Each estimator is compared with
leave-one-out REINFORCE at the same number of f evaluations per image: M = 8,
and D·K = 32 for IndeCateR. Timing: ``benchmarks.common.interleaved_times``
(a warm-up, then rounds that time every method once in a rotated order,
each sample lasting ``min_sample_seconds``); the ratio is the median over
rounds of the per-round ratio (``paired_ratio``). Compile time (trace, lower,
XLA compile) is that of the first build, apart.

    python -m benchmarks.categorical_vae            # writes its section of benchmarks/RESULTS.md
    python -m benchmarks.categorical_vae --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm import tqdm

from benchmarks.common import interleaved_times, median_iqr, paired_ratio, publish
from experiments import categorical_vae as cv
from experiments import discrete_vae as dv

SECTION = "## Categorical VAE: training-step cost per estimator"
COMMAND = "python -m benchmarks.categorical_vae"
# RELAX with its control variate held fixed (cv_learning_rate = 0): what the estimator costs without the cv's training.
FIXED_CV = "relax_fixed_cv"
# Gumbel-Rao with one conditional Gumbel per sample instead of the experiment's 10: how its cost grows with them.
ONE_GUMBEL = "gumbel_rao_1"
# variant -> (the experiment's method, the config fields it changes)
VARIANTS = {FIXED_CV: ("relax", {"cv_learning_rate": 0.0}), ONE_GUMBEL: ("gumbel_rao", {"num_gumbels": 1})}
LABELS = {**{m: method.label for m, method in cv.METHODS.items()}, FIXED_CV: "RELAX, control variate fixed",
          ONE_GUMBEL: "Gumbel-Rao, 1 Gumbel per sample"}
# Each method's leave-one-out REINFORCE at the same f evaluations per image; the default is "reinforce_loo".
REFERENCES = {"indecater": "reinforce_loo_32", "reinforce_loo_32": "reinforce_loo_32"}
# Not held to the target: the exact gradient (4096 evaluations, not an estimator at the budget), RELAX with its
# control variate's training (a second-order pass, the algorithm's own work) and the one-Gumbel diagnostic.
EXEMPT = ("exact", "relax", ONE_GUMBEL)


def reference(method: str) -> str:
    """Leave-one-out REINFORCE at ``method``'s budget."""
    return REFERENCES.get(method, "reinforce_loo")


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark configuration.

    Attributes:
      train: the experiment's configuration (model sizes, batch, M).
      models: the VAEs benchmarked, one table block each.
      methods: the methods timed, their references among them, and the :data:`VARIANTS`.
      repeats: timed samples (rounds) per method.
      min_sample_seconds: each timed sample repeats the step until it lasts this long.
      target: the ratio to the reference every method but :data:`EXEMPT` should stay within.
    """

    train: cv.Config = cv.Config()
    models: tuple[str, ...] = cv.MODELS
    methods: tuple[str, ...] = ("reinforce_loo", "unordered_set", "relax", FIXED_CV, "straight_through",
                                "gumbel_softmax", "gumbel_softmax_st", "gumbel_rao", ONE_GUMBEL, "reinmax", "exact",
                                "reinforce_loo_32", "indecater")
    repeats: int = 25
    min_sample_seconds: float = 0.05
    target: float = 1.5


def build(config: cv.Config, model: str, method: str) -> tuple[Callable[[], Any], float]:
    """``call()``, one training step of ``method`` on a fixed minibatch from a fixed state, and its compile seconds.

    ``method`` is one of ``cv.METHODS`` or :data:`VARIANTS`.
    """
    if method in VARIANTS:
        method, changes = VARIANTS[method]
        config = dataclasses.replace(config, **changes)
    data = dv.load_data(config)
    vae = cv.make_vae(config, model)
    xs = data.train[:config.batch_size]
    params = jax.jit(lambda k: cv.init_params(config, vae, k, np.mean(np.asarray(data.train), axis=0)),
                     compiler_options=cv.COMPILER_OPTIONS)(jax.random.key(0))
    state = jax.jit(lambda p: cv.init_train_state(config, vae, method, p), compiler_options=cv.COMPILER_OPTIONS)(params)
    key = jax.random.key(1)
    jax.block_until_ready(state)
    start = time.perf_counter()
    step = jax.jit(cv.make_train_step(config, vae, method)).lower(state, xs, key).compile(cv.COMPILER_OPTIONS)
    return (lambda: step(state, xs, key)), time.perf_counter() - start


def bench(config: Config, model: str) -> dict[str, dict[str, Any]]:
    """Per method on one model: median, quartiles of the step's wall and CPU seconds, paired ratios to its
    reference, compile seconds."""
    calls, compile_s = {}, {}
    for method in tqdm(config.methods, desc=f"{model}: compile"):
        calls[method], compile_s[method] = build(config.train, model, method)
    times = interleaved_times(calls, repeats=config.repeats, min_sample_seconds=config.min_sample_seconds)
    out = {}
    for method, t in times.items():
        ref = times[reference(method)]
        median, q1, q3 = median_iqr(t.wall)
        out[method] = {"reference": reference(method), "step_s": median, "step_s_quartiles": [q1, q3],
                       "cpu_s": median_iqr(t.cpu)[0], "ratio": paired_ratio(t.wall, ref.wall),
                       "cpu_ratio": paired_ratio(t.cpu, ref.cpu), "compile_s": compile_s[method]}
    return out


def run(config: Config) -> dict[str, dict[str, dict[str, Any]]]:
    """{model: {method: stats}}."""
    return {model: bench(config, model) for model in config.models}


def verdict(config: Config, method: str, ratio: float) -> str:
    """Whether ``method`` meets the target: "reference", "exempt", "met" or "MISSED"."""
    if reference(method) == method:
        return "reference"
    if method in EXEMPT:
        return "exempt"
    return "met" if ratio <= config.target else "MISSED"


def table(config: Config, results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: f evaluations, median step time, IQR, wall and CPU ratios to the reference, target, compile."""
    lines = [f"| model | estimator | f evals | step time (median) | IQR | × LOO REINFORCE (wall) | × (CPU) | "
             f"≤ {config.target:g}× | compile |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for model, r in results.items():
        for method, s in r.items():
            low, high = s["step_s_quartiles"]
            evaluations = cv.METHODS[VARIANTS.get(method, (method,))[0]].evaluations(config.train)
            lines.append(f"| {model} | {LABELS[method]} | {evaluations} | {s['step_s'] * 1e3:.3f} ms | "
                         f"{low * 1e3:.3f}–{high * 1e3:.3f} ms | {s['ratio']:.2f}× (vs {LABELS[s['reference']]}) | "
                         f"{s['cpu_ratio']:.2f}× | {verdict(config, method, s['ratio'])} | {s['compile_s']:.2f} s |")
    return "\n".join(lines)


def targets(config: Config, results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Per model: every method but the references and :data:`EXEMPT` within ``target`` × its reference?"""
    lines = []
    for model, r in results.items():
        checked = {m: s["ratio"] for m, s in r.items() if verdict(config, m, s["ratio"]) in ("met", "MISSED")}
        worst = max(checked, key=checked.get)
        missed = [LABELS[m] for m, ratio in checked.items() if ratio > config.target]
        lines.append(f"- {model}: every estimator but the exact gradient and RELAX with its control-variate training "
                     f"≤ {config.target:g}× leave-one-out REINFORCE at the same f evaluations: "
                     f"{'met' if not missed else 'MISSED by ' + ', '.join(missed)} (worst {LABELS[worst]}, "
                     f"{checked[worst]:.2f}×)"
                     + (f"; RELAX {r['relax']['ratio']:.2f}× (exempt)" if "relax" in r else ""))
    return "\n".join(lines)


def interpretation(config: Config, results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A few sentences read off the results."""
    t = config.train

    def span(method: str, key: str = "ratio", scale: float = 1.0, unit: str = "×") -> str:
        low, high = (f"{f(r[method][key] * scale for r in results.values()):.2f}" for f in (min, max))
        return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"

    return (
        f"At this size (batch {t.batch_size}, M = {t.num_samples}) a leave-one-out REINFORCE step takes "
        f"{span('reinforce_loo', 'step_s', 1e3, ' ms')}. Straight-through ({span('straight_through')}), "
        f"Gumbel-softmax ({span('gumbel_softmax')}, straight-through {span('gumbel_softmax_st')}) and ReinMax "
        f"({span('reinmax')}) evaluate the decoder M times like REINFORCE and backpropagate through it into the "
        f"logits. Gumbel-Rao ({span('gumbel_rao')}) does the same but draws {t.num_gumbels} conditional Gumbels per "
        f"sample and averages {t.num_gumbels} softmaxes (no extra decoder evaluation); with one Gumbel it costs "
        f"{span(ONE_GUMBEL)}, so that Rao-Blackwellisation is most of its cost at this size. The unordered set "
        f"estimator ({span('unordered_set')}) adds the stochastic beam search over the {t.num_variables} "
        f"variables and the exact set probabilities, a recursion over the 2^M = {2 ** t.num_samples} subsets of "
        f"the sample. IndeCateR ({span('indecater')} against leave-one-out at its own "
        f"{t.num_variables * t.num_classes} evaluations) needs one draw and no baseline. RELAX "
        f"({span('relax')}) is {span(FIXED_CV)} with its control variate fixed: per draw it also evaluates the "
        "control variate η log p(x|softmax(z/λ)) - KL + r_ρ(z, x) at z and at z̃ and differentiates both; "
        "training the control variate adds the gradient of Σ_d ĝ_d² w.r.t. ψ, a reverse pass through the "
        f"θ-gradient of the loss (second order). The exact gradient ({span('exact')}) evaluates the decoder at "
        f"all {t.num_classes ** t.num_variables} configurations, shared across the batch.")


def section(config: Config, command: str, results: dict, machine_info: str) -> str:
    """The RESULTS.md section for this benchmark."""
    t = config.train
    return "\n\n".join([
        SECTION,
        f"Command: `{command}`. One jitted training step of `experiments.categorical_vae` (one seed; batch of "
        f"{t.batch_size} binarised 8×8 digits, {t.num_variables} categorical latents of {t.num_classes} classes, "
        f"linear or {t.hidden}-unit tanh encoder and decoder, M = {t.num_samples} f evaluations per image (IndeCateR "
        f"with one sample: {t.num_variables * t.num_classes}), the decoder's gradient from the same evaluations, "
        "analytic KL, one reverse pass and Adam), compiled with `experiments.categorical_vae.COMPILER_OPTIONS`, "
        "against leave-one-out REINFORCE at the same number of f evaluations. Step time: the median over "
        f"{config.repeats} timed samples per method, each at least {config.min_sample_seconds * 1e3:g} ms of "
        "steps to `block_until_ready`, methods interleaved in rotated order after a warm-up; the ratios are "
        "medians over rounds of the per-round ratio, wall-clock and process CPU time; compile: trace, lower and "
        "XLA compile of the step. “RELAX, control variate fixed” is the same step with `cv_learning_rate = 0`: the "
        "estimator without the control variate's training (its `cv_grads` unused, so compiled away); “Gumbel-Rao, "
        f"1 Gumbel per sample” is Gumbel-Rao with `num_gumbels = 1` instead of the experiment's {t.num_gumbels}.",
        f"Machine: {machine_info}.",
        table(config, results),
        targets(config, results),
        interpretation(config, results),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke configuration; prints the table, leaves RESULTS.md alone")
    args = parser.parse_args()
    config = (Config(train=cv.QUICK, models=("linear",), repeats=3, min_sample_seconds=0.005)
              if args.quick else Config())
    results = run(config)
    publish(SECTION, COMMAND, "\n".join([table(config, results), targets(config, results),
                                         interpretation(config, results)]),
            lambda command, machine_info: section(config, command, results, machine_info), quick=args.quick)


if __name__ == "__main__":
    main()
