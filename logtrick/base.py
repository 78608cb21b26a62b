"""The estimator contract, and the one way to build an estimator from a loss.

Every estimator in logtrick is three pure functions::

    state = est.init(params)
    value, (state, aux) = est.loss(params, state, key, *args)
    grads, state, aux = est.estimate(params, state, key, *args)

``loss`` is the centre. Its value estimates E_{x~p(x|θ)}[f(x, *args)] and its
derivatives are the estimator's: with respect to ``params`` θ the estimator's
own (score function, DisARM, RELAX, ...), with respect to ``args`` (and
anything f closes over) the pathwise E[∇ f(x, *args)] from the same samples.
It is a scalar loss term that drops into any ``jax.grad``,
``jax.value_and_grad(..., has_aux=True)``, ``jax.vmap`` or ``jax.lax.scan``
of the caller's program; the new estimator state comes back through its aux,
so a stateful estimator threads its state through an outer ``jax.grad``.
``estimate`` is ``jax.grad`` of ``loss`` with respect to ``params``.

Non-finite f values: if any f value of a call is NaN or infinite, the loss's
value and every derivative it has are NaN and the returned state equals the
input state, so the failure is loud and a stateful estimator is not poisoned.
Pair with ``optax.apply_if_finite`` to skip such steps in training.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
State = Any
Aux = dict[str, Any]
Loss = Callable[..., tuple[jax.Array, tuple[State, Aux]]]


class Estimator(NamedTuple):
    """A gradient estimator as pure functions.

    Attributes:
      init: ``init(params) -> state``; every estimator has one (stateless
        ones return ``()``).
      loss: ``loss(params, state, key, *args) -> (value, (new_state, aux))``,
        ``value`` a scalar estimating E[f(x, *args)], differentiable in
        ``params`` and ``args``. ``aux`` holds at least ``"f"``, the f values
        of this call (under ``stop_gradient``).
      estimate: ``estimate(params, state, key, *args) -> (grads, new_state,
        aux)``, ``grads = jax.grad(loss, has_aux=True)(...)`` with respect to
        ``params``: a pytree like ``params``.
    """

    init: Callable[[Params], State]
    loss: Loss
    estimate: Callable[..., tuple[Params, State, Aux]]


def check_args(args: tuple, caller: str) -> None:
    """Raises a TypeError unless every leaf of every extra argument is an array or a number."""
    for i, arg in enumerate(args):
        for path, leaf in jax.tree_util.tree_leaves_with_path(arg):
            if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number)):
                raise TypeError(
                    f"{caller}: the extra arguments of `loss`/`estimate` are passed to f and differentiated, "
                    f"so they must be pytrees of arrays; args[{i}]{jax.tree_util.keystr(path)} is a "
                    f"{type(leaf).__name__}. Close over non-array settings in f instead.")


def check_params(params: Params, caller: str) -> None:
    """Raises a TypeError unless every leaf of ``params`` is floating point (they are differentiated)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(f"{caller}: `params` are differentiated, so they must be floating-point arrays; "
                            f"params{jax.tree_util.keystr(path)} has dtype {dtype}. Cast it, e.g. "
                            "`jnp.asarray(x, jnp.float32)`.")


def _all_finite(aux: Aux, keys: tuple[str, ...]) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for k in keys for leaf in jax.tree_util.tree_leaves(aux[k])]))


def _nan_unless(finite: jax.Array, tree: Any) -> jax.Array:
    """0 if ``finite``, else NaN with a NaN derivative in every entry of every floating leaf of ``tree``.

    Added to the loss, it makes even the entries of an argument that no sample
    read (a table f indexes) NaN, where the value's own derivative is 0.
    """
    def zero_with_unit_derivative(leaf):
        leaf = jnp.where(jnp.isfinite(leaf), leaf, 0)
        return jnp.sum(leaf - jax.lax.stop_gradient(leaf))

    touched = sum((zero_with_unit_derivative(leaf) for leaf in jax.tree_util.tree_leaves(tree)
                   if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)), jnp.zeros(()))
    return touched * jax.lax.stop_gradient(jnp.where(finite, 0.0, jnp.nan))


def from_loss(init: Callable[[Params], State], loss: Loss, *, caller: str,
              guarded: tuple[str, ...] = ("f",)) -> Estimator:
    """Builds an :class:`Estimator` from ``init`` and ``loss``.

    ``loss(params, state, key, *args) -> (value, (new_state, aux))`` is the
    estimator's surrogate: a scalar whose value estimates E[f] and whose
    derivatives are the estimator's. This wraps it with the contract's
    guarantees: ``args`` are checked to be pytrees of arrays (a TypeError
    naming ``caller`` otherwise); when any of ``aux[k]``, k in ``guarded``, is
    not finite, the value (hence every derivative) is NaN and the new state is
    the input state; ``estimate`` is ``jax.grad`` of the result.

    Args:
      init: ``init(params) -> state``.
      loss: the surrogate, as above; its aux must hold the ``guarded`` keys.
      caller: the estimator's name, for error messages.
      guarded: aux keys holding f values (arrays or pytrees of them), checked to be finite.

    Returns:
      An :class:`Estimator`.

    Example::

        def loss(params, state, key, *args):
            x = jax.lax.stop_gradient(family.sample(params, key, 1))[0]
            value = f(x, *args)
            return value * lt.magic_box(family.log_prob(params, x)), (state, {"f": value})

        est = lt.from_loss(lambda params: (), loss, caller="my_estimator")
    """

    def guarded_loss(params, state, key, *args):
        check_params(params, caller)
        check_args(args, caller)
        value, (new_state, aux) = loss(params, state, key, *args)
        if jnp.shape(value) != ():
            raise ValueError(f"{caller}: the loss must be a scalar, got shape {jnp.shape(value)}")
        finite = _all_finite(aux, guarded)
        value = (value * jax.lax.stop_gradient(jnp.where(finite, 1.0, jnp.nan)).astype(jnp.result_type(value))
                 + _nan_unless(finite, (params, args)).astype(jnp.result_type(value)))
        new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        return value, (new_state, aux)

    def estimate(params, state, key, *args):
        check_params(params, caller)
        grads, (new_state, aux) = jax.grad(guarded_loss, has_aux=True)(params, state, key, *args)
        return grads, new_state, aux

    return Estimator(init=init, loss=guarded_loss, estimate=estimate)
