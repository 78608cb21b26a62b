"""Smoke tests of experiments.rebar_toy and experiments.rebar_toy_highdim at --quick sizes, and checks of
two of the estimators as the experiments build them."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt
from experiments import bernoulli_toy, rebar_toy, rebar_toy_highdim

TOY = dataclasses.replace(rebar_toy.QUICK, targets=(0.45, 0.499), estimators=(("exact", 0), ("relax", 1)))
HIGHDIM = dataclasses.replace(rebar_toy_highdim.QUICK, dim=6, estimators=(("exact", 0),))


@pytest.fixture(scope="module")
def toy():
    return rebar_toy.run(TOY)


def test_toy_records_curves_and_writes_its_outputs(toy, tmp_path):
    """Strict JSON, curve lengths, a table row per (t, estimator), and the PNG."""
    json.dumps(toy, allow_nan=False)
    assert len(toy["steps"]) == TOY.num_steps // TOY.log_every + 1
    assert toy["checkpoints"] == list(range(0, TOY.num_steps, TOY.checkpoint_every))
    for data in toy["estimators"].values():
        for row in data["targets"].values():
            assert len(row["objective_mean"]) == len(toy["steps"])
            assert len(row["final_objective"]) == len(row["final_probability"]) == TOY.num_seeds
    for row in toy["estimators"]["relax"]["targets"].values():
        assert len(row["log10_variance"]) == len(toy["checkpoints"])
        assert all(v is not None and -12 < v < 2 for v in row["log10_variance"])
    assert len(bernoulli_toy.format_table(toy).splitlines()) == 2 + len(TOY.targets) * len(TOY.estimators)
    path = tmp_path / "toy.png"
    bernoulli_toy.plot(toy, path, rebar_toy.title(toy))
    assert path.stat().st_size > 10_000


def test_toy_exact_gradient_run_follows_adam(toy):
    """The exact gradient keeps one sign, so each Adam step moves θ by lr: σ(θ) = σ(-lr T), the loss falls."""
    expected = float(jax.nn.sigmoid(-TOY.learning_rate * TOY.num_steps))
    for row in toy["estimators"]["exact"]["targets"].values():
        np.testing.assert_allclose(row["final_probability"], expected, atol=2e-3)
        assert np.all(np.diff(row["objective_mean"]) < 0)


def test_highdim_maximises():
    """The high-dimensional toy climbs: with the exact gradient the objective rises at every record, stays
    within its range [t², (1 - t)²], and σ(θ) = σ(lr T) at the end."""
    results = rebar_toy_highdim.run(HIGHDIM)
    json.dumps(results, allow_nan=False)
    row = results["estimators"]["exact"]["targets"]["0.499"]
    lo, hi = results["objective_range"]["0.499"]
    assert np.all(np.diff(row["objective_mean"]) > 0)
    assert lo <= row["objective_mean"][0] and row["objective_mean"][-1] <= hi
    expected = float(jax.nn.sigmoid(HIGHDIM.learning_rate * HIGHDIM.num_steps))
    np.testing.assert_allclose(row["final_probability"], expected, atol=2e-3)


def _compiled(fn, *args):
    """``fn`` jitted and compiled for ``args`` with the experiments' fast XLA:CPU options."""
    return jax.jit(fn).lower(*args).compile(bernoulli_toy.COMPILER_OPTIONS)


def test_relax_with_the_experiments_control_variate_is_unbiased():
    """Statistical: 4000 RELAX estimates (gradients of its loss, as in the variance measurements) with
    η f(σ(z/λ)) + r_ρ(z), r_ρ given a nonzero output layer, at 6 random logits, z-tested against jax.grad of
    the closed-form objective."""
    config = dataclasses.replace(HIGHDIM, maximise=False)

    def draw(logits, cv_key, keys):
        k_hidden, k_output = jax.random.split(cv_key)
        est = bernoulli_toy.make_estimator(config, "relax", 1, jnp.asarray(0.3), k_hidden)
        state = est.init(logits)
        mlp = dict(state.cv_params["mlp"], w2=jax.random.normal(k_output, (config.hidden,)))
        state = state._replace(cv_params=dict(state.cv_params, mlp=mlp))
        exact = jax.grad(bernoulli_toy.objective)(logits, 0.3)
        return jax.vmap(jax.grad(lambda p, s, k: est.loss(p, s, k)[0]), (None, None, 0))(logits, state, keys), exact

    logits, cv_key = jax.random.normal(jax.random.key(0), (6,)), jax.random.key(1)
    keys = jax.random.split(jax.random.key(2), 4000)
    estimates, exact = _compiled(draw, logits, cv_key, keys)(logits, cv_key, keys)
    lt.testing.assert_unbiased(estimates, exact)
