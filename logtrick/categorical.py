"""Estimators specific to categorical variables (:func:`logtrick.families.categorical`)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from logtrick import _checks
from logtrick import baselines as baselines_lib
from logtrick.base import Estimator, from_loss
from logtrick.dice import magic_box
from logtrick.estimators import dice_sum

sg = jax.lax.stop_gradient


def sum_and_sample(
    f: Callable[..., jax.Array],
    *,
    num_summed: int,
    num_samples: int,
    baseline: baselines_lib.Baseline | None = None,
) -> Estimator:
    """Rao-Blackwellised score function: sum the likeliest classes, sample the rest.

    For one categorical variable q = softmax(logits) over K classes, let C be the
    ``num_summed`` most probable classes and q_C = Σ_{c∈C} q_c. Then::

        ĝ = (1/N) Σ_i [ Σ_{c∈C} q_c (f(c) - b_i) ∇log q_c + (1 - q_C)(f(x_i) - b_i) ∇log q(x_i) ],
        x_i ~ q(· | x ∉ C)   (Gumbel-max with the classes of C masked out),

    with q_c, 1 - q_C, C and b_i under ``stop_gradient``. Without a baseline
    this is the exact sum over C plus an unbiased estimate of the sum over the
    rest. The baseline b_i must multiply the summed classes' score terms too:
    E[ĝ_i | b_i] = ∇E[f] - b_i [Σ_{c∈C} ∇q_c + Σ_{x∉C} ∇q_x] = ∇E[f] - b_i ∇1 =
    ∇E[f] for b_i independent of x_i, whereas subtracting it from the sampled
    term alone leaves the bias -b_i (1 - q_C) E[∇log q(x) | x ∉ C] = b_i ∇q_C,
    which is not zero. Averaged over i, the summed classes use the mean baseline
    b̄ = (1/N) Σ_i b_i.

    The surrogate is Σ_{c∈C} q_c (f(c) - b̄) magic_box(log q_c)
    + (1 - q_C)(1/N) Σ_i (f(x_i) - b_i) magic_box(log q(x_i)) + b̄; its value is
    Σ_{c∈C} q_c f(c) + (1 - q_C)(1/N) Σ_i f(x_i), an unbiased estimate of E[f].

    Args:
      f: ``f(x, *args) -> scalar`` for one class x, an int32 scalar; a black
        box in x, differentiated in ``args`` (pathwise, with the same weights).
      num_summed: how many of the likeliest classes are summed exactly,
        1 ≤ num_summed < K.
      num_samples: N, draws from the remaining classes; f is evaluated
        num_summed + N times per estimate.
      baseline: a :class:`logtrick.baselines.Baseline` applied to the f values
        of the N draws; default none. ``leave_one_out`` needs N ≥ 2.

    Returns:
      An :class:`Estimator` for params = logits of shape (K,). ``aux``: ``"f"``
      and ``"baseline"`` for the draws, shape (N,); ``"f_summed"`` and
      ``"summed_classes"`` (int32), shape (num_summed,). Both the summed and
      the drawn f values are guarded against non-finite values.

    Example::

        payoff, logits = jnp.arange(8.0), jnp.zeros(8)
        est = lt.sum_and_sample(lambda x: payoff[x], num_summed=2, num_samples=4)
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), jax.random.key(0))

    References:
      Liu, Regier, Tripuraneni, Jordan and McAuliffe, "Rao-Blackwellized
      Stochastic Gradients for Discrete Distributions", 2019.
    """
    caller = "sum_and_sample"
    baseline = baselines_lib.none() if baseline is None else baseline
    if isinstance(num_summed, bool) or not isinstance(num_summed, int) or num_summed < 1:
        raise ValueError(f"{caller}: `num_summed` must be an int >= 1, got {num_summed!r}")
    n = _checks.num_samples(num_samples, minimum=baseline.min_samples, caller=caller)
    m = num_summed

    def loss(logits, state, key, *args):
        if jnp.ndim(logits) != 1:
            raise ValueError(f"{caller}: `params` must be logits of shape (K,), got shape {jnp.shape(logits)}")
        if m >= jnp.shape(logits)[0]:
            raise ValueError(f"{caller}: `num_summed` must be < K={jnp.shape(logits)[0]}, got {m}")
        log_q = jax.nn.log_softmax(logits)
        fixed = sg(logits)
        _, summed = jax.lax.top_k(fixed, m)
        masked = fixed.at[summed].set(-jnp.inf)
        xs = jax.random.categorical(key, masked, shape=(n,))
        q_summed = jnp.exp(sg(log_q)[summed])
        rest_mass = jnp.exp(jax.nn.logsumexp(masked) - jax.nn.logsumexp(fixed))
        all_values = _checks.per_sample(lambda x: f(x, *args), jnp.concatenate([summed, xs]), m + n,
                                        caller=caller, name="f")
        f_summed, values = all_values[:m], all_values[m:]
        b, new_state = baseline.apply(sg(values), state)
        b_mean = jnp.mean(b)
        value = (jnp.sum(q_summed * (f_summed - b_mean) * magic_box(log_q[summed]))
                 + rest_mass * dice_sum(values, log_q[xs], b) / n + (1 - rest_mass) * b_mean)
        aux = {"f": sg(values), "baseline": b, "f_summed": sg(f_summed), "summed_classes": summed}
        return value, (new_state, aux)

    return from_loss(baseline.init, loss, caller=caller, guarded=("f", "f_summed"))
