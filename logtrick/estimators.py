"""Estimators that work with any :class:`logtrick.Family`: score function, pathwise, optimal control variate, VIMCO.

Each is an :class:`logtrick.Estimator` (see :mod:`logtrick.base`)::

    state = est.init(params)
    value, (state, aux) = est.loss(params, state, key, *args)
    grads, state, aux = est.estimate(params, state, key, *args)

with ``f(x, *args) -> scalar`` for one sample x. The samples are under
``stop_gradient``; f is not: its derivatives in ``args`` and in whatever it
closes over are the pathwise part, from the same samples. The mean gradient
costs one reverse pass over ``loss``; per-sample terms come from
:func:`scores` and :func:`score_function_jacobians` on explicit request.
Estimators specific to one distribution live in :mod:`logtrick.gaussian`,
:mod:`logtrick.categorical` and :mod:`logtrick.discrete` (Bernoulli).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from logtrick import _checks
from logtrick import baselines as baselines_lib
from logtrick import layout as layout_lib
from logtrick.base import Estimator, Params, from_loss
from logtrick.dice import magic_box
from logtrick.families import Family

sg = jax.lax.stop_gradient


def dice_sum(values: jax.Array, log_probs: jax.Array, b: jax.Array) -> jax.Array:
    """Σ_i (f_i - sg(b_i)) ⊡(log p_i) + sg(b_i), ⊡ = :func:`logtrick.magic_box`.

    Its value is Σ_i f_i and, for b_i independent of x_i, its derivatives of
    every order in θ (through log p) and in f's own parameters (through f),
    mixed ones included, are unbiased for those of N E[f] (DiCE, Loaded DiCE).

    Args:
      values: f(x_i), shape (N,), differentiable in f's parameters.
      log_probs: log p(x_i|θ), shape (N,).
      b: the baselines, shape (N,).
    """
    b = sg(b)
    return jnp.sum((values - b) * magic_box(log_probs) + b)


def _noise_dtype(params: Params) -> Any:
    """The floating dtype of the params, for the uniforms a sampler transforms."""
    return jnp.result_type(*jax.tree_util.tree_leaves(params))


def _sample_shape(family: Family, params: Params) -> tuple[int, ...]:
    """The shape of one array sample of ``family`` at ``params``."""
    return jax.eval_shape(lambda p: family.sample(p, jax.random.key(0), 1), params).shape[1:]


def _drawer(family: Family, layout: layout_lib.SampleLayout, antithetic: bool, caller: str,
            sample_source: str = "family.sample") -> Callable:
    """``draw(params, key, chunk_index) -> xs``, the chunk's samples (leading axis ``layout.chunk``).

    ``"mc"``: ``family.sample`` (or ``antithetic_sample``) from the chunk's key;
    ``"rqmc"``: ``family.inverse_cdf`` of the chunk's quasi-random uniforms,
    differentiable in params where the inverse CDF is.
    """
    if layout.sampler == "rqmc":
        if antithetic:
            raise ValueError(f"{caller}: antithetic=True and sampler='rqmc' are two ways of correlating the samples; "
                             "choose one")
        if family.inverse_cdf is None:
            raise ValueError(f"{caller}: sampler='rqmc' needs a family with `inverse_cdf` (e.g. lt.families.normal(), "
                             "bernoulli(), categorical(), poisson())")

        def draw_quasi(params, key, index):
            shape = _sample_shape(family, params)
            u = layout.uniforms(key, index, shape, _noise_dtype(params))
            xs = jax.vmap(family.inverse_cdf, (None, 0))(params, u)
            if jnp.shape(xs) != (layout.chunk,) + shape:
                raise ValueError(f"{caller}: `family.inverse_cdf` must map uniforms of one sample's shape {shape} to "
                                 f"a sample of that shape; it returned shape {jnp.shape(xs)[1:]}")
            return xs

        return draw_quasi
    source = "family.antithetic_sample" if antithetic else sample_source
    if antithetic and family.antithetic_sample is None:
        raise ValueError(f"{caller}: antithetic=True needs a family with `antithetic_sample` "
                         "(e.g. lt.families.normal(), lt.families.bernoulli())")
    sampler = family.antithetic_sample if antithetic else family.sample

    def draw(params, key, index):
        return _checks.drawn(sampler, params, layout.chunk_key(key, index), layout.chunk, caller=caller, source=source)

    return draw


def _shared(baseline: baselines_lib.Baseline, groups: tuple[int, ...]) -> baselines_lib.Baseline:
    """The baseline of group means, given to every member of a group.

    The values, reshaped to ``groups``, are averaged over axis 1 (the members
    of a group: an antithetic pair, an RQMC randomisation), the baseline is
    applied to the means, and each member gets its group's. A baseline built
    from the other means (leave-one-out) then excludes every sample that is
    dependent on the one it pairs with, and stays unbiased.
    """

    def apply(values, state):
        means = jnp.mean(values.reshape(groups), axis=1)
        b, state = baseline.apply(means.reshape(-1), state)
        return jnp.broadcast_to(jnp.expand_dims(b.reshape(means.shape), 1), groups).reshape(-1), state

    return baseline._replace(apply=apply)


def _pairing(baseline: baselines_lib.Baseline, layout: layout_lib.SampleLayout, antithetic: bool,
             caller: str) -> baselines_lib.Baseline:
    """The baseline as the samples' dependence requires: over pair means, randomisation means, or samples."""
    if antithetic:  # a chunk of c holds c/2 draws followed by their reflections
        return _shared(baseline, (layout.num_chunks, 2, layout.chunk // 2))
    if layout.sampler == "rqmc":
        r = layout.num_randomisations
        if r < baseline.min_samples:
            raise ValueError(
                f"{caller}: under sampler='rqmc' the samples of one randomisation are dependent, so a baseline is "
                f"built across randomisations; this baseline needs {baseline.min_samples}: set "
                f"`num_randomisations` >= {baseline.min_samples} (got {r})")
        return _shared(baseline, (r, layout.num_samples // r))
    return baseline


def score_function(
    f: Callable[..., jax.Array],
    family: Family,
    *,
    num_samples: int,
    baseline: baselines_lib.Baseline | None = None,
    antithetic: bool = False,
    sampler: str = "mc",
    num_randomisations: int = 1,
    chunk_size: int | None = None,
    sample_sharding: jax.sharding.Sharding | None = None,
) -> Estimator:
    """The score-function (REINFORCE, log-derivative) estimator.

    ∇_θ E[f(x)] ≈ (1/N) Σ_i (f(x_i) - b_i) ∇_θ log p(x_i|θ),  x_i ~ p(·|θ),

    as the loss (1/N) :func:`dice_sum`, whose derivatives of every order, in θ
    and in f's own parameters, mixed ones included, are unbiased (DiCE; Loaded
    DiCE with a baseline b_i independent of x_i). f may depend on θ itself
    (the ELBO's -log q_θ(x), a KL penalty) by taking it as an argument or
    closing over it: the total derivative is right.

    Args:
      f: ``f(x, *args) -> scalar`` for one sample x; ``args`` are the extra
        arguments of ``loss``, differentiated pathwise.
      family: the distribution p(x|θ).
      num_samples: N, samples per estimate.
      baseline: a :class:`logtrick.baselines.Baseline`; default none.
      antithetic: draw N/2 antithetic pairs with ``family.antithetic_sample``
        (ε and -ε for the Gaussian, u and 1 - u for the Bernoulli); N (and
        ``chunk_size``) even. The baseline sees the N/2 pair means and pairs
        up with both members of a pair, so a baseline built from other samples
        (leave-one-out) excludes the partner and stays unbiased.
      sampler: ``"mc"`` (independent draws) or ``"rqmc"``: the samples are
        ``family.inverse_cdf`` of scrambled Sobol points (:mod:`logtrick.qmc`),
        lower variance on smooth problems. The points of one randomisation are
        dependent, so the baseline sees the R randomisation means and each
        sample gets its randomisation's: leave-one-out needs R ≥ 2.
      num_randomisations: R, independent randomisations of N / R points each
        (``"rqmc"`` only).
      chunk_size: if set (dividing N, and N / R), samples are drawn and
        differentiated ``chunk_size`` at a time in a ``lax.scan``: memory is
        flat in N (but for the N f-values), time linear. Under ``"mc"`` each
        chunk draws from its own key (``jax.random.split(key, N //
        chunk_size)``), and is drawn and evaluated twice (f's values for the
        baseline, then the loss), so the estimate differs from the unchunked
        one for the same key, with the same distribution; under ``"rqmc"`` the
        chunks take their points of the same nets, and the estimate is the
        unchunked one.
      sample_sharding: a sharding for the sample axis, e.g.
        ``NamedSharding(mesh, PartitionSpec("samples"))``: samples, f-values and
        log-probabilities are laid out along it, so per-sample work runs on
        every device and the reductions are all-reduced. Same key, same result
        as on one device, up to float reassociation.

    Returns:
      An :class:`logtrick.Estimator`; the state is the baseline's. ``aux``:
      ``"f"`` and ``"baseline"``, shape (N,); ``"samples"`` (unchunked only).

    Example::

        est = lt.score_function(lambda x: jnp.sum(x**2), lt.families.normal(),
                                num_samples=100, baseline=lt.baselines.leave_one_out())
        params = {"loc": jnp.zeros(3), "log_scale": jnp.zeros(3)}
        grads, state, aux = jax.jit(est.estimate)(params, est.init(params), jax.random.key(0))

    References:
      Williams, "Simple statistical gradient-following algorithms for
      connectionist reinforcement learning", 1992.
      Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
      Estimator", 2018. Farquhar et al., "Loaded DiCE", 2019.
      Hammersley and Morton, "A new Monte Carlo technique: antithetic
      variates", 1956. Buchholz, Wenzel and Mandt, "Quasi-Monte Carlo
      Variational Inference", 2018.
    """
    caller = "score_function"
    baseline = baselines_lib.none() if baseline is None else baseline
    group = 2 if antithetic else 1
    layout = layout_lib.sample_layout(num_samples, chunk_size, sample_sharding, minimum=group * baseline.min_samples,
                                      multiple=group, sampler=sampler, num_randomisations=num_randomisations,
                                      caller=caller)
    draw = _drawer(family, layout, antithetic, caller)
    pairing = _pairing(baseline, layout, antithetic, caller)
    n, c = layout.num_samples, layout.chunk

    def chunk_terms(params, key, index, args):
        """One chunk: its samples, f values (differentiable) and log-probabilities."""
        xs = layout.constrain(sg(draw(params, key, index)))
        values = _checks.per_sample(lambda x: f(x, *args), xs, c, caller=caller, name="f")
        log_probs = _checks.per_sample(lambda x: family.log_prob(params, x), xs, c, caller=caller,
                                       name="family.log_prob")
        return xs, layout.constrain(values), layout.constrain(log_probs)

    def loss(params, state, key, *args):
        if layout.num_chunks == 1:
            xs, values, log_probs = chunk_terms(params, key, 0, args)
            b, new_state = pairing.apply(sg(values), state)
            return dice_sum(values, log_probs, b) / n, (new_state, {"f": sg(values), "baseline": sg(b), "samples": xs})
        indices = layout.chunk_indices()
        values = sg(jax.lax.map(lambda i: chunk_terms(params, key, i, args)[1], indices)).reshape(n)
        b, new_state = pairing.apply(values, state)
        total, _ = layout_lib.chunk_sum(
            lambda ib: (dice_sum(*chunk_terms(params, key, ib[0], args)[1:], ib[1]), None), (indices, b.reshape(-1, c)))
        return total / n, (new_state, {"f": values, "baseline": sg(b)})

    return from_loss(baseline.init, loss, caller=caller)


def pathwise(
    f: Callable[..., jax.Array],
    rsample: Callable[[Params, jax.Array, int], Any] | Family,
    *,
    num_samples: int,
    sampler: str = "mc",
    chunk_size: int | None = None,
    sample_sharding: jax.sharding.Sharding | None = None,
) -> Estimator:
    """The pathwise (reparameterisation) estimator.

    ∇_θ E[f(x)] ≈ (1/N) Σ_i ∇_θ f(g(ε_i, θ)),  x = g(ε, θ) = rsample,

    as the loss (1/N) Σ_i f(g(ε_i, θ), *args). Needs f differentiable and a
    differentiable sampler, e.g. the ``sample`` of
    :func:`logtrick.families.normal`. State ``()``.

    Args:
      f: ``f(x, *args) -> scalar`` for one sample; differentiated.
      rsample: ``rsample(params, key, n) -> xs``, differentiable in params; or
        a reparameterised :class:`logtrick.Family` (its ``sample``, or under
        ``"rqmc"`` its ``inverse_cdf``).
      num_samples: N.
      sampler: ``"mc"`` or ``"rqmc"`` (as in :func:`score_function`; one
        randomisation of N points; needs a Family with ``inverse_cdf``).
      chunk_size: as in :func:`score_function` (each chunk drawn once).
      sample_sharding: as in :func:`score_function`.

    Returns:
      An :class:`logtrick.Estimator`; ``aux["f"]``, shape (N,).

    Example::

        est = lt.pathwise(lambda x: jnp.sum(jnp.cos(x)), lt.families.normal(), num_samples=16)
        params = {"loc": jnp.zeros(3), "log_scale": jnp.zeros(3)}
        grads, _, _ = est.estimate(params, est.init(params), jax.random.key(0))

    References:
      Kingma and Welling, "Auto-Encoding Variational Bayes", 2014.
      Mohamed et al., "Monte Carlo Gradient Estimation in Machine Learning", 2020.
      Buchholz, Wenzel and Mandt, "Quasi-Monte Carlo Variational Inference", 2018.
    """
    caller = "pathwise"
    layout = layout_lib.sample_layout(num_samples, chunk_size, sample_sharding, minimum=1, sampler=sampler,
                                      caller=caller)
    if not isinstance(rsample, Family):
        if sampler == "rqmc":
            raise ValueError(f"{caller}: sampler='rqmc' transforms uniforms, so `rsample` must be a Family with "
                             "`inverse_cdf` (e.g. lt.families.normal()), not a sampling function")
        draw = _drawer(Family(rsample, log_prob=None), layout, False, caller,  # type: ignore[arg-type]
                       sample_source="rsample")  # only the sampler is used
    else:
        draw = _drawer(rsample, layout, False, caller)
    n, c = layout.num_samples, layout.chunk

    def values_of(params, key, index, args):
        xs = layout.constrain(draw(params, key, index))
        values = layout.constrain(_checks.per_sample(lambda x: f(x, *args), xs, c, caller=caller, name="f"))
        return jnp.sum(values), values

    def loss(params, state, key, *args):
        if layout.num_chunks == 1:
            total, values = values_of(params, key, 0, args)
        else:
            total, values = layout_lib.chunk_sum(lambda i: values_of(params, key, i, args), layout.chunk_indices())
        return total / n, (state, {"f": sg(values).reshape(n)})

    return from_loss(lambda params: (), loss, caller=caller)


def _f_at_draws(f_args: Callable, draws: Any, params: Params, caller: str) -> Any:
    """f at every draw: a draws leaf of shape (c,) + P + x.shape, for a params leaf of shape P, gives (c,) + P."""

    def leaf(xs, p):
        lead = xs.shape[:1 + jnp.ndim(p)]
        flat = xs.reshape((-1,) + xs.shape[len(lead):])
        return _checks.per_sample(f_args, flat, flat.shape[0], caller=caller, name="f").reshape(lead)

    return jax.tree_util.tree_map(leaf, draws, params)


def measure_valued(
    f: Callable[..., jax.Array],
    family: Family,
    *,
    num_samples: int,
    coupling: bool = True,
    sampler: str = "mc",
    chunk_size: int | None = None,
    sample_sharding: jax.sharding.Sharding | None = None,
) -> Estimator:
    """The measure-valued gradient estimator, from the family's weak derivative.

    With ∂_θj p = c_j (p⁺_j − p⁻_j) (:class:`logtrick.families.WeakDerivative`),

        ∂_θj E[f(x)] ≈ (1/N) Σ_i c_j (f(x⁺_ij) − f(x⁻_ij)),  x⁺_ij ~ p⁺_j, x⁻_ij ~ p⁻_j,

    where x±_ij is the base sample x_i ~ p with the element θ_j governs
    redrawn. Needs f's values only (f may be non-differentiable, even
    discontinuous, in x) and has low variance in low dimension, but costs 2 f
    evaluations per parameter coordinate per sample, plus one at x_i: 4D + 1 per
    sample for a D-dimensional Gaussian, 2DK + 1 for D categoricals of K
    classes. ``coupling`` draws x⁺ and x⁻ from shared noise (the Gaussian's
    shared Weibull, its Maxwell-uniform pair; the categorical's unchanged
    outcome), lowering the variance of the difference.

    The loss is (1/N) Σ_i f(x_i, *args) + Σ_j ĝ_j (θ_j − sg θ_j), ĝ the
    estimate above: its value estimates E[f], its gradient in θ is ĝ, in
    ``args`` the pathwise mean of ∇_args f(x_i), and its mixed derivative
    ∂_args ∂_θ is that of ĝ. The constants and samples are under
    ``stop_gradient``, so second derivatives in θ are zero, not estimated.

    Args:
      f: ``f(x, *args) -> scalar`` for one sample x; ``args`` differentiated pathwise.
      family: a family with ``weak_derivative`` (``normal``, ``bernoulli``,
        ``categorical``, ``poisson``).
      num_samples: N, base samples per estimate.
      coupling: couple x⁺ and x⁻ where the family can.
      sampler: ``"mc"`` or ``"rqmc"``: the uniforms of the base sample and of
        the weak derivative's draws come from one scrambled Sobol net.
      chunk_size: as in :func:`pathwise`.
      sample_sharding: as in :func:`score_function`.

    Returns:
      An :class:`logtrick.Estimator`; state ``()``. ``aux``: ``"f"``, shape
      (N,); ``"f_positive"``, ``"f_negative"``, pytrees like params, each leaf
      with leading axis N.

    Example::

        est = lt.measure_valued(lambda x: jnp.sum(x > 0.5), lt.families.normal(), num_samples=64)
        params = {"loc": jnp.zeros(3), "log_scale": jnp.zeros(3)}
        grads, _, _ = jax.jit(est.estimate)(params, (), jax.random.key(0))

    References:
      Pflug, "Sampling derivatives of probabilities", 1989. Heidergott and
      Vázquez-Abad, "Measure-valued differentiation for Markov chains", 2008.
      Rosca, Figurnov, Mohamed and Mnih, "Measure-Valued Derivatives for
      Approximate Bayesian Inference", 2019. Mohamed, Rosca, Figurnov and
      Mnih, "Monte Carlo Gradient Estimation in Machine Learning", 2020 (§6).
    """
    caller = "measure_valued"
    layout = layout_lib.sample_layout(num_samples, chunk_size, sample_sharding, minimum=1, sampler=sampler,
                                      caller=caller)
    weak = family.weak_derivative
    if weak is None:
        raise ValueError(f"{caller}: `family` has no `weak_derivative` (lt.families.normal(), bernoulli(), "
                         "categorical() and poisson() have one)")
    n, c = layout.num_samples, layout.chunk

    def chunk_terms(params, key, index, args):
        shape = (weak.num_uniforms,) + _sample_shape(family, params)
        u = layout.constrain(layout.uniforms(key, index, shape, _noise_dtype(params)))
        xs, consts, positive, negative = sg(jax.vmap(weak.decompose, (None, 0, None))(sg(params), u, coupling))
        f_args = lambda x: f(x, *args)  # noqa: E731
        values = layout.constrain(_checks.per_sample(f_args, xs, c, caller=caller, name="f"))
        f_plus, f_minus = (_f_at_draws(f_args, draws, params, caller) for draws in (positive, negative))
        direction = jax.tree_util.tree_map(lambda k, fp, fm: jnp.sum(k * (fp - fm), axis=0), consts, f_plus, f_minus)
        linear = sum(jnp.vdot(d, p - sg(p)) for d, p in
                     zip(jax.tree_util.tree_leaves(direction), jax.tree_util.tree_leaves(params)))
        return jnp.sum(values) + linear, (values, f_plus, f_minus)

    def loss(params, state, key, *args):
        if layout.num_chunks == 1:
            total, (values, f_plus, f_minus) = chunk_terms(params, key, 0, args)
        else:
            total, out = layout_lib.chunk_sum(lambda i: chunk_terms(params, key, i, args), layout.chunk_indices())
            values, f_plus, f_minus = jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[2:]), out)
        aux = {"f": sg(values).reshape(n), "f_positive": sg(f_plus), "f_negative": sg(f_minus)}
        return total / n, (state, aux)

    return from_loss(lambda params: (), loss, caller=caller, guarded=("f", "f_positive", "f_negative"))


def scores(family: Family, params: Params, xs: Any) -> Params:
    """Per-sample scores ∇_θ log p(x_i|θ), for diagnostics and per-coordinate control variates.

    Materialises one gradient per sample (``vmap`` of ``grad``): memory N ×
    the number of params. The mean gradient of an estimator never needs it.

    Args:
      family: the distribution.
      params: θ.
      xs: samples, every leaf with leading axis N.

    Returns:
      A pytree like ``params``, each leaf with leading axis N.

    Example::

        family, logits = lt.families.bernoulli(), jnp.zeros(3)
        s = lt.scores(family, logits, family.sample(logits, jax.random.key(0), 8))   # shape (8, 3)
    """
    return jax.vmap(jax.grad(family.log_prob), in_axes=(None, 0))(params, xs)


def score_function_jacobians(
    f: Callable[[Any], jax.Array],
    family: Family,
    params: Params,
    key: jax.Array,
    *,
    num_samples: int,
) -> Params:
    """Per-sample score-function terms f(x_i) ∇_θ log p(x_i|θ).

    For variance diagnostics only: this materialises num_samples gradients.
    The mean over the leading axis equals ``score_function(...).estimate``
    with the same key and no baseline.

    Returns:
      A pytree like ``params``, each leaf with a leading axis of num_samples.
    """
    caller = "score_function_jacobians"
    n = _checks.num_samples(num_samples, minimum=1, caller=caller)
    xs = sg(_checks.drawn(family.sample, params, key, n, caller=caller, source="family.sample"))
    values = _checks.per_sample(f, xs, n, caller=caller, name="f")
    return jax.tree_util.tree_map(
        lambda s: values.reshape((n,) + (1,) * (s.ndim - 1)).astype(s.dtype) * s, scores(family, params, xs))


class OptimalState(NamedTuple):
    """State of :func:`optimal_control_variate`: decayed sums of f s² and s² over previous calls, like params."""

    numerator: Any
    denominator: Any


def _optimal_coefficients(values: jax.Array, squared_scores: Any, state: OptimalState, decay: float):
    """c_ij = (A_j + Σ_{k≠i} f_k s_kj²) / (B_j + Σ_{k≠i} s_kj²), and the decayed sums A, B."""
    loo = baselines_lib.leave_one_out_mean(values)

    def per_leaf(s2, numerator, denominator):
        f = values.reshape((-1,) + (1,) * (s2.ndim - 1)).astype(s2.dtype)
        num = numerator + jnp.sum(f * s2, axis=0) - f * s2
        den = denominator + jnp.sum(s2, axis=0) - s2
        ok = den > 1e-12 * jnp.max(jnp.abs(s2), axis=0, initial=1.0)
        c = jnp.where(ok, num / jnp.where(ok, den, 1.0), loo.reshape(f.shape).astype(s2.dtype))
        return c, decay * (numerator + jnp.sum(f * s2, axis=0)), decay * (denominator + jnp.sum(s2, axis=0))

    leaves, treedef = jax.tree_util.tree_flatten(squared_scores)
    out = [per_leaf(*leaf) for leaf in zip(leaves, jax.tree_util.tree_leaves(state.numerator),
                                           jax.tree_util.tree_leaves(state.denominator))]
    c, numerator, denominator = (jax.tree_util.tree_unflatten(treedef, list(part)) for part in zip(*out))
    return c, OptimalState(numerator, denominator)


def optimal_control_variate(
    f: Callable[..., jax.Array],
    family: Family,
    *,
    num_samples: int,
    decay: float = 0.0,
) -> Estimator:
    """Score function with the variance-minimising control variate per parameter coordinate.

    For coordinate j of θ the variance of (f - c_j) s_j, s = ∇_θ log p(x|θ),
    is least at c_j = E[f s_j²] / E[s_j²]. Sample i gets the estimate

        c_ij = (A_j + Σ_{k≠i} f_k s_kj²) / (B_j + Σ_{k≠i} s_kj²),

    with A, B the sums of f s² and s² over previous calls weighted by
    decay^(calls since), and the leave-one-out mean of f where the denominator
    vanishes. c_ij does not depend on x_i, so E[c_i ⊙ s_i] = 0 and the
    estimate (1/N) Σ_i (f_i - c_i) ⊙ s_i is unbiased. One c per coordinate is
    not a baseline (one number per sample): the correction enters the loss as
    the linear term -⟨(1/N) Σ_i c_i ⊙ s_i, θ - sg(θ)⟩, so ``jax.hessian`` of
    the loss is the no-baseline DiCE Hessian (unbiased, not variance-reduced).
    From one batch the ratio is noisy where s⁴ is heavy-tailed (Gaussian
    scales), and at N = 2 it *is* leave-one-out; a decay near 1 pools calls.

    Cost: the per-sample scores (:func:`scores`, memory N × number of params)
    besides the one reverse pass; use it for distribution parameters (logits,
    locations), not network weights.

    Args:
      f: ``f(x, *args) -> scalar`` for one sample; ``args`` differentiated pathwise.
      family: the distribution.
      num_samples: N ≥ 2.
      decay: in [0, 1); weight of the previous calls' sums.

    Returns:
      An :class:`logtrick.Estimator`; state :class:`OptimalState`; ``aux``:
      ``"f"``, shape (N,), and ``"control_variate"``, c, a pytree like params
      with leading axis N.

    Example::

        est = lt.optimal_control_variate(lambda b: jnp.sum(b), lt.families.bernoulli(),
                                         num_samples=8, decay=0.9)
        logits = jnp.zeros(4)
        grads, state, aux = est.estimate(logits, est.init(logits), jax.random.key(0))

    References:
      Weaver and Tao, "The Optimal Reward Baseline for Gradient-Based
      Reinforcement Learning", 2001. Greensmith, Bartlett and Baxter,
      "Variance Reduction Techniques for Gradient Estimates in Reinforcement
      Learning", 2004. Mohamed et al., "Monte Carlo Gradient Estimation in
      Machine Learning", 2020 (§7.4).
    """
    caller = "optimal_control_variate"
    n = _checks.num_samples(num_samples, minimum=2, caller=caller)
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"{caller}: `decay` must be in [0, 1), got {decay}")

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return OptimalState(numerator=zeros, denominator=zeros)

    def loss(params, state, key, *args):
        xs = sg(_checks.drawn(family.sample, params, key, n, caller=caller, source="family.sample"))
        values = _checks.per_sample(lambda x: f(x, *args), xs, n, caller=caller, name="f")
        log_probs = _checks.per_sample(lambda x: family.log_prob(params, x), xs, n, caller=caller,
                                       name="family.log_prob")
        s = scores(family, sg(params), xs)
        c, new_state = _optimal_coefficients(sg(values), jax.tree_util.tree_map(jnp.square, s), state, decay)
        correction = jax.tree_util.tree_map(lambda cl, sl: jnp.mean(cl * sl, axis=0), c, s)
        linear = sum(jnp.vdot(cl, pl - sg(pl)) for cl, pl in
                     zip(jax.tree_util.tree_leaves(correction), jax.tree_util.tree_leaves(params)))
        value = dice_sum(values, log_probs, jnp.zeros_like(values)) / n - linear
        return value, (new_state, {"f": sg(values), "control_variate": sg(c)})

    return from_loss(init, loss, caller=caller)


def _learning_signals(log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The bound L = log (1/K) Σ_j e^{l_j} and the signals L - L_{-k}, shape (K,).

    L_{-k} is the bound with l_k replaced by the mean of the others, so it does
    not depend on x_k.
    """
    k = log_weights.shape[0]
    log_k = jnp.log(jnp.asarray(k, log_weights.dtype))
    bound = jax.nn.logsumexp(log_weights) - log_k
    others_mean = baselines_lib.leave_one_out_mean(log_weights)
    replaced = jnp.where(jnp.eye(k, dtype=bool), others_mean[:, None], log_weights[None, :])
    return bound, bound - (jax.nn.logsumexp(replaced, axis=1) - log_k)


def vimco(
    log_weight: Callable[..., jax.Array],
    family: Family,
    *,
    num_samples: int,
) -> Estimator:
    """The VIMCO estimator of the gradient of a K-sample bound.

    For L = log (1/K) Σ_k exp(l_k), l_k = log_weight(x_k, *args), x_k ~ q(·|θ) i.i.d.::

        grad_θ E[L] ≈ Σ_k L̂(k) grad_θ log q(x_k|θ) + Σ_k w̃_k grad_θ l_k,
        L̂(k) = L - log (1/K) (Σ_{j≠k} e^{l_j} + e^{l̂_{-k}}),   l̂_{-k} = (1/(K-1)) Σ_{j≠k} l_j,
        w̃ = softmax(l).

    The baseline subtracted from L in L̂(k) depends only on x_{-k}, so the
    estimate is unbiased; L̂(k), w̃ and the samples are under ``stop_gradient``
    and computed with logsumexp. The loss is
    L(l) + Σ_k L̂(k) (magic_box(log q(x_k|θ)) - 1) with l differentiated: its
    value is L and its gradient the estimate above. The log weight depends on
    θ through -log q(x|θ): pass θ as one of ``args`` (or close over it), and
    the decoder's parameters likewise. First-order only: its higher
    derivatives are not those of E[L]. Uses K × K memory for the signals.

    Args:
      log_weight: ``log_weight(x, *args) -> scalar`` for one sample x, e.g.
        log p(x, z) - log q(z|θ); differentiated in ``args``.
      family: the proposal q(x|θ).
      num_samples: K ≥ 2, samples in the bound.

    Returns:
      An :class:`Estimator`; state ``()``. ``aux``: ``"f"``, the log weights
      l, shape (K,); ``"bound"``, L, scalar; ``"learning_signal"``, L̂, shape
      (K,). A non-finite log weight gives NaN grads.

    Example::

        log_joint = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))

        def log_weight(z, logits):
            return log_joint[z] - jax.nn.log_softmax(logits)[z]

        est = lt.vimco(log_weight, lt.families.categorical(), num_samples=5)
        logits = jnp.zeros(4)
        loss = lambda logits: est.loss(logits, (), jax.random.key(0), logits)[0]
        grads = jax.grad(loss)(logits)   # score part and pathwise part of -log q

    References:
      Mnih and Rezende, "Variational Inference for Monte Carlo Objectives", 2016.
      Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders", 2016.
    """
    caller = "vimco"
    k = _checks.num_samples(num_samples, minimum=2, caller=caller)

    def loss(params, state, key, *args):
        xs = sg(_checks.drawn(family.sample, params, key, k, caller=caller, source="family.sample"))
        log_weights = _checks.per_sample(lambda x: log_weight(x, *args), xs, k, caller=caller, name="log_weight")
        log_probs = _checks.per_sample(lambda x: family.log_prob(params, x), xs, k, caller=caller,
                                       name="family.log_prob")
        bound, signals = _learning_signals(sg(log_weights))
        log_k = jnp.log(jnp.asarray(k, log_weights.dtype))
        value = jax.nn.logsumexp(log_weights) - log_k + jnp.sum(signals * (magic_box(log_probs) - 1.0))
        return value, (state, {"f": sg(log_weights), "bound": bound, "learning_signal": signals})

    return from_loss(lambda params: (), loss, caller=caller)
