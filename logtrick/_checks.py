"""Trace-time input checks shared by the estimators (private)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def num_samples(value: Any, *, minimum: int, caller: str) -> int:
    """Returns ``value`` as an int, or raises naming ``num_samples``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{caller}: `num_samples` must be an int >= {minimum}, got {value!r}")
    return value


def samples(xs: Any, n: int, *, caller: str, source: str) -> Any:
    """Checks that every leaf of ``xs`` has leading axis ``n``."""
    leaves = jax.tree_util.tree_leaves_with_path(xs)
    if not leaves:
        raise ValueError(f"{caller}: {source} returned no arrays")
    for path, leaf in leaves:
        shape = jnp.shape(leaf)
        if not shape or shape[0] != n:
            raise ValueError(
                f"{caller}: {source} must return leaves with leading axis num_samples={n}; "
                f"leaf {jax.tree_util.keystr(path) or '<root>'} has shape {shape}")
    return xs


def drawn(sampler: Callable, params: Any, key: jax.Array, n: int, *, caller: str, source: str) -> Any:
    """``sampler(params, key, n)``, checked by :func:`samples`; a sampler that cannot handle ``params`` (say
    a normal whose ``loc`` and ``log_scale`` shapes do not broadcast) raises a ValueError naming ``params``."""
    try:
        xs = sampler(params, key, n)
    except (TypeError, ValueError) as err:
        shapes = jax.tree_util.tree_map(jnp.shape, params)
        raise ValueError(f"{caller}: `params` do not fit the distribution: {source} failed on params of shapes "
                         f"{shapes}: {err}") from err
    return samples(xs, n, caller=caller, source=source)


def per_sample(fn: Callable, xs: Any, n: int, *, caller: str, name: str) -> jax.Array:
    """``vmap(fn)(xs)``, checked to be a float array of shape ``(n,)``."""
    out = jax.vmap(fn)(xs)
    shape = jnp.shape(out)
    if shape != (n,):
        raise ValueError(
            f"{caller}: `{name}` must return a scalar for one sample; "
            f"got shape {shape[1:]} per sample")
    if not jnp.issubdtype(jnp.result_type(out), jnp.floating):
        out = out.astype(jnp.result_type(float))
    return out
