"""Tests of experiments.sharded_estimate: the sharded estimate against one device and the exact gradient.

A session's device count is fixed when JAX starts, so the README's command runs in a subprocess with 4
simulated CPU devices; the estimates of this session (as many devices as it has) are z-tested against the
exact gradient.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import logtrick as lt
from experiments import sharded_estimate as se

CONFIG = se.Config(num_samples=256, chunk_size=64, dim=3)
NUM_DEVICES, NUM_ESTIMATES = 4, 400


def assert_same_estimate(difference: float, max_abs_gradient: float) -> None:
    """Asserts that two estimates from the same samples differ by float reassociation only."""
    assert difference <= 1e-5 * max_abs_gradient, (
        f"estimates differ: max |Δ| = {difference:.3g} > 1e-5 × max |gradient| {max_abs_gradient:.3g}")


@pytest.fixture(scope="module")
def estimates() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """NUM_ESTIMATES sharded estimates from independent keys, and the exact gradient (closed form)."""
    loc, log_scale, _ = se.inputs(CONFIG)
    estimate = se.make_estimate(CONFIG.num_samples, CONFIG.chunk_size, se.sample_sharding())
    keys = jax.random.split(jax.random.key(1), NUM_ESTIMATES)
    draws = [se.local(estimate(loc, log_scale, np.asarray(jax.random.key_data(k)))) for k in keys]
    return jax.tree_util.tree_map(lambda *g: np.stack(g), *draws), se.exact_gradient(loc, log_scale)


def test_command_on_four_devices_equals_one_device(tmp_path):
    """The README's command on 4 simulated devices: 64 samples each, and the same key gives the one-device
    estimate up to float reassociation."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={NUM_DEVICES}"
    command = [sys.executable, "-m", "experiments.sharded_estimate", "--num-samples", str(CONFIG.num_samples),
               "--chunk-size", str(CONFIG.chunk_size), "--dim", str(CONFIG.dim), "--out", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True, cwd=pathlib.Path(__file__).parents[1],
                   env={**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"})
    result = json.loads((tmp_path / "sharded_estimate.json").read_text())
    assert result["num_devices"] == NUM_DEVICES
    assert result["samples_per_device"] * NUM_DEVICES == CONFIG.num_samples
    assert_same_estimate(result["max_abs_difference_one_device"], result["max_abs_gradient"])
    assert result["samples_per_second"] > 0


def test_same_estimate_check_rejects_other_samples(estimates):
    """The check above rejects two estimates from different keys: it compares the samples, not only the sizes."""
    drawn, _ = estimates
    difference = max(float(np.max(np.abs(g[0] - g[1]))) for g in drawn.values())
    with pytest.raises(AssertionError, match="estimates differ"):
        assert_same_estimate(difference, max(float(np.max(np.abs(g[0]))) for g in drawn.values()))


def test_sharded_estimates_are_unbiased(estimates):
    """Statistical: NUM_ESTIMATES sharded estimates z-tested against jax.grad of the closed form; the same test
    rejects them with the loc gradient's sign flipped."""
    drawn, exact = estimates
    lt.testing.assert_unbiased(drawn, exact)
    with pytest.raises(AssertionError, match="estimates are biased"):
        lt.testing.assert_unbiased({**drawn, "loc": -drawn["loc"]}, exact)
