"""Tests of experiments.kl_truth_table: a small run's verdicts, and the recorded table against the derivations.

The small run is statistical: 320 estimates of 128 batches each (α = 1e-3 per test, a fixed key) on the
sequence policy, rows whose effects are large and whose estimates have light tails.
"""

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from experiments import common
from experiments import kl_truth_table as study

RESULTS = pathlib.Path(__file__).parents[1] / "results" / "kl_truth_table.json"
SMALL = ("rloo, token_sum, k1 in reward (sequence)", "rloo, token_sum, k1 loss (token)",
         "rloo, token_sum, k2 loss (sequence)", "rloo, token_sum, k3 loss (token)")
CONFIG = study.Config(num_estimates=320, batches_per_estimate=128, num_blocks=1, policies=("sequence",), only=SMALL)
QUARTER = "unbiased up to a constant factor 1/4"  # token_sum over T = 4 tokens


@pytest.fixture(scope="module")
def small_run():
    return {row["name"]: row for row in study.run(CONFIG, compiler_options=common.FAST_COMPILE)["rows"]}


def test_small_run_has_the_rows_and_their_base(small_run):
    """The selected rows and the row without KL they are compared with, each a line of the table."""
    assert set(small_run) == {*SMALL, "rloo, token_sum"}
    table = study.format_table({"config": dataclasses.asdict(CONFIG), "rows": list(small_run.values())})
    assert len([line for line in table.splitlines() if line.startswith("| rloo")]) == len(small_run)


def test_small_run_verdicts(small_run):
    """Statistical: k1 in the reward and k2 as a sequence-level loss follow ∇J up to token_sum's 1/T; k1 as a
    loss has a zero KL gradient; k3 as a per-token loss follows the per-token forward KL, and is rejected
    against ∇J and against the reverse and forward KLs' gradients."""
    expected = {"rloo, token_sum": (QUARTER, None),
                "rloo, token_sum, k1 in reward (sequence)": (QUARTER, "reverse KL"),
                "rloo, token_sum, k1 loss (token)": ("biased", "zero"),
                "rloo, token_sum, k2 loss (sequence)": (QUARTER, "reverse KL"),
                "rloo, token_sum, k3 loss (token)": ("biased", "per-token forward KL")}
    assert {name: (row["verdict"], row.get("follows")) for name, row in small_run.items()} == expected
    k3 = small_run["rloo, token_sum, k3 loss (token)"]
    assert min(k3["follows_z"]["reverse KL"], k3["follows_z"]["forward KL"]) > k3["threshold"]


def recorded(policy: str, *names: str) -> list[dict]:
    rows = {(row["policy"], row["name"]): row for row in json.loads(RESULTS.read_text())["rows"]}
    return [rows[policy, name] for name in names]


KL = "rloo, token_sum, "
# (policy, row): (verdict, KL term follows), the known derivations (module docstring)
DERIVED = {
    **{("sequence", f"{a}, token_sum"): (QUARTER, None) for a in ("reinforce", "rloo", "baseline")},
    ("sequence", "dr_grpo, token_sum"): ("unbiased up to a constant factor 3/16", None),
    ("sequence", KL + "k1 in reward (sequence)"): (QUARTER, "reverse KL"),
    ("sequence", KL + "k1 in reward (token)"): (QUARTER, "reverse KL"),
    ("sequence", KL + "k1 loss (token)"): ("biased", "zero"),
    ("sequence", KL + "k1 loss (sequence)"): ("biased", "zero"),
    ("sequence", KL + "k2 loss (sequence)"): (QUARTER, "reverse KL"),
    ("sequence", KL + "k3 loss (sequence)"): ("biased", "forward KL"),
    ("sequence", KL + "k2 loss (token)"): ("biased", "per-token reverse KL"),
    ("sequence", KL + "k3 loss (token)"): ("biased", "per-token forward KL"),
    ("sequence", KL + "ρ·k3 loss (sequence, ρ differentiable)"): (QUARTER, "reverse KL"),
    ("sequence", KL + "ρ·k3 loss (token, ρ differentiable)"): ("biased", "per-token reverse KL"),
    # off policy the PPO loss's per-token ratios bias the reward part; the KL term follows what it should
    ("sequence", "rloo, token_sum, off policy"): ("biased", None),
    ("sequence", KL + "ρ·k3 loss (sequence, ρ differentiable), off policy"): ("biased", "reverse KL"),
    ("sequence", KL + "ρ·k3 loss (sequence, ρ detached), off policy"): ("biased", "forward KL"),
    ("sequence", KL + "ρ·k3 loss (token, ρ differentiable), off policy"): ("biased", "per-token reverse KL"),
    ("sequence", "grpo, sequence_mean, k3 loss (token)"): ("biased", "neither"),
    ("sequence", "dr_grpo, token_sum, k1 in reward (sequence)"): ("unbiased up to a constant factor 3/16",
                                                                   "reverse KL"),
    # one token: per-token and per-sequence ratios coincide, so DeepSeek-V3.2's ρ·k3 is the reverse KL's
    **{("bandit", f"{a}, token_sum"): ("unbiased", None) for a in ("reinforce", "rloo", "baseline")},
    ("bandit", "dr_grpo, token_sum"): ("unbiased up to a constant factor 3/4", None),
    ("bandit", "rloo, token_sum, off policy"): ("unbiased", None),
    ("bandit", KL + "k1 in reward (sequence)"): ("unbiased", "reverse KL"),
    ("bandit", KL + "k1 loss (sequence)"): ("biased", "zero"),
    ("bandit", KL + "k2 loss (sequence)"): ("unbiased", "reverse KL"),
    ("bandit", KL + "k3 loss (sequence)"): ("biased", "forward KL"),
    ("bandit", KL + "ρ·k3 loss (token, ρ differentiable)"): ("unbiased", "reverse KL"),
    ("bandit", KL + "ρ·k3 loss (token, ρ differentiable), off policy"): ("unbiased", "reverse KL"),
    ("bandit", KL + "ρ·k3 loss (token, ρ detached), off policy"): ("biased", "forward KL"),
    ("length", "rloo, token_sum"): (QUARTER, None),
    ("length", "dr_grpo, token_sum"): ("unbiased up to a constant factor 3/16", None),
}


@pytest.mark.parametrize("policy, name", list(DERIVED), ids=lambda x: str(x))
def test_recorded_verdicts_are_the_derivations(policy, name):
    """results/kl_truth_table.json, as the README shows it, gives each derived row its derived verdict."""
    (row,) = recorded(policy, name)
    assert (row["verdict"], row.get("follows")) == DERIVED[policy, name]


def test_recorded_std_normalisation_and_length_weighting_are_biased():
    """GRPO's std (and REINFORCE++'s), and every token_mean and sequence_mean aggregation, are biased on the
    sequence policy and the length study; there sequence_mean's 1/|o| moves E[length] up along E ĝ against
    ∇E[r], by many standard errors, and token_sum does not; no recorded row is inconclusive."""
    rows = json.loads(RESULTS.read_text())["rows"]
    for row in rows:
        assert row["verdict"] != "inconclusive", row["name"]
        if row["policy"] != "bandit" and row["kl"] == "none" and row["on_policy"] and (
                row["advantage"] in ("grpo", "reinforce_pp") or row["aggregation"] != "token_sum"):
            assert row["verdict"] == "biased", (row["policy"], row["name"])
    for row in recorded("length", *(f"{a}, sequence_mean" for a in ("rloo", "grpo", "dr_grpo"))):
        assert row["verdict"] == "biased"
        assert row["length_slope"] - row["length_slope_exact"] > 10 * row["length_slope_se"], row["name"]
    for row in recorded("length", "rloo, token_sum", "dr_grpo, token_sum"):
        assert abs(row["length_slope"] - row["length_slope_exact"]) < 4 * row["length_slope_se"], row["name"]
    assert all(np.isfinite(row["relative_bias"]) for row in rows)
