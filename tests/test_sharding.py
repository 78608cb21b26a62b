"""Estimators with the sample axis sharded across 4 (forced host) devices.

The tests marked `sharded` need 4 devices: `make test` runs the whole suite
with XLA_FLAGS=--xla_force_host_platform_device_count=4 (see the Makefile);
a plain `pytest` on one device skips them. Everything else runs on the first
device either way.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import logtrick as lt

CPUS = jax.devices("cpu")
sharded = pytest.mark.skipif(len(CPUS) < 4, reason="needs 4 devices; `make test` forces 4 host devices")
N, D = 64, 3
PARAMS = {"loc": jnp.array([0.5, -1.0, 2.0]), "log_scale": jnp.array([0.0, -0.5, 0.3])}
W = jnp.array([1.0, -0.5, 2.0])
F = lambda x, w: jnp.dot(w, jnp.cos(2.0 * x))


def sharding():
    return NamedSharding(Mesh(np.array(CPUS[:4]), ("samples",)), PartitionSpec("samples"))


ESTIMATORS = {
    "score": lambda **kw: lt.score_function(F, lt.families.normal(), num_samples=N, **kw),
    "score, leave-one-out": lambda **kw: lt.score_function(F, lt.families.normal(), num_samples=N,
                                                           baseline=lt.baselines.leave_one_out(), **kw),
    "score, moving average": lambda **kw: lt.score_function(F, lt.families.normal(), num_samples=N,
                                                            baseline=lt.baselines.moving_average(0.5), **kw),
    "score, chunked": lambda **kw: lt.score_function(F, lt.families.normal(), num_samples=N, chunk_size=16,
                                                     baseline=lt.baselines.leave_one_out(), **kw),
    "pathwise": lambda **kw: lt.pathwise(F, lt.families.normal().sample, num_samples=N, **kw),
    "score, rqmc, leave-one-out": lambda **kw: lt.score_function(
        F, lt.families.normal(), num_samples=N, baseline=lt.baselines.leave_one_out(), sampler="rqmc",
        num_randomisations=4, **kw),
    "pathwise, rqmc, chunked": lambda **kw: lt.pathwise(F, lt.families.normal(), num_samples=N, sampler="rqmc",
                                                        chunk_size=16, **kw),
    "measure-valued": lambda **kw: lt.measure_valued(F, lt.families.normal(), num_samples=N, **kw),
}


def step(est):
    """The loss's value, new state, aux and gradients in params and in f's weights, jitted."""
    loss = lambda p, w, state, key: est.loss(p, state, key, w)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


@sharded
@pytest.mark.parametrize("name", ESTIMATORS)
def test_sharded_same_key_same_result_and_partitioned(name):
    plain, split = ESTIMATORS[name](), step(ESTIMATORS[name](sample_sharding=sharding()))
    state, run = plain.init(PARAMS), step(plain)
    key = jax.random.key(7)
    for _ in range(2):  # two steps, so stateful baselines carry state across
        out1, out2 = run(PARAMS, W, state, key), split(PARAMS, W, state, key)
        for x, y in zip(jax.tree_util.tree_leaves(out1), jax.tree_util.tree_leaves(out2)):
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)
        state, key = out1[0][1][0], jax.random.fold_in(key, 1)
    hlo = split.lower(PARAMS, W, state, key).compile().as_text()
    assert "all-reduce" in hlo
    chunk = 16 if "chunked" in name else N
    assert f"f32[{chunk // 4},{D}]" in hlo  # each device holds a quarter of the samples
    assert f"f32[{chunk},{D}]" not in hlo


@sharded
def test_sharded_on_make_mesh_default_explicit_axes():
    """jax.make_mesh gives Explicit axes by default; the estimator lays samples out the same way."""
    mesh = jax.make_mesh((4,), ("samples",), devices=CPUS[:4])
    est = ESTIMATORS["score, chunked"](sample_sharding=NamedSharding(mesh, PartitionSpec("samples")))
    g1 = jax.jit(ESTIMATORS["score, chunked"]().estimate)(PARAMS, (), jax.random.key(1), W)[0]
    g2 = jax.jit(est.estimate)(PARAMS, (), jax.random.key(1), W)[0]
    for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)


@sharded
def test_sharded_estimates_unbiased():
    """Statistical: sharded leave-one-out estimates in params and in f's weights against the closed form."""
    run = step(ESTIMATORS["score, leave-one-out"](sample_sharding=sharding()))
    draws = [run(PARAMS, W, (), k)[1] for k in jax.random.split(jax.random.key(0), 60)]
    estimates = jax.tree_util.tree_map(lambda *g: jnp.stack(g), *draws)
    exact = lambda p, w: jnp.dot(w, jnp.exp(-2.0 * jnp.exp(2.0 * p["log_scale"])) * jnp.cos(2.0 * p["loc"]))
    lt.testing.assert_unbiased(estimates, jax.grad(exact, argnums=(0, 1))(PARAMS, W))


def test_sample_sharding_must_be_a_sharding():
    with pytest.raises(TypeError, match="`sample_sharding`"):
        lt.score_function(F, lt.families.normal(), num_samples=N, sample_sharding=PartitionSpec("samples"))
