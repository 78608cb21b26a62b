"""REINFORCE variants against exact policy-gradient ascent on random tabular MDPs.

On a few random MDPs (``lt.rl.tabular.random_mdp``) with a softmax policy
over a logits table, compares gradient estimators built from sampled episodes

    plain          whole discounted return, no baseline
    reward_to_go   Σ_{t'≥t} γ^{t'} r_{t'} per step, no baseline
    rloo           reward-to-go minus the leave-one-out mean at the same step
    grpo           reward-to-go normalised over the group, (W - mean) / (std + ε)  (biased)
    value          reward-to-go minus γ^t V_t(s_t), the exact value (an oracle reference)

with ``exact``, the gradient of the dynamic-programming return
``lt.rl.tabular.exact_return``. Two studies:

Every method is an estimator under the library's contract
(``lt.rl.tabular.reinforce``, ``lt.rl.tabular.exact_estimator``), so one
training loop serves them all. Two studies:

1. training: Adam ascent on the logits from the uniform policy, every variant
   with the same step size; the exact return J of the current policy per step;
2. gradient error at the uniform policy versus the number of episodes N
   (``lt.testing.accuracy``): relative RMS error √E‖ĝ - ∇J‖² / ‖∇J‖ (a 1/√N
   line for unbiased estimators; GRPO levels off at its bias), the direction
   error 1 - E cos(ĝ, ∇J), and the measured bias with its z-test.

    python -m experiments.tabular [--quick]

writes ``results/tabular.json``, ``results/tabular_returns.png`` and
``results/tabular_gradient_error.png``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import logtrick as lt
from experiments import common
from logtrick.rl import tabular

# name: the options of lt.rl.tabular.reinforce.
VARIANTS = {
    "plain": dict(reward_to_go=False, baseline=None),
    "reward_to_go": dict(reward_to_go=True, baseline=None),
    "rloo": dict(reward_to_go=True, baseline="leave_one_out"),
    "grpo": dict(reward_to_go=True, baseline="grpo"),
    "value": dict(reward_to_go=True, baseline="value"),
}
LABELS = {
    "exact": "exact gradient",
    "plain": "REINFORCE (whole return)",
    "reward_to_go": "reward-to-go",
    "rloo": "reward-to-go + RLOO",
    "grpo": "reward-to-go + GRPO (biased)",
    "value": "reward-to-go + exact value (oracle)",
}
COLORS = {"exact": "k", "plain": "tab:red", "reward_to_go": "tab:orange", "rloo": "tab:blue",
          "grpo": "tab:green", "value": "tab:purple"}
STYLES = {"value": "--"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      num_mdps: random MDPs.
      num_states: S.
      num_actions: A.
      horizon: H, steps per episode.
      gamma: discount γ.
      num_steps: training steps.
      num_episodes: episodes per gradient estimate in training.
      num_seeds: training runs per (MDP, variant).
      learning_rate: Adam step size, the same for every variant.
      episode_counts: the N of the gradient-error study.
      num_estimates: independent estimates per (MDP, variant, N).
      seed: PRNG seed.
    """

    num_mdps: int = 3
    num_states: int = 10
    num_actions: int = 4
    horizon: int = 20
    gamma: float = 0.95
    num_steps: int = 300
    num_episodes: int = 16
    num_seeds: int = 4
    learning_rate: float = 0.05
    episode_counts: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256)
    num_estimates: int = 200
    seed: int = 0


QUICK = Config(num_mdps=2, num_states=4, num_actions=3, horizon=5, num_steps=20, num_seeds=2,
               episode_counts=(4,), num_estimates=40)


def make_exact(config: Config, mdp: tabular.MDP, num_episodes: int) -> lt.Estimator:
    """The exact gradient, as an estimator."""
    del num_episodes
    return tabular.exact_estimator(mdp, horizon=config.horizon, gamma=config.gamma)


def make_reinforce(options: dict[str, Any]) -> Callable[[Config, tabular.MDP, int], lt.Estimator]:
    """The factory of ``lt.rl.tabular.reinforce`` with ``options``."""

    def make(config, mdp, num_episodes):
        return tabular.reinforce(mdp, horizon=config.horizon, gamma=config.gamma, num_episodes=num_episodes,
                                 **options)

    return make


# name: (config, mdp, num_episodes) -> estimator.
METHODS = {"exact": make_exact, **{name: make_reinforce(options) for name, options in VARIANTS.items()}}


def gradient_fn(config: Config, method: str, num_episodes: int) -> Callable:
    """``(mdp, logits, key) -> ∇J`` estimate of one method."""

    def estimate(mdp, logits, key):
        return METHODS[method](config, mdp, num_episodes).estimate(logits, (), key)[0]

    return estimate


def make_train(config: Config) -> Callable[[tabular.MDP, jax.Array], dict[str, jax.Array]]:
    """``train(mdp, key) -> {variant: J}``, J after each of 0..num_steps Adam ascent steps from the uniform policy."""
    optimizer = optax.adam(config.learning_rate)

    def exact_return(mdp, logits):
        return tabular.exact_return(mdp, logits, horizon=config.horizon, gamma=config.gamma)

    def train_one(grad, mdp, key):
        logits = jnp.zeros((config.num_states, config.num_actions))

        def step(carry, step_key):
            logits, opt_state = carry
            updates, opt_state = optimizer.update(-grad(mdp, logits, step_key), opt_state)
            logits = optax.apply_updates(logits, updates)
            return (logits, opt_state), exact_return(mdp, logits)

        _, curve = jax.lax.scan(step, (logits, optimizer.init(logits)), jax.random.split(key, config.num_steps))
        return jnp.concatenate([exact_return(mdp, logits)[None], curve])

    def train(mdp, key):
        return {method: train_one(gradient_fn(config, method, config.num_episodes), mdp, key) for method in METHODS}

    return train


def gradient_error(config: Config, num_episodes: int, mdps: tabular.MDP, logits: jax.Array, exact: np.ndarray,
                   key: jax.Array) -> dict[str, Any]:
    """Accuracy of N-episode estimates, per variant and MDP.

    Returns, per variant, lists over MDPs of the fields of
    ``lt.testing.accuracy``: relative RMS error, relative bias
    ‖E ĝ - ∇J‖ / ‖∇J‖, E cos(ĝ, ∇J) (of one estimate), cos(E ĝ, ∇J) (of
    the mean), max |z| and its Bonferroni threshold. ``logits`` and ``exact``
    (the exact gradients) have a leading MDP axis. All variants share the
    sampled episodes of each estimate (common random numbers).
    """

    def all_variants(mdp, logits, key):
        return {variant: gradient_fn(config, variant, num_episodes)(mdp, logits, key) for variant in VARIANTS}

    keys = jax.random.split(key, config.num_mdps * config.num_estimates).reshape(config.num_mdps, -1)
    drawn = jax.jit(jax.vmap(jax.vmap(all_variants, (None, None, 0))))(mdps, logits, keys)
    out = {}
    for variant in VARIANTS:
        estimates = np.asarray(drawn[variant], np.float64)
        accuracies = [lt.testing.accuracy(e, x)._asdict() for e, x in zip(estimates, exact)]
        out[variant] = {field: [a[field] for a in accuracies] for field in lt.testing.Accuracy._fields}
    return out


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """Both studies; returns JSON-ready results."""
    k_mdp, k_train, k_error = jax.random.split(jax.random.key(config.seed), 3)
    mdps = jax.jit(jax.vmap(lambda k: tabular.random_mdp(k, config.num_states, config.num_actions)))(
        jax.random.split(k_mdp, config.num_mdps))
    train_keys = jax.random.split(k_train, config.num_mdps * config.num_seeds).reshape(config.num_mdps, -1)
    if progress:
        print("training all variants (one compiled function) ...", flush=True)
    train = jax.jit(jax.vmap(jax.vmap(make_train(config), (None, 0))))
    trained = train(mdps, train_keys)
    curves = {method: np.asarray(trained[method]).tolist() for method in METHODS}

    logits = jnp.zeros((config.num_mdps, config.num_states, config.num_actions))
    exact = jax.jit(jax.vmap(gradient_fn(config, "exact", 1), (0, 0, None)))(mdps, logits, k_error)
    exact = np.asarray(exact, np.float64)
    errors = {variant: [] for variant in VARIANTS}
    for n in tqdm(config.episode_counts, desc="gradient error vs N", disable=not progress):
        for variant, stats in gradient_error(config, n, mdps, logits, exact, jax.random.fold_in(k_error, n)).items():
            errors[variant].append(stats)

    return {
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "returns": curves,
        "gradient_error": errors,
    }


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant: final return (mean over MDPs and seeds), error at the training N, bias at the largest N."""
    config = results["config"]
    counts = config["episode_counts"]
    at = counts.index(config["num_episodes"]) if config["num_episodes"] in counts else 0
    rows = []
    for variant, curves in results["returns"].items():
        row = {"variant": variant, "final_return": float(np.mean(np.asarray(curves)[..., -1]))}
        if variant in results["gradient_error"]:
            errors = results["gradient_error"][variant]
            row.update(n_error=counts[at], relative_rmse=float(np.mean(errors[at]["relative_rmse"])),
                       n_bias=counts[-1], relative_bias=float(np.mean(errors[-1]["relative_bias"])),
                       max_abs_z=float(np.max(errors[-1]["max_abs_z"])), threshold=errors[-1]["threshold"][0],
                       cosine_of_mean=float(np.mean(errors[-1]["cosine_of_mean"])))
        rows.append(row)
    return rows


def format_table(results: dict[str, Any]) -> str:
    rows = summary_rows(results)
    threshold = rows[1]["threshold"]
    lines = [f"{'variant':<14} {'final J':>8} {'rel. RMSE':>10} {'rel. bias':>10} {'cos':>6} {'max |z|':>8}  biased?",
             f"{'':<14} {'':>8} {'N=' + str(rows[1]['n_error']):>10} {'N=' + str(rows[1]['n_bias']):>10}"
             f" {'':>6} {'':>8}  (|z| > {threshold:.2f})"]
    for row in rows:
        if "relative_rmse" in row:
            verdict = "yes" if row["max_abs_z"] > threshold else "no"
            lines.append(f"{row['variant']:<14} {row['final_return']:8.4f} {row['relative_rmse']:10.3f} "
                         f"{row['relative_bias']:10.3f} {row['cosine_of_mean']:6.3f} {row['max_abs_z']:8.1f}"
                         f"  {verdict}")
        else:
            lines.append(f"{row['variant']:<14} {row['final_return']:8.4f} {'-':>10} {'-':>10} {'-':>6} {'-':>8}")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_returns(results: dict[str, Any], path: pathlib.Path) -> None:
    """One panel per MDP: exact return of the policy vs training step, mean ± s.e. over seeds."""
    plt = _pyplot()
    config = results["config"]
    num_mdps = config["num_mdps"]
    fig, axes = plt.subplots(1, num_mdps, figsize=(5 * num_mdps, 4.2), constrained_layout=True, squeeze=False)
    steps = np.arange(config["num_steps"] + 1)
    for i, ax in enumerate(axes[0]):
        for variant, curves in results["returns"].items():
            runs = np.asarray(curves)[i]
            mean, se = runs.mean(axis=0), runs.std(axis=0, ddof=1) / np.sqrt(runs.shape[0])
            ax.plot(steps, mean, color=COLORS[variant], label=LABELS[variant], ls=STYLES.get(variant, "-"),
                    lw=2 if variant == "exact" else 1.3)
            ax.fill_between(steps, mean - se, mean + se, color=COLORS[variant], alpha=0.2, lw=0)
        ax.set(title=f"MDP {i + 1}", xlabel="Adam step", xlim=(0, steps[-1]))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(r"exact return $J(\theta)$ of the current policy")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Policy-gradient ascent on random MDPs (S={config['num_states']}, A={config['num_actions']}, "
                 f"H={config['horizon']}, γ={config['gamma']}), {config['num_episodes']} episodes per step, "
                 f"Adam lr {config['learning_rate']}; mean ± s.e. over {config['num_seeds']} seeds")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_gradient_error(results: dict[str, Any], path: pathlib.Path) -> None:
    """Log-log vs N (mean over MDPs): relative RMS error with a 1/√N reference, and 1 - E cos(ĝ, ∇J)."""
    plt = _pyplot()
    config = results["config"]
    counts = np.asarray(config["episode_counts"])
    fig, (ax_rmse, ax_cos) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for variant, errors in results["gradient_error"].items():
        style = dict(color=COLORS[variant], label=LABELS[variant], ls=STYLES.get(variant, "-"), marker="o", ms=4)
        ax_rmse.plot(counts, [np.mean(e["relative_rmse"]) for e in errors], **style)
        ax_cos.plot(counts, [1.0 - np.mean(e["cosine"]) for e in errors], **style)
    # The reference line runs at half the RLOO error at the largest N, below every curve.
    anchor = 0.5 * np.mean(results["gradient_error"]["rloo"][-1]["relative_rmse"]) * np.sqrt(counts[-1])
    ax_rmse.plot(counts, anchor / np.sqrt(counts), "k:", label=r"$\propto 1/\sqrt{N}$")
    ax_rmse.set(ylabel=r"relative RMS error $\sqrt{E\|\hat g - \nabla J\|^2} / \|\nabla J\|$",
                title="Error (GRPO levels off at its bias, mostly a scale)")
    ax_cos.set(ylabel=r"$1 - E[\cos(\hat g, \nabla J)]$", title="Direction error of one estimate")
    for ax in (ax_rmse, ax_cos):
        ax.set(xscale="log", yscale="log", xlabel="episodes per estimate N")
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.minorticks_off()
        ax.grid(alpha=0.3, which="both")
    ax_rmse.legend(fontsize=8)
    fig.suptitle(f"Policy-gradient estimates at the uniform policy, mean over {config['num_mdps']} MDPs, "
                 f"{config['num_estimates']} estimates per point")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "tabular", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=format_table, plots={"_returns": plot_returns, "_gradient_error": plot_gradient_error},
                summary=summary_rows)

if __name__ == "__main__":
    main()
