"""How the samples of one estimate are laid out: drawn at random or quasi-randomly, in chunks, sharded.

Layout never changes an estimator's mathematics: the estimators compute one
chunk of samples the same way whatever the layout, and :class:`SampleLayout`
says how many chunks there are, what noise each draws from and where their
samples live.

Samplers: ``"mc"`` draws independent noise, a key per chunk; ``"rqmc"``
draws the N samples of one estimate from ``num_randomisations`` independent
randomisations of a scrambled Sobol net (:func:`logtrick.qmc.sobol`), N / R
points each, randomisation-major, so each chunk (all of them, or a piece of
one randomisation) takes its points of the same nets by offset: the estimate
is the same whatever the chunk size, up to float reassociation.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from logtrick import _checks, qmc

SAMPLERS = ("mc", "rqmc")


class SampleLayout(NamedTuple):
    """``num_samples`` samples in chunks of ``chunk``, optionally with the sample axis on ``sharding``.

    ``sampler`` is ``"mc"`` or ``"rqmc"``; under ``"rqmc"`` the samples come
    from ``num_randomisations`` independent nets of N / R points each.
    """

    num_samples: int
    chunk: int
    sharding: jax.sharding.Sharding | None
    sampler: str = "mc"
    num_randomisations: int = 1

    @property
    def num_chunks(self) -> int:
        return self.num_samples // self.chunk

    def chunk_indices(self) -> Any:
        """The chunk indices to map over: the int 0 for one chunk (so nothing is traced), else an array."""
        return 0 if self.num_chunks == 1 else jnp.arange(self.num_chunks)

    def chunk_key(self, key: jax.Array, index: Any) -> jax.Array:
        """The key of chunk ``index`` under ``"mc"``: ``key`` itself for one chunk, else its share of a split."""
        return key if self.num_chunks == 1 else jax.random.split(key, self.num_chunks)[index]

    def uniforms(self, key: jax.Array, index: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        """Chunk ``index``'s noise, shape ``(chunk,) + shape``, each row uniform on (0, 1)^shape.

        Independent rows under ``"mc"``; under ``"rqmc"``, rows of one
        randomisation of a Sobol net of dimension prod(shape).
        """
        if self.sampler == "mc":
            return qmc.uniform(self.chunk_key(key, index), (self.chunk,) + tuple(shape), dtype)
        per = self.num_samples // self.num_randomisations
        keys = jax.random.split(key, self.num_randomisations)
        dim = max(1, math.prod(shape))
        if self.chunk > per:  # unchunked: every randomisation
            points = jax.vmap(lambda k: qmc.sobol(k, per, dim, dtype=dtype))(keys)
        else:
            start = index * self.chunk
            points = qmc.sobol(keys[start // per], self.chunk, dim, offset=start % per, dtype=dtype)
        return points.reshape((self.chunk,) + tuple(shape))

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
    if (not isinstance(sharding, jax.sharding.NamedSharding) or not isinstance(mesh, jax.sharding.Mesh)
            or all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)):
        return sharding
    auto = jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * mesh.devices.ndim)
    return jax.sharding.NamedSharding(auto, sharding.spec)


def sample_layout(num_samples: Any, chunk_size: Any, sample_sharding: Any, *, minimum: int, multiple: int = 1,
                  sampler: Any = "mc", num_randomisations: Any = 1, caller: str) -> SampleLayout:
    """Checks the layout arguments of an estimator, naming each one in its error.

    Args:
      num_samples: N, an int ≥ ``minimum``.
      chunk_size: None (one chunk) or a positive int dividing N (and N / R, if less than N).
      sample_sharding: None or a ``jax.sharding.Sharding``.
      minimum: the fewest samples the estimator is defined for.
      multiple: N and the chunk size must be multiples of it (2 for antithetic pairs).
      sampler: ``"mc"`` or ``"rqmc"``.
      num_randomisations: R ≥ 1 dividing N; more than 1 only under ``"rqmc"``.
      caller: the estimator's name.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"{caller}: `sampler` must be one of {SAMPLERS}, got {sampler!r}")
    r = num_randomisations
    if isinstance(r, bool) or not isinstance(r, int) or r < 1 or (r > 1 and sampler != "rqmc"):
        raise ValueError(f"{caller}: `num_randomisations` must be a positive int, and 1 unless sampler='rqmc'; "
                         f"got {r!r} with sampler={sampler!r}")
    n = _checks.num_samples(num_samples, minimum=minimum, caller=caller)
    if n % r:
        raise ValueError(f"{caller}: `num_samples` must be a multiple of num_randomisations={r}, got {n}")
    if chunk_size is None:
        chunk_size = n
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1 or n % chunk_size:
        raise ValueError(f"{caller}: `chunk_size` must be a positive int dividing num_samples={n}, got {chunk_size!r}")
    if chunk_size % multiple:
        raise ValueError(f"{caller}: `num_samples` and `chunk_size` must be multiples of {multiple}, "
                         f"got {n} and {chunk_size}")
    if chunk_size < n and (n // r) % chunk_size:
        raise ValueError(f"{caller}: under sampler='rqmc' a chunk lies within one randomisation, so `chunk_size` "
                         f"must divide num_samples / num_randomisations = {n // r}, got {chunk_size}")
    if sample_sharding is not None and not isinstance(sample_sharding, jax.sharding.Sharding):
        raise TypeError(f"{caller}: `sample_sharding` must be a jax.sharding.Sharding, got {type(sample_sharding).__name__}")
    return SampleLayout(n, chunk_size, None if sample_sharding is None else _auto_axes(sample_sharding), sampler, r)


def chunk_sum(term: Callable[[Any], tuple[jax.Array, Any]], chunks: Any) -> tuple[jax.Array, Any]:
    """Σ_c term(chunk_c)[0] over the leading axis of ``chunks``, and the stacked term(chunk_c)[1].

    ``jax.checkpoint`` makes the reverse pass recompute each chunk's forward
    instead of storing it, so derivatives of any order need memory for one chunk.
    """

    def body(total, chunk):
        value, out = term(chunk)
        return total + value, out

    first = jax.eval_shape(term, jax.tree_util.tree_map(lambda x: x[0], chunks))[0]
    return jax.lax.scan(jax.checkpoint(body), jnp.zeros((), first.dtype), chunks)
