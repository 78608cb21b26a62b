"""The log-derivative trick checked against exact gradients (the headline experiment).

For each problem, score-function estimates of grad_θ E[f] are compared with
``jax.grad`` of the exact expectation (closed form or enumeration). Each
method of :data:`METHODS` (no baseline, leave-one-out, a moving average after
``warmup_steps`` calls that warm its state) draws ``num_estimates``
independent estimates of ``num_samples`` samples each; ``lt.testing.check_unbiased``
tests their mean against the exact gradient over every problem's coordinates
at once (Bonferroni), and the variance of one estimate is reported per
coordinate. A second sweep, with no baseline, measures the RMS error
√E‖ĝ - g‖² against N: for an unbiased estimate from N independent samples
E‖ĝ - g‖² = tr Var[ĝ₁] / N, so the log-log slope is -½, and the fitted slope
is z-tested against -½ with its standard error.

    python -m experiments.exact_check [--quick]

writes ``results/exact_check.json`` and ``results/exact_check.png``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import statistics
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

import logtrick as lt
from experiments import common


class Problem(NamedTuple):
    """A problem: f, its distribution at fixed params, and the exact expectation ``params -> E[f]``."""

    name: str
    f: Callable[[Any], jax.Array]
    family: lt.Family
    params: Any
    exact: Callable[[Any], jax.Array]
    labels: list[str]


def problems() -> list[Problem]:
    normal = lt.families.normal()
    unit = {"loc": jnp.array([1.0]), "log_scale": jnp.array([0.0])}
    gauss_labels = ["mu", "log sigma"]
    categorical, bernoulli = lt.families.categorical(), lt.families.bernoulli()
    payoff = jnp.array([3.0, -1.0, 0.5, 2.0, -4.0])
    toy = lambda b: jnp.sum((b - 0.499) ** 2)  # noqa: E731
    return [
        Problem("N(1,1), f=(x-2)^2", lambda x: jnp.sum((x - 2.0) ** 2), normal, unit,
                lt.exact.normal_quadratic(2.0), gauss_labels),
        Problem("N(1,1), f=exp(-x^2)", lambda x: jnp.sum(jnp.exp(-(x**2))), normal, unit,
                lt.exact.normal_exp_square(1.0), gauss_labels),
        Problem("N(1,1), f=cos(2x)", lambda x: jnp.sum(jnp.cos(2.0 * x)), normal, unit,
                lt.exact.normal_cosine(2.0), gauss_labels),
        Problem("Categorical(5)", lambda x: payoff[x], categorical, jnp.array([0.5, -0.2, 0.1, 1.0, -1.0]),
                lt.exact.expectation(lambda x: payoff[x], categorical, lt.exact.categorical_support(5)),
                [f"logit {i}" for i in range(5)]),
        Problem("Bernoulli, f=(b-0.499)^2", toy, bernoulli, jnp.zeros(1),
                lt.exact.expectation(toy, bernoulli, lt.exact.bernoulli_support(1)), ["logit"]),
    ]


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      num_samples: N of the estimates of every method.
      num_estimates: M, independent estimates per method and per sweep size.
      moving_average_decay: decay of the moving-average baseline.
      warmup_steps: calls that advance a stateful estimator's state before the
        estimate that is kept (a stateless one is not warmed).
      sweep: the sample sizes N of the error sweep, at least two; a size equal
        to ``num_samples`` reuses the estimates of ``REFERENCE``.
      significance: family-wise false-alarm rate of each z-test.
      seed: PRNG seed.
    """

    num_samples: int = 100
    num_estimates: int = 2000
    moving_average_decay: float = 0.9
    warmup_steps: int = 20
    sweep: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)
    significance: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if len(set(self.sweep)) < 2 or min(self.sweep) < 1:
            raise ValueError(f"Config: `sweep` needs at least two distinct sizes >= 1, got {self.sweep}")
        if self.num_estimates < 30:
            raise ValueError(f"Config: `num_estimates` must be >= 30 for the z-tests, got {self.num_estimates}")


QUICK = Config(num_estimates=100, warmup_steps=2, sweep=(1, 16))

Factory = Callable[[Problem, int, Config], lt.Estimator]

METHODS: dict[str, Factory] = {
    "none": lambda p, n, c: lt.score_function(p.f, p.family, num_samples=n),
    "leave-one-out": lambda p, n, c: lt.score_function(p.f, p.family, num_samples=n,
                                                       baseline=lt.baselines.leave_one_out()),
    "moving average": lambda p, n, c: lt.score_function(
        p.f, p.family, num_samples=n, baseline=lt.baselines.moving_average(c.moving_average_decay)),
}
REFERENCE = "none"  # the method of the rows' estimates and of the error sweep


def final_estimate(est: lt.Estimator, params: Any, key: jax.Array, warmup_steps: int) -> Any:
    """``est``'s gradient estimate after ``warmup_steps`` calls that advance its state (if it has any)."""
    state = est.init(params)
    if not (warmup_steps and jax.tree_util.tree_leaves(state)):
        return est.estimate(params, state, key)[0]

    def step(state, k):
        grads, state, _ = est.estimate(params, state, k)
        return state, grads

    _, grads = jax.lax.scan(step, state, jax.random.split(key, warmup_steps + 1))
    return jax.tree_util.tree_map(lambda g: g[-1], grads)


def draw(params: Any, estimators: dict[Any, lt.Estimator], key: jax.Array, *, num_estimates: int,
         warmup_steps: int = 0) -> dict[Any, np.ndarray]:
    """Independent estimates of every estimator, from one compiled function, each from its own keys.

    The function runs once, so it is compiled with ``common.FAST_COMPILE``.

    Returns:
      ``{name: estimates}``, the params flattened: shape (num_estimates, P), float64.
    """
    names = list(estimators)

    def one(k):
        keys = jax.random.split(k, len(names))
        return [ravel_pytree(final_estimate(estimators[n], params, kk, warmup_steps))[0] for n, kk in zip(names, keys)]

    drawn = jax.jit(jax.vmap(one), compiler_options=common.FAST_COMPILE)(jax.random.split(key, num_estimates))
    return {n: np.asarray(x, np.float64) for n, x in zip(names, drawn)}


def exact_gradient(problem: Problem) -> jax.Array:
    """``jax.grad`` of the exact expectation at the problem's params, flattened, shape (P,)."""
    grad = jax.jit(jax.grad(problem.exact), compiler_options=common.FAST_COMPILE)(problem.params)
    return ravel_pytree(grad)[0]


def error_slope(estimates: dict[int, np.ndarray], exact: np.ndarray) -> dict[str, Any]:
    """The RMS error at each N and the weighted least-squares slope of log RMS error against log N.

    With e_m = ‖ĝ_m - g‖² over M estimates at N samples, MSE_N = mean e_m has
    standard error s_N = std(e_m) / √M, so y_N = log RMS_N = ½ log MSE_N has
    standard error σ_N = s_N / (2 MSE_N) (delta method). The sizes are drawn
    independently, so with weights w = 1/σ² the fitted slope of y against
    x = log N has standard error 1 / √(Σ w (x - x̄_w)²), and
    z = (slope + ½) / s.e. is standard normal for an unbiased estimator. The
    delta method needs e_m not too heavy-tailed: for f polynomial in a
    Gaussian x at small N and M the standard error is optimistic, and the
    check rejects more often than its nominal level.

    Args:
      estimates: ``{N: estimates}``, each (M, P), at least two sizes.
      exact: the exact gradient, shape (P,).

    Returns:
      ``{"slope", "standard_error", "z", "rms_error": {N: RMS}, "rms_error_se": {N: s.e.}}``.
    """
    ns = sorted(estimates)
    if len(ns) < 2:
        raise ValueError(f"error_slope: need estimates at two or more sizes, got {ns}")
    squared = [np.sum((estimates[n] - exact) ** 2, axis=1) for n in ns]
    mse = np.array([s.mean() for s in squared])
    mse_se = np.array([s.std(ddof=1) / np.sqrt(s.size) for s in squared])
    x, y, weights = np.log(ns), 0.5 * np.log(mse), (2.0 * mse / mse_se) ** 2
    x_centred = x - weights @ x / weights.sum()
    sxx = weights @ x_centred**2
    slope = float(weights @ (x_centred * y) / sxx)
    standard_error = float(1.0 / np.sqrt(sxx))
    return {"slope": slope, "standard_error": standard_error, "z": (slope + 0.5) / standard_error,
            "rms_error": {int(n): float(np.sqrt(m)) for n, m in zip(ns, mse)},
            "rms_error_se": {int(n): float(s / (2.0 * np.sqrt(m))) for n, s, m in zip(ns, mse_se, mse)}}


def bonferroni(significance: float, num_tests: int) -> float:
    """The two-sided |z| threshold Φ⁻¹(1 - α / (2 num_tests))."""
    return statistics.NormalDist().inv_cdf(1.0 - significance / (2.0 * num_tests))


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """Runs every problem; returns JSON-ready rows, z-tests per method, and the error sweep."""
    key = jax.random.key(config.seed)
    by_method: dict[str, dict[str, np.ndarray]] = {name: {} for name in METHODS}
    exacts, slopes = {}, {}
    for index, problem in enumerate(tqdm(problems(), desc="exact check", disable=not progress)):
        exact = np.asarray(exact_gradient(problem), np.float64)
        estimators = {name: make(problem, config.num_samples, config) for name, make in METHODS.items()}
        sweep = {n: METHODS[REFERENCE](problem, n, config) for n in config.sweep if n != config.num_samples}
        drawn = draw(problem.params, {**estimators, **sweep}, jax.random.fold_in(key, index),
                     num_estimates=config.num_estimates, warmup_steps=config.warmup_steps)
        drawn.update({n: drawn[REFERENCE] for n in config.sweep if n == config.num_samples})
        exacts[problem.name] = exact
        for name in METHODS:
            by_method[name][problem.name] = drawn[name]
        slopes[problem.name] = error_slope({n: drawn[n] for n in config.sweep}, exact)

    tests = {name: lt.testing.check_unbiased(estimates, exacts, significance=config.significance)
             for name, estimates in by_method.items()}
    rows = []
    for problem in problems():
        reference = by_method[REFERENCE][problem.name]
        mean, se = reference.mean(axis=0), reference.std(axis=0, ddof=1) / np.sqrt(config.num_estimates)
        z = tests[REFERENCE].z[problem.name]
        for i, label in enumerate(problem.labels):
            rows.append({
                "problem": problem.name, "param": label, "exact": float(exacts[problem.name][i]),
                "estimate": float(mean[i]), "standard_error": float(se[i]), "abs_error_in_se": float(abs(z[i])),
                "variance": {name: float(by_method[name][problem.name][:, i].var(ddof=1)) for name in METHODS},
            })
    return {
        "config": dataclasses.asdict(config), "seed": config.seed, "rows": rows,
        "z_test": {name: {"max_abs_z": t.max_abs_z, "threshold": t.threshold, "verdict": t.verdict}
                   for name, t in tests.items()},
        "rms_error_vs_samples": {name: s["rms_error"] for name, s in slopes.items()},
        "rms_error_se_vs_samples": {name: s["rms_error_se"] for name, s in slopes.items()},
        "error_slope": {name: {k: s[k] for k in ("slope", "standard_error", "z")} for name, s in slopes.items()},
        "slope_threshold": bonferroni(config.significance, len(slopes)),
    }


def table(results: dict[str, Any]) -> str:
    """The rows (no-baseline estimate, its z-score, variance of one estimate per method), then the checks."""
    config = results["config"]
    head = (f"{'problem':<26}{'param':<11}{'exact':>10}{'estimate':>10}{'± s.e.':>9}{'|err|/se':>9}"
            f"{'var none':>11}{'var LOO':>11}{'var MA':>11}")
    lines = [f"score-function estimates, N={config['num_samples']} samples each; variance of one estimate", head,
             "-" * len(head)]
    for r in results["rows"]:
        v = r["variance"]
        lines.append(
            f"{r['problem']:<26}{r['param']:<11}{r['exact']:>10.4f}{r['estimate']:>10.4f}{r['standard_error']:>9.4f}"
            f"{r['abs_error_in_se']:>9.2f}{v['none']:>11.3g}{v['leave-one-out']:>11.3g}{v['moving average']:>11.3g}")
    lines.append("")
    for name, t in results["z_test"].items():
        lines.append(f"{name}: max |z| {t['max_abs_z']:.2f} over {len(results['rows'])} coordinates "
                     f"({config['num_estimates']} estimates each; threshold {t['threshold']:.2f})")
    lines.append(f"log-log slope of the RMS error against N = {list(config['sweep'])} (no baseline; -1/2 expected, "
                 f"|z| threshold {results['slope_threshold']:.2f}):")
    for name, s in results["error_slope"].items():
        lines.append(f"  {name:<26}{s['slope']:8.3f} ± {s['standard_error']:.3f}   z {s['z']:6.2f}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """RMS error against N per problem (±2 s.e.), and the best fit of slope -½, weighted as in :func:`error_slope`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (name, errors) in enumerate(results["rms_error_vs_samples"].items()):
        se = {int(n): s for n, s in results["rms_error_se_vs_samples"][name].items()}
        ns = np.array(sorted(int(n) for n in errors))
        err = np.array([errors[n] if n in errors else errors[str(n)] for n in ns])
        slope = results["error_slope"][name]
        color = f"C{i}"
        ax.errorbar(ns, err, yerr=[2 * se[n] for n in ns], fmt="o-", color=color, capsize=3,
                    label=f"{name} (slope {slope['slope']:.3f} ± {slope['standard_error']:.3f})")
        weights = (err / np.array([se[n] for n in ns])) ** 2
        ax.plot(ns, np.exp(weights @ (np.log(err) + 0.5 * np.log(ns)) / weights.sum()) / np.sqrt(ns), ":",
                color=color, alpha=0.6)
    ax.set(xscale="log", yscale="log")
    ax.plot([], [], "k:", label=r"best fit $\propto 1/\sqrt{N}$")
    ax.set_xlabel("samples per estimate N")
    ax.set_ylabel(r"RMS error $\sqrt{E\|\hat g - \nabla_\theta \mathbb{E}[f]\|^2}$")
    ax.set_title("Score-function gradient error vs number of samples")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The largest |z| of each check against its threshold."""
    slopes = results["error_slope"].values()
    return {"max_abs_z": {name: t["max_abs_z"] for name, t in results["z_test"].items()},
            "z_threshold": results["z_test"][REFERENCE]["threshold"],
            "max_abs_slope_z": max(abs(s["z"]) for s in slopes), "slope_threshold": results["slope_threshold"]}


def main() -> None:
    common.main(__doc__, "exact_check", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=table, plots={"": plot}, summary=summary)


if __name__ == "__main__":
    main()
