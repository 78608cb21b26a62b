"""Gradient estimators for grad_θ E_{x~p(x|θ)}[f(x)], all behind one contract.

An :class:`Estimator` is three pure functions::

    state = est.init(params)
    grads, state, aux = est.estimate(params, state, key)   # grads: pytree like params
    value = est.surrogate(params, state, key)              # scalar; grad(surrogate) == grads

``estimate`` is ``jax.value_and_grad`` of ``surrogate``: one reverse pass, never
per-sample gradients. Per-sample terms, for variance diagnostics, come from
:func:`score_function_jacobians` on explicit request.

Non-finite f values: if any f value of a batch is NaN or infinite, every leaf of
``grads`` is NaN and the returned state equals the input state, so the failure is
loud and a stateful baseline is not poisoned. Pair with
``optax.apply_if_finite`` to skip such steps in training.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from logtrick import _checks
from logtrick import baselines as baselines_lib
from logtrick.dice import magic_box
from logtrick.families import Family

Params = Any
State = Any
Aux = dict[str, jax.Array]


class Estimator(NamedTuple):
    """A gradient estimator as pure functions.

    Attributes:
      init: ``init(params) -> state``.
      estimate: ``estimate(params, state, key) -> (grads, new_state, aux)``;
        ``grads`` has the structure of ``params``; ``aux["f"]`` holds the
        f-values, shape ``(num_samples,)``.
      surrogate: ``surrogate(params, state, key) -> scalar`` whose gradient is
        ``grads`` and whose value estimates E[f] (the sample mean of f for
        :func:`score_function`; control-variate estimators add their correction).
    """

    init: Callable[[Params], State]
    estimate: Callable[[Params, State, jax.Array], tuple[Params, State, Aux]]
    surrogate: Callable[[Params, State, jax.Array], jax.Array]


def _guard_nonfinite(values: jax.Array, grads: Params, state: State, new_state: State):
    """NaN grads and the unchanged state when any f value is non-finite."""
    finite = jnp.all(jnp.isfinite(values))
    grads = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, jnp.nan), grads)
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return grads, new_state


def _from_surrogate(init, surrogate_with_aux, *, guarded: tuple[str, ...] = ("f",)) -> Estimator:
    """Builds an Estimator from ``surrogate_with_aux -> (scalar, (new_state, aux))``.

    The f values in ``aux[k]`` for k in ``guarded`` are checked to be finite.
    """

    def estimate(params, state, key):
        grad_fn = jax.grad(surrogate_with_aux, has_aux=True)
        grads, (new_state, aux) = grad_fn(params, state, key)
        values = jnp.concatenate([jnp.ravel(aux[k]) for k in guarded])
        grads, new_state = _guard_nonfinite(values, grads, state, new_state)
        return grads, new_state, aux

    def surrogate(params, state, key):
        return surrogate_with_aux(params, state, key)[0]

    return Estimator(init=init, estimate=estimate, surrogate=surrogate)


class _Sampling(NamedTuple):
    """How the N samples are laid out: in chunks of ``chunk`` and/or sharded."""

    num_samples: int
    chunk: int
    sharding: jax.sharding.Sharding | None

    @property
    def num_chunks(self) -> int:
        return self.num_samples // self.chunk

    def constrain(self, tree: Any) -> Any:
        """Places the leading (sample) axis of every leaf on ``sharding``."""
        if self.sharding is None:
            return tree
        return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, self.sharding), tree)


def _auto_axes(sharding: jax.sharding.Sharding) -> jax.sharding.Sharding:
    """The same layout on a mesh whose axes are all Auto.

    ``jax.make_mesh`` gives Explicit axes by default, whose sharding-in-types
    rules would require every user of the estimator to enter the mesh with
    ``jax.set_mesh``; a sharding constraint on Auto axes lays out the samples
    identically without that.
    """
    mesh = getattr(sharding, "mesh", None)
    if not isinstance(mesh, jax.sharding.Mesh) or all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types):
        return sharding
    auto = jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * mesh.devices.ndim)
    return jax.sharding.NamedSharding(auto, sharding.spec)


def _sampling(num_samples, chunk_size, sample_sharding, *, minimum, caller) -> _Sampling:
    n = _checks.num_samples(num_samples, minimum=minimum, caller=caller)
    if chunk_size is None:
        chunk_size = n
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1 or n % chunk_size:
        raise ValueError(f"{caller}: `chunk_size` must be a positive int dividing num_samples={n}, got {chunk_size!r}")
    if sample_sharding is not None and not isinstance(sample_sharding, jax.sharding.Sharding):
        raise TypeError(f"{caller}: `sample_sharding` must be a jax.sharding.Sharding, got {type(sample_sharding).__name__}")
    return _Sampling(n, chunk_size, None if sample_sharding is None else _auto_axes(sample_sharding))


def _chunk_sum(term: Callable[[Any], tuple[jax.Array, Any]], chunks: Any) -> tuple[jax.Array, Any]:
    """Σ_c term(chunk_c)[0] over the leading axis of ``chunks``, and the stacked term(chunk_c)[1].

    ``jax.checkpoint`` makes the reverse pass recompute each chunk's forward
    instead of storing it, so derivatives of any order need memory for one chunk.
    """

    def body(total, chunk):
        value, out = term(chunk)
        return total + value, out

    return jax.lax.scan(jax.checkpoint(body), jnp.zeros(()), chunks)


def score_function(
    f: Callable[[Any], jax.Array],
    family: Family,
    *,
    num_samples: int,
    baseline: baselines_lib.Baseline | None = None,
    antithetic: bool = False,
    chunk_size: int | None = None,
    sample_sharding: jax.sharding.Sharding | None = None,
) -> Estimator:
    """The score-function (REINFORCE, log-derivative) estimator.

    grad_θ E[f(x)] ≈ (1/N) Σ_i (f(x_i) - b_i) grad_θ log p(x_i|θ),  x_i ~ p(·|θ).

    Computed as the gradient of the DiCE surrogate
    (1/N) Σ_i [(f_i - b_i) magic_box(log p(x_i|θ)) + b_i], with samples, f and
    baseline under ``stop_gradient``; its higher derivatives are unbiased too
    (for a baseline b_i independent of x_i: Loaded DiCE).

    Args:
      f: ``f(x) -> scalar`` for one sample; a black box, never differentiated.
      family: the distribution p(x|θ).
      num_samples: N, samples per estimate.
      baseline: a :class:`logtrick.baselines.Baseline`; default none.
      antithetic: draw N/2 antithetic pairs with ``family.antithetic_sample``
        (ε and -ε for the Gaussian, u and 1 - u for the Bernoulli); N (and
        ``chunk_size``) even. The baseline then sees the N/2 pair means and
        pairs up with both members of a pair, so a baseline built from other
        samples (leave-one-out) excludes the partner and stays unbiased. A pair
        keeps the part of f·s that is even in the noise: for a Gaussian, the
        odd part of f about loc for the loc gradient and the even part for the
        scale gradient, so it pays where f is nearly symmetric about loc (zero
        loc variance on a centred quadratic, 1.9x the log-scale variance
        there); for Bernoulli pairs 0.56x the variance without a baseline,
        0.90x with leave-one-out (N = 4, tests/test_estimators.py).
      chunk_size: if set (dividing N), samples are drawn and differentiated
        ``chunk_size`` at a time in a ``lax.scan``: memory is flat in N (but for
        the N f-values), time linear. Each chunk draws from its own key
        (``jax.random.split(key, N // chunk_size)``) and is drawn twice, once for
        f and once for log p, so the estimate differs from the unchunked one for
        the same key, with the same distribution.
      sample_sharding: a sharding for the sample axis, e.g.
        ``NamedSharding(mesh, PartitionSpec("samples"))``: samples, f-values and
        log-probabilities are laid out along it, so per-sample work runs on
        every device and the reductions (mean, baseline sums) are all-reduced.
        Same key, same result as on one device, up to float reassociation.

    Returns:
      An :class:`Estimator`; ``aux`` has ``"f"`` and ``"baseline"``, shape (N,)
      (for a per-coordinate baseline, ``"baseline"`` is a pytree like params
      with leading axis N).

    Example::

        est = lt.score_function(lambda x: jnp.sum(x**2), lt.families.normal(),
                                num_samples=100, baseline=lt.baselines.leave_one_out())
        state = est.init(params)
        grads, state, aux = jax.jit(est.estimate)(params, state, key)

    References:
      Williams, "Simple statistical gradient-following algorithms for
      connectionist reinforcement learning", 1992.
      Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo
      Estimator", 2018. Farquhar et al., "Loaded DiCE", 2019.
      Hammersley and Morton, "A new Monte Carlo technique: antithetic
      variates", 1956.
    """
    baseline = baselines_lib.none() if baseline is None else baseline
    group = 2 if antithetic else 1
    layout = _sampling(num_samples, chunk_size, sample_sharding, minimum=group * baseline.min_samples,
                       caller="score_function")
    n, c = layout.num_samples, layout.chunk
    if antithetic and family.antithetic_sample is None:
        raise ValueError("score_function: antithetic=True needs a family with `antithetic_sample` "
                         "(e.g. lt.families.normal(), lt.families.bernoulli())")
    if antithetic and c % 2:
        raise ValueError(f"score_function: antithetic=True needs an even num_samples and chunk_size, got {n} and {c}")
    if baseline.per_coordinate and (antithetic or layout.num_chunks > 1):
        raise ValueError("score_function: a per-coordinate baseline (lt.baselines.optimal) does not combine "
                         "with `antithetic` or `chunk_size`")
    sampler = family.antithetic_sample if antithetic else family.sample
    source = "family.antithetic_sample" if antithetic else "family.sample"

    def init(params):
        return baseline.init(params) if baseline.per_coordinate else baseline.init()

    def draw(params, key, size):
        xs = jax.lax.stop_gradient(sampler(params, key, size))
        return layout.constrain(_checks.samples(xs, size, caller="score_function", source=source))

    def paired_baseline(values, state):
        """The baseline of the N/2 pair means, given to both members of each pair."""
        halves = values.reshape(layout.num_chunks, 2, c // 2)
        b, state = baseline.apply(jnp.mean(halves, axis=1).reshape(n // 2), state)
        b = jnp.broadcast_to(b.reshape(layout.num_chunks, 1, c // 2), halves.shape)
        return b.reshape(n), state

    def per_coordinate(params, xs, values, state):
        """Surrogate with the per-coordinate baseline c: grad = mean_i (f_i - c_i) ⊙ s_i."""
        scores = jax.vmap(jax.grad(family.log_prob), in_axes=(None, 0))(jax.lax.stop_gradient(params), xs)
        b, state = baseline.apply(values, state, jax.tree_util.tree_map(jnp.square, scores))
        b = jax.lax.stop_gradient(b)
        correction = jax.tree_util.tree_map(lambda bl, sl: jnp.mean(bl * sl, axis=0), b, scores)
        linear = sum(jnp.vdot(cl, pl - jax.lax.stop_gradient(pl)) for cl, pl in
                     zip(jax.tree_util.tree_leaves(correction), jax.tree_util.tree_leaves(params)))
        total = dice_sum(params, xs, values, jnp.zeros_like(values), n) - n * linear
        return total, b, state

    def evaluate(xs, size):
        values = _checks.per_sample(f, xs, size, caller="score_function", name="f")
        return layout.constrain(jax.lax.stop_gradient(values))

    def dice_sum(params, xs, values, b, size):
        log_probs = _checks.per_sample(
            lambda x: family.log_prob(params, x), xs, size, caller="score_function", name="family.log_prob")
        return jnp.sum((values - b) * magic_box(layout.constrain(log_probs)) + b)

    def surrogate_with_aux(params, state, key):
        if layout.num_chunks == 1:
            xs = draw(params, key, n)
            values = evaluate(xs, n)
        else:
            keys = jax.random.split(key, layout.num_chunks)
            values = jax.lax.map(lambda k: evaluate(draw(params, k, c), c), keys).reshape(n)
        if baseline.per_coordinate:
            total, b, new_state = per_coordinate(params, xs, values, state)
            return total / n, (new_state, {"f": values, "baseline": b})
        b, new_state = paired_baseline(values, state) if antithetic else baseline.apply(values, state)
        b = jax.lax.stop_gradient(b)
        if layout.num_chunks == 1:
            total = dice_sum(params, xs, values, b, n)
        else:
            chunks = (keys, values.reshape(-1, c), b.reshape(-1, c))
            total, _ = _chunk_sum(lambda ch: (dice_sum(params, draw(params, ch[0], c), ch[1], ch[2], c), None), chunks)
        return total / n, (new_state, {"f": values, "baseline": b})

    return _from_surrogate(init, surrogate_with_aux)


def pathwise(
    f: Callable[[Any], jax.Array],
    rsample: Callable[[Params, jax.Array, int], Any],
    *,
    num_samples: int,
    chunk_size: int | None = None,
    sample_sharding: jax.sharding.Sharding | None = None,
) -> Estimator:
    """The pathwise (reparameterisation) estimator, for comparison.

    grad_θ E[f(x)] ≈ (1/N) Σ_i grad_θ f(g(ε_i, θ)),  x = g(ε, θ) = rsample.

    Needs f differentiable and a differentiable sampler, e.g. the ``sample`` of
    :func:`logtrick.families.normal`. State is ``()``.

    Args:
      f: ``f(x) -> scalar`` for one sample; differentiated.
      rsample: ``rsample(params, key, n) -> xs``, differentiable in params.
      num_samples: N.
      chunk_size: as in :func:`score_function` (each chunk drawn once).
      sample_sharding: as in :func:`score_function`.

    References:
      Kingma and Welling, "Auto-Encoding Variational Bayes", 2014.
      Mohamed et al., "Monte Carlo Gradient Estimation in Machine Learning", 2020.
    """
    layout = _sampling(num_samples, chunk_size, sample_sharding, minimum=1, caller="pathwise")
    n, c = layout.num_samples, layout.chunk

    def values_of(params, key, size):
        xs = layout.constrain(_checks.samples(rsample(params, key, size), size, caller="pathwise", source="rsample"))
        return layout.constrain(_checks.per_sample(f, xs, size, caller="pathwise", name="f"))

    def surrogate_with_aux(params, state, key):
        if layout.num_chunks == 1:
            values = values_of(params, key, n)
            total = jnp.sum(values)
        else:
            keys = jax.random.split(key, layout.num_chunks)
            total, values = _chunk_sum(lambda k: (jnp.sum(v := values_of(params, k, c)), v), keys)
            values = values.reshape(n)
        return total / n, (state, {"f": jax.lax.stop_gradient(values)})

    return _from_surrogate(lambda params: (), surrogate_with_aux)


def score_function_jacobians(
    f: Callable[[Any], jax.Array],
    family: Family,
    params: Params,
    key: jax.Array,
    *,
    num_samples: int,
) -> Params:
    """Per-sample score-function terms f(x_i) grad_θ log p(x_i|θ).

    For variance diagnostics only: this materialises num_samples gradients. The
    mean over the leading axis equals ``score_function(...).estimate`` with the
    same key and no baseline.

    Returns:
      A pytree like ``params``, each leaf with a leading axis of num_samples.
    """
    n = _checks.num_samples(num_samples, minimum=1, caller="score_function_jacobians")
    xs = jax.lax.stop_gradient(family.sample(params, key, n))
    _checks.samples(xs, n, caller="score_function_jacobians", source="family.sample")
    values = _checks.per_sample(f, xs, n, caller="score_function_jacobians", name="f")
    scores = jax.vmap(jax.grad(family.log_prob), in_axes=(None, 0))(params, xs)
    return jax.tree_util.tree_map(
        lambda s: values.reshape((n,) + (1,) * (s.ndim - 1)).astype(s.dtype) * s, scores)
