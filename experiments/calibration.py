"""Calibration of ``lt.testing.assert_unbiased``: its false-alarm rate and power on the library's estimators.

The test of ``lt.testing`` (Student-t threshold, Hall's skewness correction,
Bonferroni over coordinates, a kurtosis gate that refuses samples too few
for their tails) is run on R independent sets of M estimates from unbiased
estimators of the library, light and heavy tailed, each against its exact
gradient:

    pathwise_normal   ``lt.pathwise``, f(x) = ½ Σ_c x_c², D = 16: ∇_loc = x, Gaussian estimates (C = 32)
    score_x2          ``lt.score_function``, f(x) = x², one sample, loc 0.5 and log-scale 0 (C = 2)
    score_x4          the same with f(x) = x⁴: estimates x⁴ ε and x⁴ (ε² - 1), very heavy tailed
    rare_reward       ``lt.score_function`` on a categorical, f = 100 on a class of probability 0.01, else 0,
                      four samples per estimate (C = 3)
    bernoulli_loo     ``lt.score_function`` with ``lt.baselines.leave_one_out()``, 64 Bernoulli logits,
                      f(b) = Σ_d (b_d - t_d)², four samples (C = 64)

For every estimator, M and significance α it records the fraction of the R
runs the test rejects ("biased": a false alarm, as the estimator is
unbiased), the fraction it refuses ("inconclusive") and, for contrast, what
the plain normal z-test (Bonferroni, no correction) rejects. A rate is within
its binomial noise when it is at most α + 2 √(α(1 - α)/R).

Power: a bias of δ standard errors added to one coordinate of a light-tailed
(``pathwise_normal``) and a heavy-tailed (``score_x2``, its log-scale
coordinate) estimator, for M estimates and C coordinates (C = 1, 10, 100: C
independent copies of the estimator side by side); δ₉₅, the smallest δ
rejected in 95% of the runs, read off the curve. And ``lt.testing.
estimates_needed``: for a relative bias of 10% on every coordinate, the M it
asks for from a pilot of 100 estimates, and the rate at which a bias of that
size is then caught.

    python -m experiments.calibration [--quick]

writes ``results/calibration.json`` and ``results/calibration.png``.

References:
  Johnson, "Modified t tests and confidence intervals for asymmetrical
  populations", JASA 1978. Hall, "On the removal of skewness by
  transformation", JRSS B 1992.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import statistics
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import logtrick as lt
from experiments import common


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      num_runs: R, independent test runs per cell.
      num_estimates: the M of the false-alarm study.
      significances: the α of the false-alarm study.
      power_estimates: the M of the power study.
      power_coordinates: the C of the power study.
      power_biases: δ, the bias in standard errors of the mean.
      power_runs: runs per point of the power curves.
      relative_bias: the bias ``estimates_needed`` is asked to detect.
      power_significance: α of the power study.
      estimators: which of :data:`ESTIMATORS` to run.
      seed: PRNG seed.
    """

    num_runs: int = 1000
    num_estimates: tuple[int, ...] = (30, 64, 300, 1000)
    significances: tuple[float, ...] = (0.05, 0.01)
    power_estimates: tuple[int, ...] = (30, 300)
    power_coordinates: tuple[int, ...] = (1, 10, 100)
    power_biases: tuple[float, ...] = (0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    power_runs: int = 400
    relative_bias: float = 0.1
    power_significance: float = 0.01
    estimators: tuple[str, ...] = ("pathwise_normal", "score_x2", "score_x4", "rare_reward", "bernoulli_loo")
    seed: int = 0


QUICK = Config(num_runs=40, num_estimates=(30, 64), significances=(0.05,), power_estimates=(30,),
               power_coordinates=(1, 10), power_biases=(0.0, 4.0, 8.0), power_runs=20,
               estimators=("pathwise_normal", "score_x4"))


CHUNK = 100_000


class Problem(NamedTuple):
    """``draw(key, n) -> (n, C)`` independent estimates, and their exact mean (C,)."""

    draw: Callable[[jax.Array, int], np.ndarray]
    exact: np.ndarray


def _problem(est: lt.Estimator, params: Any, exact: Any) -> Problem:
    """Draws ``est.estimate``'s grads, flattened to (n, C), with the exact gradient flattened alike."""
    flat = lambda tree: jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])
    one = jax.jit(jax.vmap(lambda k: flat(est.estimate(params, est.init(params), k)[0])))

    def draw(key, n):
        sizes = [CHUNK] * (n // CHUNK) + ([n % CHUNK] if n % CHUNK else [])
        return np.concatenate([np.asarray(one(jax.random.split(k, size)), np.float64)
                               for k, size in zip(jax.random.split(key, len(sizes)), sizes)])

    return Problem(draw, np.asarray(flat(exact), np.float64))


def pathwise_normal(dim: int = 16) -> Problem:
    """∇ of E[½ Σ x²] under N(loc, 1): loc's gradient is loc, log-scale's 1 per coordinate."""
    params = {"loc": jnp.linspace(-1.0, 1.0, dim), "log_scale": jnp.zeros(dim)}
    est = lt.pathwise(lambda x: 0.5 * jnp.sum(x**2), lt.families.normal().sample, num_samples=1)
    return _problem(est, params, {"loc": params["loc"], "log_scale": jnp.ones(dim)})


def _score_power(power: int) -> Problem:
    """∇ of E[x^p] under N(μ, σ), μ = 0.5, σ = 1, one-sample score function, p = 2 or 4, in closed form.

    E[x²] = μ² + σ²: ∂_μ = 2μ, ∂_{log σ} = 2σ². E[x⁴] = μ⁴ + 6μ²σ² + 3σ⁴: ∂_μ = 4μ³ + 12μσ²,
    ∂_{log σ} = 12μ²σ² + 12σ⁴.
    """
    mu = 0.5
    params = {"loc": jnp.array([mu]), "log_scale": jnp.zeros(1)}
    est = lt.score_function(lambda x: jnp.sum(x**power), lt.families.normal(), num_samples=1)
    exact = {2: (2 * mu, 2.0), 4: (4 * mu**3 + 12 * mu, 12 * mu**2 + 12.0)}[power]
    return _problem(est, params, {"loc": jnp.array([exact[0]]), "log_scale": jnp.array([exact[1]])})


def rare_reward() -> Problem:
    """∇ of E[f(a)] w.r.t. the logits, f = 100 on class 0 (probability 0.01), 0 on the others, 4 samples."""
    logits = jnp.log(jnp.array([0.01, 0.495, 0.495]))
    f = lambda a: 100.0 * (a == 0)
    est = lt.score_function(f, lt.families.categorical(), num_samples=4)
    exact = jax.grad(lt.exact.expectation(f, lt.families.categorical(), lt.exact.categorical_support(3)))(logits)
    return _problem(est, logits, exact)


def bernoulli_loo(dim: int = 64) -> Problem:
    """∇ of E[Σ (b - t)²] w.r.t. 64 Bernoulli logits, 4 samples, leave-one-out baseline; exact in closed form."""
    logits = jnp.linspace(-2.0, 2.0, dim)
    target = jnp.linspace(0.0, 1.0, dim)
    est = lt.score_function(lambda b: jnp.sum((b - target) ** 2), lt.families.bernoulli(), num_samples=4,
                            baseline=lt.baselines.leave_one_out())
    p = jax.nn.sigmoid(logits)
    # E[(b - t)²] = p (1 - t)² + (1 - p) t², so ∂/∂θ = p (1 - p) ((1 - t)² - t²) = p (1 - p) (1 - 2t).
    return _problem(est, logits, p * (1 - p) * (1 - 2 * target))


ESTIMATORS: dict[str, Callable[[], Problem]] = {
    "pathwise_normal": pathwise_normal,
    "score_x2": lambda: _score_power(2),
    "score_x4": lambda: _score_power(4),
    "rare_reward": rare_reward,
    "bernoulli_loo": bernoulli_loo,
}


def binomial_bound(alpha: float, runs: int) -> float:
    """α + 2 √(α(1 - α)/R): the rate a calibrated test stays under, to two binomial standard errors."""
    return alpha + 2.0 * math.sqrt(alpha * (1.0 - alpha) / runs)


def _plain_z_rejects(estimates: np.ndarray, exact: np.ndarray, alpha: float) -> bool:
    """The uncorrected normal z-test with Bonferroni, for contrast."""
    z = lt.testing.z_scores(estimates, exact)
    return bool(np.max(np.abs(z)) > statistics.NormalDist().inv_cdf(1.0 - alpha / (2.0 * estimates.shape[1])))


def false_alarms(problem: Problem, config: Config, key: jax.Array) -> list[dict[str, Any]]:
    """For each M: R runs of the test at each α on unbiased estimates; rejection and refusal rates."""
    rows = []
    for m, k in zip(config.num_estimates, jax.random.split(key, len(config.num_estimates))):
        draws = problem.draw(k, config.num_runs * m).reshape(config.num_runs, m, -1)
        for alpha in config.significances:
            verdicts = [lt.testing.check_unbiased(d, problem.exact, significance=alpha).verdict for d in draws]
            rejected = verdicts.count("biased") / config.num_runs
            rows.append({"num_estimates": m, "significance": alpha, "rejected": rejected,
                         "refused": verdicts.count("inconclusive") / config.num_runs,
                         "plain_z_rejected": float(np.mean([_plain_z_rejects(d, problem.exact, alpha) for d in draws])),
                         "bound": binomial_bound(alpha, config.num_runs),
                         "calibrated": rejected <= binomial_bound(alpha, config.num_runs)})
    return rows


def _delta_95(biases: list[float], rates: list[float]) -> float | None:
    """The smallest δ with a rejection rate ≥ 0.95, linearly interpolated; None if never reached."""
    if rates[0] >= 0.95:
        return biases[0]
    for (b0, r0), (b1, r1) in zip(zip(biases, rates), zip(biases[1:], rates[1:])):
        if r1 >= 0.95:
            return b0 + (0.95 - r0) * (b1 - b0) / (r1 - r0)
    return None


def power_curves(problem: Problem, coordinate: int, config: Config, key: jax.Array) -> list[dict[str, Any]]:
    """Rejection rate against a bias of δ standard errors on one coordinate, C independent copies side by side."""
    sd = float(np.std(problem.draw(jax.random.fold_in(key, 1), 200_000)[:, coordinate]))
    rows = []
    for m in config.power_estimates:
        for c in config.power_coordinates:
            runs = config.power_runs
            k = jax.random.fold_in(key, 1000 * m + c)
            draws = problem.draw(k, runs * m * c)[:, coordinate].reshape(runs, m, c)
            exact = np.full(c, problem.exact[coordinate])
            rates = []
            for delta in config.power_biases:
                shifted = draws.copy()
                shifted[:, :, 0] += delta * sd / math.sqrt(m)
                verdicts = [lt.testing.check_unbiased(d, exact, significance=config.power_significance).verdict
                            for d in shifted]
                rates.append(verdicts.count("biased") / runs)
            rows.append({"num_estimates": m, "num_coordinates": c, "biases": list(config.power_biases),
                         "rejected": rates, "delta_95": _delta_95(list(config.power_biases), rates)})
    return rows


def sample_size(problem: Problem, config: Config, key: jax.Array) -> dict[str, Any]:
    """``estimates_needed`` from a pilot of 100, then the rate a relative bias of that size is caught at that M."""
    k_pilot, k_runs = jax.random.split(key)
    pilot = problem.draw(k_pilot, 100)
    m = lt.testing.estimates_needed(pilot, problem.exact, relative_bias=config.relative_bias,
                                    significance=config.power_significance)
    runs = min(config.power_runs, max(20, 2_000_000 // (m * problem.exact.size)))
    draws = problem.draw(k_runs, runs * m).reshape(runs, m, -1)
    bias = config.relative_bias * np.abs(problem.exact)
    caught = [lt.testing.check_unbiased(d + bias, problem.exact, significance=config.power_significance).verdict
              for d in draws]
    return {"estimates_needed": m, "runs": runs, "caught": caught.count("biased") / runs,
            "refused": caught.count("inconclusive") / runs}


def run(config: Config, progress: bool = False) -> dict[str, Any]:
    """False alarms for every estimator, power curves for a light and a heavy one, the sample-size helper."""
    key = jax.random.key(config.seed)
    results: dict[str, Any] = {"config": dataclasses.asdict(config), "false_alarms": {}, "sample_size": {}}
    names = list(config.estimators)
    for name in tqdm(names, desc="false alarms", disable=not progress):
        problem = ESTIMATORS[name]()
        k = jax.random.fold_in(key, names.index(name))
        results["false_alarms"][name] = false_alarms(problem, config, k)
        results["sample_size"][name] = sample_size(problem, config, jax.random.fold_in(k, 7))
    results["power"] = {
        "light (pathwise_normal, loc[0])": power_curves(pathwise_normal(), 0, config, jax.random.fold_in(key, 100)),
        "heavy (score_x2, log_scale)": power_curves(_score_power(2), 1, config, jax.random.fold_in(key, 101)),
    }
    return results


def report(results: dict[str, Any]) -> str:
    """The false-alarm table, the power table and the sample-size check."""
    lines = ["false alarms on unbiased estimates, bound = α + 2 binomial s.e.; (over) marks a cell above it",
             format_table(results)]
    lines.append("power: δ₉₅ (bias in standard errors rejected 95% of the time)")
    for tail, rows in results["power"].items():
        for r in rows:
            d = "never" if r["delta_95"] is None else f"{r['delta_95']:.2f}"
            lines.append(f"{tail:34s} M={r['num_estimates']:5d} C={r['num_coordinates']:4d} δ₉₅ {d}")
    lines.append("estimates_needed for a 10% relative bias, then the rate it is caught at that M")
    for name, r in results["sample_size"].items():
        lines.append(f"{name:16s} M = {r['estimates_needed']:7d}  caught {r['caught']:.2f} refused {r['refused']:.2f} "
                     f"({r['runs']} runs)")
    return "\n".join(lines)


def format_table(results: dict[str, Any]) -> str:
    """Markdown: per estimator and M, the rejection rate of ``assert_unbiased`` (refused in brackets) at each α,
    and the plain z-test's, on unbiased estimates."""
    alphas = results["config"]["significances"]
    head = " | ".join(f"α = {a}: rejected (refused) | plain z-test" for a in alphas)
    lines = [f"| estimator | M | {head} |", "|---|---:|" + "---:|---:|" * len(alphas)]
    for name, rows in results["false_alarms"].items():
        for m in results["config"]["num_estimates"]:
            cells = []
            for a in alphas:
                (r,) = [r for r in rows if r["num_estimates"] == m and r["significance"] == a]
                mark = "" if r["calibrated"] else " (over)"
                cells.append(f"{r['rejected']:.3f} ({r['refused']:.2f}){mark} | {r['plain_z_rejected']:.3f}")
            lines.append(f"| {name} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Whether every cell is calibrated, the worst ratio of rejection rate to α, and the δ₉₅ values."""
    cells = [r for rows in results["false_alarms"].values() for r in rows]
    return {"all_calibrated": all(r["calibrated"] for r in cells),
            "worst_rejected_over_alpha": max(r["rejected"] / r["significance"] for r in cells),
            "worst_plain_z_over_alpha": max(r["plain_z_rejected"] / r["significance"] for r in cells),
            "delta_95": {tail: {f"M={r['num_estimates']},C={r['num_coordinates']}": r["delta_95"] for r in rows}
                         for tail, rows in results["power"].items()}}


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Left: false-alarm rate against M per estimator at each α, the plain z-test dashed, the binomial bound
    shaded; middle: refusal rate; right: power curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = results["config"]["significances"]
    fig, axes = plt.subplots(1, len(alphas) + 2, figsize=(5 * (len(alphas) + 2), 4))
    colors = dict(zip(results["false_alarms"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, alpha in zip(axes, alphas):
        for name, rows in results["false_alarms"].items():
            rs = [r for r in rows if r["significance"] == alpha]
            ms = [r["num_estimates"] for r in rs]
            ax.plot(ms, [r["rejected"] for r in rs], "o-", color=colors[name], label=name)
            ax.plot(ms, [r["plain_z_rejected"] for r in rs], "x--", color=colors[name], alpha=0.5)
        ax.axhspan(0, binomial_bound(alpha, results["config"]["num_runs"]), color="0.9")
        ax.axhline(alpha, color="k", lw=0.8)
        ax.set(xscale="log", yscale="symlog", ylim=(0, 1), xlabel="M estimates", ylabel="rejection rate (unbiased)",
               title=f"false alarms at α = {alpha} (dashed: plain z-test)")
        ax.set_yscale("symlog", linthresh=alpha / 2)
    axes[0].legend(fontsize=7)
    ax = axes[-2]
    for name, rows in results["false_alarms"].items():
        rs = [r for r in rows if r["significance"] == alphas[0]]
        ax.plot([r["num_estimates"] for r in rs], [r["refused"] for r in rs], "o-", color=colors[name], label=name)
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="M estimates", ylabel="refused (inconclusive)",
           title="refusals: too few estimates for the tails")
    ax = axes[-1]
    for (tail, rows), style in zip(results["power"].items(), ("-", "--")):
        for r in rows:
            ax.plot(r["biases"], r["rejected"], style, marker=".",
                    label=f"{tail.split(' ')[0]} M={r['num_estimates']} C={r['num_coordinates']}")
    ax.axhline(0.95, color="k", lw=0.8)
    ax.set(xlabel="bias δ (standard errors of the mean)", ylabel="rejection rate",
           title=f"power at α = {results['config']['power_significance']}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "calibration", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=report, plots={"": plot}, summary=summary)


if __name__ == "__main__":
    main()
