"""Shared machinery of the Bernoulli toy problems: E_{b ~ Bernoulli(σ(θ))}[(1/D) ||b - t||²].

The objective has the closed form, per coordinate,

    E[(b_i - t)²] = σ(θ_i) (1 - t)² + (1 - σ(θ_i)) t²,

so the exact objective and, through ``jax.grad``, the exact gradient are
available at every step. :mod:`experiments.rebar_toy` minimises it for one
logit (D = 1), :mod:`experiments.rebar_toy_highdim` maximises it for D = 200.
Every run is a ``lax.scan`` over Adam steps, jitted and vmapped over
(target, seed) pairs and cut into chunks so that a progress bar advances; at
the start of each chunk the variance of the gradient estimate is measured
from fresh draws at the current logits and estimator state.

References:
  Tucker et al., "REBAR: Low-variance, unbiased gradient estimates for discrete
  latent variable models", 2017.
  Grathwohl et al., "Backpropagation through the Void: Optimizing control
  variates for black-box gradient estimation", 2018.
  Yin and Zhou, "ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
  Networks", 2019.
  Dong, Mnih and Tucker, "DisARM: An Antithetic Gradient Estimator for Binary
  Latent Variables", 2020.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import logtrick as lt
from experiments import common

# XLA:CPU options: LLVM at -O1 without its expensive passes compiles these small
# programs markedly faster, and they run as fast.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}

LABELS = {
    "exact": "exact gradient",
    "reinforce": "REINFORCE",
    "loo": "REINFORCE + leave-one-out",
    "optimal": "REINFORCE + optimal baseline",
    "arm": "ARM",
    "disarm": "DisARM",
    "rebar": "REBAR",
    "relax": "RELAX",
}
COLORS = {"exact": "k", "reinforce": "tab:red", "loo": "tab:orange", "optimal": "tab:brown", "arm": "tab:olive",
          "disarm": "tab:green", "rebar": "tab:blue", "relax": "tab:purple"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      targets: the targets t, one set of runs each.
      dim: D, Bernoulli variables (logits of shape (D,), all starting at 0).
      maximise: maximise the objective (else minimise it).
      estimators: (name, num_samples) pairs, names from :data:`LABELS`;
        num_samples is the number of Bernoulli draws b per step (ignored for
        ``exact``).
      num_steps: Adam steps per run, a multiple of ``checkpoint_every``.
      log_every: steps between records of the exact objective; divides
        ``checkpoint_every``.
      checkpoint_every: steps per jitted chunk; the gradient variance is
        measured at the start of every chunk.
      variance_draws: fresh gradient estimates per variance measurement.
      num_seeds: runs per (estimator, target).
      learning_rate: Adam step size of the logits.
      cv_learning_rate: Adam step size of REBAR's and RELAX's control-variate
        parameters.
      temperature: initial temperature λ of the relaxation σ(z / λ).
      hidden: width of RELAX's MLP r_ρ(z) (one tanh layer).
      seed: PRNG seed; run (target i, seed s) uses ``split(key(seed), num_seeds)[s]``.
    """

    targets: tuple[float, ...] = (0.45, 0.49, 0.499)
    dim: int = 1
    maximise: bool = False
    estimators: tuple[tuple[str, int], ...] = (("exact", 0), ("reinforce", 1), ("loo", 2), ("arm", 2),
                                               ("disarm", 2), ("rebar", 1), ("relax", 1))
    num_steps: int = 5000
    log_every: int = 10
    checkpoint_every: int = 100
    variance_draws: int = 1024
    num_seeds: int = 5
    learning_rate: float = 0.01
    cv_learning_rate: float = 0.01
    temperature: float = 0.5
    hidden: int = 10
    seed: int = 0

    def __post_init__(self):
        unknown = [name for name, _ in self.estimators if name not in LABELS]
        if unknown:
            raise ValueError(f"Config: unknown estimators {unknown}; choose from {tuple(LABELS)}")
        if self.num_steps % self.checkpoint_every or self.checkpoint_every % self.log_every:
            raise ValueError("Config: `log_every` must divide `checkpoint_every`, which must divide `num_steps`")
        if self.variance_draws < 2:
            raise ValueError(f"Config: `variance_draws` must be >= 2, got {self.variance_draws}")


# ---------------------------------------------------------------- problem


def squared_distance(b: jax.Array, target: jax.Array) -> jax.Array:
    """(1/D) ||b - t||² for one sample b of shape (D,); b may be relaxed, in [0, 1]^D."""
    return jnp.mean((b - target) ** 2)


def objective(logits: jax.Array, target: jax.Array) -> jax.Array:
    """The exact E[(1/D) ||b - t||²] = mean_i [σ(θ_i) (1 - t)² + (1 - σ(θ_i)) t²]."""
    p = jax.nn.sigmoid(logits)
    return jnp.mean(p * (1.0 - target) ** 2 + (1.0 - p) * target**2)


def exact_estimator(expected: Callable[[jax.Array], jax.Array]) -> lt.Estimator:
    """The exact gradient behind the Estimator contract: ``jax.grad`` of ``expected``, no state, no noise."""

    def loss(params, state, key):
        del key
        value = expected(params)
        return value, (state, {"f": jax.lax.stop_gradient(value)[None]})

    return lt.from_loss(lambda params: (), loss, caller="exact")


# ---------------------------------------------------------------- RELAX control variate


def init_mlp(key: jax.Array, dim: int, hidden: int) -> dict[str, jax.Array]:
    """r_ρ's parameters: LeCun-normal first layer, zero output layer (so r_ρ = 0 at the start)."""
    return {"w1": jax.random.normal(key, (dim, hidden)) / math.sqrt(dim), "b1": jnp.zeros(hidden),
            "w2": jnp.zeros(hidden), "b2": jnp.zeros(())}


def mlp(params: dict[str, jax.Array], z: jax.Array) -> jax.Array:
    """r_ρ(z) = w2 · tanh(W1ᵀ z + b1) + b2, a scalar for z of shape (D,)."""
    return jnp.tanh(z @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def relax_control_variate(f: Callable[[jax.Array], jax.Array]) -> Callable[[Any, jax.Array], jax.Array]:
    """c_φ(z) = η f(σ(z / λ)) + r_ρ(z), φ = (η, log λ, ρ): REBAR's relaxed term plus an MLP.

    Grathwohl et al. 2018, section 3.3 and the toy experiment of section 6.1.
    """

    def control_variate(cv_params, z):
        relaxed = jax.nn.sigmoid(z / jnp.exp(cv_params["log_temperature"]))
        return cv_params["scale"] * f(relaxed) + mlp(cv_params["mlp"], z)

    return control_variate


# ---------------------------------------------------------------- estimators and training


def make_estimator(config: Config, name: str, num_samples: int, target: jax.Array, key: jax.Array) -> lt.Estimator:
    """The estimator ``name`` for the target t, f(b) = ±(1/D) ||b - t||² (minus when maximising).

    ``key`` draws RELAX's initial MLP; the other estimators ignore it.
    """
    sign = -1.0 if config.maximise else 1.0

    def f(b):
        return sign * squared_distance(b, target)

    bernoulli = lt.families.bernoulli()
    cv_optimizer = optax.adam(config.cv_learning_rate)
    if name == "exact":
        return exact_estimator(lambda logits: sign * objective(logits, target))
    if name == "reinforce":
        return lt.score_function(f, bernoulli, num_samples=num_samples)
    if name == "loo":
        return lt.score_function(f, bernoulli, num_samples=num_samples, baseline=lt.baselines.leave_one_out())
    if name == "optimal":
        return lt.optimal_control_variate(f, bernoulli, num_samples=num_samples, decay=0.9)
    if name == "arm":
        return lt.discrete.arm(f, num_samples=num_samples)
    if name == "disarm":
        return lt.discrete.disarm(f, num_samples=num_samples)
    if name == "rebar":
        return lt.discrete.rebar(f, num_samples=num_samples, temperature=config.temperature, optimizer=cv_optimizer)
    if name == "relax":
        cv_params = {"scale": jnp.ones(()), "log_temperature": math.log(config.temperature) * jnp.ones(()),
                     "mlp": init_mlp(key, config.dim, config.hidden)}
        return lt.discrete.relax(f, relax_control_variate(f), cv_params, num_samples=num_samples,
                                 optimizer=cv_optimizer)
    raise ValueError(f"make_estimator: unknown estimator {name!r}; choose from {tuple(LABELS)}")


def f_evaluations(name: str, num_samples: int) -> str:
    """Evaluations of f per step: discrete draws, plus REBAR's and RELAX's two relaxed ones per draw."""
    if name == "exact":
        return "closed form"
    if name in ("rebar", "relax"):
        return f"{num_samples} + {2 * num_samples} relaxed"
    return str(num_samples)


class Carry(NamedTuple):
    """The state of one run: logits, estimator state, Adam state."""

    logits: jax.Array
    estimator_state: Any
    opt_state: Any


class Chunk(NamedTuple):
    """What one chunk records: the variance at its start, the exact objective after every ``log_every`` steps."""

    variance: jax.Array
    objective: jax.Array


def make_train(config: Config, name: str, num_samples: int) -> tuple[Callable, Callable]:
    """``(init, chunk)``, pure functions of one run (target t, run key).

    ``init(t, key) -> Carry``; ``chunk(t, key, carry, chunk_key) -> (Carry,
    Chunk)`` measures Σ_i Var[ĝ_i], the per-coordinate variances of
    ``variance_draws`` fresh estimates at the carry's logits and estimator
    state, summed (0 for the exact gradient), then takes ``checkpoint_every``
    Adam steps.
    """
    optimizer = optax.adam(config.learning_rate)

    def estimator(target, key):
        return make_estimator(config, name, num_samples, target, key)

    def init(target, key):
        logits = jnp.zeros(config.dim)
        return Carry(logits, estimator(target, key).init(logits), optimizer.init(logits))

    def chunk(target, key, carry, chunk_key):
        est = estimator(target, key)

        def step(carry, step_key):
            grads, est_state, _ = est.estimate(carry.logits, carry.estimator_state, step_key)
            updates, opt_state = optimizer.update(grads, carry.opt_state)
            carry = Carry(optax.apply_updates(carry.logits, updates), est_state, opt_state)
            return carry, objective(carry.logits, target)

        k_draws, k_steps = jax.random.split(chunk_key)
        # jax.grad of the loss, at the carried estimator state.
        draws = jax.vmap(jax.grad(lambda p, s, k: est.loss(p, s, k)[0]), (None, None, 0))(
            carry.logits, carry.estimator_state, jax.random.split(k_draws, config.variance_draws))
        variance = jnp.sum(jnp.var(draws, axis=0, ddof=1))
        carry, values = jax.lax.scan(step, carry, jax.random.split(k_steps, config.checkpoint_every))
        return carry, Chunk(variance, values[config.log_every - 1::config.log_every])

    return init, chunk


def train(config: Config, name: str, num_samples: int, *, progress: bool = False) -> dict[str, np.ndarray]:
    """All (target, seed) runs of one estimator, vmapped, chunk by chunk (one compiled chunk).

    Returns numpy arrays with leading axes (targets, seeds): ``objective``
    (..., 1 + num_steps / log_every), ``variance`` (..., num_steps /
    checkpoint_every), at the start of every chunk, ``probability`` σ(θ) at
    the end (..., D), and ``seconds``, the wall time (compile included).
    """
    start = time.perf_counter()
    num_targets, num_seeds = len(config.targets), config.num_seeds
    targets = jnp.repeat(jnp.asarray(config.targets), num_seeds)
    run_keys = jax.random.split(jax.random.key(config.seed), num_seeds)[np.tile(np.arange(num_seeds), num_targets)]
    init, chunk = make_train(config, name, num_samples)
    num_chunks = config.num_steps // config.checkpoint_every
    chunk_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, 1), num_chunks))(run_keys)

    carry = jax.jit(jax.vmap(init))(targets, run_keys)
    objectives, variances = [jax.vmap(objective)(carry.logits, targets)[:, None]], []
    run_chunk = jax.jit(jax.vmap(chunk)).lower(targets, run_keys, carry, chunk_keys[:, 0]).compile(COMPILER_OPTIONS)
    for i in tqdm(range(num_chunks), desc=f"{name:<9}", disable=not progress, leave=False):
        carry, out = run_chunk(targets, run_keys, carry, chunk_keys[:, i])
        objectives.append(out.objective)
        variances.append(out.variance)
    shape = (num_targets, num_seeds)
    result = {"objective": np.concatenate(jax.device_get(objectives), axis=1),
              "variance": np.stack(jax.device_get(variances), axis=1),
              "probability": np.asarray(jax.nn.sigmoid(carry.logits))}
    result = {key: value.reshape(shape + value.shape[1:]) for key, value in result.items()}
    result["seconds"] = time.perf_counter() - start
    return result


def summarise(out: dict[str, np.ndarray], name: str, i: int) -> dict[str, Any]:
    """JSON-ready numbers of target i from :func:`train`'s output.

    The variance curve is log10 of the mean over seeds of Σ_d Var[ĝ_d] (None
    for the exact gradient, and where that mean is 0: DisARM's variance is
    0 at θ = 0 for D = 1); ``mean_log10_variance`` averages the curve over
    the checkpoints after step 0.
    """
    if name == "exact":
        return {**_finals(out, i), "log10_variance": None, "mean_log10_variance": None}
    with np.errstate(divide="ignore"):
        log_variance = np.log10(out["variance"][i].mean(axis=0))
    later = log_variance[1:][np.isfinite(log_variance[1:])]
    return {**_finals(out, i), "log10_variance": [float(v) if np.isfinite(v) else None for v in log_variance],
            "mean_log10_variance": float(later.mean()) if later.size else None}


def _finals(out: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    return {"objective_mean": out["objective"][i].mean(axis=0).tolist(),
            "final_objective": out["objective"][i, :, -1].tolist(),
            "final_probability": out["probability"][i].mean(axis=-1).tolist()}


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """Every estimator on every target; returns JSON-ready results (means over seeds and per-seed finals)."""
    start = time.perf_counter()
    estimators = {}
    for name, num_samples in tqdm(config.estimators, desc="estimators", disable=not progress):
        out = train(config, name, num_samples, progress=progress)
        estimators[name] = {"label": LABELS[name], "num_samples": num_samples,
                            "f_evaluations": f_evaluations(name, num_samples), "seconds": out["seconds"],
                            "targets": {str(t): summarise(out, name, i) for i, t in enumerate(config.targets)}}
    return {
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "steps": list(range(0, config.num_steps + 1, config.log_every)),
        "checkpoints": list(range(0, config.num_steps, config.checkpoint_every)),
        "objective_range": {str(t): [float(min(t, 1 - t) ** 2), float(max(t, 1 - t) ** 2)] for t in config.targets},
        "estimators": estimators,
        "wall_seconds": time.perf_counter() - start,
    }


def format_table(results: dict[str, Any]) -> str:
    """Per target and estimator: final objective (mean ± std over seeds), final σ(θ), mean log10 variance."""
    config = results["config"]
    goal = "maximised" if config["maximise"] else "minimised"
    lines = [f"E[(1/D)||b - t||²] {goal}, D = {config['dim']}, {config['num_steps']} Adam steps "
             f"(lr {config['learning_rate']}), {config['num_seeds']} seeds; Var = Σ_i Var[ĝ_i] from "
             f"{config['variance_draws']} fresh draws every {config['checkpoint_every']} steps, log10 of its mean over "
             "seeds averaged over the checkpoints after step 0",
             f"{'t':>6} {'estimator':<29} {'f evals':>14} {'final objective':>22} {'σ(θ)':>7} "
             f"{'mean log10 Var':>14}"]
    for target in map(str, config["targets"]):
        for name, data in results["estimators"].items():
            row = data["targets"][target]
            final = np.asarray(row["final_objective"])
            variance = "-" if row["mean_log10_variance"] is None else f"{row['mean_log10_variance']:.2f}"
            lines.append(f"{target:>6} {data['label']:<29} {data['f_evaluations']:>14} "
                         f"{final.mean():12.6f} ± {final.std(ddof=1) if final.size > 1 else 0.0:.6f} "
                         f"{np.mean(row['final_probability']):7.3f} {variance:>14}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: pathlib.Path, title: str) -> None:
    """Per target, the exact objective vs step (mean over seeds) above log10 of the mean over seeds of
    Σ_d Var[ĝ_d] vs step (side by side for one target); variances far below the rest (0 up to
    rounding) are drawn as triangles on the lower edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    targets = list(map(str, config["targets"]))
    steps, checkpoints = np.asarray(results["steps"]), np.asarray(results["checkpoints"])
    objective = r"$E[(b - t)^2]$" if config["dim"] == 1 else r"$\frac{1}{D} E\|b - t\|^2$"
    variance = r"$\mathrm{Var}[\hat g]$" if config["dim"] == 1 else r"$\sum_d \mathrm{Var}[\hat g_d]$"
    if len(targets) == 1:
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), squeeze=False, layout="constrained")
        panels = [(axes[0, 0], axes[0, 1])]
    else:
        fig, axes = plt.subplots(2, len(targets), figsize=(5.5 * len(targets) + 1.5, 9.5), layout="constrained")
        panels = list(zip(axes[0], axes[1]))
    for col, (target, (top, bottom)) in enumerate(zip(targets, panels)):
        curves = {name: np.asarray([np.nan if v is None else v for v in data["targets"][target]["log10_variance"]])
                  for name, data in results["estimators"].items() if name != "exact"}
        later = np.concatenate([c[1:] for c in curves.values()])
        floor = np.min(later[np.isfinite(later)], initial=np.nanmax(np.concatenate(list(curves.values())))) - 0.5
        for name, data in results["estimators"].items():
            label = data["label"] if name == "exact" else f"{data['label']} ({data['f_evaluations']} f / step)"
            width = 2.4 if name == "relax" else 1.5
            top.plot(steps, data["targets"][target]["objective_mean"], color=COLORS[name], lw=width,
                     ls="--" if name == "exact" else "-", label=label)
            if name in curves:
                curve = curves[name]
                bottom.plot(checkpoints, np.where(curve < floor, np.nan, curve), color=COLORS[name], lw=width,
                            marker=".", ms=4, label=label)
                low = np.isfinite(curve) & (curve < floor) | np.isnan(curve)
                if low.any():
                    bottom.plot(checkpoints[low], np.full(low.sum(), floor), "v", color=COLORS[name], ms=7,
                                clip_on=False)
        lo, hi = results["objective_range"][target]
        top.axhline(hi if config["maximise"] else lo, color="0.5", ls=":", lw=1, label="optimum")
        top.set(title=f"t = {target}", xlabel="Adam step", xlim=(0, steps[-1]),
                ylabel=f"exact {objective}" if col == 0 else None)
        top.ticklabel_format(axis="y", useOffset=False)
        bottom.set(xlabel="Adam step", xlim=(0, steps[-1]), ylim=(floor, None),
                   ylabel=rf"$\log_{{10}}$ of the mean over seeds of {variance}" if bottom is panels[0][1] else None)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    if any(line.get_marker() == "v" for _, ax in panels for line in ax.get_lines()):
        panels[0][0].plot([], [], "v", color="0.3", label="variance 0 in the draws (to rounding)")
    handles, labels = panels[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=9)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(doc: str, name: str, config: Config, quick: Config, title: Callable[[dict[str, Any]], str]) -> None:
    """The thin command line shared by both toys: flags, run, table, JSON, PNG."""
    common.main(doc, name, config=config, quick=quick, run=lambda c: run(c, progress=True), report=format_table,
                plots={"": lambda results, path: plot(results, path, title(results))})
