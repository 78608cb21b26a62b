"""DiCE Hessians in the iterated prisoner's dilemma: estimated vs exact, and LOLA with sampled second derivatives.

Two agents play the iterated prisoner's dilemma (payoffs CC -1/-1, CD -3/0,
DC 0/-3, DD -2/-2, agent 1's move first) with memory-1 policies: five logits
each, the probability of cooperating on the first move and after CC, CD, DC,
DD (as each agent sees the last round, own move first). Over the T-step
horizon the discounted value of both agents is a linear solve,

    V = p₀ᵀ Σ_{t<T} (γP)^t r = p₀ᵀ (I − γP)⁻¹ (I − (γP)^T) r,

with p₀ the distribution of the first round's outcome, P the 4×4 outcome
transition matrix and r the 4×2 payoffs (T = ∞ drops the last factor), so
``jax.grad`` and ``jax.hessian`` of it are the exact derivatives. The sampled
version rolls out N episodes of T = 150 rounds and takes the same derivatives
of the mean ``lt.rl.dice_objective`` of agent 1's return, with both agents'
log-probabilities in the magic box (so derivatives in either agent's logits
are unbiased):

    dice          (1/N) Σ_i Σ_t γ^t r_{i,t} □(L_{i,≤t})
    loaded_dice   dice + (1/N) Σ_i Σ_t b_{i,t} (□(L_{i,<t}) − □(L_{i,≤t})),
                  b_{i,t} the leave-one-out mean of the reward-to-go at step t

where L_{i,≤t} sums both agents' log π up to round t. Two studies:

1. error vs N at a random policy pair: the gradient of V₁ in θ₁, its Hessian
   ∂²V₁/∂θ₁² and the mixed ∂²V₁/∂θ₁∂θ₂ that LOLA needs; relative RMS error
   and bias (``lt.testing.accuracy``; a 1/√N line for an unbiased
   estimator), the correlation of the entries with the exact ones (the DiCE
   paper's check against the exact value function, here per N), and a
   test for bias (``lt.testing.check_unbiased``);
2. LOLA (Taylor form, Foerster et al. 2018): agent i ascends
   ∇_i V_i + η (∂²V_j/∂θ_i∂θ_j) ∇_j V_i, a mixed Hessian-vector product
   (jax.jvp of jax.grad), with exact derivatives or with either DiCE estimate,
   the vector ∇_j V_i from a batch independent of the HVP's so the update is
   unbiased; naive learners (η = 0) for contrast, all from the same random
   initialisations.

    python -m experiments.ipd_hessian [--quick]

writes ``results/ipd_hessian.json`` and ``results/ipd_hessian.png``.

References:
  Foerster et al., "DiCE: The Infinitely Differentiable Monte Carlo Estimator", 2018.
  Foerster et al., "Learning with Opponent-Learning Awareness", 2018.
  Mao et al., "A Baseline for Any Order Gradient Estimation in Stochastic
  Computation Graphs", 2019.
  Farquhar et al., "Loaded DiCE: Trading off Bias and Variance in Any-Order
  Score Function Estimators for Reinforcement Learning", 2019.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import logtrick as lt
from experiments import common

# Payoffs (agent 1, agent 2) of the outcomes CC, CD, DC, DD, agent 1's move first.
PAYOFFS = jnp.array([[-1.0, -1.0], [-3.0, 0.0], [0.0, -3.0], [-2.0, -2.0]])
# Agent 2's logits in the global order (start, CC, CD, DC, DD): it sees CD as DC.
AGENT_2_VIEW = jnp.array([0, 1, 3, 2, 4])
METHODS = ("naive", "lola", "lola_loaded_dice", "lola_dice")
QUANTITIES = ("gradient", "hessian", "mixed_hessian")
LABELS = {"gradient": r"gradient $\nabla_{\theta_1} V_1$", "hessian": r"Hessian $\nabla^2_{\theta_1} V_1$",
          "mixed_hessian": r"mixed $\nabla_{\theta_1}\nabla_{\theta_2} V_1$",
          "dice": "DiCE", "loaded_dice": "DiCE + RLOO baseline (Loaded DiCE)"}
COLORS = {"gradient": "tab:blue", "hessian": "tab:red", "mixed_hessian": "tab:green"}
STYLES = {"dice": "-", "loaded_dice": "--"}
METHOD_LABELS = {"naive": "naive learners (exact gradients)", "lola": "LOLA, exact",
                 "lola_loaded_dice": "LOLA, Loaded DiCE estimates", "lola_dice": "LOLA, DiCE estimates"}
METHOD_COLORS = {"naive": "tab:red", "lola": "k", "lola_loaded_dice": "tab:blue", "lola_dice": "tab:orange"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      gamma: discount γ.
      horizon: T, rounds per sampled episode (and of the exact value).
      batch_sizes: the N of the error study.
      num_estimates: independent estimates per N (every estimator on the same batches).
      check_batch: N of the z-test for bias.
      check_estimates: independent estimates in the z-test.
      lola_steps: LOLA / naive learning steps.
      lola_seeds: random initialisations, θ ~ N(0, init_scale²).
      lola_batch: episodes per DiCE batch in LOLA (two batches a step).
      learning_rate: α, gradient ascent on the average reward per round (1 − γ) V.
      lookahead: η, the opponent's assumed step size on (1 − γ) V.
      init_scale: standard deviation of the initial and evaluation logits.
      seed: PRNG seed.
    """

    gamma: float = 0.96
    horizon: int = 150
    batch_sizes: tuple[int, ...] = (4, 16, 64, 256, 1024, 4096)
    num_estimates: int = 32
    check_batch: int = 16
    check_estimates: int = 1000
    lola_steps: int = 200
    lola_seeds: int = 4
    lola_batch: int = 128
    learning_rate: float = 2.0
    lookahead: float = 10.0
    init_scale: float = 1.0
    seed: int = 0


# The bias check reuses the sweep's compiled function: same N and number of estimates.
QUICK = Config(horizon=30, batch_sizes=(16,), num_estimates=40, check_estimates=40, lola_steps=5, lola_seeds=2,
               lola_batch=16)


class Episodes(NamedTuple):
    """N sampled episodes of T rounds.

    Attributes:
      states: the last round's outcome before each round, 0 = start, 1..4 = CC..DD, (N, T) int.
      cooperate_1: agent 1's moves, 1 = cooperate, (N, T) float.
      cooperate_2: agent 2's moves, (N, T) float.
      rewards: payoffs of each round, (N, T, 2).
    """

    states: jax.Array
    cooperate_1: jax.Array
    cooperate_2: jax.Array
    rewards: jax.Array


def cooperate_logits(theta_1: jax.Array, theta_2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Both agents' cooperation logits indexed by the global state (start, CC, CD, DC, DD), each (5,)."""
    return theta_1, theta_2[AGENT_2_VIEW]


def exact_values(theta_1: jax.Array, theta_2: jax.Array, *, gamma: float, horizon: int | None) -> jax.Array:
    """Both agents' discounted values V = p₀ᵀ (I − γP)⁻¹ (I − (γP)^T) r, shape (2,); T = None is infinite."""
    l1, l2 = cooperate_logits(theta_1, theta_2)
    p1, p2 = jax.nn.sigmoid(l1), jax.nn.sigmoid(l2)
    outcomes = jnp.stack([p1 * p2, p1 * (1 - p2), (1 - p1) * p2, (1 - p1) * (1 - p2)], axis=1)  # (5, 4)
    p0, transitions = outcomes[0], outcomes[1:]
    discounted = gamma * transitions
    target = PAYOFFS if horizon is None else PAYOFFS - jnp.linalg.matrix_power(discounted, horizon) @ PAYOFFS
    return p0 @ jnp.linalg.solve(jnp.eye(4) - discounted, target)


def rollout(theta_1: jax.Array, theta_2: jax.Array, key: jax.Array, *, num_episodes: int, horizon: int) -> Episodes:
    """N episodes of T rounds played by the two policies (no gradient)."""
    l1, l2 = jax.lax.stop_gradient(cooperate_logits(theta_1, theta_2))
    # Drawn 1-D and reshaped: XLA compiles threefry for a multi-dimensional shape far more slowly.
    u = jax.random.uniform(key, (horizon * 2 * num_episodes,)).reshape(horizon, 2, num_episodes)

    def step(state, u_t):
        c1 = u_t[0] < jax.nn.sigmoid(l1[state])
        c2 = u_t[1] < jax.nn.sigmoid(l2[state])
        outcome = 2 * (~c1) + (~c2)
        return outcome + 1, (state, c1, c2, PAYOFFS[outcome])

    _, (states, c1, c2, rewards) = jax.lax.scan(step, jnp.zeros(num_episodes, jnp.int32), u)
    return Episodes(states.T, c1.T.astype(jnp.float32), c2.T.astype(jnp.float32), jnp.swapaxes(rewards, 0, 1))


def no_baseline(to_go: jax.Array) -> None:
    """DiCE: no baseline."""
    del to_go


def leave_one_out(to_go: jax.Array) -> jax.Array:
    """Loaded DiCE: the other episodes' mean reward-to-go at the same round, (N, T)."""
    return lt.baselines.leave_one_out_mean(to_go, axis=0)


# estimator: the baseline b_{i,t} of the DiCE objective, from the reward-to-go (N, T).
BASELINES = {"dice": no_baseline, "loaded_dice": leave_one_out}


def surrogate(theta_1: jax.Array, theta_2: jax.Array, episodes: Episodes, *, agent: int, gamma: float,
              estimator: str) -> jax.Array:
    """The mean ``lt.rl.dice_objective`` of one agent's discounted return; see the module docstring.

    Args:
      theta_1, theta_2: the agents' logits, each (5,); differentiated.
      episodes: N ≥ 2 episodes sampled from the same logits.
      agent: 0 or 1, whose payoffs.
      gamma: the discount γ.
      estimator: a key of ``BASELINES``.

    Returns:
      A scalar whose value is the sample mean of the discounted return and
      whose derivatives of every order are unbiased for those of the value.
    """
    l1, l2 = cooperate_logits(theta_1, theta_2)
    s = episodes.states
    log_pi = (jax.nn.log_sigmoid((2 * episodes.cooperate_1 - 1) * l1[s])
              + jax.nn.log_sigmoid((2 * episodes.cooperate_2 - 1) * l2[s]))
    rewards = episodes.rewards[..., agent]
    discounts = jnp.full_like(rewards, gamma)
    b = BASELINES[estimator](jax.vmap(lt.rl.reward_to_go)(rewards, discounts))
    return jnp.mean(jax.vmap(lt.rl.dice_objective)(log_pi, rewards, discounts, b))


def derivatives(value_fn: Callable[[jax.Array, jax.Array], jax.Array], theta_1: jax.Array,
                theta_2: jax.Array) -> dict[str, jax.Array]:
    """∇_{θ₁} V (5,), ∇²_{θ₁} V (5, 5) and ∇_{θ₁}∇_{θ₂} V (5, 5) of ``value_fn(θ₁, θ₂)``, forward over reverse."""

    def grads(a):
        g = jax.grad(value_fn, argnums=(0, 1))(a, theta_2)
        return g, g[0]

    (hessian, mixed_transposed), gradient = jax.jacfwd(grads, has_aux=True)(theta_1)
    return {"gradient": gradient, "hessian": hessian, "mixed_hessian": mixed_transposed.T}


def estimates(config: Config, num_episodes: int, num_estimates: int, theta_1: jax.Array, theta_2: jax.Array,
              key: jax.Array) -> dict[str, dict[str, jax.Array]]:
    """``{estimator: derivatives}`` of agent 1's value, each leaf with a leading axis of ``num_estimates``.

    Each estimate comes from its own batch of N episodes, shared by every
    estimator (common random numbers). ``draw_estimates`` is it compiled.
    """

    def estimate(k):
        episodes = rollout(theta_1, theta_2, k, num_episodes=num_episodes, horizon=config.horizon)
        return {e: derivatives(lambda a, b, e=e: surrogate(a, b, episodes, agent=0, gamma=config.gamma, estimator=e),
                               theta_1, theta_2) for e in BASELINES}

    batch_size = max(1, min(num_estimates, 2048 // num_episodes))
    return jax.lax.map(estimate, jax.random.split(key, num_estimates), batch_size=batch_size)


# Compiled with XLA's optimisations: at the study's largest N they make the run several times faster.
draw_estimates = jax.jit(estimates, static_argnums=(0, 1, 2))


def correlation(estimates: np.ndarray, exact: np.ndarray) -> float:
    """The mean over estimates of the correlation of their entries with the exact ones."""
    est, ref = estimates.reshape(len(estimates), -1), exact.reshape(-1)
    centred, ref_centred = est - est.mean(axis=1, keepdims=True), ref - ref.mean()
    return float(np.mean(centred @ ref_centred / (np.linalg.norm(centred, axis=1) * np.linalg.norm(ref_centred))))


def error_stats(estimates: dict[str, np.ndarray], exact: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per quantity: relative RMS error and bias (``lt.testing.accuracy``), and the correlation of entries."""
    out = {}
    for name in QUANTITIES:
        accuracy = lt.testing.accuracy(estimates[name], exact[name])
        out[name] = {"relative_rmse": accuracy.relative_rmse, "correlation": correlation(estimates[name], exact[name]),
                     "relative_bias": accuracy.relative_bias}
    return out


def z_test(estimates: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """``lt.testing.check_unbiased`` of ``estimates`` against ``exact``: its max |statistic|, threshold, verdict."""
    report = lt.testing.check_unbiased(estimates, exact)
    return {"max_abs_z": report.max_abs_z, "threshold": report.threshold, "verdict": report.verdict}


def error_study(config: Config, theta_1: jax.Array, theta_2: jax.Array, key: jax.Array, *,
                progress: bool = False) -> dict[str, Any]:
    """Error of each estimator's derivatives of V₁ against the exact ones, per N (common random numbers)."""

    def exact_derivatives(horizon):
        value = lambda a, b: exact_values(a, b, gamma=config.gamma, horizon=horizon)[0]
        return jax.tree_util.tree_map(np.asarray, jax.jit(lambda a, b: derivatives(value, a, b))(theta_1, theta_2))

    exact, infinite = exact_derivatives(config.horizon), exact_derivatives(None)

    def draw(num_episodes, num_estimates, k):
        drawn = draw_estimates(config, num_episodes, num_estimates, theta_1, theta_2, k)
        return jax.tree_util.tree_map(np.asarray, drawn)

    k_sweep, k_check = jax.random.split(key)
    errors = {estimator: [] for estimator in BASELINES}
    for n in tqdm(config.batch_sizes, desc="derivative error vs N", disable=not progress):
        drawn = draw(n, config.num_estimates, jax.random.fold_in(k_sweep, n))
        for estimator in BASELINES:
            errors[estimator].append(error_stats(drawn[estimator], exact))
    drawn = draw(config.check_batch, config.check_estimates, k_check)
    bias_check = {estimator: {name: z_test(drawn[estimator][name], exact[name]) for name in QUANTITIES}
                  for estimator in BASELINES}
    return {
        "exact": jax.tree_util.tree_map(np.ndarray.tolist, exact),
        "exact_norm": {name: float(np.linalg.norm(exact[name])) for name in QUANTITIES},
        "truncation_relative_difference": {
            name: float(np.linalg.norm(exact[name] - infinite[name]) / np.linalg.norm(exact[name]))
            for name in QUANTITIES},
        "errors": errors,
        "bias_check": bias_check,
    }


def lola_directions(values_fn: Callable, hvp_values_fn: Callable, theta_1: jax.Array, theta_2: jax.Array, *,
                    lookahead: float) -> tuple[jax.Array, jax.Array]:
    """Both agents' LOLA ascent directions g_i = ∇_i V_i + η (∂²V_j/∂θ_i∂θ_j) ∇_j V_i.

    ``values_fn(θ₁, θ₂) -> (V₁, V₂)`` gives the gradients, ``hvp_values_fn``
    the mixed Hessian-vector products, as jax.jvp of jax.grad (forward over
    reverse). η = 0 is the naive learner.
    """
    d1, d2 = jax.jacrev(values_fn, argnums=(0, 1))(theta_1, theta_2)  # d_k[i] = ∇_{θ_k} V_i
    grad_1_of_v2 = lambda t2: jax.grad(lambda t1: hvp_values_fn(t1, t2)[1])(theta_1)  # θ₂ ↦ ∇_{θ₁} V₂
    grad_2_of_v1 = lambda t1: jax.grad(lambda t2: hvp_values_fn(t1, t2)[0])(theta_2)  # θ₁ ↦ ∇_{θ₂} V₁
    shaping_1 = jax.jvp(grad_1_of_v2, (theta_2,), (d2[0],))[1]  # (∂²V₂/∂θ₁∂θ₂) ∇_{θ₂} V₁
    shaping_2 = jax.jvp(grad_2_of_v1, (theta_1,), (d1[1],))[1]  # (∂²V₁/∂θ₂∂θ₁) ∇_{θ₁} V₂
    return d1[0] + lookahead * shaping_1, d2[1] + lookahead * shaping_2


def make_learn(config: Config, method: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``learn(thetas (2, 5), key) -> average reward per round (1 − γ) V of both agents, (steps + 1, 2)``.

    Methods: ``naive`` and ``lola`` with exact derivatives, ``lola_<estimator>``
    with DiCE estimates from two independent batches (gradients, then HVPs).
    """
    scale = 1.0 - config.gamma
    lookahead = 0.0 if method == "naive" else config.lookahead

    def exact(a, b):
        return scale * exact_values(a, b, gamma=config.gamma, horizon=config.horizon)

    def sampled(thetas, key):
        episodes = rollout(thetas[0], thetas[1], key, num_episodes=config.lola_batch, horizon=config.horizon)
        estimator = method.removeprefix("lola_")
        return lambda a, b: scale * jnp.stack([
            surrogate(a, b, episodes, agent=k, gamma=config.gamma, estimator=estimator) for k in (0, 1)])

    def step(thetas, key):
        if method in ("naive", "lola"):
            fns = (exact, exact)
        else:
            k_grad, k_hvp = jax.random.split(key)
            fns = (sampled(thetas, k_grad), sampled(thetas, k_hvp))
        g1, g2 = lola_directions(*fns, thetas[0], thetas[1], lookahead=lookahead)
        thetas = thetas + config.learning_rate * jnp.stack([g1, g2])
        return thetas, exact(thetas[0], thetas[1])

    def learn(thetas, key):
        _, curve = jax.lax.scan(step, thetas, jax.random.split(key, config.lola_steps))
        return jnp.concatenate([exact(thetas[0], thetas[1])[None], curve])

    return learn


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """Both studies; returns JSON-ready results."""
    k_theta, k_error, k_init, k_learn = jax.random.split(jax.random.key(config.seed), 4)
    theta_1, theta_2 = config.init_scale * jax.random.normal(k_theta, (2, 5))
    errors = error_study(config, theta_1, theta_2, k_error, progress=progress)
    inits = config.init_scale * jax.random.normal(k_init, (config.lola_seeds, 2, 5))
    learn_keys = jax.random.split(k_learn, config.lola_seeds)
    curves = {}
    for method in tqdm(METHODS, desc="LOLA and naive learning", disable=not progress):
        curves[method] = np.asarray(jax.jit(jax.vmap(make_learn(config, method)))(inits, learn_keys)).tolist()
    return {
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "theta": {"agent_1": np.asarray(theta_1).tolist(), "agent_2": np.asarray(theta_2).tolist()},
        **errors,
        "average_reward": curves,
    }


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Final average reward per round of agent 1 and 2 (mean over seeds), and how far each LOLA run is from exact."""
    curves = {m: np.asarray(c) for m, c in results["average_reward"].items()}
    return {m: {"final_mean": c[:, -1].mean(axis=0).tolist(),
                "mean_abs_difference_from_exact_lola": float(np.mean(np.abs(c - curves["lola"])))}
            for m, c in curves.items()}


def format_table(results: dict[str, Any]) -> str:
    """Relative RMS error and correlation per N, then the bias check and the learning summary."""
    counts = results["config"]["batch_sizes"]
    head = "".join(f" {q:>22}" for q in QUANTITIES)
    lines = [f"{'estimator':<12} {'N':>5}{head}", f"{'':<12} {'':>5}" + " {:>22}".format("rel.RMSE  corr") * 3]
    for estimator, rows in results["errors"].items():
        for n, row in zip(counts, rows):
            cells = "".join(f" {row[q]['relative_rmse']:>13.3f} {row[q]['correlation']:>8.3f}" for q in QUANTITIES)
            lines.append(f"{estimator:<12} {n:>5}{cells}")
    config = results["config"]
    lines.append(f"\nbias check, N={config['check_batch']}, {config['check_estimates']} estimates: max |z| (threshold)")
    for estimator, checks in results["bias_check"].items():
        cells = "  ".join(f"{q} {c['max_abs_z']:.2f} ({c['threshold']:.2f})" for q, c in checks.items())
        lines.append(f"  {estimator:<12} {cells}")
    lines.append("\ntruncation at T: relative difference from T = ∞: " + ", ".join(
        f"{q} {v:.4f}" for q, v in results["truncation_relative_difference"].items()))
    lines.append(f"\n{'method':<18} {'final reward/round (agent 1, 2)':>32} {'mean |Δ| from exact LOLA':>26}")
    for method, row in results["summary"].items():
        final = ", ".join(f"{v:.3f}" for v in row["final_mean"])
        lines.append(f"{method:<18} {final:>32} {row['mean_abs_difference_from_exact_lola']:>26.3f}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Error and correlation vs N (log-log, 1/√N reference), and the LOLA learning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    counts = np.asarray(config["batch_sizes"])
    fig, (ax_err, ax_corr, ax_learn) = plt.subplots(1, 3, figsize=(17, 5), constrained_layout=True)
    for estimator, rows in results["errors"].items():
        for q in QUANTITIES:
            style = dict(color=COLORS[q], ls=STYLES[estimator], marker="o", ms=4)
            ax_err.plot(counts, [r[q]["relative_rmse"] for r in rows], **style)
            ax_corr.plot(counts, [r[q]["correlation"] for r in rows], **style)
    anchor = results["errors"]["loaded_dice"][-1]["gradient"]["relative_rmse"] * np.sqrt(counts[-1])
    ax_err.plot(counts, 0.5 * anchor / np.sqrt(counts), "k:")
    for q in QUANTITIES:
        ax_err.plot([], [], color=COLORS[q], marker="o", ms=4, label=LABELS[q])
    ax_err.plot([], [], "k:", label=r"$\propto 1/\sqrt{N}$")
    for estimator in BASELINES:
        ax_corr.plot([], [], color="k", ls=STYLES[estimator], label=LABELS[estimator])
    ax_err.set(yscale="log", ylabel=r"relative RMS error $\sqrt{E\|\hat D - D\|^2} / \|D\|$",
               title="Error of estimated derivatives D of agent 1's value")
    ax_corr.set(ylim=(-0.1, 1.02), ylabel="correlation of estimated with exact entries",
                title="Correlation with the exact derivatives")
    for ax in (ax_err, ax_corr):
        ax.set(xscale="log", xlabel="episodes per estimate N")
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.minorticks_off()
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower left" if ax is ax_err else "upper left")

    steps = np.arange(config["lola_steps"] + 1)
    for method, curves in results["average_reward"].items():
        runs = np.asarray(curves).mean(axis=-1)
        for run_curve in runs:
            ax_learn.plot(steps, run_curve, color=METHOD_COLORS[method], lw=0.7, alpha=0.35)
        ax_learn.plot(steps, runs.mean(axis=0), color=METHOD_COLORS[method], lw=2, label=METHOD_LABELS[method],
                      ls="--" if method == "lola_loaded_dice" else "-")
    ax_learn.axhline(-1.0, color="gray", lw=0.8, ls=":")
    ax_learn.axhline(-2.0, color="gray", lw=0.8, ls=":")
    ax_learn.set(xlabel="learning step", xlim=(0, steps[-1]), ylabel="exact average reward per round, both agents",
                 title=f"LOLA, {config['lola_seeds']} random starts (mean bold); DiCE batches of "
                       f"{config['lola_batch']}")
    ax_learn.legend(fontsize=8, loc="center right")
    ax_learn.grid(alpha=0.3)
    fig.suptitle(f"Iterated prisoner's dilemma, memory-1 policies, γ={config['gamma']}, T={config['horizon']}: "
                 f"DiCE derivatives ({config['num_estimates']} estimates per N) vs the exact linear solve")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "ipd_hessian", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=format_table, plots={"": plot}, summary=summary)

if __name__ == "__main__":
    main()
