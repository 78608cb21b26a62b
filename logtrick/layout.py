"""How the samples of one estimate are laid out: in chunks for memory, sharded across devices.

Layout never changes an estimator's mathematics: the estimators compute one
chunk of samples the same way whatever the layout, and :class:`SampleLayout`
says how many chunks there are and where their samples live.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from logtrick import _checks


class SampleLayout(NamedTuple):
    """``num_samples`` samples in chunks of ``chunk``, optionally with the sample axis on ``sharding``."""

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


def sample_layout(num_samples: Any, chunk_size: Any, sample_sharding: Any, *, minimum: int, multiple: int = 1,
                  caller: str) -> SampleLayout:
    """Checks the layout arguments of an estimator, naming each one in its error.

    Args:
      num_samples: N, an int ≥ ``minimum``.
      chunk_size: None (one chunk) or a positive int dividing N.
      sample_sharding: None or a ``jax.sharding.Sharding``.
      minimum: the fewest samples the estimator is defined for.
      multiple: N and the chunk size must be multiples of it (2 for antithetic pairs).
      caller: the estimator's name.
    """
    n = _checks.num_samples(num_samples, minimum=minimum, caller=caller)
    if chunk_size is None:
        chunk_size = n
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1 or n % chunk_size:
        raise ValueError(f"{caller}: `chunk_size` must be a positive int dividing num_samples={n}, got {chunk_size!r}")
    if chunk_size % multiple:
        raise ValueError(f"{caller}: `num_samples` and `chunk_size` must be multiples of {multiple}, "
                         f"got {n} and {chunk_size}")
    if sample_sharding is not None and not isinstance(sample_sharding, jax.sharding.Sharding):
        raise TypeError(f"{caller}: `sample_sharding` must be a jax.sharding.Sharding, got {type(sample_sharding).__name__}")
    return SampleLayout(n, chunk_size, None if sample_sharding is None else _auto_axes(sample_sharding))


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
