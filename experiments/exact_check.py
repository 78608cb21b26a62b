"""The log-derivative trick checked against exact gradients (the headline experiment).

For each problem, the score-function estimate of grad_θ E[f] is compared with
``jax.grad`` of the exact expectation (closed form or enumeration):
``num_estimates`` independent estimates of ``num_samples`` samples each give a
mean, its standard error, and |error| in standard errors (the z-test of
``lt.testing.assert_unbiased``). Variances of one estimate are reported without
a baseline, with leave-one-out, and with a moving average. A second sweep
plots the RMS error against the number of samples, with the 1/√N reference.

    python -m experiments.exact_check [--quick]
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import logtrick as lt
from experiments import common


class Problem(NamedTuple):
    name: str
    f: Callable[[Any], jax.Array]
    family: lt.Family
    params: Any
    exact: Callable[[Any], jax.Array]
    labels: list[str]


def problems() -> list[Problem]:
    normal = lt.families.normal()
    unit = {"loc": jnp.array([1.0]), "log_scale": jnp.array([0.0])}
    gauss_labels = ["mu", "log sigma"]
    categorical, bernoulli = lt.families.categorical(), lt.families.bernoulli()
    payoff = jnp.array([3.0, -1.0, 0.5, 2.0, -4.0])
    toy = lambda b: jnp.sum((b - 0.499) ** 2)
    return [
        Problem("N(1,1), f=(x-2)^2", lambda x: jnp.sum((x - 2.0) ** 2), normal, unit,
                lt.exact.normal_quadratic(2.0), gauss_labels),
        Problem("N(1,1), f=exp(-x^2)", lambda x: jnp.sum(jnp.exp(-(x**2))), normal, unit,
                lt.exact.normal_exp_square(1.0), gauss_labels),
        Problem("N(1,1), f=cos(2x)", lambda x: jnp.sum(jnp.cos(2.0 * x)), normal, unit,
                lt.exact.normal_cosine(2.0), gauss_labels),
        Problem("Categorical(5)", lambda x: payoff[x], categorical, jnp.array([0.5, -0.2, 0.1, 1.0, -1.0]),
                lt.exact.expectation(lambda x: payoff[x], categorical, lt.exact.categorical_support(5)),
                [f"logit {i}" for i in range(5)]),
        Problem("Bernoulli, f=(b-0.499)^2", toy, bernoulli, jnp.zeros(1),
                lt.exact.expectation(toy, bernoulli, lt.exact.bernoulli_support(1)), ["logit"]),
    ]


@dataclasses.dataclass(frozen=True)
class Config:
    num_samples: int = 100
    num_estimates: int = 2000
    moving_average_decay: float = 0.9
    warmup_steps: int = 20
    sweep: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)
    sweep_estimates: int = 500
    seed: int = 0


def flat(tree: Any) -> np.ndarray:
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])


def flat_batch(tree: Any) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.reshape(leaf, (leaf.shape[0], -1)) for leaf in leaves], axis=1)


def draw(problem: Problem, baseline, num_samples: int, num_estimates: int, key: jax.Array, warmup: int) -> np.ndarray:
    """Independent estimates, shape (num_estimates, num_params), after ``warmup`` steps of baseline state."""
    est = lt.score_function(problem.f, problem.family, num_samples=num_samples, baseline=baseline)

    def chain(k):
        def step(state, kk):
            grads, state, _ = est.estimate(problem.params, state, kk)
            return state, grads

        _, grads = jax.lax.scan(step, est.init(problem.params), jax.random.split(k, warmup + 1))
        return jax.tree_util.tree_map(lambda g: g[-1], grads)

    return flat_batch(jax.jit(jax.vmap(chain))(jax.random.split(key, num_estimates)))


BASELINES = {
    "none": lambda c: None,
    "leave-one-out": lambda c: lt.baselines.leave_one_out(),
    "moving average": lambda c: lt.baselines.moving_average(c.moving_average_decay),
}


def run(config: Config, progress: bool = False) -> dict:
    """Runs every problem; returns a JSON-ready dict of rows and the sweep."""
    key = jax.random.key(config.seed)
    rows, sweep = [], {}
    steps = len(problems()) * (len(BASELINES) + len(config.sweep))
    bar = tqdm(total=steps, disable=not progress, desc="exact check")
    for p_index, problem in enumerate(problems()):
        exact = flat(jax.grad(problem.exact)(problem.params))
        pkey = jax.random.fold_in(key, p_index)
        variances, reference = {}, None
        for b_index, (name, make) in enumerate(BASELINES.items()):
            warmup = config.warmup_steps if name == "moving average" else 0
            estimates = draw(problem, make(config), config.num_samples, config.num_estimates,
                             jax.random.fold_in(pkey, b_index), warmup)
            variances[name] = estimates.var(axis=0, ddof=1)
            if name == "none":
                reference = estimates
            bar.update()
        mean = reference.mean(axis=0)
        se = reference.std(axis=0, ddof=1) / np.sqrt(config.num_estimates)
        for i, label in enumerate(problem.labels):
            rows.append({
                "problem": problem.name, "param": label, "exact": float(exact[i]),
                "estimate": float(mean[i]), "standard_error": float(se[i]),
                "abs_error_in_se": float(abs(mean[i] - exact[i]) / se[i]),
                "variance": {name: float(v[i]) for name, v in variances.items()},
            })
        errors = {}
        for n in config.sweep:
            est = draw(problem, None, n, config.sweep_estimates, jax.random.fold_in(pkey, 100 + n), 0)
            errors[n] = float(np.sqrt(np.mean(np.sum((est - exact) ** 2, axis=1))))
            bar.update()
        sweep[problem.name] = errors
    bar.close()
    return {"rows": rows, "rms_error_vs_samples": sweep}


def table(rows: list[dict], num_samples: int) -> str:
    head = (f"{'problem':<26}{'param':<11}{'exact':>10}{'estimate':>10}{'± s.e.':>9}{'|err|/se':>9}"
            f"{'var none':>11}{'var LOO':>11}{'var MA':>11}")
    lines = [f"score-function estimates, N={num_samples} samples each; variance of one estimate", head, "-" * len(head)]
    for r in rows:
        v = r["variance"]
        lines.append(
            f"{r['problem']:<26}{r['param']:<11}{r['exact']:>10.4f}{r['estimate']:>10.4f}{r['standard_error']:>9.4f}"
            f"{r['abs_error_in_se']:>9.2f}{v['none']:>11.3g}{v['leave-one-out']:>11.3g}{v['moving average']:>11.3g}")
    return "\n".join(lines)


def plot(sweep: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (name, errors) in enumerate(sweep.items()):
        ns = np.array(sorted(int(n) for n in errors))
        err = np.array([errors[n] for n in ns])
        color = f"C{i}"
        ax.loglog(ns, err, "o-", color=color, label=name)
        ax.loglog(ns, err[0] / np.sqrt(ns / ns[0]), ":", color=color, alpha=0.6)
    ax.plot([], [], "k:", label=r"$\propto 1/\sqrt{N}$ reference")
    ax.set_xlabel("samples per estimate N")
    ax.set_ylabel(r"RMS error $\|\hat g - \nabla_\theta \mathbb{E}[f]\|$")
    ax.set_title("Score-function gradient error vs number of samples")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = common.parser(__doc__).parse_args()
    config = Config(seed=args.seed)
    if args.quick:
        config = dataclasses.replace(config, num_estimates=100, sweep=(1, 16), sweep_estimates=50, warmup_steps=2)
    start = time.perf_counter()
    result = run(config, progress=True)
    seconds = time.perf_counter() - start
    print(table(result["rows"], config.num_samples))
    worst = max(r["abs_error_in_se"] for r in result["rows"])
    print(f"\nlargest |error| = {worst:.2f} standard errors over {len(result['rows'])} coordinates "
          f"({config.num_estimates} estimates each); {seconds:.1f} s")
    record = {"config": dataclasses.asdict(config), "seed": config.seed, "wall_seconds": seconds,
              "machine": common.machine_info(), **result}
    common.save_json(record, args.out, "exact_check")
    plot(result["rms_error_vs_samples"], args.out / "exact_check.png")
    print(f"wrote {args.out / 'exact_check.json'} and {args.out / 'exact_check.png'}")


if __name__ == "__main__":
    main()
