"""Estimators for categorical variables: logits of shape batch + (K,), one independent categorical per batch element.

Two kinds, by what f sees:

- **Unbiased, f a black box** in the classes: ``f(x, *args)`` with x an
  int32 array of shape batch. :func:`unordered_set`, :func:`indecater`,
  :func:`relax`, :func:`arsm` and :func:`sum_and_sample` (one variable); the leave-one-out
  score function ``lt.score_function(f, lt.families.categorical(), ...,
  baseline=lt.baselines.leave_one_out())`` is their reference.
- **Relaxed, biased**: ``f(y, *args)`` with y float of shape batch + (K,), a
  one-hot vector or a point of the simplex, differentiable in y.
  :func:`straight_through`, :func:`gumbel_softmax`, :func:`gumbel_rao`,
  :func:`reinmax`; their bias against the exact gradient is measured in the
  README, never zero.

Gumbel noise: z = θ + g, g = -log(-log u), u ~ U(0, 1); x = argmax z is
categorical(softmax θ). Given x, the conditional z̃ ~ p(z | x, θ) is, from
fresh uniforms v, reparameterised through θ (Maddison et al. 2014):

    z̃_x = logsumexp(θ) - log(-log v_x),      z̃_i = -log(exp(-z̃_x) - log(v_i) exp(-θ_i))  (i ≠ x).

Every estimator follows the contract of :func:`logtrick.from_loss`: in a
user's jitted step, vmapped over datapoints, f's ``args`` differentiated
pathwise; a non-finite f value makes the loss and every derivative NaN.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from logtrick import _checks
from logtrick import baselines as baselines_lib
from logtrick import discrete
from logtrick.base import Estimator, from_loss
from logtrick.dice import magic_box
from logtrick.estimators import dice_sum
from logtrick.families import _replace_each

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


# ---------------------------------------------------------------- shared pieces

MAX_SET_SIZE = 16  # unordered_set's exact set probabilities cost O(2^k k)


def _class_logits(params: Any, caller: str) -> jax.Array:
    """``params`` as logits with a class axis of K ≥ 2 last, or an error naming ``params``."""
    logits = discrete._logits(params, caller)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"{caller}: `params` must be logits of shape batch + (K,), with K >= 2 classes on the last "
                         f"axis; got shape {logits.shape}")
    return logits


def _stateless(caller: str) -> Callable[[Any], tuple]:
    def init(params):
        _class_logits(params, caller)
        return ()

    return init


def _gumbel(u: jax.Array) -> jax.Array:
    return -jnp.log(-jnp.log(u))


def _log1mexp(x: jax.Array) -> jax.Array:
    """log(1 - exp(x)) for x ≤ 0, accurate at both ends (-inf gives 0, 0 gives -inf)."""
    return jnp.where(x > -0.693, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _one_hot(x: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
    return jax.nn.one_hot(x, num_classes, dtype=dtype)


def _log_prob(logits: jax.Array, xs: jax.Array) -> jax.Array:
    """log p(x_i|θ) summed over the batch, for stacked classes xs of shape (n,) + batch: shape (n,)."""
    log_q = jnp.broadcast_to(jax.nn.log_softmax(logits), xs.shape + logits.shape[-1:])
    per_element = jnp.take_along_axis(log_q, xs[..., None], axis=-1)[..., 0]
    return jnp.sum(per_element.reshape(xs.shape[0], -1), axis=-1)


def conditional_gumbel(logits: jax.Array, x: jax.Array, v: jax.Array) -> jax.Array:
    """z̃ ~ p(z | argmax z = x), z = θ + Gumbel noise, from uniforms v; reparameterised through θ.

    The maximum is Gumbel(logsumexp θ) and the others are Gumbel(θ_i) truncated
    below it (see the module docstring).

    Args:
      logits: θ, shape batch + (K,).
      x: classes, int, shape (...) + batch (leading axes broadcast against θ).
      v: U(0, 1) noise of shape x.shape + (K,).

    Returns:
      z̃, shape v.shape, with argmax z̃ = x.
    """
    is_x = jax.nn.one_hot(x, logits.shape[-1], dtype=bool)
    v_x = jnp.take_along_axis(v, x[..., None], axis=-1)
    top = jax.nn.logsumexp(logits, axis=-1, keepdims=True) - jnp.log(-jnp.log(v_x))
    others = -jnp.logaddexp(-top, jnp.log(-jnp.log(v)) - logits)
    return jnp.where(is_x, top, others)


_RELAXATION = discrete._Relaxation(
    perturbed=lambda logits, u: logits + _gumbel(u),
    hard=lambda z: jnp.argmax(z, axis=-1).astype(jnp.int32),
    conditional=conditional_gumbel,
    log_prob=_log_prob,
)


# ---------------------------------------------------------------- unbiased: f a black box in the classes


def _stochastic_beam_search(log_q: jax.Array, key: jax.Array, k: int) -> jax.Array:
    """k distinct configurations of D independent categoricals, without replacement from their joint.

    Top-down Gumbel sampling over the variables (Kool, van Hoof and Welling
    2019): a beam of k prefixes, each with a perturbed log-probability G; a
    child's G is a Gumbel of its log-probability truncated so that the maximum
    over its siblings is the parent's G, and the k largest children survive. The
    final k are the top k of Gumbel-perturbed joint log-probabilities: a
    Gumbel-top-k sample of the K^D configurations, without listing them.

    Args:
      log_q: normalised log-probabilities, shape (D, K).
      key: PRNG key.
      k: beam size, at most K^D.

    Returns:
      int32, shape (k, D).
    """
    num_vars, num_classes = log_q.shape
    noise = jax.random.gumbel(key, (num_vars, k, num_classes), log_q.dtype)

    def step(beam, inputs):
        prefixes, log_p, g = beam
        i, lq, gumbels = inputs
        child_log_p = log_p[:, None] + lq[None, :]
        perturbed = child_log_p + gumbels
        v = g[:, None] - perturbed + _log1mexp(perturbed - jnp.max(perturbed, axis=-1, keepdims=True))
        child_g = g[:, None] - jnp.maximum(v, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(v)))
        child_g = jnp.where(jnp.isneginf(g)[:, None], -jnp.inf, child_g)  # children of empty slots stay empty
        best, index = jax.lax.top_k(child_g.reshape(-1), k)
        prefixes = prefixes[index // num_classes].at[:, i].set((index % num_classes).astype(jnp.int32))
        return (prefixes, child_log_p.reshape(-1)[index], best), None

    start = (jnp.zeros((k, num_vars), jnp.int32), jnp.zeros((k,), log_q.dtype),
             jnp.full((k,), -jnp.inf, log_q.dtype).at[0].set(0.0))
    (prefixes, _, _), _ = jax.lax.scan(step, start, (jnp.arange(num_vars), log_q, noise))
    return prefixes


def _log_set_integrals(log_p: jax.Array) -> jax.Array:
    """log P^{D \\ (S \\ A)}(A) for every subset A of the sampled set S (index: A's bitmask over S's k members).

    With r = 1 - p(S), the probability that k' = |A| draws without replacement
    from the domain without S \\ A (mass r + p(A)) give the set A is
    I(A) = ∫_0^1 Π_{t∈A} (1 - u^{p_t / r}) du, computed exactly by the
    Plackett-Luce recursion over A's first draw,

        I(A) = Σ_{t∈A} p_t I(A \\ t) / (1 - p(S \\ A)),   I(∅) = 1,

    all terms positive (O(2^k k), k = len(log_p)).
    """
    k = log_p.shape[0]
    masks = np.arange(2**k)
    member = ((masks[:, None] >> np.arange(k)) & 1).astype(bool)  # (2^k, k)
    log_outside = jax.nn.logsumexp(jnp.where(~member, log_p, -jnp.inf), axis=-1)
    log_norm = _log1mexp(log_outside)  # log(1 - p(S \ A)); 0 for A = S
    log_i = jnp.zeros((2**k,), log_p.dtype)
    sizes = member.sum(axis=1)
    for size in range(1, k + 1):
        level = masks[sizes == size]
        elements = np.stack([np.flatnonzero(member[m]) for m in level])  # (m, size)
        subsets = level[:, None] ^ (1 << elements)
        terms = log_p[elements] + log_i[subsets]
        log_i = log_i.at[level].set(jax.nn.logsumexp(terms, axis=-1) - log_norm[level])
    return log_i


def unordered_set(f: Callable[..., jax.Array], *, num_samples: int) -> Estimator:
    """The unordered set estimator with its built-in baseline: k samples without replacement.

    S = k distinct configurations of all the variables jointly, drawn without
    replacement (stochastic beam search over the variables: exactly a
    Gumbel-top-k sample of the joint, which is never listed). With p(s) the
    joint probability, P(S) the probability of the unordered set and
    P^{D\\A}(·) that of a set drawn from the domain without A,

        R(S, s) = P^{D\\s}(S \\ s) / P(S),
        R^{D\\s}(S, s') = P^{D\\{s,s'}}(S \\ {s, s'}) / P^{D\\s}(S \\ s)  (1 for s' = s),
        ĝ = Σ_{s∈S} p(s) R(S, s) [f(s) - Σ_{s'∈S} p(s') R^{D\\s}(S, s') f(s')] ∇ log p(s),

    unbiased for every k ≥ 2 and exact when S is the whole support. The set
    probabilities are computed exactly (a recursion over the 2^k subsets of S,
    not a numerical integral). The loss is Σ_s sg(p(s) R(S, s)) [f(s, *args)
    + sg(f(s) - B_s) (log p(s) - sg log p(s))]: its value is the unordered set
    estimate of E[f] (the weights p(s) R(S, s) sum to 1), its logits gradient
    ĝ, its args gradient Σ_s p(s) R(S, s) ∇_args f(s); first order only.

    Args:
      f: ``f(x, *args) -> scalar`` for x int32 of the logits' batch shape (a
        black box in x); differentiated in ``args``.
      num_samples: k, distinct configurations and f evaluations per estimate,
        2 ≤ k ≤ min(16, K^D) (D: the number of variables).

    Returns:
      An :class:`logtrick.Estimator` on logits of shape batch + (K,); state
      ``()``; ``aux``: ``"f"``, shape (k,); ``"samples"``, shape (k,) + batch;
      ``"weights"`` p(s) R(S, s), shape (k,); ``"baseline"`` B_s, shape (k,).

    Example::

        table = jnp.arange(25.0).reshape(5, 5) ** 0.5
        est = lt.categorical.unordered_set(lambda x: table[x[0], x[1]], num_samples=4)
        logits = jnp.zeros((2, 5))
        grads, _, aux = jax.jit(est.estimate)(logits, (), jax.random.key(0))

    References:
      Kool, van Hoof and Welling, "Estimating Gradients for Discrete Random
      Variables by Sampling without Replacement", 2020. Kool, van Hoof and
      Welling, "Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick
      for Sampling Sequences Without Replacement", 2019.
    """
    caller = "unordered_set"
    k = _checks.num_samples(num_samples, minimum=2, caller=caller)
    if k > MAX_SET_SIZE:
        raise ValueError(f"{caller}: `num_samples` must be at most {MAX_SET_SIZE} (the set probabilities cost "
                         f"O(2^k k)), got {k}")
    full = 2**k - 1
    bits = 1 << np.arange(k)

    def loss(params, state, key, *args):
        logits = _class_logits(params, caller)
        batch, num_classes = logits.shape[:-1], logits.shape[-1]
        num_vars = math.prod(batch)
        if num_vars * math.log(num_classes) < math.log(k) - 1e-12:
            raise ValueError(f"{caller}: `num_samples` = {k} distinct configurations exceed the {num_classes}^"
                             f"{num_vars} that exist")
        log_q = sg(jax.nn.log_softmax(logits)).reshape(num_vars, num_classes)
        xs = sg(_stochastic_beam_search(log_q, key, k)).reshape((k,) + batch)
        log_p = _log_prob(logits, xs)
        values = _checks.per_sample(lambda x: f(x, *args), xs, k, caller=caller, name="f")
        fixed, f_fixed = sg(log_p), sg(values)
        log_i = _log_set_integrals(fixed)
        log_r = log_i[full ^ bits] - log_i[full]
        log_r2 = jnp.where(np.eye(k, dtype=bool), 0.0, log_i[full ^ bits[:, None] ^ bits[None, :]]
                           - log_i[full ^ bits][:, None])
        baseline = jnp.sum(jnp.exp(fixed[None, :] + log_r2) * f_fixed[None, :], axis=-1)
        weights = jnp.exp(fixed + log_r)
        value = jnp.sum(weights * (values + (f_fixed - baseline) * (log_p - fixed)))
        aux = {"f": f_fixed, "samples": xs, "weights": weights, "baseline": baseline}
        return value, (state, aux)

    return from_loss(_stateless(caller), loss, caller=caller)


def indecater(f: Callable[..., jax.Array], *, num_samples: int) -> Estimator:
    """IndeCateR (CatLog): for each sample and each variable, f summed exactly over that variable's K classes.

    For independent categoricals x_d ~ π_d = softmax(θ_d),
    ∂E[f]/∂θ_d = E_{x_{-d}}[Σ_k f(x_{-d}, x_d = k) ∇π_dk], so

        ĝ_d = (1/N) Σ_i Σ_k f(x^i with x_d := k) ∇π_dk,   x^i ~ π,

    unbiased, and with no baseline to choose (Σ_k ∇π_dk = 0 makes it
    invariant to one). Costs D·K f evaluations per sample (D variables): at
    a matched budget, compare with leave-one-out REINFORCE on N·D·K samples.
    With f̄_dk the sample mean of f(x^i with x_d := k), the loss is
    (1/D) Σ_{d,k} sg(π_dk) f̄_dk(*args) + Σ_{d,k} sg(f̄_dk) (π_dk - sg π_dk):
    its value estimates E[f] and its args gradient E[∇_args f] from all D·K
    evaluations of each sample (each variable summed out in turn), not from
    f(x^i) alone; its logits gradient is ĝ; first order only.

    Args:
      f: ``f(x, *args) -> scalar`` for x int32 of the logits' batch shape (a
        black box in x); differentiated in ``args``.
      num_samples: N ≥ 1.

    Returns:
      An :class:`logtrick.Estimator` on logits of shape batch + (K,); state
      ``()``; ``aux``: ``"f"``, f(x^i), shape (N,); ``"f_swapped"``,
      f(x^i with x_d := k), shape (N,) + batch + (K,). Both guarded.

    Example::

        table = jnp.arange(25.0).reshape(5, 5) ** 0.5
        est = lt.categorical.indecater(lambda x: table[x[0], x[1]], num_samples=2)   # 2·2·5 = 20 f evaluations
        logits = jnp.zeros((2, 5))
        grads, _, aux = jax.jit(est.estimate)(logits, (), jax.random.key(0))

    References:
      De Smet, Sansone and Zuidberg Dos Martires, "Differentiable Sampling of
      Categorical Distributions Using the CatLog-Derivative Trick", 2023.
    """
    caller = "indecater"
    n = _checks.num_samples(num_samples, minimum=1, caller=caller)

    def loss(params, state, key, *args):
        logits = _class_logits(params, caller)
        batch, num_classes = logits.shape[:-1], logits.shape[-1]
        num_vars = math.prod(batch)
        xs = sg(jax.random.categorical(key, sg(logits), shape=(n,) + batch).astype(jnp.int32))
        classes = jnp.broadcast_to(jnp.arange(num_classes, dtype=jnp.int32), batch + (num_classes,))
        swapped = jax.vmap(lambda x: _replace_each(x, classes))(xs)  # (n,) + batch + (K,) + batch
        count = n * num_vars * num_classes
        values = _checks.per_sample(lambda x: f(x, *args), swapped.reshape((count,) + batch), count,
                                    caller=caller, name="f").reshape((n,) + batch + (num_classes,))
        first = values.reshape(n, num_vars, num_classes)[:, 0]  # x with x_0 := k: f(x) at k = x_0
        at_samples = jnp.take_along_axis(first, xs.reshape(n, num_vars)[:, :1], axis=-1)[:, 0]
        probs = jax.nn.softmax(logits)
        summed = jnp.sum(sg(probs) * jnp.mean(values, axis=0)) / num_vars  # E[f], every evaluation used
        value = summed + jnp.sum(jnp.mean(sg(values), axis=0) * (probs - sg(probs)))
        return value, (state, {"f": sg(at_samples), "f_swapped": sg(values)})

    return from_loss(_stateless(caller), loss, caller=caller, guarded=("f", "f_swapped"))


def arsm(f: Callable[..., jax.Array], *, num_samples: int) -> Estimator:
    """ARSM (augment-REINFORCE-swap-merge): a coupled estimator from Dirichlet noise and its swaps.

    x_d = argmin_k (log ϖ_dk - θ_dk) with ϖ_d ~ Dirichlet(1_K) is categorical(softmax θ_d).
    Swapping entries c and j of ϖ_d gives x_d^{c⇌j}, the others unchanged; with
    F_d(c, j) = f(x with x_d := x_d^{c⇌j}) and F̄_d(j) = (1/K) Σ_c F_d(c, j),

        ĝ_dc = (1/K) Σ_j [F_d(c, j) - F̄_d(j)] (1 - K ϖ_dj),

    unbiased (each reference j gives an unbiased estimate; ARSM merges them).
    Costs 1 + D·K(K-1)/2 f evaluations per sample (every distinct swap of
    every variable; the identity swap is the sample itself), many of them
    repeats of the sample when ϖ_d is far from a tie. The loss is
    (1/N) Σ_i f(x^i, *args) + ⟨sg(ĝ), θ - sg θ⟩; first order only.

    Args:
      f: ``f(x, *args) -> scalar`` for x int32 of the logits' batch shape (a
        black box in x); differentiated in ``args``.
      num_samples: N ≥ 1 Dirichlet draws.

    Returns:
      An :class:`logtrick.Estimator` on logits of shape batch + (K,); state
      ``()``; ``aux``: ``"f"``, shape (N,); ``"f_swapped"``, shape
      (N, D, K(K-1)/2). Both guarded.

    Example::

        table = jnp.arange(25.0).reshape(5, 5) ** 0.5
        est = lt.categorical.arsm(lambda x: table[x[0], x[1]], num_samples=1)   # 1 + 2·10 = 21 f evaluations
        grads, _, aux = jax.jit(est.estimate)(jnp.zeros((2, 5)), (), jax.random.key(0))

    References:
      Yin, Yue and Zhou, "ARSM: Augment-REINFORCE-Swap-Merge Estimator for
      Gradient Backpropagation Through Categorical Variables", 2019.
    """
    caller = "arsm"
    n = _checks.num_samples(num_samples, minimum=1, caller=caller)

    def loss(params, state, key, *args):
        logits = _class_logits(params, caller)
        batch, num_classes = logits.shape[:-1], logits.shape[-1]
        num_vars = math.prod(batch)
        first, second = np.triu_indices(num_classes, 1)
        swaps = np.tile(np.arange(num_classes), (first.size, 1))  # (P, K): the permutation of each swap
        swaps[np.arange(first.size), first], swaps[np.arange(first.size), second] = second, first
        pair = np.full((num_classes, num_classes), -1)
        pair[first, second] = pair[second, first] = np.arange(first.size)

        theta = sg(logits).reshape(num_vars, num_classes)
        noise = jax.random.exponential(key, (n, num_vars, num_classes), logits.dtype)
        dirichlet = noise / jnp.sum(noise, axis=-1, keepdims=True)  # ϖ, (n, D, K)
        log_w = jnp.log(dirichlet)
        xs = jnp.argmin(log_w - theta, axis=-1).astype(jnp.int32)  # (n, D)
        swapped = jnp.argmin(log_w[:, :, swaps] - theta[:, None, :], axis=-1).astype(jnp.int32)  # (n, D, P)
        configs = jax.vmap(_replace_each)(xs, swapped)  # (n, D, P, D)
        f_args = lambda x: f(x.reshape(batch), *args)  # noqa: E731
        values = _checks.per_sample(f_args, xs, n, caller=caller, name="f")
        count = n * num_vars * first.size
        f_swapped = sg(_checks.per_sample(f_args, configs.reshape(count, num_vars), count, caller=caller,
                                          name="f").reshape(n, num_vars, first.size))
        table = jnp.where(pair >= 0, f_swapped[..., np.maximum(pair, 0)], sg(values)[:, None, None, None])
        centred = table - jnp.mean(table, axis=-2, keepdims=True)  # F(c, j) - F̄(j), (n, D, K_c, K_j)
        grad = jnp.mean(jnp.sum(centred * (1 - num_classes * dirichlet[:, :, None, :]), axis=-1), axis=0)
        value = jnp.mean(values) + jnp.sum(sg(grad).reshape(logits.shape) / num_classes * (logits - sg(logits)))
        return value, (state, {"f": sg(values), "f_swapped": f_swapped})

    return from_loss(_stateless(caller), loss, caller=caller, guarded=("f", "f_swapped"))


def relax(
    f: Callable[..., jax.Array],
    control_variate: Callable[..., jax.Array],
    cv_params: Any,
    *,
    num_samples: int = 1,
    optimizer: optax.GradientTransformation | None = None,
) -> Estimator:
    """RELAX for categoricals: a learned control variate on the Gumbel-perturbed logits.

    z = θ + g (Gumbel noise), x = argmax z, z̃ ~ p(z | x, θ)
    (:func:`conditional_gumbel`), both reparameterised through θ;

        ĝ = [f(x) - c_φ(z̃)] ∇_θ log p(x|θ) + ∇_θ c_φ(z) - ∇_θ c_φ(z̃),

    averaged over the draws, unbiased for every φ. The loss, the training of
    φ on Σ_d ĝ_d² (``aux["cv_grads"]``, or an ``optimizer`` step taken by the
    estimator) and the state are those of :func:`logtrick.discrete.relax`.

    Args:
      f: ``f(x, *args) -> scalar`` for x int32 of the logits' batch shape (a
        black box in x); differentiated in ``args``.
      control_variate: ``control_variate(cv_params, z, *args) -> scalar`` for
        one z of the logits' shape (batch + (K,)), differentiable in z and
        cv_params; e.g. f's relaxation at softmax(z / λ), plus a small net.
      cv_params: initial control-variate parameters (any pytree).
      num_samples: draws per estimate (f evaluations), ≥ 1.
      optimizer: an optax transformation the estimator applies to cv_params
        on every call; None leaves them to the caller.

    Returns:
      An :class:`logtrick.Estimator` on logits; state
      :class:`logtrick.discrete.RelaxState`; ``aux``: ``"f"``, ``"samples"``
      (shape (N,) + batch), ``"cv_loss"``, ``"cv_grads"``.

    Example::

        table = jnp.arange(25.0).reshape(5, 5) ** 0.5
        cv = lambda phi, z: jnp.sum(phi * jax.nn.softmax(z))
        est = lt.categorical.relax(lambda x: table[x[0], x[1]], cv, jnp.zeros((2, 5)), num_samples=4)
        logits = jnp.zeros((2, 5))
        grads, state, aux = jax.jit(est.estimate)(logits, est.init(logits), jax.random.key(0))

    References:
      Grathwohl, Choi, Wu, Roeder and Duvenaud, "Backpropagation through the
      Void: Optimizing control variates for black-box gradient estimation", 2018.
    """
    return discrete._relax_with(_RELAXATION, f, control_variate, cv_params, num_samples=num_samples,
                                optimizer=optimizer, caller="categorical.relax", check_logits=_class_logits)


# ---------------------------------------------------------------- biased: f of one-hot or relaxed vectors


def _relaxed(f: Callable[..., jax.Array], draw: Callable, num_samples: int, caller: str) -> Estimator:
    """The estimator whose loss is mean f(y_i, *args) over ``draw(logits, key, n) -> ys``, (n,) + logits.shape."""
    n = _checks.num_samples(num_samples, minimum=1, caller=caller)

    def loss(params, state, key, *args):
        logits = _class_logits(params, caller)
        values = _checks.per_sample(lambda y: f(y, *args), draw(logits, key, n), n, caller=caller, name="f")
        return jnp.mean(values), (state, {"f": sg(values)})

    return from_loss(_stateless(caller), loss, caller=caller)


def _perturbed(logits: jax.Array, key: jax.Array, n: int) -> jax.Array:
    """z = θ + Gumbel noise, shape (n,) + θ.shape."""
    return logits + _gumbel(discrete._uniform(key, (n,) + logits.shape, logits.dtype))


def straight_through(f: Callable[..., jax.Array], *, num_samples: int) -> Estimator:
    """Straight-through: f at the one-hot sample, the gradient as if the sample were its probabilities.

    y = onehot(x) + π - sg(π), x ~ π = softmax(θ): the forward value is
    f(onehot(x)), the logits gradient ∇_y f · ∂π/∂θ, biased (exact only for f
    linear in y). Its args gradient, the pathwise mean of ∇_args f at the
    one-hot samples, is unbiased.

    Args:
      f: ``f(y, *args) -> scalar`` for y of the logits' shape, differentiable in y.
      num_samples: N ≥ 1.

    Returns:
      An :class:`logtrick.Estimator` on logits; state ``()``; ``aux["f"]``, shape (N,).

    Example::

        w = jnp.arange(10.0).reshape(2, 5)
        est = lt.categorical.straight_through(lambda y: jnp.sum(w * y) ** 2, num_samples=4)
        grads, _, _ = jax.jit(est.estimate)(jnp.zeros((2, 5)), (), jax.random.key(0))

    References:
      Bengio, Léonard and Courville, "Estimating or Propagating Gradients
      Through Stochastic Neurons for Conditional Computation", 2013.
    """

    def draw(logits, key, n):
        probs = jax.nn.softmax(logits)
        xs = jax.random.categorical(key, sg(logits), shape=(n,) + logits.shape[:-1])
        return sg(_one_hot(xs, logits.shape[-1], logits.dtype)) + probs - sg(probs)

    return _relaxed(f, draw, num_samples, "straight_through")


def gumbel_softmax(f: Callable[..., jax.Array], *, num_samples: int, temperature: float = 0.5,
                   straight_through: bool = False) -> Estimator:
    """Gumbel-softmax (Concrete): f at y = softmax((θ + g) / τ), differentiated pathwise; biased.

    Relaxed: the loss is mean f(y), its derivatives those of E[f(y)], not of
    E[f(onehot(x))]. Straight-through: the forward value is f(onehot(argmax z))
    and the gradient flows through y. The bias shrinks with τ while the
    variance grows.

    Args:
      f: ``f(y, *args) -> scalar`` for y of the logits' shape, differentiable in y.
      num_samples: N ≥ 1.
      temperature: τ > 0.
      straight_through: forward on the one-hot sample instead of y.

    Returns:
      An :class:`logtrick.Estimator` on logits; state ``()``; ``aux["f"]``, shape (N,).

    Example::

        w = jnp.arange(10.0).reshape(2, 5)
        est = lt.categorical.gumbel_softmax(lambda y: jnp.sum(w * y) ** 2, num_samples=4, temperature=0.5)
        grads, _, _ = jax.jit(est.estimate)(jnp.zeros((2, 5)), (), jax.random.key(0))

    References:
      Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax",
      2017. Maddison, Mnih and Teh, "The Concrete Distribution", 2017.
    """
    caller = "categorical.gumbel_softmax"
    tau = discrete._positive(temperature, "temperature", caller)

    def draw(logits, key, n):
        z = _perturbed(logits, key, n)
        y = jax.nn.softmax(z / tau)
        if not straight_through:
            return y
        return sg(_one_hot(jnp.argmax(z, axis=-1), logits.shape[-1], logits.dtype)) + y - sg(y)

    return _relaxed(f, draw, num_samples, caller)


def gumbel_rao(f: Callable[..., jax.Array], *, num_samples: int, num_gumbels: int = 10,
               temperature: float = 1.0) -> Estimator:
    """Gumbel-Rao: straight-through Gumbel-softmax with its Jacobian averaged over the Gumbels given the sample.

    x = argmax(θ + g); z̃_1..z̃_M ~ p(z | x, θ) (:func:`conditional_gumbel`);

        y = onehot(x) + ȳ - sg(ȳ),   ȳ = (1/M) Σ_j softmax((θ + sg(z̃_j - θ)) / τ).

    The forward value is f(onehot(x)); the gradient is ∇_y f · E[∂softmax((θ +
    G)/τ)/∂θ | x] with the noise G = z̃ - θ held fixed: the straight-through
    Gumbel-softmax Jacobian, Rao-Blackwellised over G given x. It is not the
    derivative through the conditional sampler (z̃ depends on θ through the
    truncation too): that would change the estimator's mean, while holding G
    fixed keeps straight-through Gumbel-softmax's mean and lowers its
    variance. Biased like it.

    Args:
      f: ``f(y, *args) -> scalar`` for y of the logits' shape, differentiable in y.
      num_samples: N ≥ 1 samples x (f evaluations).
      num_gumbels: M ≥ 1 conditional Gumbel draws per sample (no f evaluations).
      temperature: τ > 0.

    Returns:
      An :class:`logtrick.Estimator` on logits; state ``()``; ``aux["f"]``, shape (N,).

    Example::

        w = jnp.arange(10.0).reshape(2, 5)
        est = lt.categorical.gumbel_rao(lambda y: jnp.sum(w * y) ** 2, num_samples=4, num_gumbels=10)
        grads, _, _ = jax.jit(est.estimate)(jnp.zeros((2, 5)), (), jax.random.key(0))

    References:
      Paulus, Maddison and Krause, "Rao-Blackwellizing the Straight-Through
      Gumbel-Softmax Gradient Estimator", 2021.
    """
    caller = "gumbel_rao"
    tau = discrete._positive(temperature, "temperature", caller)
    if isinstance(num_gumbels, bool) or not isinstance(num_gumbels, int) or num_gumbels < 1:
        raise ValueError(f"{caller}: `num_gumbels` must be an int >= 1, got {num_gumbels!r}")

    def draw(logits, key, n):
        sample_key, gumbel_key = jax.random.split(key)
        x = jnp.argmax(_perturbed(sg(logits), sample_key, n), axis=-1)
        v = discrete._uniform(gumbel_key, (num_gumbels, n) + logits.shape, logits.dtype)
        noise = sg(conditional_gumbel(sg(logits), jnp.broadcast_to(x, v.shape[:-1]), v) - logits)
        y = jnp.mean(jax.nn.softmax((logits + noise) / tau), axis=0)
        return sg(_one_hot(x, logits.shape[-1], logits.dtype)) + y - sg(y)

    return _relaxed(f, draw, num_samples, caller)


def reinmax(f: Callable[..., jax.Array], *, num_samples: int, temperature: float = 1.0) -> Estimator:
    """ReinMax: straight-through with a second-order (Heun's method) correction of its gradient.

    x ~ π₀ = softmax(θ), D = onehot(x); π₁ = softmax(sg(log((D + softmax(θ/τ))/2) - θ) + θ),
    π₂ = 2π₁ - π₀/2, y = D + π₂ - sg(π₂). The forward value is f(D); the
    gradient approximates ∇E[f] to second order (Heun's method) where
    straight-through is first order; biased, the bias measured in the README.

    Args:
      f: ``f(y, *args) -> scalar`` for y of the logits' shape, differentiable in y.
      num_samples: N ≥ 1.
      temperature: τ > 0 (the paper recommends τ ≥ 1).

    Returns:
      An :class:`logtrick.Estimator` on logits; state ``()``; ``aux["f"]``, shape (N,).

    Example::

        w = jnp.arange(10.0).reshape(2, 5)
        est = lt.categorical.reinmax(lambda y: jnp.sum(w * y) ** 2, num_samples=4)
        grads, _, _ = jax.jit(est.estimate)(jnp.zeros((2, 5)), (), jax.random.key(0))

    References:
      Liu, Gao, Lin, Wang, Han and Deng, "Bridging Discrete and
      Backpropagation: Straight-Through and Beyond", 2023.
    """
    caller = "reinmax"
    tau = discrete._positive(temperature, "temperature", caller)

    def draw(logits, key, n):
        xs = jax.random.categorical(key, sg(logits), shape=(n,) + logits.shape[:-1])
        d = sg(_one_hot(xs, logits.shape[-1], logits.dtype))
        pi0 = jax.nn.softmax(logits)
        pi1 = jax.nn.softmax(sg(jnp.log((d + jax.nn.softmax(logits / tau)) / 2) - logits) + logits)
        pi2 = 2 * pi1 - pi0 / 2
        return d + pi2 - sg(pi2)

    return _relaxed(f, draw, num_samples, caller)
