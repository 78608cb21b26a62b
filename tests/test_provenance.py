"""Tests of the data-flow analysis behind lt.graph: the credit it finds against brute-force dependence.

For each program of a plate z of 6 Bernoulli latents, the brute-force dependence of cost element c on z_j is
whether flipping z_j changes cost c at any of 16 random z. The analysis must never miss a dependence (that
would bias lt.graph); for the operations it follows element by element it must find exactly those.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

graph_module = importlib.import_module("logtrick.graph")
W = jnp.arange(6.0).reshape(3, 2) - 2.5


def _scan_prefix(z):
    def step(carry, z_t):
        return carry + z_t, carry * z_t + z_t
    return jax.lax.scan(step, 0.0, z)[1]


EXACT = {
    "elementwise": lambda z: z * jnp.arange(6.0) + jnp.sin(z),
    "reshape_transpose": lambda z: z.reshape(2, 3).T,
    "slice_concatenate": lambda z: jnp.concatenate([z[3:], z[:3] * 2]),
    "reverse": lambda z: z[::-1],
    "dot_general": lambda z: z.reshape(2, 3) @ W,
    "reduction": lambda z: z.reshape(2, 3).sum(axis=1),
    "broadcast": lambda z: z[:, None] * jnp.arange(1.0, 3.0),
    "cond": lambda z: jnp.stack([jax.lax.cond(z[0] > 0, lambda: z[1], lambda: 2 * z[2]), z[4]]),
    "split_stack": lambda z: jnp.stack(jnp.split(z, [2, 4])[::-1]),
    "jit": lambda z: jax.jit(lambda v: v[1:] - v[:-1])(z),
    "scan_per_step": _scan_prefix,
}
COARSE = {
    "gather": lambda z: z[jnp.array([2, 0])],
    "cumsum": lambda z: jnp.cumsum(z),
    "while": lambda z: jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2), (0, z[:2]))[1],
}


def _found(costs_of):
    def model(logits, key, sample):
        return costs_of(sample("z", lt.families.bernoulli(), logits, key))

    program = lambda logits, key: model(logits, key, graph_module._make_sample({}, {}, {}))
    closed = jax.make_jaxpr(program)(jnp.zeros(6), jax.random.key(0))
    return graph_module._credit(closed.jaxpr, len(closed.jaxpr.invars)).matrix > 0


def _brute_force(costs_of):
    flat = lambda z: jnp.ravel(costs_of(z))
    bases = jax.random.bernoulli(jax.random.key(1), 0.5, (16, 6)).astype(jnp.float32)
    flips = 1.0 - 2.0 * jnp.eye(6)

    def changed(z):
        return jax.vmap(lambda sign: flat(z) != flat(jnp.where(sign < 0, 1.0 - z, z)))(flips).T

    return np.asarray(jnp.any(jax.vmap(changed)(bases), axis=0))


@pytest.mark.parametrize("name", sorted(EXACT))
def test_followed_operations_are_credited_exactly(name):
    """The analysis finds exactly the brute-force dependence for the operations it follows."""
    np.testing.assert_array_equal(_found(EXACT[name]), _brute_force(EXACT[name]))


@pytest.mark.parametrize("name", sorted(COARSE))
def test_other_operations_are_credited_conservatively(name):
    """For the operations it does not follow element by element, the analysis over-approximates (coarser credit,
    still unbiased), never misses a dependence."""
    found, brute = _found(COARSE[name]), _brute_force(COARSE[name])
    assert np.all(found >= brute) and np.any(found > brute)


def _credit_of(model):
    program = lambda p, key: model(p, key, graph_module._make_sample({}, {}, {}))
    closed = jax.make_jaxpr(program)(jnp.array(0.0), jax.random.key(0))
    return graph_module._credit(closed.jaxpr, len(closed.jaxpr.invars)).matrix > 0


def test_site_inside_a_reversed_scan_is_credited_per_step():
    """A site drawn per step of a reversed scan is credited with the costs of the steps after it in the scan's
    order (lower indices) only; nested scans are checked in tests/test_graph.py."""
    bern = lt.families.bernoulli()

    def reversed_scan(p, key, sample):
        step = lambda c, k: (c + sample("a", bern, p, k), c)
        return jax.lax.scan(step, 0.0, jax.random.split(key, 3), reverse=True)[1]   # ys[t]: a at steps > t

    np.testing.assert_array_equal(_credit_of(reversed_scan), np.triu(np.ones((3, 3), bool), k=1))
