"""Statistical checks that a stochastic estimate agrees with an exact value.

A fixed tolerance is either too loose for a precise estimator or too tight for
a noisy one. Here the tolerance follows the estimator's own noise: from M
independent estimates, each coordinate's z-score is
z = (mean - expected) / (std / √M), and the test rejects when any |z| exceeds
the two-sided Bonferroni threshold Φ⁻¹(1 - α / (2C)) for C coordinates. With a
fixed key the test is deterministic; with any key it fails with probability at
most α when the estimator is unbiased, and surely when a bias is many
standard errors wide.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from logtrick.base import Estimator

Params = Any


class UnbiasedReport(NamedTuple):
    """Outcome of :func:`z_test` and :func:`assert_unbiased`.

    Attributes:
      z: pytree like ``expected`` of per-coordinate z-scores.
      max_abs_z: the largest |z|.
      threshold: the Bonferroni-corrected rejection threshold.
      num_estimates: M.
    """

    z: Any
    max_abs_z: float
    threshold: float
    num_estimates: int


def _flat_pairs(estimates: Any, expected: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    exp_leaves, exp_tree = jax.tree_util.tree_flatten_with_path(expected)
    est_leaves, est_tree = jax.tree_util.tree_flatten(estimates)
    if est_tree != jax.tree_util.tree_structure(expected):
        raise ValueError(
            "assert_unbiased: `estimates` and `expected` have different pytree structures: "
            f"{est_tree} vs {exp_tree}")
    pairs = []
    for (path, exp), est in zip(exp_leaves, est_leaves):
        exp, est = np.asarray(exp, np.float64), np.asarray(est, np.float64)
        name = jax.tree_util.keystr(path) or "<root>"
        if est.shape[1:] != exp.shape:
            raise ValueError(
                f"assert_unbiased: leaf {name}: `estimates` shape {est.shape} must be "
                f"(num_estimates,) + `expected` shape {exp.shape}")
        pairs.append((name, est, exp))
    return pairs


def z_scores(estimates: Any, expected: Any, *, atol: float = 1e-6) -> Any:
    """Per-coordinate z-scores of the mean of ``estimates`` against ``expected``.

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
    for _, est, exp in _flat_pairs(estimates, expected):
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


def z_test(
    estimates: Any,
    expected: Any,
    *,
    significance: float = 1e-3,
    atol: float = 1e-6,
) -> UnbiasedReport:
    """The Bonferroni z-test of :func:`assert_unbiased`, without raising.

    Args, as for :func:`assert_unbiased`.

    Returns:
      An :class:`UnbiasedReport`; the test rejects when
      ``not report.max_abs_z <= report.threshold``.

    Example::

        draws = jax.random.normal(jax.random.key(0), (100, 3))
        report = lt.testing.z_test(draws, jnp.zeros(3))
        report.max_abs_z <= report.threshold   # True but with probability 1e-3
    """
    pairs = _flat_pairs(estimates, expected)
    m = pairs[0][1].shape[0]
    if m < 30:
        raise ValueError(f"z_test: need at least 30 estimates for a z-test, got {m}")
    z = z_scores(estimates, expected, atol=atol)
    z_leaves = jax.tree_util.tree_leaves(z)
    num_coords = sum(leaf.size for leaf in z_leaves)
    threshold = statistics.NormalDist().inv_cdf(1.0 - significance / (2.0 * num_coords))
    max_abs_z = max(float(np.max(np.abs(leaf), initial=0.0)) for leaf in z_leaves)
    return UnbiasedReport(z=z, max_abs_z=max_abs_z, threshold=threshold, num_estimates=m)


def assert_unbiased(
    estimates: Any,
    expected: Any,
    *,
    significance: float = 1e-3,
    atol: float = 1e-6,
) -> UnbiasedReport:
    """Asserts that independent estimates are centred on ``expected`` (z-test).

    Rejects if any coordinate has |z| > Φ⁻¹(1 - significance / (2C)), C the
    number of coordinates (Bonferroni). Statistical: an unbiased estimator
    fails with probability at most ``significance``.

    Args:
      estimates: pytree; each leaf has leading axis M (≥ 30) of independent
        estimates, e.g. from :func:`draw_estimates`.
      expected: the exact value, pytree like one estimate.
      significance: family-wise false-rejection probability α.
      atol: floor on the standard error (see :func:`z_scores`).

    Returns:
      An :class:`UnbiasedReport`.

    Raises:
      AssertionError: naming the worst coordinates, their mean, expected
        value, standard error and z.
      ValueError: on mismatched pytrees or shapes, or M < 30.

    Example::

        draws = 1.0 + jax.random.normal(jax.random.key(0), (100, 3))
        lt.testing.assert_unbiased(draws, jnp.ones(3))
    """
    report = z_test(estimates, expected, significance=significance, atol=atol)
    if not report.max_abs_z <= report.threshold:
        pairs, m, threshold = _flat_pairs(estimates, expected), report.num_estimates, report.threshold
        lines = []
        for (name, est, exp), zl in zip(pairs, jax.tree_util.tree_leaves(report.z)):
            for idx in np.argwhere(~(np.abs(zl) <= threshold))[:5]:
                idx = tuple(int(i) for i in idx)
                se = est[(slice(None),) + idx].std(ddof=1) / np.sqrt(m)
                lines.append(
                    f"  {name}{list(idx)}: mean {est[(slice(None),) + idx].mean():.6g}, "
                    f"expected {exp[idx]:.6g}, s.e. {se:.3g}, z {zl[idx]:.2f}")
        num_coords = sum(leaf.size for leaf in jax.tree_util.tree_leaves(report.z))
        raise AssertionError(
            f"estimates are biased: max |z| = {report.max_abs_z:.2f} > {threshold:.2f} "
            f"(α={significance}, {num_coords} coordinates, {m} estimates)\n" + "\n".join(lines))
    return report


class Accuracy(NamedTuple):
    """How close independent estimates are to an exact value, all coordinates flattened together.

    Attributes:
      relative_bias: ‖mean ĝ - g‖ / ‖g‖.
      relative_rmse: √(mean_m ‖ĝ_m - g‖²) / ‖g‖, the error of one estimate.
      cosine: mean over estimates of cos(ĝ_m, g) (0 for an estimate of 0).
      cosine_of_mean: cos(mean ĝ, g).
      max_abs_z: the largest |z| of :func:`z_scores`.
      threshold: the Bonferroni threshold of :func:`z_test` at ``significance``.
      num_estimates: M.
    """

    relative_bias: float
    relative_rmse: float
    cosine: float
    cosine_of_mean: float
    max_abs_z: float
    threshold: float
    num_estimates: int


def accuracy(estimates: Any, expected: Any, *, significance: float = 1e-3, atol: float = 1e-6) -> Accuracy:
    """Relative bias, relative RMSE, cosines and the z-test of ``estimates`` against ``expected``.

    Args:
      estimates: pytree; each leaf has leading axis M ≥ 30.
      expected: the exact value, a pytree like one estimate, not all zero.
      significance, atol: as for :func:`z_test`.

    Returns:
      An :class:`Accuracy` of Python floats (ready for JSON).

    Example::

        draws = 1.0 + 0.1 * jax.random.normal(jax.random.key(0), (100, 3))
        lt.testing.accuracy(draws, jnp.ones(3)).relative_rmse   # about 0.1
    """
    report = z_test(estimates, expected, significance=significance, atol=atol)
    est, exp = _flat(_flat_pairs(estimates, expected))
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
        max_abs_z=report.max_abs_z, threshold=report.threshold, num_estimates=report.num_estimates)


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
