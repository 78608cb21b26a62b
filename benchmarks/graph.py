"""Stochastic computation graphs: ``lt.graph`` against NumPyro's ``TraceGraph_ELBO`` and hand-written surrogates.

Three ELBO gradients, each from N particles, at fixed guide params θ:

  plate   64 independent Bernoulli latents, per-latent costs (the model of :mod:`benchmarks.plate`);
  chain   categorical sites a → b → c (4 classes) with a cost at every node and an observation of c;
  sbn     a two-layer sigmoid belief net guide q(z1) q(z2|z1) (4 and 3 units), a fixed model
          p(z2) p(z1|z2) p(x|z1) of 8 observed pixels.

Methods, on each: NumPyro ``TraceGraph_ELBO(num_particles=N, vectorize_particles=True)``, which credits each
site with its downstream costs and puts θ under ``stop_gradient`` inside log q (no pathwise −∇ log q term);
``lt.graph`` on the same program written with ``sample``, first with θ under ``stop_gradient`` in −log q
(NumPyro's estimator, without and with leave-one-out baselines), then with −log q differentiated (the total
derivative, right for higher orders); the hand-written surrogate of that last estimator in plain JAX, each
site's score times the sum of the costs it reaches, drawing the same particles (one key per particle, split
from the call's key as ``lt.graph`` does; the two agree to float rounding, checked). Every method is checked
unbiased against the exact gradient (``lt.graph`` with every site enumerated; the closed form for the plate).
Variance: the sum over coordinates of the variance over M estimates. Times: the jitted gradient, methods interleaved, medians;
compile time is tracing (and for ``lt.graph`` the data-flow analysis), lowering and compiling.

Run from the repository root::

    python -m benchmarks.graph            # writes its section of benchmarks/RESULTS.md
    python -m benchmarks.graph --quick    # smoke run, prints only

References:
  Schulman et al., "Gradient Estimation Using Stochastic Computation Graphs", 2015.
  Phan, Pradhan and Jankowiak, "Composable Effects for Flexible and Accelerated Probabilistic
  Programming in NumPyro", 2019.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
from jax.scipy import stats

import logtrick as lt
from benchmarks import plate as plate_benchmark
from benchmarks.common import compile_timed, interleaved_times, median_iqr, paired_ratio, publish

SECTION = "## Stochastic computation graphs: lt.graph vs NumPyro TraceGraph_ELBO vs hand-written"
COMMAND = "python -m benchmarks.graph"
sg = jax.lax.stop_gradient
bern, cat = lt.families.bernoulli(), lt.families.categorical()
LOO = lt.baselines.leave_one_out()


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark configuration.

    Attributes:
      num_particles: N.
      num_estimates: M, estimates per method for the variance and the unbiasedness check.
      repeats: interleaved timed samples per method.
      min_sample_seconds: each timed sample repeats the call until it lasts this long.
      seed: PRNG seed.
    """

    num_particles: int = 4
    num_estimates: int = 2000
    repeats: int = 60
    min_sample_seconds: float = 0.03
    seed: int = 0


QUICK = Config(num_estimates=300, repeats=5, min_sample_seconds=0.01)
Gradient = Callable[[Any, jax.Array], Any]


class Model(NamedTuple):
    """One benchmark model: its guide params θ, the exact gradient, and the gradient of every method."""

    theta: Any
    exact: Any
    methods: dict[str, Gradient]


def graph_gradient(program: Callable, n: int, baseline: lt.Baseline | None, names: tuple[str, ...], *,
                   stop_theta: bool) -> Gradient:
    """``lt.graph`` on ``program(θ, θ_in_log_q, key, sample)``, every site a score function with ``baseline``."""
    sites = {name: lt.sites.score_function(baseline) for name in names}
    est = lt.graph(lambda th, key, sample: program(th, sg(th) if stop_theta else th, key, sample),
                   num_samples=n, sites=sites)
    return lambda theta, key: est.estimate(theta, est.init(theta), key)[0]


def exact_by_enumeration(program: Callable, supports: dict[str, Any], theta: Any) -> Any:
    """The exact gradient: ``lt.graph`` with every site enumerated (its estimate is then the sum itself)."""
    est = lt.graph(lambda th, key, sample: program(th, th, key, sample), num_samples=1,
                   sites={name: lt.sites.enumerate(s) for name, s in supports.items()})
    return est.estimate(theta, est.init(theta), jax.random.key(0))[0]


def logtrick_methods(program: Callable, n: int, names: tuple[str, ...]) -> dict[str, Gradient]:
    return {
        "lt.graph, sg(θ) in log q": graph_gradient(program, n, None, names, stop_theta=True),
        "lt.graph, sg(θ) in log q, leave-one-out": graph_gradient(program, n, LOO, names, stop_theta=True),
        "lt.graph": graph_gradient(program, n, None, names, stop_theta=False),
        "lt.graph, leave-one-out": graph_gradient(program, n, LOO, names, stop_theta=False),
    }


# --- plate ---------------------------------------------------------------------------------------------------------

def plate_model(config: Config) -> Model:
    prob = plate_benchmark.make_problem(plate_benchmark.Config(seed=config.seed))
    n = config.num_particles

    def program(theta, theta_q, key, sample):
        z = sample("z", bern, theta, key)
        return plate_benchmark.cost(z, theta_q, prob.x)

    def hand_written(loo: bool) -> Gradient:
        def gradient(theta, key):
            z = jax.vmap(lambda k: bern.sample(theta, k, 1)[0])(jax.random.split(key, n))

            def surrogate(th):
                f = plate_benchmark.cost(z, th, prob.x)
                b = lt.baselines.leave_one_out_mean(sg(f)) if loo else 0.0
                return jnp.sum(jnp.mean(sg(f - b) * plate_benchmark.log_q(z, th) + f, axis=0))

            return jax.grad(surrogate)(theta)

        return gradient

    return Model(prob.theta, prob.exact, {
        "NumPyro TraceGraph_ELBO": plate_benchmark.numpyro_gradient(prob.x, n),
        **logtrick_methods(program, n, ("z",)),
        "hand-written": hand_written(False), "hand-written, leave-one-out": hand_written(True)})


# --- chain ---------------------------------------------------------------------------------------------------------

K = 4


def chain_tables(seed: int) -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.key(seed + 10), 4)
    return {"a": jax.nn.log_softmax(jax.random.normal(keys[0], (K,))),
            "b": jax.nn.log_softmax(jax.random.normal(keys[1], (K, K))),
            "c": jax.nn.log_softmax(jax.random.normal(keys[2], (K, K))), "y": jnp.array(1.3)}


def chain_model(config: Config) -> Model:
    n, p = config.num_particles, chain_tables(config.seed)
    keys = jax.random.split(jax.random.key(config.seed + 11), 3)
    theta = {"a": jax.random.normal(keys[0], (K,)), "b": jax.random.normal(keys[1], (K, K)),
             "c": jax.random.normal(keys[2], (K, K))}
    log_q = lambda logits, x: jax.nn.log_softmax(logits)[x]

    def program(th, th_q, key, sample):
        ka, kb, kc = jax.random.split(key, 3)
        a = sample("a", cat, th["a"], ka)
        b = sample("b", cat, th["b"][a], kb)
        c = sample("c", cat, th["c"][b], kc)
        return {"a": p["a"][a] - log_q(th_q["a"], a), "b": p["b"][a, b] - log_q(th_q["b"][a], b),
                "c": p["c"][b, c] - log_q(th_q["c"][b], c), "y": stats.norm.logpdf(p["y"], c, 1.0)}

    def numpyro_model():
        a = numpyro.sample("a", nd.Categorical(logits=p["a"]))
        b = numpyro.sample("b", nd.Categorical(logits=p["b"][a]))
        c = numpyro.sample("c", nd.Categorical(logits=p["c"][b]))
        numpyro.sample("y", nd.Normal(c.astype(jnp.float32), 1.0), obs=p["y"])

    def numpyro_guide():   # params named apart from the sites: NumPyro's names are one namespace
        th = {k: numpyro.param("theta_" + k, v) for k, v in theta.items()}
        a = numpyro.sample("a", nd.Categorical(logits=th["a"]))
        b = numpyro.sample("b", nd.Categorical(logits=th["b"][a]))
        numpyro.sample("c", nd.Categorical(logits=th["c"][b]))

    elbo = numpyro.infer.TraceGraph_ELBO(num_particles=n, vectorize_particles=True)
    numpyro_loss = lambda th, key: elbo.loss(key, {"theta_" + k: v for k, v in th.items()}, numpyro_model,
                                             numpyro_guide)
    numpyro_gradient = lambda th, key: jax.tree_util.tree_map(jnp.negative, jax.grad(numpyro_loss)(th, key))

    def hand_written(loo: bool) -> Gradient:
        def draw(th, key):
            ka, kb, kc = jax.random.split(key, 3)
            a = cat.sample(th["a"], ka, 1)[0]
            b = cat.sample(th["b"][a], kb, 1)[0]
            return a, b, cat.sample(th["c"][b], kc, 1)[0]

        def gradient(th, key):
            a, b, c = jax.vmap(lambda k: draw(th, k))(jax.random.split(key, n))

            def surrogate(th):
                la, lb, lc = (jax.vmap(log_q)(th["a"][None].repeat(n, 0), a), jax.vmap(log_q)(th["b"][a], b),
                              jax.vmap(log_q)(th["c"][b], c))
                ca, cb = p["a"][a] - la, p["b"][a, b] - lb
                cc = p["c"][b, c] - lc + stats.norm.logpdf(p["y"], c, 1.0)
                downstream = [ca + cb + cc, cb + cc, cc]
                base = [lt.baselines.leave_one_out_mean(sg(d)) if loo else 0.0 for d in downstream]
                score = sum(sg(d - b_) * l for d, b_, l in zip(downstream, base, (la, lb, lc)))
                return jnp.mean(score + ca + cb + cc)

            return jax.grad(surrogate)(th)

        return gradient

    supports = {name: jnp.arange(K) for name in "abc"}
    return Model(theta, exact_by_enumeration(program, supports, theta), {
        "NumPyro TraceGraph_ELBO": numpyro_gradient, **logtrick_methods(program, n, ("a", "b", "c")),
        "hand-written": hand_written(False), "hand-written, leave-one-out": hand_written(True)})


# --- two-layer sigmoid belief net ----------------------------------------------------------------------------------

def sbn_model(config: Config) -> Model:
    n = config.num_particles
    keys = jax.random.split(jax.random.key(config.seed + 20), 6)
    p = {"z2": jnp.zeros(3), "V": jax.random.normal(keys[0], (4, 3)), "U": jax.random.normal(keys[1], (8, 4)),
         "x": (jax.random.uniform(keys[2], (8,)) < 0.5).astype(jnp.float32)}
    theta = {"q1": 0.5 * jax.random.normal(keys[3], (4,)), "W": 0.5 * jax.random.normal(keys[4], (3, 4)),
             "c": 0.5 * jax.random.normal(keys[5], (3,))}

    def program(th, th_q, key, sample):
        k1, k2 = jax.random.split(key)
        z1 = sample("z1", bern, th["q1"], k1)
        z2 = sample("z2", bern, th["W"] @ z1 + th["c"], k2)
        return {"x": bern.log_prob(p["U"] @ z1, p["x"]),
                "z1": bern.log_prob(p["V"] @ z2, z1) - bern.log_prob(th_q["q1"], z1),
                "z2": bern.log_prob(p["z2"], z2) - bern.log_prob(th_q["W"] @ z1 + th_q["c"], z2)}

    def numpyro_model():
        z2 = numpyro.sample("z2", nd.Bernoulli(logits=p["z2"]).to_event(1))
        z1 = numpyro.sample("z1", nd.Bernoulli(logits=p["V"] @ z2).to_event(1))
        numpyro.sample("x", nd.Bernoulli(logits=p["U"] @ z1).to_event(1), obs=p["x"])

    def numpyro_guide():
        th = {k: numpyro.param(k, v) for k, v in theta.items()}
        z1 = numpyro.sample("z1", nd.Bernoulli(logits=th["q1"]).to_event(1))
        numpyro.sample("z2", nd.Bernoulli(logits=th["W"] @ z1 + th["c"]).to_event(1))

    elbo = numpyro.infer.TraceGraph_ELBO(num_particles=n, vectorize_particles=True)
    numpyro_gradient = lambda th, key: jax.tree_util.tree_map(
        jnp.negative, jax.grad(lambda t: elbo.loss(key, t, numpyro_model, numpyro_guide))(th))

    def hand_written(loo: bool) -> Gradient:
        def draw(th, key):
            k1, k2 = jax.random.split(key)
            z1 = bern.sample(th["q1"], k1, 1)[0]
            return z1, bern.sample(th["W"] @ z1 + th["c"], k2, 1)[0]

        def gradient(th, key):
            z1, z2 = jax.vmap(lambda k: draw(th, k))(jax.random.split(key, n))

            def surrogate(th):
                l1 = jax.vmap(bern.log_prob, in_axes=(None, 0))(th["q1"], z1)
                l2 = jax.vmap(bern.log_prob)(z1 @ th["W"].T + th["c"], z2)
                cx = jax.vmap(lambda z: bern.log_prob(p["U"] @ z, p["x"]))(z1)
                c1 = jax.vmap(lambda a, b: bern.log_prob(p["V"] @ b, a))(z1, z2) - l1
                c2 = jax.vmap(lambda b: bern.log_prob(p["z2"], b))(z2) - l2
                downstream = [cx + c1 + c2, c1 + c2]
                base = [lt.baselines.leave_one_out_mean(sg(d)) if loo else 0.0 for d in downstream]
                score = sum(sg(d - b_) * l for d, b_, l in zip(downstream, base, (l1, l2)))
                return jnp.mean(score + cx + c1 + c2)

            return jax.grad(surrogate)(th)

        return gradient

    supports = {"z1": lt.exact.bernoulli_support(4), "z2": lt.exact.bernoulli_support(3)}
    return Model(theta, exact_by_enumeration(program, supports, theta), {
        "NumPyro TraceGraph_ELBO": numpyro_gradient, **logtrick_methods(program, n, ("z1", "z2")),
        "hand-written": hand_written(False), "hand-written, leave-one-out": hand_written(True)})


MODELS = {"plate (64 Bernoulli latents)": plate_model, "chain a → b → c (categorical)": chain_model,
          "two-layer sigmoid belief net": sbn_model}
VERSUS = {"lt.graph": "hand-written", "lt.graph, leave-one-out": "hand-written, leave-one-out"}


def total_variance(estimates: Any) -> float:
    return float(sum(np.sum(np.var(np.asarray(leaf, np.float64), axis=0, ddof=1))
                     for leaf in jax.tree_util.tree_leaves(estimates)))


def check_same_samples(model: Model, key: jax.Array) -> None:
    """For one key, lt.graph and the hand-written surrogate draw the same particles and agree to float rounding."""
    for name, other in VERSUS.items():
        got, want = (jax.tree_util.tree_leaves(model.methods[m](model.theta, key)) for m in (name, other))
        for g, w in zip(got, want):
            if not np.allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(w)))):
                raise AssertionError(f"{name} differs from {other} on the same key: max |Δ| = "
                                     f"{float(np.max(np.abs(g - w))):.3g}")


def measure(model: Model, config: Config) -> dict[str, dict[str, Any]]:
    """Variance, unbiasedness verdict, compile time and interleaved run time of every method of one model."""
    k_draw, k_time = jax.random.split(jax.random.key(config.seed + 1))
    check_same_samples(model, k_time)
    results, calls = {}, {}
    for name, gradient in model.methods.items():
        estimates = lt.testing.draw_estimates(lambda k: gradient(model.theta, k), k_draw,
                                              num_estimates=config.num_estimates)
        report = lt.testing.check_unbiased(estimates, model.exact)
        compile_s, compiled = compile_timed(gradient, model.theta, k_time)
        calls[name] = lambda compiled=compiled: compiled(model.theta, k_time)
        results[name] = {"variance": total_variance(estimates), "verdict": report.verdict, "compile_s": compile_s}
    times = interleaved_times(calls, repeats=config.repeats, min_sample_seconds=config.min_sample_seconds)
    for name, samples in times.items():
        results[name]["median_s"] = median_iqr(samples.wall)[0]
        results[name]["cpu_s"] = median_iqr(samples.cpu)[0]
        if name in VERSUS:
            other = VERSUS[name]
            results[name]["cpu_ratio"] = paired_ratio(samples.cpu, times[other].cpu)
            results[name]["wall_ratio"] = paired_ratio(samples.wall, times[other].wall)
            results[name]["compile_ratio"] = results[name]["compile_s"] / results[other]["compile_s"]
    return results


def table(all_results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| model | method | Σ Var ĝ | / NumPyro | unbiased? | time per gradient (median) | CPU time "
             "| / hand-written (CPU / wall) | compile | / hand-written |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for model, results in all_results.items():
        reference = results["NumPyro TraceGraph_ELBO"]["variance"]
        for name, r in results.items():
            versus = f"{r['cpu_ratio']:.3f}× / {r['wall_ratio']:.3f}×" if "cpu_ratio" in r else ""
            compile_ratio = f"{r['compile_ratio']:.2f}×" if "compile_ratio" in r else ""
            lines.append(f"| {model} | {name} | {r['variance']:.4g} | {r['variance'] / reference:.3g}× | "
                         f"{r['verdict']} | {r['median_s'] * 1e6:.0f} µs | {r['cpu_s'] * 1e6:.0f} µs | {versus} "
                         f"| {r['compile_s']:.2f} s | {compile_ratio} |")
    return "\n".join(lines)


def targets(all_results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for model, r in all_results.items():
        numpyro_var = r["NumPyro TraceGraph_ELBO"]["variance"]
        same = r["lt.graph, sg(θ) in log q"]["variance"] / numpyro_var
        loo = r["lt.graph, sg(θ) in log q, leave-one-out"]["variance"] / numpyro_var
        cpu = max(r[name]["cpu_ratio"] for name in VERSUS)
        compile_ratio = max(r[name]["compile_ratio"] for name in VERSUS)
        lines.append(f"- {model}: variance without baselines {same:.2f}× NumPyro's (target ≤ 1.1: "
                     f"{'met' if same <= 1.1 else 'MISSED'}), with leave-one-out {loo:.2f}×; run time at most "
                     f"{cpu:.3f}× the hand-written surrogate's CPU time (target ≤ 1.1: "
                     f"{'met' if cpu <= 1.1 else 'MISSED'}); compile time at most {compile_ratio:.2f}× "
                     f"(target ≤ 1.5: {'met' if compile_ratio <= 1.5 else 'MISSED'})")
    return "\n".join(lines)


def section(config: Config, command: str, all_results: dict, machine_info: str) -> str:
    return "\n\n".join([
        SECTION,
        f"Command: `{command}`. N = {config.num_particles} particles, M = {config.num_estimates} estimates per "
        f"method, NumPyro {numpyro.__version__}. The models and methods are described in "
        "`benchmarks/graph.py`'s docstring. “sg(θ) in log q” is NumPyro's estimator (the guide's log q "
        "under `stop_gradient` in the ELBO); without it `lt.graph` differentiates −log q too, whose pathwise "
        "term is zero in mean but not in variance. The hand-written surrogates are that total-derivative "
        "estimator in plain JAX, each site's score times the sum of the costs it reaches (per latent for the "
        "plate), on the same particles as `lt.graph` (one key per particle; the two agree to float rounding, "
        "checked); the time and compile ratios compare `lt.graph` with them.",
        f"Machine: {machine_info}.",
        table(all_results),
        targets(all_results),
    ]) + "\n"


def run(config: Config) -> dict[str, dict[str, dict[str, Any]]]:
    results = {}
    for name, make in MODELS.items():
        print(f"{name} ...", flush=True)
        results[name] = measure(make(config), config)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller configuration; prints only")
    args = parser.parse_args()
    config = QUICK if args.quick else Config()
    results = run(config)
    publish(SECTION, COMMAND, table(results) + "\n" + targets(results),
            lambda command, machine_info: section(config, command, results, machine_info), quick=args.quick)


if __name__ == "__main__":
    main()
