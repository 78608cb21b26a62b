"""Tutorial 3: a policy gradient, from a tabular MDP (checked against the exact gradient) to CartPole.

Part 1: a random MDP of 6 states and 3 actions, a softmax policy over a logits table. ``lt.rl.tabular``
samples episodes and builds REINFORCE with a leave-one-out baseline as an estimator; dynamic programming gives
the exact return J(θ) and its gradient, so the estimates are tested against it, then both train the policy.

Part 2: the same estimator on CartPole-v1 (gymnax): 32 environments stepped in a ``lax.scan``, the reward to
go per step, leave-one-out across environments, ``lt.rl.policy_gradient_loss``, a linear softmax policy,
the whole training jitted.

    python docs/tutorials/policy_gradient.py [--quick] [--out DIR]
"""

import argparse
import pathlib

import gymnax
import jax
import jax.numpy as jnp
import matplotlib
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import logtrick as lt  # noqa: E402

HORIZON, GAMMA = 8, 0.9


def tabular(quick: bool) -> list[float]:
    mdp = lt.rl.tabular.random_mdp(jax.random.key(0), num_states=6, num_actions=3)
    est = lt.rl.tabular.reinforce(mdp, horizon=HORIZON, gamma=GAMMA, num_episodes=16, baseline="leave_one_out")
    exact = lt.rl.tabular.exact_estimator(mdp, horizon=HORIZON, gamma=GAMMA)
    logits = jnp.zeros((6, 3))
    draws = lt.testing.draw_estimates(est, logits, jax.random.key(1), num_estimates=300 if quick else 2000)
    report = lt.testing.assert_unbiased(draws, exact.estimate(logits, (), jax.random.key(0))[0])
    print(f"tabular REINFORCE: max |z| {report.max_abs_z:.2f} against the exact gradient (threshold "
          f"{report.threshold:.2f})")

    optimizer = optax.adam(0.1)

    @jax.jit
    def train(logits, key):
        def step(carry, key):
            logits, opt_state = carry
            grads, _, _ = est.estimate(logits, (), key)
            updates, opt_state = optimizer.update(jax.tree_util.tree_map(jnp.negative, grads), opt_state)
            logits = optax.apply_updates(logits, updates)
            return (logits, opt_state), lt.rl.tabular.exact_return(mdp, logits, horizon=HORIZON, gamma=GAMMA)

        return jax.lax.scan(step, (logits, optimizer.init(logits)), jax.random.split(key, 30 if quick else 200))[1]

    returns = train(logits, jax.random.key(2))
    print(f"exact return J: {float(lt.rl.tabular.exact_return(mdp, logits, horizon=HORIZON, gamma=GAMMA)):.3f} "
          f"at the uniform policy, {float(returns[-1]):.3f} after {returns.shape[0]} REINFORCE steps")
    return [float(r) for r in returns]


def cartpole(quick: bool) -> list[float]:
    env, env_params = gymnax.make("CartPole-v1")
    num_envs, num_steps, iterations = 32, 200, 10 if quick else 60
    optimizer = optax.adam(0.02)

    def rollout(weights, key):
        reset_key, step_key = jax.random.split(key)
        obs, state = jax.vmap(env.reset, (0, None))(jax.random.split(reset_key, num_envs), env_params)

        def step(carry, key):
            obs, state = carry
            action_key, env_key = jax.random.split(key)
            action = jax.random.categorical(action_key, obs @ weights)
            next_obs, state, reward, terminated, truncated, _ = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(env_key, num_envs), state, action, env_params)  # resets an ended episode
            return (next_obs, state), (obs, action, reward, (terminated | truncated).astype(jnp.float32))

        return jax.lax.scan(step, (obs, state), jax.random.split(step_key, num_steps))[1]

    def loss(weights, batch):
        obs, actions, rewards, dones = batch  # time-major, (T, E, ...)
        to_go = jax.vmap(lt.rl.reward_to_go, in_axes=1, out_axes=1)(rewards, 0.99 * (1.0 - dones))
        advantages = jax.vmap(lt.rl.leave_one_out_advantages)(to_go)
        complete = jax.lax.cummax(dones, axis=0, reverse=True)  # steps of episodes that ended in the rollout
        logits = obs @ weights
        return lt.rl.policy_gradient_loss(logits.reshape(-1, 2), actions.reshape(-1), advantages.reshape(-1),
                                          complete.reshape(-1))

    @jax.jit
    def train(key):
        weights = jnp.zeros((4, 2))

        def iteration(carry, key):
            weights, opt_state = carry
            batch = rollout(weights, key)
            updates, opt_state = optimizer.update(jax.grad(loss)(weights, batch), opt_state)
            episodes = jnp.maximum(jnp.sum(batch[3]), 1.0)
            return (optax.apply_updates(weights, updates), opt_state), jnp.sum(batch[2]) / episodes

        return jax.lax.scan(iteration, (weights, optimizer.init(weights)), jax.random.split(key, iterations))[1]

    lengths = train(jax.random.key(3))
    print(f"CartPole mean episode length: {float(lengths[0]):.1f} at first, {float(lengths[-1]):.1f} after "
          f"{iterations} iterations")
    return [float(x) for x in lengths]


def main(out: pathlib.Path, quick: bool) -> None:
    returns, lengths = tabular(quick), cartpole(quick)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.3), constrained_layout=True)
    left.plot(returns)
    left.set(xlabel="REINFORCE step", ylabel="exact return J", title="tabular MDP")
    right.plot(lengths)
    right.set(xlabel="iteration", ylabel="mean episode length", title="CartPole-v1")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "policy_gradient.png", dpi=110)
    print(f"wrote {out / 'policy_gradient.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/tutorials"))
    args = parser.parse_args()
    main(args.out, args.quick)
