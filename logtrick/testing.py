"""Statistical checks that a stochastic estimate agrees with an exact value.

A fixed tolerance is either too loose for a precise estimator or too tight for
a noisy one. Here the tolerance follows the estimator's own noise. From M
independent estimates, each coordinate's Student statistic
T = (mean - expected) / (s / √M) is corrected for the skewness γ̂ of the
estimates with Hall's monotone transformation (Johnson's modified t made
invertible),

    H(T) = T + a T² / 3 + a² T³ / 27 + a / 6,   a = γ̂ / √M,

which removes the first-order (1/√M) skewness error of the normal
approximation, and compared with the Student quantile t_ν(1 - α / (2C)) for C
coordinates (Bonferroni), with ν = 2(M - 1) / (2 + κ̂) degrees of freedom for
a sample excess kurtosis κ̂ (the variance estimate of a heavy-tailed sample is
as uncertain as a Gaussian one with ν + 1 points; ν = M - 1 for Gaussian
tails). The reported statistic is H rescaled to the common threshold
t_{M-1}(1 - α / (2C)).

No test of a mean is valid for every distribution at a fixed M (Bahadur and
Savage, 1956): heavy tails make the mean of M estimates far from normal, the
sample misses the rare large values and a test rejects unbiased estimators.
So the test first checks that each coordinate can be tested: its κ̂ must be at
most M / (½ t*²); with fewer than 300 estimates its sample must also look
Gaussian (|γ̂| ≤ 2√(6/M), κ̂ ≤ 2√(24/M)); and estimates that are all equal
must equal the expected value (otherwise a deterministic bias and rare
outcomes the sample has not reached look the same). A coordinate failing the
tail gates makes the whole verdict "inconclusive", with the number of
estimates the gates ask for; one stuck at a wrong value does so only if no
other coordinate rejects. ``python -m experiments.calibration`` measures the false-alarm rate and
power of this rule on the library's own estimators, light and heavy tailed;
the README shows the curves and the regimes where each holds.

References:
  Johnson, "Modified t tests and confidence intervals for asymmetrical
  populations", JASA 1978. Hall, "On the removal of skewness by
  transformation", JRSS B 1992. Bahadur and Savage, "The nonexistence of
  certain statistical procedures in nonparametric problems", Ann. Math.
  Statist. 1956.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import scipy.stats

from logtrick.base import Estimator

Params = Any

KURTOSIS_GATE = 0.5
"""A coordinate is testable when its sample excess kurtosis κ̂ is at most M / (KURTOSIS_GATE t*²)."""

SMALL_SAMPLE = 300
"""Below this many estimates, a coordinate is testable only if its sample looks Gaussian."""

MIN_ESTIMATES = 30
"""The fewest estimates any test here accepts."""


class InconclusiveError(AssertionError):
    """Raised by :func:`assert_unbiased` when the estimates are too few, or too heavy-tailed, to test."""


class UnbiasedReport(NamedTuple):
    """Outcome of :func:`check_unbiased` and :func:`assert_unbiased`.

    Attributes:
      verdict: "consistent" (no bias found), "biased" (a coordinate rejects,
        or an estimate is not finite) or "inconclusive" (a coordinate fails
        the tail gates at this M, and then none is judged; or no coordinate
        rejects but one is stuck at a value other than the expected one).
      z: pytree like ``expected`` of per-coordinate corrected statistics,
        on the scale of ``threshold`` (NaN where untestable).
      max_abs_z: the largest |H| over the testable coordinates.
      threshold: the Bonferroni-corrected Student-t threshold.
      num_estimates: M.
      untestable: descriptions of the untestable coordinates (at most 5 listed).
      num_untestable: how many coordinates are untestable.
      min_estimates: the M the gates ask for (a lower bound: a small sample
        underestimates heavy tails); M itself if all pass.
    """

    verdict: str
    z: Any
    max_abs_z: float
    threshold: float
    num_estimates: int
    untestable: tuple[str, ...]
    num_untestable: int
    min_estimates: int


def _flat_pairs(estimates: Any, expected: Any, caller: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    exp_leaves, exp_tree = jax.tree_util.tree_flatten_with_path(expected)
    est_leaves, est_tree = jax.tree_util.tree_flatten(estimates)
    if est_tree != jax.tree_util.tree_structure(expected):  # type: ignore[operator]
        raise ValueError(
            f"{caller}: `estimates` and `expected` have different pytree structures: {est_tree} vs {exp_tree}")
    pairs = []
    for (path, exp), est in zip(exp_leaves, est_leaves):
        exp, est = np.asarray(exp, np.float64), np.asarray(est, np.float64)
        name = jax.tree_util.keystr(path) or "<root>"
        if est.shape[1:] != exp.shape:
            raise ValueError(
                f"{caller}: leaf {name}: `estimates` shape {est.shape} must be "
                f"(num_estimates,) + `expected` shape {exp.shape}")
        pairs.append((name, est, exp))
    return pairs


def z_scores(estimates: Any, expected: Any, *, atol: float = 1e-6) -> Any:
    """Per-coordinate plain z-scores (mean - expected) / (std / √M), without corrections.

    Args:
      estimates: pytree whose leaves have a leading axis of M ≥ 2 independent
        estimates.
      expected: pytree of the same structure, leaves without that axis.
      atol: floor on the standard error, so that float rounding on a
        coordinate whose estimates are (nearly) constant is not read as bias.

    Returns:
      A pytree like ``expected`` of float64 numpy z-scores.
    """
    out = []
    for _, est, exp in _flat_pairs(estimates, expected, "z_scores"):
        m = est.shape[0]
        if m < 2:
            raise ValueError(f"z_scores: need at least 2 estimates, got {m}")
        se = np.maximum(est.std(axis=0, ddof=1) / np.sqrt(m), atol)
        out.append((est.mean(axis=0) - exp) / se)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(expected), out)


def _flat(pairs) -> tuple[np.ndarray, np.ndarray]:
    """Estimates (M, C) and expected (C,) with every leaf's coordinates side by side."""
    m = pairs[0][1].shape[0]
    return (np.concatenate([est.reshape(m, -1) for _, est, _ in pairs], axis=1),
            np.concatenate([exp.reshape(-1) for _, _, exp in pairs]))


class _Moments(NamedTuple):
    """Per-coordinate sample moments of (M, C) estimates, each shape (C,); the standard error floored at atol,
    ``near_constant`` where the floor binds, ``constant`` where every estimate is the same."""

    mean: np.ndarray
    std_error: np.ndarray
    skewness: np.ndarray
    excess_kurtosis: np.ndarray
    near_constant: np.ndarray
    constant: np.ndarray


def _moments(est: np.ndarray, atol: float) -> _Moments:
    m = est.shape[0]
    mean = est.mean(axis=0)
    dev = est - mean
    m2 = np.mean(dev**2, axis=0)
    std_error = np.sqrt(m2 * m / (m - 1) / m)
    near = ~(std_error > atol)   # NaN estimates count too: they are rejected apart
    safe = np.where(m2 > 0, m2, 1.0)
    skewness = np.where(m2 > 0, np.mean(dev**3, axis=0) / safe**1.5, 0.0)
    excess_kurtosis = np.where(m2 > 0, np.mean(dev**4, axis=0) / safe**2 - 3.0, 0.0)
    return _Moments(mean, np.maximum(std_error, atol), skewness, excess_kurtosis, near,
                    np.all(est == est[:1], axis=0))


def _looks_gaussian(mom: _Moments, m: int) -> np.ndarray:
    """|γ̂| and κ̂ within two standard errors of a normal sample's of size M, 2√(6/M) and 2√(24/M)."""
    return (np.abs(mom.skewness) <= 2.0 * math.sqrt(6.0 / m)) & (mom.excess_kurtosis <= 2.0 * math.sqrt(24.0 / m))


def _testable_shape(mom: _Moments, m: int, gate: float) -> np.ndarray:
    """The kurtosis gate κ̂ ≤ M / gate, and below :data:`SMALL_SAMPLE` estimates a Gaussian-looking sample."""
    ok = mom.excess_kurtosis <= m / gate
    return ok & _looks_gaussian(mom, m) if m < SMALL_SAMPLE else ok


def _hall(t: np.ndarray, skewness: np.ndarray, m: int) -> np.ndarray:
    """H(T) = T + a T²/3 + a² T³/27 + a/6, a = γ̂/√M: Hall's monotone form of Johnson's modified t."""
    a = skewness / math.sqrt(m)
    return t + a * t**2 / 3.0 + a**2 * t**3 / 27.0 + a / 6.0


def _threshold(significance: float, num_coords: int, m: Any) -> Any:
    """t_{m-1}(1 - α / (2C)): the Bonferroni Student threshold for m estimates (m may be an array)."""
    return scipy.stats.t.ppf(1.0 - significance / (2.0 * num_coords), np.asarray(m) - 1)


def _effective_df(excess_kurtosis: np.ndarray, m: int) -> np.ndarray:
    """ν = 2(M - 1) / (2 + κ̂), at most M - 1: the degrees of freedom of a variance estimate whose relative
    variance is (2 + κ)/(M - 1) instead of the Gaussian 2/(M - 1) (Satterthwaite's matching of moments)."""
    return np.minimum(m - 1.0, 2.0 * (m - 1) / np.maximum(2.0 + excess_kurtosis, 2.0))


def check_unbiased(
    estimates: Any,
    expected: Any,
    *,
    significance: float = 1e-3,
    atol: float = 1e-6,
) -> UnbiasedReport:
    """The test of :func:`assert_unbiased`, returning its report instead of raising.

    Args, as for :func:`assert_unbiased`.

    Returns:
      An :class:`UnbiasedReport`; ``report.verdict`` is "consistent",
      "biased" or "inconclusive".

    Example::

        draws = jax.random.normal(jax.random.key(0), (100, 3))
        report = lt.testing.check_unbiased(draws, jnp.zeros(3))
        report.verdict   # "consistent" but with probability about 1e-3
    """
    return _check(estimates, expected, significance, atol, "check_unbiased")


def _check(estimates: Any, expected: Any, significance: float, atol: float, caller: str) -> UnbiasedReport:
    pairs = _flat_pairs(estimates, expected, caller)
    est, exp = _flat(pairs)
    m, num_coords = est.shape
    if m < MIN_ESTIMATES:
        raise ValueError(f"{caller}: need at least {MIN_ESTIMATES} estimates, got {m}")
    mom = _moments(est, atol)
    finite = np.all(np.isfinite(est), axis=0)
    threshold = float(_threshold(significance, num_coords, m))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mom.mean - exp) / mom.std_error
        h = _hall(t, mom.skewness, m) * threshold / _threshold(significance, num_coords,
                                                                 _effective_df(mom.excess_kurtosis, m) + 1)
    # A coordinate whose spread is below atol is compared plainly, on the floored standard error; one whose
    # estimates are all equal and differ from expected is untestable (a deterministic bias and rare outcomes
    # the sample has not reached look the same).
    h = np.where(mom.near_constant, t, h)
    gate = KURTOSIS_GATE * threshold**2
    heavy = finite & ~mom.near_constant & ~_testable_shape(mom, m, gate)
    stuck = finite & mom.constant & ~(np.abs(t) <= threshold)
    untestable_mask = heavy | stuck
    testable = ~untestable_mask
    h = np.where(finite, np.where(testable, h, np.nan), np.inf)   # a non-finite estimate is rejected
    max_abs_z = float(np.max(np.abs(h[testable]), initial=0.0))
    offsets = np.cumsum([0] + [e.size for _, _, e in pairs])

    def name(c):
        leaf = int(np.searchsorted(offsets, c, side="right")) - 1
        return f"{pairs[leaf][0]}{[int(i) for i in np.unravel_index(c - offsets[leaf], pairs[leaf][2].shape)]}"

    untestable = tuple(
        (f"{name(c)}: all {m} estimates equal {mom.mean[c]:.6g}, expected {exp[c]:.6g}" if mom.constant[c]
         else f"{name(c)}: excess kurtosis {mom.excess_kurtosis[c]:.3g} > M / (½ t*²) = {m / gate:.3g}"
         if not mom.excess_kurtosis[c] <= m / gate
         else f"{name(c)}: skewness {mom.skewness[c]:.3g}, excess kurtosis {mom.excess_kurtosis[c]:.3g}: not "
              f"Gaussian-looking, as fewer than {SMALL_SAMPLE} estimates must be")
        for c in np.flatnonzero(untestable_mask)[:5])
    min_estimates = max(m, SMALL_SAMPLE if heavy.any() and m < SMALL_SAMPLE else 0,
                        int(math.ceil(gate * float(np.max(mom.excess_kurtosis[heavy], initial=0.0)))))
    # A coordinate failing the tail gates makes the whole sample inconclusive: the coordinates that pass beside
    # it are the ones whose samples happened to miss their tails, and they reject too often. A stuck one only
    # blocks a "consistent" verdict.
    if not finite.all():
        verdict = "biased"
    elif heavy.any():
        verdict = "inconclusive"
    elif max_abs_z > threshold:
        verdict = "biased"
    else:
        verdict = "inconclusive" if stuck.any() else "consistent"
    z = [h[offsets[i]:offsets[i + 1]].reshape(e.shape) for i, (_, _, e) in enumerate(pairs)]
    return UnbiasedReport(verdict=verdict, z=jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(expected), z),
                          max_abs_z=max_abs_z, threshold=threshold, num_estimates=m, untestable=untestable,
                          num_untestable=int(untestable_mask.sum()), min_estimates=min_estimates)


def assert_unbiased(
    estimates: Any,
    expected: Any,
    *,
    significance: float = 1e-3,
    atol: float = 1e-6,
) -> UnbiasedReport:
    """Asserts that independent estimates are centred on ``expected``.

    The skewness- and kurtosis-corrected Student test of the module
    docstring, Bonferroni over the C coordinates: an unbiased estimator is
    rejected with probability at most ``significance`` in the regimes
    ``experiments.calibration`` measures, and estimates too few for their
    tails are refused, not judged.

    Args:
      estimates: pytree; each leaf has leading axis M (≥ 30) of independent
        estimates, e.g. from :func:`draw_estimates`.
      expected: the exact value, pytree like one estimate.
      significance: family-wise false-rejection probability α.
      atol: floor on the standard error: a coordinate whose estimates vary
        less is compared on the floor, without the tail corrections.

    Returns:
      An :class:`UnbiasedReport` with verdict "consistent".

    Raises:
      AssertionError: "estimates are biased", naming the worst coordinates,
        their mean, expected value, standard error and statistic.
      InconclusiveError: an AssertionError saying which coordinates cannot be
        tested and how many estimates the test needs.
      ValueError: on mismatched pytrees or shapes, or M < 30.

    Example::

        draws = 1.0 + jax.random.normal(jax.random.key(0), (100, 3))
        lt.testing.assert_unbiased(draws, jnp.ones(3))
    """
    report = _check(estimates, expected, significance, atol, "assert_unbiased")
    m, threshold = report.num_estimates, report.threshold
    if report.verdict == "biased":
        lines = []
        for (name, est, exp), zl in zip(_flat_pairs(estimates, expected, "assert_unbiased"),
                                        jax.tree_util.tree_leaves(report.z)):
            for idx in np.argwhere(np.abs(zl) > threshold)[:5]:
                idx = tuple(int(i) for i in idx)
                column = est[(slice(None),) + idx]
                lines.append(f"  {name}{list(idx)}: mean {column.mean():.6g}, expected {exp[idx]:.6g}, "
                             f"s.e. {column.std(ddof=1) / np.sqrt(m):.3g}, statistic {zl[idx]:.2f}")
        raise AssertionError(
            f"estimates are biased: max |statistic| = {report.max_abs_z:.2f} > {threshold:.2f} "
            f"(α={significance}, {_size(report.z)} coordinates, {m} estimates)\n"
            + "\n".join(lines))
    if report.verdict == "inconclusive":
        raise InconclusiveError(
            f"inconclusive: {report.num_untestable} coordinate(s) cannot be tested with {m} estimates (the "
            f"others' max |statistic| is {report.max_abs_z:.2f}, threshold {threshold:.2f}). Draw at "
            f"least {report.min_estimates} estimates (more if the tails are heavier than this sample shows), or "
            "test a quantity with lighter tails.\n" + "\n".join(f"  {u}" for u in report.untestable))
    return report


def _size(tree: Any) -> int:
    return sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def estimates_needed(
    pilot: Any,
    expected: Any,
    *,
    relative_bias: float,
    significance: float = 1e-3,
    power: float = 0.95,
) -> int:
    """How many estimates :func:`assert_unbiased` needs to catch a bias of a given relative size.

    For a bias b_c = ``relative_bias`` · |g_c| on every coordinate c (g the
    exact value), coordinate c is rejected with probability ``power`` once
    √M b_c / σ_c ≥ t_{M-1}(1 - α/(2C)) + Φ⁻¹(power), σ_c the estimates' standard
    deviation from the pilot run; the answer is the smallest such M over the
    coordinates (the most detectable one), and at least what the gates of
    :func:`check_unbiased` ask for on the pilot's tails.

    Args:
      pilot: pytree; each leaf has leading axis M₀ ≥ 30 of estimates from a pilot run.
      expected: the exact value, pytree like one estimate, not all zero.
      relative_bias: the relative bias to detect, > 0.
      significance: the test's α.
      power: the probability of detecting it.

    Returns:
      The number of estimates, an int.

    Example::

        pilot = 1.0 + jax.random.normal(jax.random.key(0), (100, 3))
        lt.testing.estimates_needed(pilot, jnp.ones(3), relative_bias=0.1)   # about 2400
    """
    if not relative_bias > 0 or not 0 < power < 1:
        raise ValueError(f"estimates_needed: `relative_bias` must be > 0 and `power` in (0, 1), got "
                         f"{relative_bias} and {power}")
    est, exp = _flat(_flat_pairs(pilot, expected, "estimates_needed"))
    m0, num_coords = est.shape
    if m0 < MIN_ESTIMATES:
        raise ValueError(f"estimates_needed: the pilot needs at least {MIN_ESTIMATES} estimates, got {m0}")
    sd = est.std(axis=0, ddof=1)
    signal = relative_bias * np.abs(exp) / np.where(sd > 0, sd, np.inf)
    if not np.any(signal > 0):
        raise ValueError("estimates_needed: `expected` is zero on every coordinate; a relative bias is undefined")
    best = float(np.max(signal))
    z_power = statistics.NormalDist().inv_cdf(power)
    m = MIN_ESTIMATES
    for _ in range(100):   # M = ((t_{M-1} + z_power) / best)², a fixed point decreasing to the normal limit
        needed = max(MIN_ESTIMATES, int(math.ceil(((float(_threshold(significance, num_coords, m)) + z_power)
                                                    / best) ** 2)))
        if needed == m:
            break
        m = needed
    mom = _moments(est, 0.0)
    gate = KURTOSIS_GATE * float(_threshold(significance, num_coords, m)) ** 2
    small_enough = np.all(_looks_gaussian(mom, m0))   # else the test judges only from SMALL_SAMPLE on
    return max(m, int(math.ceil(gate * float(np.max(mom.excess_kurtosis, initial=0.0)))),
               0 if small_enough else SMALL_SAMPLE)


class VarianceReport(NamedTuple):
    """Outcome of :func:`assert_variance_ratio`.

    Attributes:
      ratio: the measured total-variance ratio V(reduced) / V(reference).
      z: the paired z-score of ``at_most`` · V(reference) - V(reduced) (positive: reduced by more).
      threshold: Φ⁻¹(1 - significance), one-sided.
      num_estimates: M.
    """

    ratio: float
    z: float
    threshold: float
    num_estimates: int


def _squared_deviations(estimates: Any) -> np.ndarray:
    """‖ĝ_m - mean ĝ‖² per estimate, all leaves flattened together, shape (M,)."""
    leaves = [np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(estimates)]
    m = leaves[0].shape[0]
    flat = np.concatenate([leaf.reshape(m, -1) for leaf in leaves], axis=1)
    return np.sum((flat - flat.mean(axis=0)) ** 2, axis=1)


def assert_variance_ratio(reduced: Any, reference: Any, *, at_most: float,
                          significance: float = 1e-3) -> VarianceReport:
    """Asserts that ``reduced`` has at most ``at_most`` times the total variance of ``reference``.

    A paired one-sided test: both hold M estimates drawn with the same keys
    (estimate m of one paired with estimate m of the other), so the per-key
    differences d_m = at_most · ‖r_m - mean r‖² - ‖g_m - mean g‖² are
    independent across m, and the test rejects "V(reduced) > at_most ·
    V(reference)" when mean d / (std d / √M) > Φ⁻¹(1 - significance). Total
    variance: E‖ĝ - E ĝ‖², summed over every coordinate of the pytree. With
    ``at_most`` just above the ratio an estimator is known to reach, the test
    checks the size of a variance reduction, not only its sign.

    Args:
      reduced: pytree, each leaf with a leading axis of M ≥ 30 estimates.
      reference: a pytree of the same leading axis, estimates from the same keys.
      at_most: the ratio bound being asserted, > 0.
      significance: the probability of asserting wrongly when the ratio is exactly ``at_most``.

    Returns:
      A :class:`VarianceReport`.

    Raises:
      AssertionError: when the reduction is not shown, with the measured ratio and z.
      ValueError: on fewer than 30 estimates, unequal counts, or ``at_most`` ≤ 0.

    Example::

        keys = jax.random.split(jax.random.key(0), 200)
        noise = jax.vmap(lambda k: jax.random.normal(k, (3,)))(keys)
        lt.testing.assert_variance_ratio(0.5 * noise, noise, at_most=0.3)   # ratio 0.25
    """
    small, large = _squared_deviations(reduced), _squared_deviations(reference)
    m = small.shape[0]
    if m < MIN_ESTIMATES or large.shape[0] != m:
        raise ValueError(f"assert_variance_ratio: need the same number (≥ {MIN_ESTIMATES}) of paired estimates, "
                         f"got {m} and {large.shape[0]}")
    if not at_most > 0:
        raise ValueError(f"assert_variance_ratio: `at_most` must be > 0, got {at_most}")
    diff = at_most * large - small
    z = float(diff.mean() / max(diff.std(ddof=1) / np.sqrt(m), np.finfo(np.float64).tiny))
    threshold = statistics.NormalDist().inv_cdf(1.0 - significance)
    report = VarianceReport(ratio=float(small.mean() / large.mean()), z=z, threshold=threshold, num_estimates=m)
    if not z > threshold:
        raise AssertionError(f"variance ratio {report.ratio:.4g} not shown ≤ {at_most:g}: paired z = {z:.2f} "
                             f"≤ {threshold:.2f} (α={significance}, {m} estimates)")
    return report


class Accuracy(NamedTuple):
    """How close independent estimates are to an exact value, all coordinates flattened together.

    Attributes:
      relative_bias: ‖mean ĝ - g‖ / ‖g‖.
      relative_rmse: √(mean_m ‖ĝ_m - g‖²) / ‖g‖, the error of one estimate.
      cosine: mean over estimates of cos(ĝ_m, g) (0 for an estimate of 0).
      cosine_of_mean: cos(mean ĝ, g).
      max_abs_z: the largest |statistic| of :func:`check_unbiased`.
      threshold: its threshold at ``significance``.
      num_estimates: M.
      verdict: its verdict.
    """

    relative_bias: float
    relative_rmse: float
    cosine: float
    cosine_of_mean: float
    max_abs_z: float
    threshold: float
    num_estimates: int
    verdict: str


def accuracy(estimates: Any, expected: Any, *, significance: float = 1e-3, atol: float = 1e-6) -> Accuracy:
    """Relative bias, relative RMSE, cosines and the z-test of ``estimates`` against ``expected``.

    Args:
      estimates: pytree; each leaf has leading axis M ≥ 30.
      expected: the exact value, a pytree like one estimate, not all zero.
      significance: as for :func:`check_unbiased`.
      atol: as for :func:`check_unbiased`.

    Returns:
      An :class:`Accuracy` of Python floats (ready for JSON).

    Example::

        draws = 1.0 + 0.1 * jax.random.normal(jax.random.key(0), (100, 3))
        lt.testing.accuracy(draws, jnp.ones(3)).relative_rmse   # about 0.1
    """
    report = _check(estimates, expected, significance, atol, "accuracy")
    est, exp = _flat(_flat_pairs(estimates, expected, "accuracy"))
    norm = np.linalg.norm(exp)
    if norm == 0:
        raise ValueError("accuracy: `expected` is zero; relative errors are undefined")
    est_norms = np.linalg.norm(est, axis=1)
    cosines = np.where(est_norms > 0, est @ exp / (np.where(est_norms > 0, est_norms, 1.0) * norm), 0.0)
    mean = est.mean(axis=0)
    mean_norm = np.linalg.norm(mean)
    return Accuracy(
        relative_bias=float(np.linalg.norm(mean - exp) / norm),
        relative_rmse=float(np.sqrt(np.mean(np.sum((est - exp) ** 2, axis=1))) / norm),
        cosine=float(cosines.mean()),
        cosine_of_mean=float(mean @ exp / (mean_norm * norm)) if mean_norm > 0 else 0.0,
        max_abs_z=report.max_abs_z, threshold=report.threshold, num_estimates=report.num_estimates,
        verdict=report.verdict)


def draw_estimates(estimate: Estimator | Callable[[jax.Array], Any], *args: Any, num_estimates: int) -> Any:
    """``num_estimates`` independent draws of a stochastic estimate, jitted and vmapped over keys.

    Two forms: ``draw_estimates(fn, key, num_estimates=M)`` draws ``fn(k)`` for
    M independent keys, ``fn`` any ``key -> pytree`` (a Hessian, a loss value,
    a gradient from a trained state); ``draw_estimates(estimator, params, key,
    num_estimates=M)`` draws ``estimator.estimate(params, estimator.init(params), k)``'s
    grads.

    Returns:
      The pytree ``fn`` returns, each leaf with a leading axis of num_estimates.

    Example::

        est = lt.score_function(jnp.sum, lt.families.normal(), num_samples=4)
        params = {"loc": jnp.zeros(2), "log_scale": jnp.zeros(2)}
        draws = lt.testing.draw_estimates(est, params, jax.random.key(0), num_estimates=100)
        losses = lt.testing.draw_estimates(lambda k: est.loss(params, (), k)[0], jax.random.key(1),
                                           num_estimates=100)
    """
    if isinstance(estimate, Estimator):
        params, key = args
        state = estimate.init(params)
        fn = lambda k: estimate.estimate(params, state, k)[0]
    else:
        (key,) = args
        fn = estimate
    return jax.jit(jax.vmap(fn))(jax.random.split(key, num_estimates))
