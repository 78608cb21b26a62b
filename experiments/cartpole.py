"""REINFORCE on CartPole-v1 (gymnax), fully jitted: solved in seconds on a CPU.

Every update resets E parallel CartPole-v1 environments, rolls out T steps
(T = 500, the episode limit) with the softmax policy π_θ of a flax MLP while
``env.step`` auto-resets each environment after its episodes, and takes one
Adam step on the REINFORCE surrogate (``lt.rl.policy_gradient_loss``)

    L(θ) = -(1/ET) Σ_{e,t} m_{e,t} A_{e,t} log π_θ(a_{e,t} | s_{e,t}),
    Q_{e,t} = Σ_{t'≥t} γ^{t'-t₀} r_{e,t'} over the rest of t's episode   (``lt.rl.reward_to_go``)
    A_{e,t} = Q_{e,t} - (1/(E-1)) Σ_{e'≠e} Q_{e',t}                      (``lt.rl.leave_one_out_advantages``)
    m_{e,t} = 1 if the episode of step t ends within the rollout, else 0.

The discount γ (1 - done_t) is zero at every episode end (termination or the
500-step limit), so no return leaks across an auto-reset. With γ = 1, the
default, Q_{e,t} is the undiscounted return still to come, and the estimate
is unbiased for the gradient of CartPole's own objective, the expected
episode return. The mask drops each environment's last episode, cut off by the
end of the rollout, so every Q is a complete reward-to-go. The leave-one-out
baseline is taken per step over the other environments, which all started
together: unbiased (it uses only independent episodes) and, once episodes
last 500 steps, a time-dependent baseline that cancels the fall of Q_{e,t}
towards the time limit, which the policy cannot see.

The whole run, ``make_train(config) -> train(key)``, is one ``lax.scan`` over
updates; seeds are ``vmap``ped. CartPole-v1 counts as solved when the mean
undiscounted return of the last 100 completed episodes reaches 475; a ring
buffer of completed returns inside the scan decides it, and ``train`` returns
the first update at which it held. A scan cannot stop early, so
``num_updates`` = 40 leaves a margin over the slowest seeds (in 256 seeds the
criterion first held after 16 updates at the median and 32 at the latest);
the wall time at which it first held is the compile time plus that fraction
of the run time (every update costs the same).

    python -m experiments.cartpole [--seeds N] [--quick]

writes ``results/cartpole.json`` and ``results/cartpole.png``
(``cartpole_seeds8.*`` with ``--seeds 8``).

References:
  Williams, "Simple statistical gradient-following algorithms for
  connectionist reinforcement learning", 1992.
  Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
  Free!", 2019.
  Lu et al., "Discovered Policy Optimisation", 2022 (PureJaxRL's
  ``make_train`` structure).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import logtrick as lt
from experiments import common

# XLA:CPU options for the training run: LLVM at -O1 without its expensive passes
# compiles about a third faster than the default, and the run is as fast.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class Config:
    """Training configuration, tuned for wall-clock time on 2 CPU cores.

    Attributes:
      num_envs: E, parallel environments (and the leave-one-out group).
      num_steps: T, steps per rollout.
      num_updates: Adam steps, one per rollout.
      hidden_size: width of the MLP's hidden layer.
      learning_rate: Adam step size.
      gamma: discount γ.
      window: completed episodes in the solved criterion.
      threshold: mean return over the window that counts as solved.
      seed: PRNG seed; seed i of a vmapped run uses ``split(key(seed), N)[i]``.
    """

    num_envs: int = 16
    num_steps: int = 500
    num_updates: int = 40
    hidden_size: int = 32
    learning_rate: float = 0.04
    gamma: float = 1.0
    window: int = 100
    threshold: float = 475.0
    seed: int = 0


QUICK = Config(num_envs=4, num_steps=64, num_updates=5, window=10)


class Policy(nn.Module):
    """Logits of a softmax policy: Dense(hidden) → tanh → Dense(actions), the last layer zero (uniform π)."""

    hidden_size: int
    num_actions: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        hidden = nn.tanh(nn.Dense(self.hidden_size)(obs))
        return nn.Dense(self.num_actions, kernel_init=nn.initializers.zeros)(hidden)


class Batch(NamedTuple):
    """One rollout, time-major: every field has leading shape (T, E).

    Attributes:
      obs: observations s_t, (T, E, 4).
      actions: a_t, int.
      rewards: r_t.
      dones: 1.0 where the episode ended at step t (terminated or truncated), else 0.0.
      episode_returns: the undiscounted return of the episode that ended at step t, 0.0 elsewhere.
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    dones: jax.Array
    episode_returns: jax.Array


class Tracker(NamedTuple):
    """The last ``window`` completed episode returns, a ring buffer filled in order.

    Attributes:
      returns: shape (window,); slot i holds episode i mod window.
      count: completed episodes so far, int scalar.
    """

    returns: jax.Array
    count: jax.Array


class Metrics(NamedTuple):
    """Output of ``train``: per-update curves, shape (num_updates,), and the solving update.

    Attributes:
      recent_return: mean return of the last ``window`` completed episodes (of all so far, if fewer).
      episodes: completed episodes so far.
      solved_update: first update (0-based) after which the criterion held, -1 if never; a scalar.
    """

    recent_return: jax.Array
    episodes: jax.Array
    solved_update: jax.Array


LossFn = Callable[[jax.Array, Batch, float], jax.Array]


def rollout(env: Any, env_params: Any, policy: Callable[[jax.Array], jax.Array], key: jax.Array,
            num_envs: int, num_steps: int) -> Batch:
    """``num_steps`` steps of ``num_envs`` freshly reset, auto-resetting environments.

    Actions are drawn by the Gumbel-max trick, a = argmax(logits + g), with all
    Gumbel noise and environment keys drawn before the scan: one random-number
    call each per rollout rather than one per step.
    """
    k_reset, k_env, k_noise = jax.random.split(key, 3)
    obs, state = jax.vmap(env.reset, (0, None))(jax.random.split(k_reset, num_envs), env_params)
    env_keys = jax.random.split(k_env, num_steps * num_envs).reshape(num_steps, num_envs)
    num_actions = env.num_actions
    # Drawn 1-D and reshaped: XLA compiles threefry for a multi-dimensional shape more slowly.
    gumbel = jax.random.gumbel(k_noise, (num_steps * num_envs * num_actions,)).reshape(
        num_steps, num_envs, num_actions)

    def step(carry, inputs):
        obs, state, running = carry
        keys, noise = inputs
        action = jnp.argmax(policy(obs) + noise, axis=-1)
        next_obs, state, reward, terminated, truncated, _ = jax.vmap(env.step, (0, 0, 0, None))(
            keys, state, action, env_params)
        done = terminated | truncated
        running = running + reward
        transition = Batch(obs, action, reward, done.astype(reward.dtype), jnp.where(done, running, 0.0))
        return (next_obs, state, jnp.where(done, 0.0, running)), transition

    _, batch = jax.lax.scan(step, (obs, state, jnp.zeros(num_envs)), (env_keys, gumbel))
    return batch


def complete_episodes(dones: jax.Array) -> jax.Array:
    """m_t = 1.0 where an episode ends at or after step t (axis 0), else 0.0: steps of completed episodes."""
    return jax.lax.cummax(dones, axis=0, reverse=True)


def rewards_to_go(batch: Batch, gamma: float) -> jax.Array:
    """Q_{e,t} = Σ_{t'≥t} γ^{t'-t₀} r_{e,t'} over the rest of step t's episode, time-major: shape (T, E).

    ``lt.rl.reward_to_go`` per environment, with discounts γ (1 - done_t):
    zero at every episode end, so a sum never crosses an auto-reset.
    """
    return jax.vmap(lt.rl.reward_to_go, in_axes=1, out_axes=1)(batch.rewards, gamma * (1.0 - batch.dones))


def reinforce_loss(logits: jax.Array, batch: Batch, gamma: float) -> jax.Array:
    """The REINFORCE surrogate of the module docstring; its gradient is minus the policy-gradient estimate.

    Time-major throughout: the leave-one-out group of step t is row t, the E
    environments. ``lt.rl.policy_gradient_loss`` is a mean over steps, so all
    T·E steps go in as one flattened sequence, with no transposes.

    Args:
      logits: policy logits at the batch's observations, (T, E, A).
      batch: the rollout.
      gamma: discount γ.

    Returns:
      A scalar loss.
    """
    advantages = jax.vmap(lt.rl.leave_one_out_advantages)(rewards_to_go(batch, gamma))
    mask = complete_episodes(batch.dones)
    return lt.rl.policy_gradient_loss(logits.reshape(-1, logits.shape[-1]), batch.actions.reshape(-1),
                                      advantages.reshape(-1), mask.reshape(-1))


def track(tracker: Tracker, episode_returns: jax.Array, dones: jax.Array) -> Tracker:
    """Pushes the returns of the episodes that ended in a rollout, in time order, into the ring buffer.

    Only the last ``window`` of them are written, so no slot is written twice.
    """
    window = tracker.returns.shape[0]
    done, values = dones.reshape(-1) > 0, episode_returns.reshape(-1)
    rank = jnp.cumsum(done) - 1
    total = rank[-1] + 1
    slot = jnp.where(done & (rank >= total - window), (tracker.count + rank) % window, window)
    return Tracker(tracker.returns.at[slot].set(values, mode="drop"), tracker.count + total)


def make_train(config: Config, loss_fn: LossFn = reinforce_loss) -> Callable[[jax.Array], Metrics]:
    """``train(key) -> Metrics``: a whole REINFORCE run, pure and jittable.

    ``loss_fn(logits, batch, gamma)`` is the surrogate to minimise (the
    benchmark swaps in one written without the library).
    """
    env, env_params = gymnax.make("CartPole-v1")
    network = Policy(config.hidden_size, env.num_actions)
    optimizer = optax.adam(config.learning_rate)

    def objective(params, batch):
        return loss_fn(network.apply(params, batch.obs), batch, config.gamma)

    def update(carry, key):
        params, opt_state, tracker = carry
        batch = rollout(env, env_params, lambda obs: network.apply(params, obs), key,
                        config.num_envs, config.num_steps)
        updates, opt_state = optimizer.update(jax.grad(objective)(params, batch), opt_state)
        params = optax.apply_updates(params, updates)
        tracker = track(tracker, batch.episode_returns, batch.dones)
        filled = jnp.minimum(tracker.count, config.window)
        recent = jnp.sum(tracker.returns) / jnp.maximum(filled, 1)
        return (params, opt_state, tracker), (recent, tracker.count)

    def train(key: jax.Array) -> Metrics:
        k_init, k_updates = jax.random.split(key)
        params = network.init(k_init, jnp.zeros(env.observation_space(env_params).shape))
        tracker = Tracker(jnp.zeros(config.window), jnp.zeros((), jnp.int32))
        _, (recent, episodes) = jax.lax.scan(update, (params, optimizer.init(params), tracker),
                                             jax.random.split(k_updates, config.num_updates))
        solved = (episodes >= config.window) & (recent >= config.threshold)
        return Metrics(recent, episodes, jnp.where(jnp.any(solved), jnp.argmax(solved), -1))

    return train


def run(config: Config, num_seeds: int = 1) -> dict[str, Any]:
    """Trains ``num_seeds`` seeds in one jitted, vmapped call and times it, compile included.

    Returns JSON-ready results: per-seed curves and solve times, the wall time
    from building the training function to ``block_until_ready`` (Python's
    start and imports excluded), and env steps.
    """
    start = time.perf_counter()
    keys = jax.random.split(jax.random.key(config.seed), num_seeds)
    compiled = jax.jit(jax.vmap(make_train(config))).lower(keys).compile(COMPILER_OPTIONS)
    compiled_at = time.perf_counter()
    metrics = jax.block_until_ready(compiled(keys))
    end = time.perf_counter()

    compile_seconds, run_seconds = compiled_at - start, end - compiled_at
    steps_per_update = config.num_envs * config.num_steps
    update_seconds = run_seconds / config.num_updates
    solved_update = np.asarray(metrics.solved_update)
    solved = solved_update >= 0
    recent = np.asarray(metrics.recent_return)
    return {
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "num_seeds": num_seeds,
        "solved": bool(solved.all()),
        "solved_per_seed": solved.tolist(),
        "wall_seconds": end - start,
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
        "solve_seconds": [float(compile_seconds + (u + 1) * update_seconds) if u >= 0 else None for u in solved_update],
        "solve_env_steps": [int(u + 1) * steps_per_update if u >= 0 else None for u in solved_update],
        "env_steps": config.num_updates * steps_per_update,
        "env_steps_per_second": num_seeds * config.num_updates * steps_per_update / run_seconds,
        "final_return": float(recent[:, -1].mean()),
        "final_return_per_seed": recent[:, -1].tolist(),
        "recent_return": recent.tolist(),
        "episodes": np.asarray(metrics.episodes).tolist(),
    }


def summary(results: dict[str, Any]) -> str:
    """A few lines: solved or not, wall times, env steps and throughput."""
    solve = [s for s in results["solve_seconds"] if s is not None]
    steps = [s for s in results["solve_env_steps"] if s is not None]
    n = results["num_seeds"]
    lines = [
        f"solved: {results['solved']} ({sum(results['solved_per_seed'])}/{n} seeds; mean return of the last "
        f"{results['config']['window']} episodes ≥ {results['config']['threshold']:g})",
        f"wall {results['wall_seconds']:.2f} s = compile {results['compile_seconds']:.2f} s "
        f"+ run {results['run_seconds']:.2f} s",
    ]
    if solve:
        lines.append(f"criterion first met at {min(solve):.2f}–{max(solve):.2f} s wall, after "
                     f"{min(steps):,}–{max(steps):,} env steps" if n > 1 else
                     f"criterion first met at {solve[0]:.2f} s wall, after {steps[0]:,} env steps")
    lines.append(f"{results['env_steps']:,} env steps per seed, {results['env_steps_per_second']:,.0f} env steps/s "
                 f"(all seeds, run only); final return {results['final_return']:.1f}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Mean return of the last 100 episodes vs wall time (compile included, with a zoom on the run) and vs env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    recent = np.asarray(results["recent_return"])
    updates = np.arange(1, config["num_updates"] + 1)
    compile_seconds = results["compile_seconds"]
    seconds = compile_seconds + updates * results["run_seconds"] / config["num_updates"]
    steps = updates * config["num_envs"] * config["num_steps"]
    fig, (ax_time, ax_steps) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    zoom = ax_time.inset_axes([0.07, 0.12, 0.55, 0.55])
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, recent.shape[0]))
    for i, (curve, color) in enumerate(zip(recent, colors)):
        label = f"seed {i}" if recent.shape[0] > 1 else None
        for ax, x in ((ax_time, seconds), (zoom, seconds), (ax_steps, steps)):
            ax.plot(x, curve, color=color, lw=1.5, label=label if ax is ax_steps else None)
            if results["solve_env_steps"][i] is not None:
                j = results["solve_env_steps"][i] // (config["num_envs"] * config["num_steps"]) - 1
                ax.plot(x[j], curve[j], "o", color=color, ms=5, mec="k")
    ax_time.axvspan(0.0, compile_seconds, color="0.9")
    ax_time.text(compile_seconds / 2, 420, f"tracing and compiling: {compile_seconds:.2f} s",
                 ha="center", va="center", fontsize=9)
    ax_time.set(xlabel="wall seconds since the start (compile included)", xlim=(0.0, seconds[-1]))
    zoom.set(xlim=(compile_seconds, seconds[-1]), title="the run, zoomed", facecolor="white")
    zoom.title.set_fontsize(8)
    zoom.tick_params(labelsize=7)
    ax_steps.set(xlabel="env steps per seed", xlim=(0, steps[-1]))
    for ax in (ax_time, zoom, ax_steps):
        ax.axhline(config["threshold"], color="k", ls="--", lw=1,
                   label=f"solved ({config['threshold']:g})" if ax is ax_steps else None)
        ax.set(ylim=(0, 510))
        ax.grid(alpha=0.3)
    for ax in (ax_time, ax_steps):
        ax.set_ylabel(f"mean return of the last {config['window']} episodes")
    ax_steps.legend(fontsize=8, loc="lower right", ncol=2)
    n = results["num_seeds"]
    solve = [s for s in results["solve_seconds"] if s is not None]
    solved = (f"solved by {max(solve):.2f} s" if len(solve) == n else f"{len(solve)}/{n} seeds solved") if solve \
        else "not solved"
    fig.suptitle(f"REINFORCE on CartPole-v1, {n} seed{'s' * (n > 1)} in one jitted run: {solved}, "
                 f"{results['wall_seconds']:.2f} s in all (dots: criterion first met)\n"
                 f"{config['num_envs']} envs × {config['num_steps']} steps per update, Adam lr "
                 f"{config['learning_rate']:g}, γ = {config['gamma']:g}, {results['machine']['cpu_count']} CPU cores")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--seeds", type=int, default=1, help="seeds vmapped in one run")
    args = parser.parse_args()
    config = dataclasses.replace(QUICK if args.quick else Config(), seed=args.seed)

    print(f"training {args.seeds} seed(s) in one jitted run ...", flush=True)
    results = run(config, args.seeds)
    results["machine"] = common.machine_info()
    print(summary(results))

    name = "cartpole" + ("_quick" if args.quick else "") + (f"_seeds{args.seeds}" if args.seeds > 1 else "")
    common.save_json(results, args.out, name)
    plot(results, args.out / f"{name}.png")
    print(f"wrote {args.out / name}.json and .png")


if __name__ == "__main__":
    main()
