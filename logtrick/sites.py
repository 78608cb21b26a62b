"""Per-site estimators for :func:`logtrick.graph`.

Each sample site of a graph's program is estimated by one of these; a site not
named in ``graph(..., sites=...)`` gets :func:`score_function` without a
baseline.

=================================  =====================================================================
``score_function(baseline=...)``   any family. The site's score, element by element, is weighted by the
                                   costs that element reaches; any :mod:`logtrick.baselines` baseline,
                                   applied per element (and per step inside a scan) across particles.
                                   Derivatives of every order (DiCE; Loaded DiCE with the baseline).
``pathwise()``                     a reparameterisable family (``family.sample`` differentiable in the
                                   params, e.g. :func:`logtrick.families.normal`): gradients flow through
                                   the drawn value; no score. Needs the costs differentiable in it.
``enumerate(support)``             a site with a small finite support, summed exactly in every particle:
                                   the rest of the program runs once per value, weighted by its
                                   probability. Not inside ``lax.scan``.
``disarm()``                       a :func:`logtrick.families.bernoulli` site: particles come in antithetic
                                   pairs (u, 1 - u) for it, and each element's gradient is DisARM's,
                                   with the costs that element reaches as f. First-order only; not
                                   inside ``lax.scan`` (the pair would flip every step at once).
=================================  =====================================================================

The other estimators of the library cannot serve as a site: RELAX and REBAR
need f at a continuous relaxation of the sample, which a program of discrete
operations does not define; Gumbel-softmax likewise (and is biased); VIMCO is
the gradient of a multi-sample bound, not of an expectation of summed costs;
the optimal control variate needs per-sample scores of every parameter a site
depends on, which in a graph are the network weights upstream of it; the
measure-valued estimator would rerun the program downstream of a site twice
per parameter coordinate of the site, per particle.

References:
  Schulman, Heess, Weber and Abbeel, "Gradient Estimation Using Stochastic
  Computation Graphs", 2015. Dong, Mnih and Tucker, "DisARM: An Antithetic
  Gradient Estimator for Binary Latent Variables", 2020.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from logtrick import baselines as baselines_lib


class Site(NamedTuple):
    """How one sample site is estimated.

    Attributes:
      kind: ``"score_function"``, ``"pathwise"``, ``"enumerate"`` or ``"disarm"``.
      baseline: the baseline of a score-function site, or None.
      support: the values of an enumerated site, stacked along a leading axis.
    """

    kind: str
    baseline: baselines_lib.Baseline | None = None
    support: Any = None


def score_function(baseline: baselines_lib.Baseline | None = None) -> Site:
    """The site's score, weighted per element by the costs it reaches, less a per-element baseline.

    Args:
      baseline: a :class:`logtrick.baselines.Baseline`, applied to each element
        of the site (each step of it inside a scan) across the particles; its
        input is that element's downstream cost. Default none. A stateful
        baseline keeps one state per site, updated with the mean over the
        site's elements of their updates.
    """
    if baseline is not None and not isinstance(baseline, baselines_lib.Baseline):
        raise TypeError(f"score_function: `baseline` must be a lt.baselines.Baseline, got {type(baseline).__name__}")
    return Site("score_function", baseline=baseline)


def pathwise() -> Site:
    """Gradients through the drawn value (``family.sample`` must be differentiable in the site's params)."""
    return Site("pathwise")


def enumerate(support: Any) -> Site:  # noqa: A001 - the name the API pins
    """Sums the site exactly over ``support``: every value it can take, stacked along a leading axis.

    Args:
      support: a pytree of arrays with leading axis K, e.g.
        :func:`logtrick.exact.bernoulli_support` or
        :func:`logtrick.exact.categorical_support`. It must hold every value
        of positive probability, or the sum (and the estimate) is biased.
    """
    leaves = jax.tree_util.tree_leaves(support)
    if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("enumerate: `support` must be arrays stacked along a leading axis of the values")
    sizes = {jnp.shape(leaf)[0] for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(f"enumerate: the leaves of `support` have different leading sizes {sorted(sizes)}")
    return Site("enumerate", support=jax.tree_util.tree_map(jnp.asarray, support))


def disarm() -> Site:
    """DisARM for a Bernoulli site: antithetic particle pairs and each element's DisARM gradient."""
    return Site("disarm")
