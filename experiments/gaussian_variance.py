"""Single-sample variance of gradient estimators for a univariate Gaussian.

Reproduces figures 2 and 3 of Mohamed, Rosca, Figurnov and Mnih, "Monte Carlo
Gradient Estimation in Machine Learning", JMLR 2020 (section 3): x ~ N(μ, σ²),
μ = σ = 1, cost f(x; k) ∈ {(x - k)², exp(-k x²), cos(k x)}, and for θ ∈ {μ, σ}
the one-sample estimators of ∇_θ E[f(x; k)]

    score                 f(x) s_θ(x),            s_θ = ∂_θ log N(x | μ, σ²)
    score + mean baseline (f(x) - E[f]) s_θ(x)
    score + opt. baseline (f(x) - b*_θ) s_θ(x),   b*_θ = E[f s_θ²] / E[s_θ²]
    pathwise              ∂_θ f(μ + σ ε),          ε ~ N(0, 1)
    measure-valued        μ: (f(μ + σW) - f(μ - σW')) / (σ√(2π)),  W, W' Rayleigh
                          σ: (f(μ + σM) - f(μ + σε)) / σ,          M double-sided Maxwell
    (coupled)             W' = W;  ε = U M, U ~ U(0, 1)

All six are unbiased; their variances Var[g] = E[(g - E g)²] are computed to
float64 precision by quadrature (Gauss-Hermite over x and M, Gauss-Legendre
over W and U), and their means checked against ``jax.grad`` of the closed
forms in ``lt.exact``. At a few k, the library's single-sample terms
(``lt.score_function_jacobians``, and one-sample estimates of ``lt.pathwise``
and ``lt.measure_valued``) check both: ``lt.testing.check_unbiased`` tests
their sample means against the exact gradient and their mean squared
deviations from it against the exact variance, Bonferroni over the study.

    python -m experiments.gaussian_variance [--quick]

writes ``results/gaussian_variance.json`` and ``results/gaussian_variance.png``.
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
from jax.scipy import stats
from scipy import special
from tqdm import tqdm

import logtrick as lt
from experiments import common

ESTIMATORS = ("score", "score_mean_baseline", "score_optimal_baseline", "pathwise", "measure_valued",
              "measure_valued_coupled")
LABELS = {
    "score": "score function",
    "score_mean_baseline": "score function + mean baseline",
    "score_optimal_baseline": "score function + optimal baseline",
    "pathwise": "pathwise",
    "measure_valued": "measure-valued",
    "measure_valued_coupled": "measure-valued, coupled",
}
PARAMS = ("mu", "sigma")


class Cost(NamedTuple):
    """A cost family f(x; k) with its closed-form Gaussian expectation.

    Attributes:
      name: key in the results.
      label: LaTeX for the plot.
      f: ``f(x, k) -> scalar``, differentiable in x.
      closed_form: ``k -> (params -> E[f])`` from :mod:`logtrick.exact`
        (params of ``lt.families.normal()``).
      k_range: (smallest, largest) k of the variance curves.
      log_k: whether the k grid (and the plot's k axis) is logarithmic.
      mc_ks: the k values of the Monte Carlo check and the printed table.
    """

    name: str
    label: str
    f: Callable[[jax.Array, jax.Array], jax.Array]
    closed_form: Callable[[Any], Callable[[Any], jax.Array]]
    k_range: tuple[float, float]
    log_k: bool
    mc_ks: tuple[float, ...]


# The k ranges are those of the paper's figures 2 (quadratic) and 3 (the other two).
COSTS = (
    Cost("quadratic", r"$f(x;k) = (x-k)^2$", lambda x, k: (x - k) ** 2,
         lt.exact.normal_quadratic, (-3.0, 3.0), False, (-2.0, 1.0, 3.0)),
    Cost("exp_square", r"$f(x;k) = \exp(-k x^2)$", lambda x, k: jnp.exp(-k * x**2),
         lt.exact.normal_exp_square, (0.1, 10.0), True, (0.1, 1.0, 10.0)),
    Cost("cosine", r"$f(x;k) = \cos(k x)$", lambda x, k: jnp.cos(k * x),
         lt.exact.normal_cosine, (0.5, 5.0), True, (0.5, 1.0, 5.0)),
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      loc: μ of the Gaussian.
      scale: σ of the Gaussian.
      num_k: points per variance curve.
      num_quadrature: Gauss-Hermite nodes (before dropping those of zero weight).
      mc_samples: Monte Carlo samples per (cost, k) check.
      significance: family-wise false-alarm rate of the Monte Carlo z-tests
        over the whole study (each cost's test gets an equal share).
      seed: PRNG seed of the Monte Carlo check.
    """

    loc: float = 1.0
    scale: float = 1.0
    num_k: int = 100
    num_quadrature: int = 1000
    mc_samples: int = 100_000
    significance: float = 1e-3
    seed: int = 0


QUICK = Config(num_k=9, num_quadrature=500, mc_samples=10_000)


# ---------------------------------------------------------------- exact (quadrature)


def gauss_hermite(theta: jax.Array, num_points: int) -> tuple[jax.Array, jax.Array]:
    """Nodes x_j and weights w_j with E_{N(μ,σ²)}[h] ≈ Σ_j w_j h(x_j).

    x_j = μ + √2 σ t_j, w_j = ω_j / √π for the Gauss-Hermite rule (t_j, ω_j)
    of ``num_points`` nodes; nodes whose weight underflows to 0 are dropped.
    Exact for polynomials of degree < 2 num_points. Narrow features far from μ
    (exp(-k x²) for k = 10) need several hundred nodes to reach float64
    accuracy, beyond numpy's ``hermgauss``; scipy's ``roots_hermite`` is used.
    """
    t, w = special.roots_hermite(num_points)
    keep = w > 0
    t, w = jnp.asarray(t[keep]), jnp.asarray(w[keep] / math.sqrt(math.pi))
    return theta[0] + math.sqrt(2.0) * theta[1] * t, w


def legendre(lo: float, hi: float, num_points: int) -> tuple[jax.Array, jax.Array]:
    """Gauss-Legendre nodes and weights for ∫_lo^hi h(t) dt."""
    t, w = np.polynomial.legendre.leggauss(num_points)
    return jnp.asarray(lo + (hi - lo) * (t + 1) / 2), jnp.asarray(w * (hi - lo) / 2)


def measure_valued_moments(f: Callable, theta: jax.Array, k: jax.Array, *, num_points: int) -> dict[str, Any]:
    """Means and single-sample variances of the measure-valued estimators (uncoupled, coupled), by quadrature.

    Rayleigh W (density w e^{-w²/2} on w > 0): Gauss-Legendre on [0, 12];
    double-sided Maxwell M (density m² N(m|0, 1)): Gauss-Hermite with weights
    × m²; coupled σ term: that rule times Gauss-Legendre over U in (0, 1).
    Independent draws: E[(a - b)²] = E a² + E b² - 2 E a E b.

    Returns:
      ``{"mean": {name: (2,)}, "variance": {name: (2,)}}``, the (2,) axis (μ, σ).
    """
    mu, sigma = theta[0], theta[1]
    f_at = jax.vmap(lambda x: f(x, k))
    w, w_weights = legendre(0.0, 12.0, num_points)
    w_weights = w_weights * w * jnp.exp(-0.5 * w**2)
    t, t_weights = gauss_hermite(jnp.asarray([0.0, 1.0]), num_points)
    m_weights = t_weights * t**2
    u, u_weights = legendre(0.0, 1.0, 64)
    c_mu, c_sigma = 1.0 / (sigma * math.sqrt(2.0 * math.pi)), 1.0 / sigma
    plus_mu, minus_mu = f_at(mu + sigma * w), f_at(mu - sigma * w)
    on_nodes = f_at(mu + sigma * t)  # f(μ + σM) with m_weights, f(μ + σε) with t_weights
    coupled_minus = jax.vmap(lambda ui: f_at(mu + sigma * ui * t))(u)  # f(μ + σUM), (U nodes, M nodes)

    def independent(a, wa, b, wb):
        return wa @ a**2 + wb @ b**2 - 2 * (wa @ a) * (wb @ b)

    mean = jnp.stack([c_mu * (w_weights @ (plus_mu - minus_mu)), c_sigma * (m_weights - t_weights) @ on_nodes])
    second = {
        "measure_valued": jnp.stack([c_mu**2 * independent(plus_mu, w_weights, minus_mu, w_weights),
                                     c_sigma**2 * independent(on_nodes, m_weights, on_nodes, t_weights)]),
        "measure_valued_coupled": jnp.stack([
            c_mu**2 * (w_weights @ (plus_mu - minus_mu) ** 2),
            c_sigma**2 * (u_weights @ ((on_nodes[None] - coupled_minus) ** 2 @ m_weights))]),
    }
    return {"mean": {name: mean for name in second}, "variance": {name: m2 - mean**2 for name, m2 in second.items()}}


def natural_score(theta: jax.Array, x: jax.Array) -> jax.Array:
    """(∂_μ, ∂_σ) log N(x | μ, σ²) = ((x-μ)/σ², ((x-μ)² - σ²)/σ³), shape (2,)."""
    return jax.grad(lambda th: stats.norm.logpdf(x, th[0], th[1]))(theta)


def pathwise_term(f: Callable, theta: jax.Array, x: jax.Array, k: jax.Array) -> jax.Array:
    """(∂_μ, ∂_σ) f(μ + σ ε; k) at ε = (x - μ)/σ: (f'(x), f'(x) ε), shape (2,)."""
    eps = jax.lax.stop_gradient((x - theta[0]) / theta[1])
    return jax.grad(lambda th: f(th[0] + th[1] * eps, k))(theta)


def exact_moments(f: Callable, theta: jax.Array, k: jax.Array, *, num_points: int) -> dict[str, Any]:
    """Means and single-sample variances of the six estimators, by quadrature.

    Args:
      f: ``f(x, k) -> scalar``.
      theta: (μ, σ), shape (2,).
      k: the cost's parameter, scalar.
      num_points: Gauss-Hermite nodes.

    Returns:
      ``{"expectation": E[f], "optimal_baseline": b* (2,), "mean": {estimator:
      (2,)}, "variance": {estimator: (2,)}}``; the (2,) axis is (μ, σ).
    """
    xs, ws = gauss_hermite(theta, num_points)
    expect = lambda h: jnp.tensordot(ws, h, axes=1)  # noqa: E731
    fx = jax.vmap(f, (0, None))(xs, k)[:, None]
    score = jax.vmap(natural_score, (None, 0))(theta, xs)
    optimal = expect(fx * score**2) / expect(score**2)
    baselines = {"score": jnp.zeros(2), "score_mean_baseline": jnp.full(2, expect(fx[:, 0])),
                 "score_optimal_baseline": optimal}
    terms = {name: (fx - b) * score for name, b in baselines.items()}
    terms["pathwise"] = jax.vmap(lambda x: pathwise_term(f, theta, x, k))(xs)
    means = {name: expect(g) for name, g in terms.items()}
    variances = {name: expect((g - means[name]) ** 2) for name, g in terms.items()}
    weak = measure_valued_moments(f, theta, k, num_points=num_points)
    return {"expectation": expect(fx[:, 0]), "optimal_baseline": optimal, "mean": {**means, **weak["mean"]},
            "variance": {**variances, **weak["variance"]}}


def closed_form_gradient(cost: Cost, theta: jax.Array, k: jax.Array) -> jax.Array:
    """(∂_μ, ∂_σ) E[f] from ``jax.grad`` of the closed form; ∂_σ = ∂_{log σ} / σ."""
    params = {"loc": theta[0], "log_scale": jnp.log(theta[1])}
    grad = jax.grad(cost.closed_form(k))(params)
    return jnp.stack([grad["loc"], grad["log_scale"] / theta[1]])


# ---------------------------------------------------------------- Monte Carlo check


def _natural(grads: dict[str, jax.Array], scale: jax.Array) -> jax.Array:
    """Per-sample grads in (loc, log_scale) -> (μ, σ), shape (N, 2)."""
    return jnp.stack([grads["loc"], grads["log_scale"] / scale], axis=-1)


def monte_carlo_terms(f: Callable, theta: jax.Array, k: jax.Array, baselines: dict[str, jax.Array],
                      key: jax.Array, *, num_samples: int) -> dict[str, jax.Array]:
    """N per-sample terms of each estimator, from the library, shape (N, 2) each.

    Score terms: ``lt.score_function_jacobians`` of f and of 1 on the same
    samples give f s and s, so (f - b) s = f s - b s for the exact constant
    ``baselines[name]`` (2,). Pathwise and measure-valued terms: N one-sample
    estimates of ``lt.pathwise`` and ``lt.measure_valued``, one key each.
    """
    family = lt.families.normal()
    params = {"loc": theta[0], "log_scale": jnp.log(theta[1])}
    key_score, key_path = jax.random.split(key)
    f_k = lambda x: f(x, k)  # noqa: E731
    f_score = _natural(lt.score_function_jacobians(f_k, family, params, key_score, num_samples=num_samples),
                       theta[1])
    score = _natural(lt.score_function_jacobians(jnp.ones_like, family, params, key_score,
                                                 num_samples=num_samples), theta[1])
    terms = {name: f_score - b * score for name, b in baselines.items()}
    one_sample = {"pathwise": lt.pathwise(f_k, family, num_samples=1),
                  "measure_valued": lt.measure_valued(f_k, family, num_samples=1, coupling=False),
                  "measure_valued_coupled": lt.measure_valued(f_k, family, num_samples=1, coupling=True)}
    keys = jax.random.split(key_path, num_samples)
    for name, est in one_sample.items():
        terms[name] = _natural(jax.vmap(lambda key: est.estimate(params, (), key)[0])(keys), theta[1])
    return terms


def moment_test(terms: Any, means: Any, variances: Any, *, significance: float) -> lt.testing.UnbiasedReport:
    """The unbiasedness test of the sample means and variances of i.i.d. draws of g against E[g] and Var[g].

    The squared deviations (g_i - E g)² from the exact mean are i.i.d. with
    mean Var g, so ``lt.testing.check_unbiased`` tests both moments as means: the
    variance's standard error √(Var[(g - E g)²] / N) comes from the fourth
    central moment. Bonferroni over every coordinate of both.

    Args:
      terms: pytree whose leaves have a leading axis of N draws.
      means: E[g], a pytree like one draw.
      variances: Var[g], a pytree like one draw.
      significance: family-wise false-alarm rate.

    Returns:
      An ``lt.testing.UnbiasedReport``; its ``z`` is ``{"mean": ..., "variance": ...}``.
    """
    deviations = jax.tree_util.tree_map(lambda t, m: (t - m) ** 2, terms, means)
    return lt.testing.check_unbiased({"mean": terms, "variance": deviations}, {"mean": means, "variance": variances},
                                     significance=significance)


def _check_entry(samples: np.ndarray, exact_mean: float, exact_variance: float, mean_z: float,
                 variance_z: float) -> dict[str, float]:
    """One Monte Carlo check for JSON: the moments :func:`moment_test` tests, their standard errors and z.

    ``mc_variance`` is the mean of (g_i - E g)² about the exact mean E g.
    """
    n = samples.shape[0]
    deviations = (samples - exact_mean) ** 2
    variance = float(deviations.mean())
    return {
        "exact_mean": float(exact_mean), "mc_mean": float(samples.mean()),
        "mean_se": float(samples.std(ddof=1) / math.sqrt(n)), "mean_z": float(mean_z),
        "exact_variance": float(exact_variance), "mc_variance": variance,
        "variance_se": float(deviations.std(ddof=1) / math.sqrt(n)), "variance_z": float(variance_z),
        "variance_rel_error": (variance - float(exact_variance)) / max(float(exact_variance), 1e-12),
    }


# ---------------------------------------------------------------- study


def k_grid(cost: Cost, num_k: int) -> np.ndarray:
    """The k values of a cost's variance curves."""
    lo, hi = cost.k_range
    return np.geomspace(lo, hi, num_k) if cost.log_k else np.linspace(lo, hi, num_k)


def _tolist(tree: Any) -> Any:
    """Arrays -> nested lists of floats, for JSON."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64).tolist(), tree)


def _by_param(array: jax.Array) -> dict[str, list[float]]:
    """(..., 2) -> {"mu": [...], "sigma": [...]}."""
    array = np.asarray(array, np.float64)
    return {p: array[..., i].tolist() for i, p in enumerate(PARAMS)}


def study_cost(cost: Cost, config: Config, key: jax.Array) -> dict[str, Any]:
    """Exact variance curves, their checks, and the Monte Carlo checks of one cost.

    Call under ``jax.enable_x64(True)``, as :func:`run` does.
    """
    theta = jnp.asarray([config.loc, config.scale])
    grid, mc_ks = k_grid(cost, config.num_k), np.asarray(cost.mc_ks)
    ks = jnp.asarray(np.concatenate([grid, mc_ks]))

    compile_once = functools.partial(jax.jit, compiler_options=common.FAST_COMPILE)  # each runs once

    def exact_fn(num_points):
        return compile_once(jax.vmap(functools.partial(exact_moments, cost.f, theta, num_points=num_points)))

    moments, finer = exact_fn(config.num_quadrature)(ks), exact_fn(2 * config.num_quadrature)(ks)
    gradients = compile_once(jax.vmap(lambda k: closed_form_gradient(cost, theta, k)))(ks)
    closed_expectation = compile_once(jax.vmap(lambda k: cost.closed_form(k)(
        {"loc": theta[0], "log_scale": jnp.log(theta[1])})))(ks)
    moments, finer, gradients, closed_expectation = jax.device_get(
        (moments, finer, gradients, closed_expectation))

    baselines = {"score": np.zeros((len(ks), 2)),
                 "score_mean_baseline": np.repeat(moments["expectation"][:, None], 2, axis=1),
                 "score_optimal_baseline": moments["optimal_baseline"]}
    at_mc = lambda tree: jax.tree_util.tree_map(lambda a: a[len(grid):], tree)  # noqa: E731
    mc_fn = compile_once(jax.vmap(functools.partial(monte_carlo_terms, cost.f, theta, num_samples=config.mc_samples)))
    terms = jax.device_get(mc_fn(jnp.asarray(mc_ks), at_mc(baselines), jax.random.split(key, len(mc_ks))))
    terms = {name: np.moveaxis(np.asarray(terms[name], np.float64), 1, 0) for name in ESTIMATORS}  # (N, k, 2)
    exact_means = {name: at_mc(gradients) for name in ESTIMATORS}
    exact_variances = {name: at_mc(moments["variance"][name]) for name in ESTIMATORS}
    report = moment_test(terms, exact_means, exact_variances, significance=config.significance / len(COSTS))
    checks = [
        {"k": float(k), "estimator": name, "param": param,
         **_check_entry(terms[name][:, j, i], exact_means[name][j, i], exact_variances[name][j, i],
                        report.z["mean"][name][j, i], report.z["variance"][name][j, i])}
        for j, k in enumerate(mc_ks) for name in ESTIMATORS for i, param in enumerate(PARAMS)]

    curves = jax.tree_util.tree_map(lambda a: a[:len(grid)], moments)
    return {
        "label": cost.label,
        "k": grid.tolist(),
        "log_k": cost.log_k,
        "expectation": _tolist(curves["expectation"]),
        "gradient": _by_param(gradients[:len(grid)]),
        "optimal_baseline": _by_param(curves["optimal_baseline"]),
        "variance": {name: _by_param(curves["variance"][name]) for name in ESTIMATORS},
        "checks": {
            "mean_vs_closed_form_max_abs_error": float(max(
                np.max(np.abs(moments["mean"][name] - gradients)) for name in ESTIMATORS)),
            "expectation_vs_closed_form_max_abs_error": float(
                np.max(np.abs(moments["expectation"] - closed_expectation))),
            "variance_max_rel_change_with_2x_nodes": float(max(
                np.max(np.abs(finer["variance"][name] - moments["variance"][name])
                       / np.maximum(moments["variance"][name], 1e-12))
                for name in ESTIMATORS)),
        },
        "mc_checks": checks,
        "mc_threshold": report.threshold,
    }



def sanity_variances(results: dict[str, Any]) -> dict[str, float]:
    """Exact variances for f = (x - 1)², μ = σ = 1, from the quadratic cost's k = 1 check.

    Score function: Var[ε³] = 15 (μ), Var[ε⁴ - ε²] = 74 (σ); pathwise:
    Var[2ε] = 4 (μ), Var[2ε²] = 8 (σ), with ε = x - 1 ~ N(0, 1). Measure-valued:
    Var[(W² - W'²)/√(2π)] = 8/(2π) (μ), Var[M² - ε²] = 8 (σ); coupled 0 (μ:
    W² - W² = 0) and Var[M² (1 - U²)] = 4 (σ).
    """
    return {f"{c['estimator']}_{c['param']}": c["exact_variance"]
            for c in results["costs"]["quadratic"]["mc_checks"]
            if c["k"] == 1.0 and c["estimator"] in ("score", "pathwise", "measure_valued", "measure_valued_coupled")}


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """The whole study in float64; returns the JSON-ready results (no files written)."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(config.seed), len(COSTS))
        costs = {cost.name: study_cost(cost, config, key)
                 for cost, key in zip(tqdm(COSTS, desc="costs", disable=not progress), keys)}
    results = {"config": dataclasses.asdict(config), "seed": config.seed, "estimators": list(ESTIMATORS),
               "costs": costs}
    return {**results, "sanity_quadratic_k1": sanity_variances(results)}


# ---------------------------------------------------------------- reporting


def format_table(results: dict[str, Any]) -> str:
    """Exact vs Monte Carlo single-sample variance at the checked k values."""
    config = results["config"]
    head = (f"{'cost':<11}{'k':>6}  {'estimator':<24}"
            + "".join(f"| {'Var ' + p + ' exact':>14}{'MC':>11}{'rel.err':>9}{'z':>6} " for p in ("mu", "sigma")))
    lines = [f"single-sample variance of the gradient estimators, x ~ N({config['loc']:g}, {config['scale']:g}^2); "
             f"Monte Carlo: {config['mc_samples']} samples", head,
             "-" * len(head)]
    for name, cost in results["costs"].items():
        rows: dict[tuple[float, str], dict[str, dict]] = {}
        for c in cost["mc_checks"]:
            rows.setdefault((c["k"], c["estimator"]), {})[c["param"]] = c
        for (k, est), by_param in rows.items():
            cells = "".join(
                f"| {c['exact_variance']:>14.6g}{c['mc_variance']:>11.4g}{100 * c['variance_rel_error']:>8.2f}%"
                f"{c['variance_z']:>6.2f} " for c in (by_param["mu"], by_param["sigma"]))
            lines.append(f"{name:<11}{k:>6.2f}  {est:<24}{cells}")
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """One-line checks: sanity values, means vs closed forms, quadrature, max |z|."""
    s = results["sanity_quadratic_k1"]
    checks = [c["checks"] for c in results["costs"].values()]
    mc = [c for cost in results["costs"].values() for c in cost["mc_checks"]]
    return "\n".join([
        "f = (x-1)^2 exact variances: score mu {score_mu:.10g}, score sigma {score_sigma:.10g}, "
        "pathwise mu {pathwise_mu:.10g}, pathwise sigma {pathwise_sigma:.10g}, measure-valued mu "
        "{measure_valued_mu:.10g}, sigma {measure_valued_sigma:.10g}, coupled mu {measure_valued_coupled_mu:.3g}, "
        "sigma {measure_valued_coupled_sigma:.10g}  (expected 15, 74, 4, 8, 8/(2 pi) = 1.273239545, 8, 0, 4)".format(**s),
        "quadrature means vs jax.grad of closed forms: max abs error "
        f"{max(c['mean_vs_closed_form_max_abs_error'] for c in checks):.2e}; E[f] max abs error "
        f"{max(c['expectation_vs_closed_form_max_abs_error'] for c in checks):.2e}; variances change by "
        f"{max(c['variance_max_rel_change_with_2x_nodes'] for c in checks):.1e} (relative) with 2x nodes",
        f"Monte Carlo: max |z| of means {max(abs(c['mean_z']) for c in mc):.2f}, of variances "
        f"{max(abs(c['variance_z']) for c in mc):.2f}; Bonferroni threshold "
        f"{max(c['mc_threshold'] for c in results['costs'].values()):.2f} "
        f"(alpha = {results['config']['significance']:g}, {2 * len(mc)} z-scores); max |rel. error| of variances "
        f"{100 * max(abs(c['variance_rel_error']) for c in mc):.1f}%",
    ])


_COLORS = {"score": "tab:red", "score_mean_baseline": "tab:orange",
           "score_optimal_baseline": "tab:purple", "pathwise": "tab:blue", "measure_valued": "tab:green",
           "measure_valued_coupled": "tab:olive"}
_CARTOON = {"quadratic": ((-5.0, 5.0), (-2.0, 5.0)), "exp_square": ((-3.0, 3.0), (-1.1, 1.1)),
            "cosine": ((-3.0, 3.0), (-3.0, 3.0))}
_LOG_TICKS = {"exp_square": (0.1, 0.3, 1.0, 3.0, 10.0), "cosine": (0.5, 1.0, 2.0, 3.0, 5.0)}


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """One column per cost: f and ∂f/∂x for three k, then Var vs k for ∂_μ and ∂_σ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    config = results["config"]
    mu, sigma = config["loc"], config["scale"]
    fig, axes = plt.subplots(3, len(COSTS), figsize=(5.2 * len(COSTS), 12), constrained_layout=True,
                             gridspec_kw={"height_ratios": [0.7, 1, 1]})
    for col, cost in enumerate(COSTS):
        data = results["costs"][cost.name]
        ks = np.asarray(data["k"])
        lo, hi = cost.k_range
        shown = (lo, math.sqrt(lo * hi) if cost.log_k else (lo + hi) / 2, hi)
        (x_lo, x_hi), ylim = _CARTOON[cost.name]
        xs = np.linspace(x_lo, x_hi, 600)
        ax = axes[0, col]
        density = np.exp(-0.5 * ((xs - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        ax.fill_between(xs, density, color="0.85", label=rf"$\mathcal{{N}}(x|{mu:g},{sigma:g}^2)$")
        shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.8, len(shown)))
        value_and_slope = jax.jit(jax.vmap(jax.value_and_grad(cost.f), (0, None)))
        for k, shade in zip(shown, shades):
            fx, dfx = value_and_slope(jnp.asarray(xs), k)
            ax.plot(xs, fx, color=shade, label=f"k = {k:.3g}")
            ax.plot(xs, dfx, color=shade, ls="--")
        ax.plot([], [], color="k", ls="--", label=r"$\partial f/\partial x$")
        ax.set(xlim=(x_lo, x_hi), ylim=ylim, xlabel="x", title=cost.label)
        ax.legend(fontsize=8, loc="lower left" if cost.name != "quadratic" else "upper left", ncol=2)
        ax.axhline(0.0, color="0.6", lw=0.5)

        for row, param in ((1, "mu"), (2, "sigma")):
            ax = axes[row, col]
            symbol = r"\mu" if param == "mu" else r"\sigma"
            for name in ESTIMATORS:
                ax.plot(ks, data["variance"][name][param], color=_COLORS[name], label=LABELS[name])
                mc = [c for c in data["mc_checks"] if c["estimator"] == name and c["param"] == param]
                ax.errorbar([c["k"] for c in mc], [c["mc_variance"] for c in mc],
                            yerr=[2 * c["variance_se"] for c in mc], fmt="o", mfc="none", ms=7,
                            color=_COLORS[name], capsize=3)
            ax.set_yscale("log")
            curves = np.concatenate([data["variance"][name][param] for name in ESTIMATORS])
            top = curves.max()  # the coupled measure-valued variance can vanish (∂_μ of (x - 1)²): clip its dip
            ax.set_ylim(max(curves.min(), 1e-5 * top) / 2, 2 * top)
            if cost.log_k:
                ax.set_xscale("log")
                ax.set_xticks(_LOG_TICKS[cost.name])
                ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set(xlim=(ks[0], ks[-1]), xlabel="k",
                   ylabel=rf"Var of one-sample estimate of $\partial_{symbol} \mathbb{{E}}[f]$")
            ax.grid(True, which="major", alpha=0.3)
    axes[1, 0].plot([], [], "o", mfc="none", color="0.3",
                    label=f"Monte Carlo, {config['mc_samples']:,} samples (±2 s.e.)")
    axes[1, 0].legend(fontsize=8, loc="upper center")
    fig.suptitle(rf"Gradient variance for $x \sim \mathcal{{N}}({mu:g}, {sigma:g}^2)$: exact (lines, "
                 "quadrature) and Monte Carlo (markers); cf. Mohamed et al. 2020, figs. 2-3")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "gaussian_variance", config=Config(), quick=QUICK,
                run=lambda config: run(config, progress=True),
                report=lambda results: format_table(results) + "\n" + summary(results), plots={"": plot})

if __name__ == "__main__":
    main()
