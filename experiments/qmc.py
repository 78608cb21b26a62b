"""Randomised quasi-Monte Carlo against Monte Carlo: mean squared error of gradient estimates against N.

For x ~ N(μ, diag(σ²)) in dimensions D = 1, 10, 100 and a ridge direction
w = (1, ..., 1)/√D, two costs with closed-form expectations:

    smooth      f(x) = cos(wᵀx),       E[f] = cos(wᵀμ) exp(-½ Σ_d w_d² σ_d²)
    step        f(x) = 1[wᵀx > c],     E[f] = Φ((wᵀμ - c) / ‖w ⊙ σ‖)

and the gradient of E[f] in (μ, log σ) estimated from N samples by the score
function (no baseline), the pathwise estimator (smooth cost only: its gradient
of a step is 0) and the measure-valued estimator (D ≤ 10: it costs 4D + 1 f
evaluations per sample), each with ``sampler="mc"`` and ``sampler="rqmc"``
(one randomisation of N scrambled Sobol points). The mean squared error
‖ĝ - ∇E[f]‖² over independent randomisations, against N on log-log axes, and
its fitted slope: -1 for Monte Carlo, steeper for RQMC where the integrand is
smooth.

    python -m experiments.qmc [--quick]

writes ``results/qmc.json`` and ``results/qmc.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import logtrick as lt
from experiments import common

SAMPLERS = ("mc", "rqmc")
THRESHOLD = 0.3  # c of the step cost


class Problem(NamedTuple):
    """A cost with its closed-form Gaussian expectation, both in terms of the ridge projection wᵀx."""

    name: str
    label: str
    f: Callable[[jax.Array], jax.Array]
    expectation: Callable[[Any], jax.Array]


def _ridge(x: jax.Array) -> jax.Array:
    return jnp.sum(x) / math.sqrt(x.shape[-1])


def _smooth_expectation(params):
    loc, scale = params["loc"], jnp.exp(params["log_scale"])
    d = loc.shape[-1]
    return jnp.cos(jnp.sum(loc) / math.sqrt(d)) * jnp.exp(-0.5 * jnp.sum(scale**2) / d)


def _step_expectation(params):
    loc, scale = params["loc"], jnp.exp(params["log_scale"])
    d = loc.shape[-1]
    return jax.scipy.stats.norm.cdf((jnp.sum(loc) / math.sqrt(d) - THRESHOLD) / jnp.sqrt(jnp.sum(scale**2) / d))


PROBLEMS = (
    Problem("smooth", r"$f(x) = \cos(w^\top x)$", lambda x: jnp.cos(_ridge(x)), _smooth_expectation),
    Problem("step", r"$f(x) = 1[w^\top x > 0.3]$", lambda x: (_ridge(x) > THRESHOLD).astype(x.dtype),
            _step_expectation),
)

# name: (label, factory(f, num_samples, sampler) -> estimator, applies to (problem name, D))
ESTIMATORS: dict[str, tuple[str, Callable[..., lt.Estimator], Callable[[str, int], bool]]] = {
    "score": ("score function",
              lambda f, n, sampler: lt.score_function(f, lt.families.normal(), num_samples=n, sampler=sampler),
              lambda problem, d: True),
    "pathwise": ("pathwise", lambda f, n, sampler: lt.pathwise(f, lt.families.normal(), num_samples=n, sampler=sampler),
                 lambda problem, d: problem == "smooth"),
    "measure_valued": ("measure-valued",
                       lambda f, n, sampler: lt.measure_valued(f, lt.families.normal(), num_samples=n, sampler=sampler),
                       lambda problem, d: d <= 10),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      dims: the dimensions D.
      log2_sizes: N = 2^m for each m.
      num_randomisations: independent estimates per (problem, D, estimator, sampler, N).
      estimators: names in ESTIMATORS to run.
      seed: PRNG seed.
    """

    dims: tuple[int, ...] = (1, 10, 100)
    log2_sizes: tuple[int, ...] = tuple(range(4, 13))
    num_randomisations: int = 64
    estimators: tuple[str, ...] = tuple(ESTIMATORS)
    seed: int = 0


QUICK = Config(dims=(1, 10), log2_sizes=(4, 6, 8), num_randomisations=16)


def params_of(d: int) -> dict[str, jax.Array]:
    """μ spread over [-0.5, 0.5] (0.2 for D = 1), σ = e^{-0.2}."""
    loc = jnp.linspace(-0.5, 0.5, d) if d > 1 else jnp.full((1,), 0.2)
    return {"loc": loc, "log_scale": jnp.full((d,), -0.2)}


def squared_errors(est: lt.Estimator, params: Any, exact: Any, key: jax.Array, num_randomisations: int) -> jax.Array:
    """‖ĝ - ∇E[f]‖² of independent estimates, shape (num_randomisations,); one estimate at a time (lax.map)."""
    exact_flat = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(exact)])

    def one(k):
        grads = est.estimate(params, (), k)[0]
        flat = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(grads)])
        return jnp.sum((flat - exact_flat) ** 2)

    return jax.lax.map(one, jax.random.split(key, num_randomisations))


def fit_slope(sizes: np.ndarray, mse: np.ndarray, mse_se: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of log MSE against log N, and its standard error from the points' own (delta method:
    s.e. of log MSE ≈ s.e./MSE, independent across N)."""
    x = np.log(sizes) - np.log(sizes).mean()
    slope = float(np.sum(x * np.log(mse)) / np.sum(x**2))
    return slope, float(np.sqrt(np.sum(x**2 * (mse_se / mse) ** 2)) / np.sum(x**2))


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """Every curve; returns the JSON-ready results."""
    sizes = [2**m for m in config.log2_sizes]
    cases = [(problem, d, name) for problem in PROBLEMS for d in config.dims for name in config.estimators
             if ESTIMATORS[name][2](problem.name, d)]
    key = jax.random.key(config.seed)
    curves = []
    for problem, d, name in tqdm(cases, desc="curves", disable=not progress):
        params = params_of(d)
        exact = jax.grad(problem.expectation)(params)
        entry = {"problem": problem.name, "dim": d, "estimator": name}
        for sampler in SAMPLERS:
            mse, se = [], []
            for n in sizes:
                est = ESTIMATORS[name][1](problem.f, n, sampler)
                key, sub = jax.random.split(key)
                errors = np.asarray(jax.jit(functools.partial(
                    squared_errors, est, num_randomisations=config.num_randomisations),
                    compiler_options=common.FAST_COMPILE)(params, exact, sub), np.float64)
                mse.append(float(errors.mean()))
                se.append(float(errors.std(ddof=1) / math.sqrt(errors.size)))
            slope, slope_se = fit_slope(np.asarray(sizes), np.asarray(mse), np.asarray(se))
            entry[sampler] = {"mse": mse, "mse_se": se, "slope": slope, "slope_se": slope_se}
        entry["mse_ratio_at_largest_n"] = entry["rqmc"]["mse"][-1] / entry["mc"]["mse"][-1]
        curves.append(entry)
    return {"config": dataclasses.asdict(config), "seed": config.seed, "sizes": sizes, "curves": curves}


def format_table(results: dict[str, Any]) -> str:
    """Markdown: fitted slopes of log MSE against log N (± s.e.), and the RQMC/MC MSE ratio at the largest N."""
    n_max = results["sizes"][-1]
    lines = [f"| problem | D | estimator | slope, MC | slope, RQMC | MSE RQMC / MC at N = {n_max} |",
             "|---|---:|---|---:|---:|---:|"]
    for c in results["curves"]:
        slopes = " | ".join(f"{c[s]['slope']:.2f} ± {c[s]['slope_se']:.2f}" for s in SAMPLERS)
        lines.append(f"| {c['problem']} | {c['dim']} | {ESTIMATORS[c['estimator']][0]} | {slopes} | "
                     f"{c['mse_ratio_at_largest_n']:.2g} |")
    return "\n".join(lines)


_COLORS = {"score": "tab:red", "pathwise": "tab:blue", "measure_valued": "tab:green"}


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """One panel per (problem, D): MSE vs N, log-log, MC dashed and RQMC solid, ±2 s.e. bands, an N^-1 guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = results["config"]["dims"]
    sizes = np.asarray(results["sizes"], np.float64)
    fig, axes = plt.subplots(len(PROBLEMS), len(dims), figsize=(4.6 * len(dims), 4.2 * len(PROBLEMS)),
                             constrained_layout=True, squeeze=False)
    for row, problem in enumerate(PROBLEMS):
        for col, d in enumerate(dims):
            ax = axes[row, col]
            mc_start = []
            for c in results["curves"]:
                if c["problem"] != problem.name or c["dim"] != d:
                    continue
                color = _COLORS[c["estimator"]]
                for sampler, style in (("mc", "--"), ("rqmc", "-")):
                    mse, se = np.asarray(c[sampler]["mse"]), np.asarray(c[sampler]["mse_se"])
                    ax.plot(sizes, mse, style, marker="o", ms=3, color=color,
                            label=f"{ESTIMATORS[c['estimator']][0]}, {sampler.upper()} "
                                  f"(slope {c[sampler]['slope']:.2f})")
                    ax.fill_between(sizes, np.maximum(mse - 2 * se, mse * 1e-3), mse + 2 * se, color=color,
                                    alpha=0.12)
                mc_start.append(c["mc"]["mse"][0])
            if mc_start:
                ax.plot(sizes, max(mc_start) * sizes[0] / sizes, ":", color="0.5", label=r"$\propto N^{-1}$")
            ax.set(xscale="log", yscale="log", xlabel="N (samples per estimate)",
                   ylabel=r"$E\,\|\hat g - \nabla E[f]\|^2$", title=f"{problem.label}, D = {d}")
            ax.set_xscale("log", base=2)
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Gradient estimates with Monte Carlo (dashed) and randomised quasi-Monte Carlo (solid) samples, "
                 r"$x \sim \mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)$")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "qmc", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=format_table, plots={"": plot})


if __name__ == "__main__":
    main()
