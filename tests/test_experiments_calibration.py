"""experiments.calibration on a tiny configuration: its numbers are the test's own error rates and power."""

import dataclasses

import jax
import numpy as np
import pytest

from experiments import calibration

TINY = calibration.Config(num_runs=60, num_estimates=(300,), significances=(0.05,), power_estimates=(300,),
                          power_coordinates=(1,), power_biases=(0.0, 8.0), power_runs=40,
                          estimators=("pathwise_normal",))


@pytest.fixture(scope="module")
def results():
    return calibration.run(TINY)


def test_false_alarms_and_power(results):
    """Unbiased Gaussian estimates: rejections within the binomial bound; a bias of 8 standard errors found by
    both power curves' light-tailed estimator nearly always, and δ = 0 rejected at most at the bound."""
    (row,) = results["false_alarms"]["pathwise_normal"]
    assert row["rejected"] <= row["bound"] and row["calibrated"]
    light = results["power"]["light (pathwise_normal, loc[0])"][0]
    assert light["rejected"][1] >= 0.9 and light["rejected"][0] <= calibration.binomial_bound(0.01, 40)
    assert light["delta_95"] is not None and 0.0 < light["delta_95"] <= 8.0


def test_a_biased_problem_is_not_calibrated(results):
    """The same study against exact values off by 0.5 (3 to 5 standard errors of the mean at M = 300) reads as
    miscalibrated: the false-alarm column can fail."""
    problem = calibration.pathwise_normal()
    shifted = calibration.Problem(problem.draw, problem.exact + 0.5)
    (row,) = calibration.false_alarms(shifted, dataclasses.replace(TINY, num_runs=30), jax.random.key(3))
    assert not row["calibrated"] and row["rejected"] > 0.5


def test_sample_size_helper_catches_its_bias(results):
    r = results["sample_size"]["pathwise_normal"]
    assert r["estimates_needed"] >= 30 and r["caught"] >= 0.9
    assert np.isfinite(r["estimates_needed"])
