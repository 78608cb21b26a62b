"""Tutorial 1: a score-function estimate, checked against its exact gradient.

For x ~ N(μ, σ²) per coordinate and f(x) = Σ_d (x_d − 1)², the expectation has a closed form,
E[f] = Σ_d (μ_d − 1)² + σ_d², so its gradient is exact. We estimate it from samples with the score function
and a leave-one-out baseline, test many independent estimates against it, and watch the error fall as 1/√N.

    python docs/tutorials/exact_gradient.py [--quick] [--out DIR]
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import logtrick as lt  # noqa: E402


def f(x):
    return jnp.sum((x - 1.0) ** 2)


def exact_objective(params):
    return jnp.sum((params["loc"] - 1.0) ** 2 + jnp.exp(2 * params["log_scale"]))


def main(out: pathlib.Path, quick: bool) -> None:
    params = {"loc": jnp.array([0.5, -1.0, 2.0]), "log_scale": jnp.array([0.0, -0.5, 0.3])}
    exact = jax.grad(exact_objective)(params)
    print("exact gradient:", jax.tree_util.tree_map(lambda g: g.round(4).tolist(), exact))

    # 1. One estimate: the estimator is a loss term; jax.grad of it is the estimate.
    est = lt.score_function(f, lt.families.normal(), num_samples=16, baseline=lt.baselines.leave_one_out())
    grads, _, aux = jax.jit(est.estimate)(params, est.init(params), jax.random.key(0))
    print("one estimate (N = 16):", jax.tree_util.tree_map(lambda g: g.round(4).tolist(), grads))

    # 2. Many independent estimates, tested against the exact gradient at α = 1e-3.
    num_estimates = 300 if quick else 2000
    draws = lt.testing.draw_estimates(est, params, jax.random.key(1), num_estimates=num_estimates)
    report = lt.testing.assert_unbiased(draws, exact)
    print(f"{num_estimates} estimates: max |z| = {report.max_abs_z:.2f} below the threshold {report.threshold:.2f}: "
          "consistent with the exact gradient")

    # 3. The root-mean-square error against N: the Monte Carlo rate 1/√N.
    sizes = [4, 16, 64] if quick else [4, 16, 64, 256, 1024]
    rmse = []
    for n in sizes:
        est_n = lt.score_function(f, lt.families.normal(), num_samples=n, baseline=lt.baselines.leave_one_out())
        accuracy = lt.testing.accuracy(lt.testing.draw_estimates(est_n, params, jax.random.key(n), num_estimates=200),
                                       exact)
        rmse.append(accuracy.relative_rmse)
        print(f"N = {n:5d}: relative RMSE {accuracy.relative_rmse:.4f}")
    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    ax.loglog(sizes, rmse, "o-", label="score function + leave-one-out")
    ax.loglog(sizes, [rmse[0] * (sizes[0] / n) ** 0.5 for n in sizes], ":", color="0.5", label=r"$\propto N^{-1/2}$")
    ax.set(xlabel="N (samples per estimate)", ylabel="relative RMSE", title="error against the exact gradient")
    ax.legend()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "exact_gradient.png", dpi=110)
    print(f"wrote {out / 'exact_gradient.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/tutorials"))
    args = parser.parse_args()
    main(args.out, args.quick)
