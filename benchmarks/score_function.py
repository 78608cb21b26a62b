"""Score-function mean gradient: logtrick vs a hand-written floor and optax 0.1.9.

Times grad_θ E_{x~N(loc, diag(exp(log_scale))²)}[f(x)] ≈ (1/N) Σ_i f(x_i) grad_θ log p(x_i|θ),
f(x) = Σ_j x_j², for a D-dimensional diagonal Gaussian, four ways:

  library    ``jax.jit(lt.score_function(f, lt.families.normal(), num_samples=N).estimate)``
  floor      grad of the stop-gradient surrogate mean(sg(f(x_i)) · log p(x_i|θ)), jitted
  vmap_grad  mean over i of vmap(grad_θ [f(x_i) · log p(x_i|θ)]), jitted
  optax_0_1_9  mean of ``optax.monte_carlo.score_function_jacobians`` (jacfwd), jitted

All four draw the same samples from the same key, and the script asserts they agree.
optax 0.1.9 (its ``monte_carlo`` module is gone from current optax) is installed with
``pip --no-deps --target benchmarks/.optax01`` on first use and imported beside the
installed optax, which the library's RELAX uses.

Run from the repository root::

    python -m benchmarks.score_function            # writes benchmarks/RESULTS.md
    python -m benchmarks.score_function --quick    # smoke run, prints only

References:
  Mohamed et al., "Monte Carlo Gradient Estimation in Machine Learning", 2020.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pathlib
import statistics
import subprocess
import sys
import time
import types
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats
from tqdm import tqdm

import logtrick as lt
from benchmarks.common import large_passes, publish

OPTAX_VERSION = "0.1.9"
OPTAX_DIR = pathlib.Path(__file__).resolve().parent / ".optax01"
SECTION = "## Score-function mean gradient vs floor and optax 0.1.9"
COMMAND = "python -m benchmarks.score_function"


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark configuration.

    Attributes:
      dims: the dimensions D of the Gaussian.
      num_samples: N, samples per gradient estimate.
      repeats: timed samples per method and D (fewer for a method whose call is
        slow, see ``max_seconds``).
      min_sample_seconds: each timed sample repeats the call until it lasts this long.
      max_seconds: cap on the timed seconds of one method at one D.
      seed: PRNG seed for the parameters and the sampling keys.
    """

    dims: tuple[int, ...] = (10, 100, 1000)
    num_samples: int = 1000
    repeats: int = 100
    min_sample_seconds: float = 2e-3
    max_seconds: float = 20.0
    seed: int = 0


class Method(NamedTuple):
    """A jitted gradient computation: ``fn(*args)``; ``grads(out)`` extracts {"loc", "log_scale"}."""

    fn: Callable[..., Any]
    args: tuple
    grads: Callable[[Any], dict]


def f(x: jax.Array) -> jax.Array:
    """The black-box cost f(x) = Σ_j x_j² for one sample."""
    return jnp.sum(x**2)


def normal_log_prob(params: dict, x: jax.Array) -> jax.Array:
    """log N(x; loc, diag(exp(log_scale))²) for one sample, summed over dimensions."""
    return jnp.sum(stats.norm.logpdf(x, params["loc"], jnp.exp(params["log_scale"])))


def normal_samples(params: dict, key: jax.Array, n: int) -> jax.Array:
    """x_i = loc + exp(log_scale) · ε_i, ε_i ~ N(0, I), shape (n, D); the library's draw."""
    eps = jax.random.normal(key, (n,) + params["loc"].shape, params["loc"].dtype)
    return params["loc"] + jnp.exp(params["log_scale"]) * eps


def floor_gradient(params: dict, key: jax.Array, n: int) -> dict:
    """grad_θ of mean(sg(f(x_i)) · log p(x_i|θ)) with x_i = sg(sample): one reverse pass."""
    xs = jax.lax.stop_gradient(normal_samples(params, key, n))
    values = jax.lax.stop_gradient(jax.vmap(f)(xs))

    def surrogate(p):
        return jnp.mean(values * jax.vmap(normal_log_prob, in_axes=(None, 0))(p, xs))

    return jax.grad(surrogate)(params)


def vmap_grad_gradient(params: dict, key: jax.Array, n: int) -> dict:
    """Mean over i of the per-sample gradients grad_θ [f(x_i) · log p(x_i|θ)]."""
    xs = jax.lax.stop_gradient(normal_samples(params, key, n))

    def term(p, x):
        return jax.lax.stop_gradient(f(x)) * normal_log_prob(p, x)

    per_sample = jax.vmap(jax.grad(term), in_axes=(None, 0))(params, xs)
    return jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), per_sample)


def load_optax_0_1_9() -> types.ModuleType:
    """Imports optax 0.1.9 from ``OPTAX_DIR`` beside the installed optax, installing it there first if needed.

    The folder holds a ``.gitignore`` of ``*``, so git ignores it. The 0.1.9
    modules are imported with the installed optax's entries of ``sys.modules``
    set aside and put back afterwards, so both can live in one process (the
    library imports the installed optax for RELAX's optimiser); the 0.1.9
    modules keep the references they bound at import. Raises if the optax
    imported is not 0.1.9 from ``OPTAX_DIR``.
    """
    if not (OPTAX_DIR / "optax" / "__init__.py").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--target", str(OPTAX_DIR), f"optax=={OPTAX_VERSION}"],
            check=True)
    (OPTAX_DIR / ".gitignore").write_text("*\n")
    is_optax = lambda name: name == "optax" or name.startswith("optax.")
    installed = {name: sys.modules.pop(name) for name in [n for n in sys.modules if is_optax(n)]}
    sys.path.insert(0, str(OPTAX_DIR))
    try:
        optax = importlib.import_module("optax")
        importlib.import_module("optax.monte_carlo")
    finally:
        sys.path.remove(str(OPTAX_DIR))
        for name in [n for n in sys.modules if is_optax(n)]:
            del sys.modules[name]
        sys.modules.update(installed)
    if optax.__version__ != OPTAX_VERSION or not optax.__file__.startswith(str(OPTAX_DIR)):
        raise RuntimeError(f"loaded optax {optax.__version__} from {optax.__file__}")
    return optax


def methods(params: dict, key: jax.Array, n: int, optax: types.ModuleType) -> dict[str, Method]:
    """The four jitted computations of the same mean gradient, with their arguments."""
    est = lt.score_function(f, lt.families.normal(), num_samples=n)

    def optax_gradient(params, key):
        jac = optax.monte_carlo.score_function_jacobians(
            f, (params["loc"], params["log_scale"]), optax._src.utils.multi_normal, key, n)
        loc, log_scale = (jnp.mean(j, axis=0) for j in jac)
        return {"loc": loc, "log_scale": log_scale}

    return {
        "library": Method(jax.jit(est.estimate), (params, est.init(params), key), lambda out: out[0]),
        "floor": Method(jax.jit(floor_gradient, static_argnums=2), (params, key, n), lambda out: out),
        "vmap_grad": Method(jax.jit(vmap_grad_gradient, static_argnums=2), (params, key, n), lambda out: out),
        "optax_0_1_9": Method(jax.jit(optax_gradient), (params, key), lambda out: out),
    }


def compile_method(method: Method) -> tuple[float, str]:
    """Wall seconds of tracing, lowering and compiling ``method``, and the compiled HLO text."""
    start = time.perf_counter()
    compiled = method.fn.lower(*method.args).compile()
    return time.perf_counter() - start, compiled.as_text()


def timed_sample(method: Method, number: int) -> float:
    """Mean seconds per call over ``number`` back-to-back blocked calls."""
    start = time.perf_counter()
    for _ in range(number):
        jax.block_until_ready(method.fn(*method.args))
    return (time.perf_counter() - start) / number


def assert_same_gradient(outputs: dict[str, dict]) -> None:
    """All methods give the library's gradient for the same samples (float32 rounding only)."""
    ref = outputs["library"]
    for name, grads in outputs.items():
        for leaf in ("loc", "log_scale"):
            want, got = np.asarray(ref[leaf]), np.asarray(grads[leaf])
            scale = np.max(np.abs(want))
            if not np.allclose(got, want, rtol=1e-4, atol=1e-4 * scale):
                raise AssertionError(
                    f"{name} {leaf} differs from library: max |Δ| = {np.max(np.abs(got - want)):.3g}"
                    f" (max |library| = {scale:.3g})")


def bench_dim(config: Config, dim: int, optax: types.ModuleType) -> dict[str, dict[str, float]]:
    """Compile, check and time the four methods at one dimension, interleaved round-robin."""
    k_loc, k_scale, k_sample = jax.random.split(jax.random.key(config.seed + dim), 3)
    params = {"loc": jax.random.normal(k_loc, (dim,)),
              "log_scale": 0.3 * jax.random.normal(k_scale, (dim,))}
    ms = methods(params, k_sample, config.num_samples, optax)
    compiled = {name: compile_method(m) for name, m in ms.items()}

    warm = {}
    outputs = {}
    for name, m in ms.items():
        outputs[name] = m.grads(jax.block_until_ready(m.fn(*m.args)))
        warm[name] = timed_sample(m, 1)
    assert_same_gradient(outputs)

    number = {name: max(1, int(np.ceil(config.min_sample_seconds / t))) for name, t in warm.items()}
    repeats = {name: int(np.clip(config.max_seconds / (t * number[name]), 3, config.repeats))
               for name, t in warm.items()}
    times: dict[str, list[float]] = {name: [] for name in ms}
    names = list(ms)
    for r in range(config.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if len(times[name]) < repeats[name]:
                times[name].append(timed_sample(ms[name], number[name]))
    return {name: {"median_s": statistics.median(times[name]), "compile_s": compiled[name][0],
                   "large_passes": large_passes(compiled[name][1], config.num_samples * dim),
                   "repeats": len(times[name]), "calls_per_sample": number[name]}
            for name in ms}


def run(config: Config, optax: types.ModuleType) -> dict[int, dict[str, dict[str, float]]]:
    """Benchmarks every dimension of ``config``: {D: {method: stats}}."""
    return {dim: bench_dim(config, dim, optax) for dim in tqdm(config.dims, desc="D")}


NAMES = ("library", "floor", "vmap_grad", "optax_0_1_9")


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-2 else f"{seconds * 1e3:.1f} ms"


def _ratio(r: dict, num: str, den: str) -> float:
    return r[num]["median_s"] / r[den]["median_s"]


def table(results: dict[int, dict[str, dict[str, float]]]) -> str:
    """Markdown table per D: medians, ratios, compile seconds, N·D passes, timed samples."""
    lines = [
        "| D | library | floor | vmap_grad | optax 0.1.9 | library/floor | vmap_grad/library "
        "| optax/library | compile (s) | N·D passes | timed samples |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dim, r in results.items():
        medians = " | ".join(_fmt_time(r[n]["median_s"]) for n in NAMES)
        compile_s = " / ".join(f"{r[n]['compile_s']:.2f}" for n in NAMES)
        passes = " / ".join(str(r[n]["large_passes"]) for n in NAMES)
        repeats = " / ".join(str(r[n]["repeats"]) for n in NAMES)
        lines.append(
            f"| {dim} | {medians} | {_ratio(r, 'library', 'floor'):.2f}× "
            f"| {_ratio(r, 'vmap_grad', 'library'):.2f}× | {_ratio(r, 'optax_0_1_9', 'library'):.0f}× "
            f"| {compile_s} | {passes} | {repeats} |")
    return "\n".join(lines)


def targets(results: dict[int, dict[str, dict[str, float]]]) -> str:
    """The two targets, met or missed: library ≤ 1.05× floor at every D; ≥ 50× optax at D = 1000."""
    ratios = {d: _ratio(r, "library", "floor") for d, r in results.items()}
    worst = max(ratios, key=ratios.get)
    lines = [f"- library ≤ 1.05× floor at every D: {'met' if ratios[worst] <= 1.05 else 'MISSED'}"
             f" (worst {ratios[worst]:.2f}× at D = {worst})"]
    if 1000 in results:
        speedup = _ratio(results[1000], "optax_0_1_9", "library")
        lines.append(f"- library ≥ 50× faster than optax 0.1.9 at D = 1000: "
                     f"{'met' if speedup >= 50 else 'MISSED'} ({speedup:.0f}×)")
    return "\n".join(lines)


def interpretation(results: dict[int, dict[str, dict[str, float]]]) -> str:
    """One or two sentences read off the results."""
    dim = max(results)
    r = results[dim]
    library = (
        f"At D = {dim} the library takes {_ratio(r, 'library', 'floor'):.2f}× the floor's time and "
        f"compiles to {r['library']['large_passes']} passes over N×D arrays against the floor's "
        f"{r['floor']['large_passes']}; what it adds (the DiCE factor, the non-finite guard, "
        "returning the f-values, and the samples it computes anyway) is O(N) work. Its f-values are not "
        "under `stop_gradient`, but f here has no differentiable inputs (the samples are), so the reverse "
        "pass has nothing more to do.")
    optax = (
        f"optax 0.1.9 builds per-sample Jacobians with `jacfwd`, one forward pass per "
        f"parameter, O(N·D²), so it is {_ratio(r, 'optax_0_1_9', 'library'):.0f}× slower "
        f"than the library at D = {dim}, and the gap grows with D.")
    return library + " " + optax


def section(config: Config, command: str, results: dict, machine_info: str) -> str:
    """The RESULTS.md section for this benchmark."""
    return "\n\n".join([
        SECTION,
        f"Command: `{command}` (N = {config.num_samples}, f(x) = Σ x², up to {config.repeats} "
        f"interleaved timed samples per method, each ≥ {config.min_sample_seconds * 1e3:g} ms of "
        f"back-to-back calls, at most {config.max_seconds:g} s per method and D; medians). "
        "Columns with four values list library / floor / vmap_grad / optax 0.1.9. N·D passes: "
        "instructions of the compiled program (`jax.jit(fn).lower(...).compile().as_text()`) "
        "that read or write an array of at least N·D elements.",
        f"Machine: {machine_info}.",
        table(results),
        targets(results),
        interpretation(results),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=list(Config.dims))
    parser.add_argument("--num-samples", type=int, default=Config.num_samples)
    parser.add_argument("--repeats", type=int, default=Config.repeats)
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke configuration; prints the table, leaves RESULTS.md alone")
    args = parser.parse_args()
    if args.quick:
        config = Config(dims=(10,), num_samples=100, repeats=5, max_seconds=1.0)
    else:
        config = Config(dims=tuple(args.dims), num_samples=args.num_samples, repeats=args.repeats)

    optax = load_optax_0_1_9()
    print(f"optax {optax.__version__} from {OPTAX_DIR}", flush=True)
    results = run(config, optax)
    publish(SECTION, COMMAND, table(results) + "\n" + targets(results),
            lambda command, machine_info: section(config, command, results, machine_info), quick=args.quick)


if __name__ == "__main__":
    main()
