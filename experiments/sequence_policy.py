"""REINFORCE, RLOO and GRPO on a small autoregressive sequence policy, against the exact gradient.

An LLM in miniature: a GRU policy over a vocabulary of V tokens generates
sequences y = (y_1, …, y_L) token by token from a BOS token,

    log π_θ(y) = Σ_t log π_θ(y_t | y_<t),

and a black-box reward R(y) scores whole sequences: the fraction of positions
that match a target string, plus a bonus if y is a palindrome. The target is
not a palindrome, so matching it (R = 1) is a local optimum; the best
palindromes match half of it (R = 1/2 + bonus). With V = 4 and L = 6 the
objective is an exact sum over all 4^6 = 4096 sequences,

    J(θ) = Σ_y π_θ(y) R(y),

one batched log-probability evaluation, and ``jax.grad`` of it is the exact
gradient (the ``"exact"`` entry of :data:`METHODS`, J wrapped as an
estimator with ``lt.from_loss``). Every other method is ``lt.score_function``
with the policy as a family (:func:`policy`), G sequences per estimate, and a
baseline b_i, so that A_i = R_i - b_i (samples and baselines under
stop-gradient, one reverse pass):

    reinforce   A_i = R_i                                         unbiased
    rloo        A_i = R_i - mean_{j≠i} R_j                        unbiased (lt.baselines.leave_one_out)
    grpo        A_i = (R_i - mean_j R_j) / (std_j R_j + ε)         biased   (lt.baselines.group_normalised)

ĝ = (1/G) Σ_i A_i ∇ log π_θ(y_i). A GRPO estimate is a positive multiple
of the RLOO estimate from the same group, A^grpo = (G-1)/G · A^rloo / (std + ε),
so both point the same way; GRPO's bias is its weighting of groups by
1/std, a change of scale (about E[1/std]) and, where the spread of rewards
varies from group to group, of direction. Two studies:

1. gradient accuracy at the initial policy and after a few exact-gradient
   Adam steps, from many independent estimates: relative bias
   ‖E ĝ - ∇J‖ / ‖∇J‖ with the max |z| of the z-test of ``lt.testing``, the
   same z-test against the best multiple c ∇J (a bias of direction), total
   variance E‖ĝ - E ĝ‖² relative to ‖∇J‖², and the cosine of one estimate
   with ∇J;
2. training: Adam ascent with the same step size and the same number of
   reward evaluations (G per step) for every estimator, plus exact-gradient
   ascent; the exact J of the current policy against steps, over seeds.

    python -m experiments.sequence_policy [--quick]

writes ``results/sequence_policy.json`` and ``results/sequence_policy.png``.

References:
  Williams, "Simple statistical gradient-following algorithms for
  connectionist reinforcement learning", 1992.
  Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
  Free!", 2019.
  Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization
  for Learning from Human Feedback in LLMs", 2024.
  Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in
  Open Language Models", 2024.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

import logtrick as lt
from experiments import common

ESTIMATORS = ("reinforce", "rloo", "grpo")  # the sampled methods of METHODS, whose accuracy is studied
LABELS = {
    "exact": "exact gradient",
    "reinforce": "REINFORCE (no baseline)",
    "rloo": "RLOO",
    "grpo": "GRPO (biased)",
}
COLORS = {"exact": "k", "reinforce": "tab:red", "rloo": "tab:blue", "grpo": "tab:green"}

Params = Any


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      vocab_size: V, tokens 0..V-1 (the BOS token is V).
      target: the target string, length L, entries in 0..V-1.
      palindrome_bonus: added to R(y) when y reads the same backwards.
      hidden: GRU width (also the token-embedding width).
      group_size: G, sequences sampled per gradient estimate.
      num_estimates: independent estimates per estimator in the accuracy study.
      probe_steps: the accuracy study's policies: the initial one after this
        many exact-gradient Adam steps (increasing).
      num_steps: training steps (a multiple of ``log_every``).
      log_every: steps between evaluations of the exact J during training.
      num_seeds: training runs (initialisation and sampling) per method.
      learning_rate: Adam step size, the same for every method.
      grpo_eps: ε of the GRPO advantages.
      seed: PRNG seed.
    """

    vocab_size: int = 4
    target: tuple[int, ...] = (0, 1, 2, 3, 3, 1)
    palindrome_bonus: float = 1.0
    hidden: int = 16
    group_size: int = 8
    num_estimates: int = 4000
    probe_steps: tuple[int, ...] = (0, 10, 20)
    num_steps: int = 200
    log_every: int = 10
    num_seeds: int = 16
    learning_rate: float = 0.01
    grpo_eps: float = 1e-6
    seed: int = 0

    def __post_init__(self):
        if len(self.target) < 2 or not all(0 <= t < self.vocab_size for t in self.target):
            raise ValueError(f"Config: `target` needs length >= 2 and tokens in 0..{self.vocab_size - 1}, "
                             f"got {self.target}")
        if self.group_size < 2:
            raise ValueError(f"Config: `group_size` must be >= 2 for RLOO and GRPO, got {self.group_size}")
        if self.num_steps % self.log_every:
            raise ValueError(f"Config: `num_steps` must be a multiple of `log_every` ({self.log_every})")
        steps = self.probe_steps
        if not steps or steps[0] < 0 or any(a >= b for a, b in zip(steps, steps[1:])):
            raise ValueError(f"Config: `probe_steps` must be non-empty, increasing and >= 0, got {steps}")

    @property
    def length(self) -> int:
        """L, the sequence length."""
        return len(self.target)


QUICK = Config(vocab_size=3, target=(0, 1, 2, 2), hidden=8, num_estimates=200, probe_steps=(0, 5), num_steps=20,
               log_every=5, num_seeds=2)


class GRUStep(nn.Module):
    """One decoding step: (hidden state, previous token) -> (hidden state, next-token logits)."""

    vocab_size: int
    hidden: int

    @nn.compact
    def __call__(self, h: jax.Array, token: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.Embed(self.vocab_size + 1, self.hidden)(token)
        h, _ = nn.GRUCell(self.hidden)(h, x)
        return h, nn.Dense(self.vocab_size)(h)


def _model(config: Config) -> GRUStep:
    """The policy's decoding step for ``config``."""
    return GRUStep(config.vocab_size, config.hidden)


def init_params(config: Config, key: jax.Array) -> Params:
    """Random GRU policy parameters."""
    return _model(config).init(key, jnp.zeros((config.hidden,)), jnp.asarray(config.vocab_size))


def token_logits(config: Config, params: Params, y: jax.Array) -> jax.Array:
    """Logits of π(· | y_<t) at every position by teacher forcing, shape (L, V), for y of shape (L,)."""
    model = _model(config)
    inputs = jnp.concatenate([jnp.full((1,), config.vocab_size, y.dtype), y[:-1]])
    _, logits = jax.lax.scan(lambda h, token: model.apply(params, h, token), jnp.zeros((config.hidden,)), inputs)
    return logits


def log_prob(config: Config, params: Params, y: jax.Array) -> jax.Array:
    """log π(y) = Σ_t log π(y_t | y_<t) for y of shape (L,)."""
    log_pi = jax.nn.log_softmax(token_logits(config, params, y))
    return jnp.sum(jnp.take_along_axis(log_pi, y[:, None], axis=-1))


def sample(config: Config, params: Params, key: jax.Array) -> jax.Array:
    """One sequence y ~ π, shape (L,), int32, by ancestral sampling (no gradient).

    Token t is the inverse CDF of π(· | y_<t) at a uniform u_t; the L uniforms
    are drawn at once, outside the decoding scan, which keeps compilation fast.
    """
    model, params = _model(config), jax.lax.stop_gradient(params)

    def step(carry, u):
        h, token = carry
        h, logits = model.apply(params, h, token)
        token = jnp.sum(jnp.cumsum(jax.nn.softmax(logits))[:-1] <= u).astype(jnp.int32)
        return (h, token), token

    init = (jnp.zeros((config.hidden,)), jnp.asarray(config.vocab_size, jnp.int32))
    _, y = jax.lax.scan(step, init, jax.random.uniform(key, (config.length,)))
    return y


def reward(config: Config, y: jax.Array) -> jax.Array:
    """The black-box score: R(y) = (1/L) Σ_t [y_t = target_t] + bonus · [y = reversed(y)]."""
    matches = jnp.mean(y == jnp.asarray(config.target))
    return matches + config.palindrome_bonus * jnp.all(y == y[::-1])


def all_sequences(config: Config) -> jax.Array:
    """Every sequence, shape (V^L, L), int32, in base-V order."""
    codes = np.arange(config.vocab_size ** config.length)
    digits = codes[:, None] // config.vocab_size ** np.arange(config.length - 1, -1, -1) % config.vocab_size
    return jnp.asarray(digits, jnp.int32)


def all_log_probs(config: Config, params: Params) -> jax.Array:
    """log π(y) of every sequence of :func:`all_sequences`, shape (V^L,).

    The last token is never an input, so one teacher-forced pass over the
    V^(L-1) sequences that end in token 0 gives π(· | y_<t) for every prefix:
    log π(y) = Σ_{t<L-1} log π(y_t | y_<t) + log π(y_{L-1} | y_<L-1), the
    last term read for all V final tokens at once.
    """
    prefixes = all_sequences(config)[:: config.vocab_size]
    log_pi = jax.nn.log_softmax(jax.vmap(lambda y: token_logits(config, params, y))(prefixes))
    prefix = jnp.take_along_axis(log_pi[:, :-1], prefixes[:, :-1, None], axis=-1).sum(axis=(1, 2))
    return (prefix[:, None] + log_pi[:, -1]).reshape(-1)


def exact_objective(config: Config, params: Params) -> jax.Array:
    """J(θ) = Σ_y π_θ(y) R(y), an exact and differentiable sum over all V^L sequences."""
    rewards = jax.vmap(lambda y: reward(config, y))(all_sequences(config))
    return jnp.exp(all_log_probs(config, params)) @ rewards


def policy(config: Config) -> lt.Family:
    """π_θ as a family: ``sample(params, key, n)`` draws n sequences (n, L); ``log_prob(params, y)`` is log π(y)."""

    def sample_n(params, key, n):
        return jax.vmap(lambda k: sample(config, params, k))(jax.random.split(key, n))

    return lt.Family(sample=sample_n, log_prob=lambda params, y: log_prob(config, params, y))


def exact_estimator(config: Config) -> lt.Estimator:
    """J(θ) under the estimator contract: its value is J and its gradient the exact ∇J; key ignored, state ()."""

    def loss(params, state, key):
        del key
        rewards = jax.vmap(lambda y: reward(config, y))(all_sequences(config))
        return exact_objective(config, params), (state, {"f": rewards})

    return lt.from_loss(lambda params: (), loss, caller="sequence_policy.exact_estimator")


def _score_function(config: Config, baseline: lt.Baseline | None) -> lt.Estimator:
    return lt.score_function(lambda y: reward(config, y), policy(config), num_samples=config.group_size,
                             baseline=baseline)


METHODS: dict[str, Callable[[Config], lt.Estimator]] = {
    "exact": exact_estimator,
    "reinforce": lambda config: _score_function(config, None),
    "rloo": lambda config: _score_function(config, lt.baselines.leave_one_out()),
    "grpo": lambda config: _score_function(config, lt.baselines.group_normalised(config.grpo_eps)),
}


def make_block(config: Config, estimator: lt.Estimator) -> Callable:
    """``block(carry, key) -> (carry, J)``: ``log_every`` Adam ascent steps along ``estimator``'s gradient, then J.

    ``carry`` is ``(params, opt_state, estimator_state)``.
    """
    optimizer = optax.adam(config.learning_rate)

    def step(carry, key):
        params, opt_state, state = carry
        grads, state, _ = estimator.estimate(params, state, key)
        updates, opt_state = optimizer.update(jax.tree_util.tree_map(jnp.negative, grads), opt_state)
        return (optax.apply_updates(params, updates), opt_state, state), None

    def block(carry, key):
        carry, _ = jax.lax.scan(step, carry, jax.random.split(key, config.log_every))
        return carry, exact_objective(config, carry[0])

    return block


def make_train(config: Config) -> Callable[[Params, jax.Array], dict[str, jax.Array]]:
    """``train(params, key) -> {method: J}``, the exact J at steps 0, log_every, …, num_steps of every method.

    Every method starts from ``params``; the estimators share the sampled
    groups drawn from ``key`` (common random numbers).
    """
    num_blocks = config.num_steps // config.log_every

    def curve(estimator, params, block_keys):
        carry = (params, optax.adam(config.learning_rate).init(params), estimator.init(params))
        return jax.lax.scan(make_block(config, estimator), carry, block_keys)[1]

    def train(params, key):
        start = exact_objective(config, params)[None]
        block_keys = jax.random.split(key, num_blocks)
        return {name: jnp.concatenate([start, curve(make(config), params, block_keys)])
                for name, make in METHODS.items()}

    return train


def probe_policies(config: Config, params: Params) -> list[tuple[Params, float, np.ndarray]]:
    """(θ, J(θ), flattened ∇J(θ)) after each of ``probe_steps`` exact-gradient Adam steps from ``params``."""
    optimizer = optax.adam(config.learning_rate)

    @jax.jit
    def step(params, opt_state):
        objective, grads = jax.value_and_grad(lambda p: exact_objective(config, p))(params)
        updates, opt_state = optimizer.update(jax.tree_util.tree_map(jnp.negative, grads), opt_state)
        return objective, ravel_pytree(grads)[0], optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    probes = []
    for steps in range(max(config.probe_steps) + 1):
        objective, grads, next_params, opt_state = step(params, opt_state)
        if steps in config.probe_steps:
            probes.append((params, float(objective), np.asarray(grads, np.float64)))
        params = next_params
    return probes


def make_draw(config: Config) -> Callable[[Params, jax.Array], tuple[dict[str, jax.Array], jax.Array]]:
    """``draw(params, keys) -> ({estimator: estimates}, rewards)``: estimates flattened, (len(keys), num_params);
    the rewards of each group, (len(keys), G).

    Every estimator sees the same sampled groups (common random numbers).
    """
    estimators = {e: METHODS[e](config) for e in ESTIMATORS}

    def one(params, key):
        estimates = {}
        for e, est in estimators.items():
            grads, _, aux = est.estimate(params, est.init(params), key)
            estimates[e] = ravel_pytree(grads)[0]
        return estimates, aux["f"]  # the same group's rewards for every estimator

    return jax.vmap(one, (None, 0))


def accuracy(estimates: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """Bias, variance and direction of M independent estimates (M, P) of the gradient ``exact`` (P,).

    From ``lt.testing.accuracy``: relative bias ‖ḡ - ∇J‖ / ‖∇J‖ (ḡ the mean
    estimate), relative RMSE, cos(ḡ, ∇J), the mean of cos(ĝ, ∇J) over single
    estimates (0 for an estimate that is exactly zero: a group of equal
    rewards gives RLOO and GRPO nothing), and its z-test's max |z| and
    threshold. Besides: the bias's noise floor √(tr Var / M) / ‖∇J‖ (its size
    for an unbiased estimator); the max |z| of ``lt.testing.check_unbiased`` against
    c ∇J with the best scale c = ⟨ḡ, ∇J⟩ / ‖∇J‖² (a bias of direction, not of
    scale); relative total variance tr Var / ‖∇J‖²; the signal-to-noise ratio
    ‖ḡ‖² / tr Var (scale-free); the quartiles of cos(ĝ, ∇J); and the fraction
    of zero estimates.
    """
    shared = lt.testing.accuracy(estimates, exact)
    norm = np.linalg.norm(exact)
    mean = estimates.mean(axis=0)
    total_variance = float(np.sum(estimates.var(axis=0, ddof=1)))
    scale = float(mean @ exact / norm ** 2)
    norms = np.linalg.norm(estimates, axis=1)
    zero = norms == 0.0
    cosines = np.where(zero, 0.0, estimates @ exact / (np.where(zero, 1.0, norms) * norm))
    return {
        "relative_bias": shared.relative_bias,
        "relative_bias_noise_floor": float(np.sqrt(total_variance / shared.num_estimates) / norm),
        "relative_rmse": shared.relative_rmse,
        "max_abs_z": shared.max_abs_z,
        "threshold": shared.threshold,
        "best_scale": scale,
        "max_abs_z_best_scale": lt.testing.check_unbiased(estimates, scale * exact).max_abs_z,
        "relative_variance": total_variance / norm ** 2,
        "signal_to_noise": float(mean @ mean / total_variance),
        "cosine_of_mean": shared.cosine_of_mean,
        "mean_cosine": shared.cosine,
        "cosine_quartiles": np.quantile(cosines, [0.25, 0.5, 0.75]).tolist(),
        "zero_fraction": float(zero.mean()),
    }


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """Both studies; returns JSON-ready results."""
    k_params, k_accuracy, k_init, k_train = jax.random.split(jax.random.key(config.seed), 4)
    # One compiled initialisation, called per seed: a vmapped one compiles far more slowly.
    init = jax.jit(lambda k: init_params(config, k))
    params = init(k_params)
    rewards, log_probs = jax.jit(lambda p: (
        jax.vmap(lambda y: reward(config, y))(all_sequences(config)), all_log_probs(config, p)))(params)
    rewards, log_probs = np.asarray(rewards), np.asarray(log_probs, np.float64)

    draw = jax.jit(make_draw(config), compiler_options=common.FAST_COMPILE)  # compile time dominates
    keys = jax.random.split(k_accuracy, config.num_estimates)
    probes = []
    policies = zip(probe_policies(config, params), config.probe_steps)
    for (probe, objective, exact), steps in tqdm(list(policies), desc="gradient accuracy", disable=not progress):
        drawn, _ = draw(probe, keys)
        probes.append({
            "steps": steps,
            "objective": objective,
            "exact_gradient_norm": float(np.linalg.norm(exact)),
            "estimators": {e: accuracy(np.asarray(drawn[e], np.float64), exact) for e in ESTIMATORS},
        })

    if progress:
        print(f"training {len(METHODS)} methods x {config.num_seeds} seeds (one compiled function) ...", flush=True)
    seed_params = [init(k) for k in jax.random.split(k_init, config.num_seeds)]
    seed_params = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *seed_params)
    trained = jax.jit(jax.vmap(make_train(config)))(seed_params, jax.random.split(k_train, config.num_seeds))
    return {
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "num_params": int(ravel_pytree(params)[0].size),
        "num_sequences": int(rewards.size),
        "reward_max": float(rewards.max()),
        "reward_uniform_mean": float(rewards.mean()),
        "initial_probability_sum": float(np.exp(log_probs).sum()),
        "z_threshold": probes[0]["estimators"][ESTIMATORS[0]]["threshold"],
        "probes": probes,
        "steps": list(range(0, config.num_steps + 1, config.log_every)),
        "objective": {name: np.asarray(trained[name]).tolist() for name in METHODS},
    }


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per method: final J and the mean J over training (mean ± std over seeds), lowest final J."""
    rows = []
    for method, curves in results["objective"].items():
        curves = np.asarray(curves)
        rows.append({"method": method, "final_mean": float(curves[:, -1].mean()),
                     "final_std": float(curves[:, -1].std(ddof=1)), "final_min": float(curves[:, -1].min()),
                     "average_mean": float(curves.mean(axis=1).mean()),
                     "average_std": float(curves.mean(axis=1).std(ddof=1))})
    return rows


def format_table(results: dict[str, Any]) -> str:
    """The accuracy study (one row per probe policy and estimator), then the training summary."""
    config = results["config"]
    lines = [f"Gradient accuracy, G = {config['group_size']}, {config['num_estimates']} estimates per row "
             f"({results['num_params']} parameters; biased if max |z| > {results['z_threshold']:.2f})",
             f"{'policy':<16} {'estimator':<10} {'rel. bias':>9} {'(floor)':>8} {'max |z|':>8} {'rescaled':>8} "
             f"{'scale c':>8} {'tr Var/|∇J|²':>12} {'SNR':>7} {'cos(ḡ,∇J)':>9} {'E cos(ĝ,∇J)':>11} {'ĝ = 0':>6}"]
    for probe in results["probes"]:
        policy = f"step {probe['steps']}, J={probe['objective']:.2f}"
        for estimator, a in probe["estimators"].items():
            lines.append(
                f"{policy:<16} {estimator:<10} {a['relative_bias']:9.3f} {a['relative_bias_noise_floor']:8.3f} "
                f"{a['max_abs_z']:8.1f} {a['max_abs_z_best_scale']:8.1f} {a['best_scale']:8.2f} "
                f"{a['relative_variance']:12.2f} {a['signal_to_noise']:7.3f} {a['cosine_of_mean']:9.4f} "
                f"{a['mean_cosine']:11.3f} {a['zero_fraction']:6.2f}")
            policy = ""
    lines += ["", f"Training, Adam lr {config['learning_rate']}, {config['num_steps']} steps, "
                  f"{config['num_seeds']} seeds (max R = {results['reward_max']:.2f}; "
                  f"exact uses all {results['num_sequences']} sequences per step)",
              f"{'method':<10} {'final J':>15} {'min final':>9} {'mean J over run':>15}"]
    for row in summary_rows(results):
        lines.append(f"{row['method']:<10} {row['final_mean']:8.3f} ± {row['final_std']:.3f} "
                     f"{row['final_min']:9.3f} {row['average_mean']:8.3f} ± {row['average_std']:.3f}")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(ax: Any, results: dict[str, Any], values: Callable[[dict[str, Any]], float],
                  floor: Callable[[dict[str, Any]], float] | None = None) -> None:
    """Bars per probe policy (groups) and estimator (colours); optional black ticks at a per-bar floor."""
    probes = results["probes"]
    width = 0.8 / len(ESTIMATORS)
    for j, estimator in enumerate(ESTIMATORS):
        x = np.arange(len(probes)) + (j - (len(ESTIMATORS) - 1) / 2) * width
        heights = [values(p["estimators"][estimator]) for p in probes]
        ax.bar(x, heights, width, color=COLORS[estimator], label=LABELS[estimator])
        if floor is not None:
            ax.hlines([floor(p["estimators"][estimator]) for p in probes], x - width / 2, x + width / 2, color="k",
                      lw=1.5, label="noise floor √(tr Var / M)" if j == 0 else None)
    ax.set_xticks(np.arange(len(probes)), [f"step {p['steps']}\nJ = {p['objective']:.2f}" for p in probes])
    ax.grid(alpha=0.3, axis="y")


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Top: J vs step per method (each seed, mean ± std). Bottom: bias, z-test, variance, cosine per probe policy."""
    plt = _pyplot()
    config = results["config"]
    fig = plt.figure(figsize=(19, 9.5), constrained_layout=True)
    grid = fig.add_gridspec(2, len(METHODS))
    steps = np.asarray(results["steps"])
    top = [fig.add_subplot(grid[0, 0])]
    top += [fig.add_subplot(grid[0, i], sharey=top[0]) for i in range(1, len(METHODS))]
    for ax, method in zip(top, METHODS):
        curves = np.asarray(results["objective"][method])
        mean, std = curves.mean(axis=0), curves.std(axis=0, ddof=1)
        ax.plot(steps, curves.T, color=COLORS[method], lw=0.7, alpha=0.45)
        ax.fill_between(steps, mean - std, mean + std, color=COLORS[method], alpha=0.15, lw=0, label="mean ± std")
        ax.plot(steps, mean, color=COLORS[method], lw=2.5, label="mean")
        ax.axhline(results["reward_max"], color="gray", ls=":", lw=1, label="max R")
        final = curves[:, -1]
        ax.set(title=f"{LABELS[method]}: final J {final.mean():.3f} ± {final.std(ddof=1):.3f}", xlabel="Adam step",
               xlim=(0, steps[-1]))
        ax.grid(alpha=0.3)
    top[0].set_ylabel(r"exact $J(\theta) = \sum_y \pi_\theta(y) R(y)$")
    top[0].legend(fontsize=8, loc="lower right")

    bottom = [fig.add_subplot(grid[1, i]) for i in range(4)]
    _grouped_bars(bottom[0], results, lambda a: a["relative_bias"], floor=lambda a: a["relative_bias_noise_floor"])
    bottom[0].set(yscale="log", ylabel=r"$\|\bar g - \nabla J\| / \|\nabla J\|$",
                  title="Relative bias of the mean estimate")
    _grouped_bars(bottom[1], results, lambda a: a["max_abs_z_best_scale"])
    bottom[1].axhline(results["z_threshold"], color="k", ls="--", lw=1,
                      label=f"rejection threshold {results['z_threshold']:.2f}")
    bottom[1].set(ylabel=r"max $|z|$ against $c\,\nabla J$, best scale $c$",
                  title="Bias of direction: z-test after rescaling")
    _grouped_bars(bottom[2], results, lambda a: a["relative_variance"])
    bottom[2].set(yscale="log", ylabel=r"$\mathrm{tr\,Var}[\hat g] / \|\nabla J\|^2$",
                  title="Total variance of one estimate")
    _grouped_bars(bottom[3], results, lambda a: a["mean_cosine"])
    bottom[3].set(ylim=(0, 1), ylabel=r"$E[\cos(\hat g, \nabla J)]$",
                  title="Cosine of one estimate with ∇J (0 where ĝ = 0)")
    bottom[0].legend(fontsize=7)
    bottom[1].legend(fontsize=7)
    fig.suptitle(f"Sequence policy (GRU, V={config['vocab_size']}, L={len(config['target'])}, "
                 f"{results['num_sequences']} sequences), G={config['group_size']} samples per estimate and step, "
                 f"Adam lr {config['learning_rate']}; bars from {config['num_estimates']} estimates at policies "
                 f"after {', '.join(map(str, config['probe_steps']))} exact-gradient steps")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "sequence_policy", config=Config(), quick=QUICK,
                run=lambda config: run(config, progress=True), report=format_table, plots={"": plot},
                summary=summary_rows)

if __name__ == "__main__":
    main()
