"""Randomised quasi-Monte Carlo: scrambled Sobol points in JAX, and the uniforms estimators draw from.

A Sobol net of N = 2^m points fills [0, 1)^d far more evenly than N
independent uniforms: for an integrand with square-integrable mixed
derivatives, scrambled Sobol points give a mean squared error of order
N^{-3} (log N)^{d-1} instead of Monte Carlo's N^{-1} (Owen 1997). The points
here are randomised by a random linear matrix scramble and a random digital
shift (Matoušek 1998): every point is then exactly uniform, so an average over
them is unbiased, and independent keys give independent randomisations, whose
spread is the estimate's error.

Both :func:`sobol` and :func:`uniform` put their values on the same grid,
the midpoints (2k + 1) 2^{-b-1} of 2^b cells (b = 23 in float32, 32 in
float64): strictly inside (0, 1), so an inverse CDF never sees 0 or 1, and
exactly uniform on that grid (``jax.random.uniform`` has the same resolution).

References:
  Sobol', "On the distribution of points in a cube and the approximate
  evaluation of integrals", 1967. Joe and Kuo, "Constructing Sobol sequences
  with better two-dimensional projections", 2008 (the direction numbers, as
  shipped by SciPy). Matoušek, "On the L2-discrepancy for anchored boxes",
  1998. Owen, "Scrambled net variance for integrals of smooth functions",
  1997. Buchholz, Wenzel and Mandt, "Quasi-Monte Carlo Variational
  Inference", 2018.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import qmc as scipy_qmc

MAX_DIM = 21201  # dimensions with Joe-Kuo direction numbers
_BITS = 32


@functools.lru_cache(maxsize=64)
def _directions(dim: int) -> np.ndarray:
    """Direction numbers v_{j,k} of the unscrambled Sobol sequence as uint32, shape (dim, 32).

    Point i is the XOR of v_{j,k} over the set bits k of i, divided by 2^32.
    """
    return np.asarray(scipy_qmc.Sobol(dim, scramble=False, bits=_BITS)._sv, np.uint32)


def _mantissa_bits(dtype) -> int:
    return 23 if jnp.finfo(dtype).bits <= 32 else _BITS


def _to_unit(bits: jax.Array, dtype) -> jax.Array:
    """uint32 → the midpoint (2k + 1) 2^{-b-1} of the cell k = the top b bits, exact in ``dtype``."""
    b = _mantissa_bits(dtype)
    k = (bits >> (_BITS - b)).astype(dtype)
    return (2 * k + 1) * jnp.asarray(2.0 ** -(b + 1), dtype)


def _scrambled_directions(key: jax.Array, directions: np.ndarray) -> jax.Array:
    """L_j v_{j,k} (mod 2) for random unit lower-triangular 32x32 bit matrices L_j, one per dimension.

    Bits are ordered most significant first, so digit b of a scrambled value
    depends on digits 0..b of the original: Matoušek's linear matrix scramble.
    """
    dim = directions.shape[0]
    shifts = jnp.arange(_BITS - 1, -1, -1, dtype=jnp.uint32)  # bit position of digit 0 (MSB), ..., 31
    v_bits = (jnp.asarray(directions)[..., None] >> shifts) & 1  # (dim, 32 directions, 32 digits)
    strict = jax.random.bernoulli(key, 0.5, (dim, _BITS, _BITS)) & jnp.tril(jnp.ones((_BITS, _BITS), bool), -1)
    lower = (strict | jnp.eye(_BITS, dtype=bool)).astype(jnp.int32)  # L[j, out digit, in digit]
    scrambled = jnp.einsum("jab,jkb->jka", lower, v_bits.astype(jnp.int32)) & 1
    return jnp.sum(scrambled.astype(jnp.uint32) << shifts, axis=-1, dtype=jnp.uint32)  # (dim, 32)


def sobol(key: jax.Array, num_points: int, dim: int, *, offset: int | jax.Array = 0,
          dtype: jnp.dtype | type = jnp.float32) -> jax.Array:
    """Points ``offset, ..., offset + num_points - 1`` of a randomly scrambled Sobol sequence in (0, 1)^dim.

    The scramble (linear matrix scramble and digital shift) is drawn from
    ``key``: the same key gives the same randomisation, so points of one net
    can be made in pieces (``offset``, traced or not) and agree with the net
    made at once. Each point is exactly uniform on the grid of the module
    docstring; the first 2^m points of one randomisation form a (t, m, d)-net.
    Jittable; ``num_points`` and ``dim`` static.

    Args:
      key: a PRNG key; independent keys give independent randomisations.
      num_points: N ≥ 1; powers of two (from offset 0) give the balanced nets.
      dim: d, 1 ≤ d ≤ 21201.
      offset: the index of the first point.
      dtype: a floating dtype.

    Returns:
      Shape (num_points, dim), dtype ``dtype``.

    Example::

        u = lt.qmc.sobol(jax.random.key(0), 1024, 2)
        estimate = jnp.mean(jnp.prod(u, axis=1))     # E[u1 u2] = 1/4, error ~ 1e-5
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"sobol: `num_points` must be a positive int, got {num_points!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise ValueError(f"sobol: `dim` must be an int in [1, {MAX_DIM}], got {dim!r}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"sobol: `dtype` must be a floating dtype, got {dtype}")
    if isinstance(offset, int) and not 0 <= offset <= 2**_BITS - num_points:
        raise ValueError(f"sobol: `offset` + `num_points` must be at most 2^32, got {offset} + {num_points}")
    num_bits = max(1, (offset + num_points - 1).bit_length()) if isinstance(offset, int) else _BITS
    return _sobol(key, offset, num_points=num_points, dim=dim, num_bits=num_bits, dtype=jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("num_points", "dim", "num_bits", "dtype"))
def _sobol(key: jax.Array, offset: jax.Array, *, num_points: int, dim: int, num_bits: int, dtype) -> jax.Array:
    """:func:`sobol` for indices below 2^num_bits; compiled once per shape (eager callers would dispatch per op)."""
    scramble_key, shift_key = jax.random.split(key)
    directions = _scrambled_directions(scramble_key, _directions(dim))
    index = jnp.asarray(offset, jnp.uint32) + jnp.arange(num_points, dtype=jnp.uint32)
    points = jnp.broadcast_to(jax.random.bits(shift_key, (dim,), jnp.uint32), (num_points, dim))
    for k in range(num_bits):
        points = points ^ jnp.where(((index >> k) & 1)[:, None] == 1, directions[None, :, k], jnp.uint32(0))
    return _to_unit(points, dtype)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype | type = jnp.float32) -> jax.Array:
    """Independent uniforms on the grid of :func:`sobol`: strictly inside (0, 1).

    The Monte Carlo counterpart of :func:`sobol`, for samplers that apply an
    inverse CDF (``jax.random.uniform`` can return 0).

    Example::

        u = lt.qmc.uniform(jax.random.key(0), (4, 3))
    """
    return _to_unit(jax.random.bits(key, shape, jnp.uint32), dtype)
