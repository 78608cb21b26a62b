"""Tests of experiments.tabular: the gradient-error study's verdicts and error ordering at the uniform policy.

Statistical: the bias test of ``lt.testing.accuracy`` on independent estimates from
a fixed key, the experiment's own numbers.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from experiments import tabular as study
from logtrick.rl import tabular

CONFIG = dataclasses.replace(study.QUICK, num_estimates=400)
UNBIASED = ("plain", "reward_to_go", "rloo", "value")


@pytest.fixture(scope="module")
def errors():
    """``gradient_error`` at N = 4 on the quick configuration's MDPs, against the exact estimator's gradients."""

    @functools.partial(jax.jit, compiler_options=common.FAST_COMPILE)
    def setup(key):
        mdps = jax.vmap(lambda k: tabular.random_mdp(k, CONFIG.num_states, CONFIG.num_actions))(
            jax.random.split(key, CONFIG.num_mdps))
        logits = jnp.zeros((CONFIG.num_mdps, CONFIG.num_states, CONFIG.num_actions))
        exact = jax.vmap(study.gradient_fn(CONFIG, "exact", 1), (0, 0, None))(mdps, logits, key)
        by_grad = jax.vmap(lambda m, x: jax.grad(tabular.exact_return, argnums=1)(
            m, x, horizon=CONFIG.horizon, gamma=CONFIG.gamma))(mdps, logits)
        return mdps, logits, exact, by_grad

    mdps, logits, exact, by_grad = setup(jax.random.key(0))
    np.testing.assert_array_equal(exact, by_grad)
    return study.gradient_error(CONFIG, 4, mdps, logits, np.asarray(exact, np.float64), jax.random.key(2))


def test_unbiased_variants_pass_and_grpo_is_rejected(errors):
    """Statistical: the study's 'biased?' column: on every MDP each unbiased variant is consistent with the exact
    gradient (testable, and within the threshold), and the same test rejects GRPO."""
    for variant in UNBIASED:
        assert errors[variant]["verdict"] == ["consistent"] * CONFIG.num_mdps, (variant, errors[variant])
    assert errors["grpo"]["verdict"] == ["biased"] * CONFIG.num_mdps, errors["grpo"]


def test_reward_to_go_and_baselines_cut_the_error(errors):
    """On every MDP: reward-to-go below the whole return, and RLOO and the value baseline below reward-to-go."""
    rmse = {variant: np.asarray(e["relative_rmse"]) for variant, e in errors.items()}
    assert np.all(rmse["reward_to_go"] < rmse["plain"])
    assert np.all(rmse["rloo"] < rmse["reward_to_go"])
    assert np.all(rmse["value"] < rmse["reward_to_go"])
