"""Tests of experiments.sharded_estimate: the sharded estimate against one device and the exact gradient.

The samples are laid over every device of the session: one in the main test
session, 4 in the session that `make test` runs with
XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import jax
import numpy as np

import logtrick as lt
from experiments import sharded_estimate as se

CONFIG = se.Config(num_samples=256, chunk_size=64, dim=3)


def test_sharded_estimate_equals_one_device():
    """Same key: the sharded (and chunked) estimate is the one-device estimate up to float reassociation."""
    result = se.run(CONFIG)
    assert result["num_devices"] == jax.device_count()
    assert result["samples_per_device"] * jax.device_count() == CONFIG.num_samples
    assert result["max_abs_difference_one_device"] <= 1e-5 * result["max_abs_gradient"]
    assert np.isfinite(result["relative_error_loc"]) and result["samples_per_second"] > 0


def test_sharded_estimates_are_unbiased():
    """Statistical: 40 sharded estimates from independent keys z-tested against jax.grad of the closed form."""
    loc, log_scale, _ = se.inputs(CONFIG)
    estimate = se.make_estimate(CONFIG.num_samples, None, se.sample_sharding())
    keys = jax.random.split(jax.random.key(1), 40)
    draws = [se.local(estimate(loc, log_scale, np.asarray(jax.random.key_data(k)))) for k in keys]
    estimates = jax.tree_util.tree_map(lambda *g: np.stack(g), *draws)
    lt.testing.assert_unbiased(estimates, se.exact_gradient(loc, log_scale))
