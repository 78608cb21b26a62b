"""Time and memory of the score-function estimate vs samples N, dimension D and parameter count.

Measures the jitted ``est.estimate`` of ``lt.score_function`` with the leave-one-out
baseline, grad_θ E[f(x)] ≈ (1/N) Σ_i (f(x_i) − b_i) grad_θ log p(x_i|θ), in three sweeps:

  n       N = 10³ … 10⁷ samples of a D = 1000 diagonal Gaussian, f(x) = Σ_j x_j²,
          ``chunk_size=`` set (for N above it) and unset (run while it fits, else compiled only)
  d       D = 10 … 10⁴ at fixed N, chunked
  params  an MLP policy over 16 actions, observations o ~ N(0, I_64), f((o, a)) = o_a,
          hidden widths giving 10⁴ … 10⁶ parameters at fixed N, chunked and unchunked

For each configuration: compile seconds; the compiled program's memory
(``jax.jit(fn).lower(...).compile().memory_analysis()``: temporaries + arguments + outputs);
the peak resident memory of the process during the estimates above its resident memory
just before them (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` after freed heap
memory is returned with ``malloc_trim``); the median wall time and process CPU time (all
threads: the work done, whatever share of a shared machine the process got) of a few
estimates after a warm-up one (a warm-up longer than ``single_call_seconds`` is the only,
timed, call); and, for the Gaussian, ‖ĝ − g‖ / ‖g‖ against the exact gradient
g = (2 loc, 2 exp(2 log_scale)).

Run from the repository root::

    python -m benchmarks.scaling              # writes benchmarks/RESULTS.md, scaling.png, scaling.json
    python -m benchmarks.scaling --sweeps d   # one sweep (the section then holds only it); flags pick sizes
    python -m benchmarks.scaling --replot     # plot and section again from scaling.json
    python -m benchmarks.scaling --quick      # smoke run, prints only (plot to a temporary folder)

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist
  reinforcement learning", 1992.
  Chen et al., "Training Deep Nets with Sublinear Memory Cost", 2016 (recomputation).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import pathlib
import re
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from tqdm import tqdm

import logtrick as lt
from benchmarks.common import RESULTS_PATH, machine, write_section

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
PLOT_PATH = HERE / "scaling.png"
JSON_PATH = HERE / "scaling.json"
SECTION = "## Scaling: time and memory vs samples, dimension and parameters"
COMMAND = "python -m benchmarks.scaling"
SWEEPS = ("n", "d", "params")
NUM_OBS, NUM_ACTIONS = 64, 16


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark configuration.

    Attributes:
      sweeps: which of "n", "d", "params" to run.
      ns: the N of the n sweep; chunked only where N > ``chunk_size``.
      dim: D of the n sweep.
      chunk_size: chunk of the n sweep.
      dims: the D of the d sweep.
      dims_num_samples: N of the d sweep.
      dims_chunk_size: chunk of the d sweep.
      hiddens: widths of the MLP's two hidden layers in the params sweep.
      mlp_num_samples: N of the params sweep.
      mlp_chunk_size: chunk of the params sweep.
      max_run_gib: an unchunked program whose compiled memory exceeds this is compiled, not run.
      repeats: timed estimates after the warm-up one.
      single_call_seconds: a warm-up estimate longer than this is the only, timed, call.
      seed: PRNG seed for the parameters and the sampling keys.
    """

    sweeps: tuple[str, ...] = SWEEPS
    ns: tuple[int, ...] = (10**3, 10**4, 10**5, 10**6, 10**7)
    dim: int = 1000
    chunk_size: int = 10**3
    dims: tuple[int, ...] = (10, 100, 1000, 10**4)
    dims_num_samples: int = 10**4
    dims_chunk_size: int = 10**3
    hiddens: tuple[int, ...] = (64, 128, 256, 512, 1024)
    mlp_num_samples: int = 4096
    mlp_chunk_size: int = 512
    max_run_gib: float = 6.0
    repeats: int = 3
    single_call_seconds: float = 20.0
    seed: int = 0


QUICK = Config(ns=(10**2, 10**3), dim=100, chunk_size=10**2, dims=(10,), dims_num_samples=10**3,
               dims_chunk_size=10**2, hiddens=(16,), mlp_num_samples=256, mlp_chunk_size=64, repeats=1)


class Case(NamedTuple):
    """One configuration: ``size`` is D for a Gaussian, the hidden width for the MLP."""

    sweep: str
    model: str
    size: int
    num_samples: int
    chunk_size: int | None


class Problem(NamedTuple):
    """f, the family, its params and, where known, the exact gradient of E[f]."""

    f: Callable[[Any], jax.Array]
    family: lt.Family
    params: Any
    exact_grad: Any


def gaussian_problem(dim: int, seed: int) -> Problem:
    """f(x) = Σ_j x_j² under N(loc, diag(exp(log_scale))²): grad E[f] = (2 loc, 2 exp(2 log_scale))."""
    k_loc, k_scale = jax.random.split(jax.random.key(seed))
    params = {"loc": jax.random.normal(k_loc, (dim,)), "log_scale": 0.3 * jax.random.normal(k_scale, (dim,))}
    exact = {"loc": 2 * params["loc"], "log_scale": 2 * jnp.exp(2 * params["log_scale"])}
    return Problem(lambda x: jnp.sum(x**2), lt.families.normal(), params, exact)


def mlp_problem(hidden: int, seed: int) -> Problem:
    """A contextual bandit: o ~ N(0, I_64), a ~ softmax(MLP_θ(o)), f((o, a)) = o_a."""
    mlp = nn.Sequential([nn.Dense(hidden), nn.relu, nn.Dense(hidden), nn.relu, nn.Dense(NUM_ACTIONS)])
    params = mlp.init(jax.random.key(seed), jnp.zeros(NUM_OBS))

    def sample(params, key, n):
        k_obs, k_act = jax.random.split(key)
        obs = jax.random.normal(k_obs, (n, NUM_OBS))
        return obs, jax.random.categorical(k_act, mlp.apply(params, obs))

    def log_prob(params, x):
        obs, action = x
        return jax.nn.log_softmax(mlp.apply(params, obs))[action]

    return Problem(lambda x: x[0][x[1]], lt.Family(sample, log_prob), params, None)


def problem(case: Case, seed: int) -> Problem:
    """The problem of ``case``."""
    return gaussian_problem(case.size, seed) if case.model == "gaussian" else mlp_problem(case.size, seed)


def num_params(params: Any) -> int:
    """Number of scalars in a pytree."""
    return sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(params))


def relative_error(grads: Any, exact: Any) -> float:
    """‖ĝ − g‖ / ‖g‖ over all leaves."""
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
    g, e = flat(grads), flat(exact)
    return float(np.linalg.norm(g - e) / np.linalg.norm(e))


def compiled_memory(compiled: Any) -> dict[str, int]:
    """Temporary, argument and output bytes of a compiled program, and their sum."""
    stats = compiled.memory_analysis()
    memory = {"temp_bytes": stats.temp_size_in_bytes, "argument_bytes": stats.argument_size_in_bytes,
              "output_bytes": stats.output_size_in_bytes}
    return memory | {"total_bytes": sum(memory.values()) - stats.alias_size_in_bytes}


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    text = pathlib.Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def reset_peak_rss() -> int:
    """Returns freed memory to the OS, resets the resident high-water mark, returns the resident bytes (Linux)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    pathlib.Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


class Timing(NamedTuple):
    """Wall and process CPU seconds of the timed calls, and whether a warm-up call preceded them."""

    wall: list[float]
    cpu: list[float]
    warmed_up: bool


def time_calls(call: Callable[[int], Any], repeats: int, single_call_seconds: float) -> tuple[Timing, Any]:
    """Times blocked ``call(i)``: a warm-up (i = 0), then i = 1 … repeats; also returns the warm-up's output.

    A warm-up longer than ``single_call_seconds`` is the only call and its times are returned.
    """

    def timed(i):
        wall, cpu = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(call(i))
        return time.perf_counter() - wall, time.process_time() - cpu, out

    wall, cpu, out = timed(0)
    if wall > single_call_seconds:
        return Timing([wall], [cpu], False), out
    wall, cpu, _ = zip(*(timed(i) for i in range(1, repeats + 1)))
    return Timing(list(wall), list(cpu), True), out


def measure(case: Case, config: Config) -> dict[str, Any]:
    """Compiles ``case``, reads its memory, and (if it fits) times it."""
    prob = problem(case, config.seed)
    est = lt.score_function(prob.f, prob.family, num_samples=case.num_samples,
                            baseline=lt.baselines.leave_one_out(), chunk_size=case.chunk_size)
    state = est.init(prob.params)
    start = time.perf_counter()
    compiled = jax.jit(est.estimate).lower(prob.params, state, jax.random.key(0)).compile()
    result = case._asdict() | {"num_params": num_params(prob.params), "compile_s": time.perf_counter() - start,
                               **compiled_memory(compiled)}
    if case.chunk_size is None and result["total_bytes"] > config.max_run_gib * 2**30:
        return result | {"executed": False}

    keys = jax.random.split(jax.random.key(config.seed + 1), config.repeats + 1)
    rss_before = reset_peak_rss()
    timing, grads = time_calls(lambda i: compiled(prob.params, state, keys[i])[0],
                               config.repeats, config.single_call_seconds)
    seconds = statistics.median(timing.wall)
    return result | timing._asdict() | {
        "executed": True, "seconds": seconds, "cpu_seconds": statistics.median(timing.cpu),
        "samples_per_s": case.num_samples / seconds,
        "rss_growth_bytes": _status_bytes("VmHWM") - rss_before,
        "relative_error": None if prob.exact_grad is None else relative_error(grads, prob.exact_grad)}


def cases(config: Config) -> list[Case]:
    """Every configuration of the sweeps in ``config``, cheapest first within a sweep."""
    out = []
    if "n" in config.sweeps:
        out += [Case("n", "gaussian", config.dim, n, None) for n in config.ns]
        out += [Case("n", "gaussian", config.dim, n, config.chunk_size) for n in config.ns if n > config.chunk_size]
    if "d" in config.sweeps:
        out += [Case("d", "gaussian", d, config.dims_num_samples, config.dims_chunk_size) for d in config.dims]
    if "params" in config.sweeps:
        out += [Case("params", "mlp", h, config.mlp_num_samples, c)
                for c in (None, config.mlp_chunk_size) for h in config.hiddens]
    return out


def run(config: Config) -> list[dict[str, Any]]:
    """Measures every case of ``config``, one after another."""
    results = []
    for case in (bar := tqdm(cases(config), desc="configurations")):
        bar.set_postfix_str(f"{case.sweep} size={case.size} N={case.num_samples} chunk={case.chunk_size}")
        results.append(measure(case, config))
    return results


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt_calls(r: dict) -> str:
    return f"{len(r['wall'])}" + ("" if r["warmed_up"] else " (no warm-up)")


SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _sci(n: int) -> str:
    """10ᵏ for a power of ten, else n with thousands separators."""
    exponent = round(np.log10(n))
    return f"10{str(exponent).translate(SUPERSCRIPTS)}" if 10**exponent == n else f"{n:,}"


def _mode(r: dict) -> str:
    return "unchunked" if r["chunk_size"] is None else f"chunk {_sci(r['chunk_size'])}"


def table(results: list[dict], sweep: str) -> str:
    """Markdown table of one sweep."""
    rows = [r for r in results if r["sweep"] == sweep]
    first = {"n": "N", "d": "D", "params": "parameters (hidden)"}[sweep]
    gaussian = sweep != "params"
    head = (f"| {first} | mode | compile | wall time per estimate | samples/s | CPU time | timed calls "
            "| compiled temp | compiled total | peak RSS growth |"
            + (" ‖ĝ − g‖/‖g‖ |" if gaussian else " N × params × 4 B |"))
    lines = [head, "|" + "---:|" * (head.count("|") - 1)]
    for r in rows:
        key = {"n": _sci(r["num_samples"]), "d": _sci(r["size"]),
               "params": f"{r['num_params']:,} ({r['size']})"}[sweep]
        run_cells = (f"{_fmt_seconds(r['seconds'])} | {r['samples_per_s']:.3g} | {_fmt_seconds(r['cpu_seconds'])} "
                     f"| {_fmt_calls(r)}" if r["executed"] else "not run | | | ")
        rss = _fmt_bytes(r["rss_growth_bytes"]) if r["executed"] else ""
        last = (f"{r['relative_error']:.3g}" if r["executed"] else "") if gaussian else \
            _fmt_bytes(r["num_samples"] * r["num_params"] * 4)
        lines.append(f"| {key} | {_mode(r)} | {r['compile_s']:.2f} s | {run_cells} | {_fmt_bytes(r['temp_bytes'])} "
                     f"| {_fmt_bytes(r['total_bytes'])} | {rss} | {last} |")
    return "\n".join(lines)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _rows(results: list[dict], sweep: str, chunked: bool) -> list[dict]:
    return [r for r in results if r["sweep"] == sweep and (r["chunk_size"] is not None) == chunked]


def _column(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows]


def plot(results: list[dict], config: Config, path: pathlib.Path) -> None:
    """Log-log panels: time (top) and memory (bottom) vs N, D and parameter count."""
    sweeps = [s for s in SWEEPS if any(r["sweep"] == s for r in results)]
    fig, axes = plt.subplots(2, len(sweeps), figsize=(4.8 * len(sweeps), 8), squeeze=False)
    xkey = {"n": "num_samples", "d": "size", "params": "num_params"}
    xlabel = {"n": f"samples N (D = {config.dim})", "d": f"dimension D (N = {_sci(config.dims_num_samples)})",
              "params": f"MLP parameters (N = {config.mlp_num_samples})"}
    for col, sweep in enumerate(sweeps):
        top, bottom, x = axes[0, col], axes[1, col], xkey[sweep]
        for chunked, color, marker, name in ((True, "C0", "o", "chunked"), (False, "C3", "s", "unchunked")):
            rows = _rows(results, sweep, chunked)
            ran = [r for r in rows if r["executed"]]
            if not rows:
                continue
            top.plot(_column(ran, x), _column(ran, "seconds"), color=color, marker=marker, label=f"{name}: wall")
            top.plot(_column(ran, x), _column(ran, "cpu_seconds"), color=color, marker=marker, ls="--", mfc="white",
                     label=f"{name}: CPU")
            bottom.plot(_column(rows, x), _column(rows, "total_bytes"), color=color, marker=marker,
                        label=f"{name}: compiled")
            skipped = [r for r in rows if not r["executed"]]
            if skipped:
                bottom.plot(_column(skipped, x), _column(skipped, "total_bytes"), ls="none", marker=marker,
                            mfc="white", color=color, label=f"{name}: compiled, too big to run")
            if sweep == "n" and chunked:
                bottom.plot(_column(rows, x), _column(rows, "temp_bytes"), color=color, ls=":",
                            label=f"{name}: compiled temporaries")
            if sweep == "n":
                bottom.plot(_column(ran, x), _column(ran, "rss_growth_bytes"), ls="--", marker="x", color=color,
                            label=f"{name}: peak RSS growth")
        chunked = [r for r in _rows(results, sweep, True) if r["executed"]]
        if len(chunked) > 1:
            xs = np.array(_column(chunked, x))
            top.plot(xs, chunked[-1]["cpu_seconds"] * xs / xs[-1], color="gray", ls=":", label="∝ x (linear)")
        if sweep == "params":
            rows = _rows(results, sweep, False) or _rows(results, sweep, True)
            bottom.plot(_column(rows, x), [4 * r["num_samples"] * r["num_params"] for r in rows], color="gray",
                        ls=":", label="N × params floats (per-sample grads)")
        name = xlabel[sweep].split(" (")[0]
        top.set(xscale="log", yscale="log", ylabel="seconds per estimate", title=f"time vs {name}")
        bottom.set(xscale="log", yscale="log", xlabel=xlabel[sweep], ylabel="memory", title=f"memory vs {name}")
        bottom.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _fmt_bytes(v)))
        bottom.yaxis.set_minor_formatter(ticker.NullFormatter())
        for ax in (top, bottom):
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("lt.score_function (leave-one-out baseline), jitted estimate on "
                 f"{jax.default_backend()}: time and memory", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def interpretation(results: list[dict]) -> str:
    """Two or three sentences read off the results."""
    sentences = []
    chunked = [r for r in _rows(results, "n", True) if r["executed"]]
    unchunked = _rows(results, "n", False)
    if len(chunked) > 1 and len(unchunked) > 1:
        ns, last, big = _column(chunked, "num_samples"), chunked[-1], unchunked[-1]
        sentences.append(
            f"Chunked, from N = {_sci(ns[0])} to {_sci(ns[-1])}, CPU time grows as "
            f"N^{slope(ns, _column(chunked, 'cpu_seconds')):.2f} (wall time as "
            f"N^{slope(ns, _column(chunked, 'seconds')):.2f}, with the share of the shared cores the run got) "
            f"and compiled memory goes from {_fmt_bytes(chunked[0]['total_bytes'])} to "
            f"{_fmt_bytes(last['total_bytes'])}: temporaries stay at one chunk's {_fmt_bytes(last['temp_bytes'])}, "
            "and what grows is the 8 bytes a sample of returned f-values and baselines; unchunked, compiled "
            "memory grows as "
            f"N^{slope(_column(unchunked, 'num_samples'), _column(unchunked, 'total_bytes')):.2f}, to "
            f"{_fmt_bytes(big['total_bytes'])} at N = {_sci(big['num_samples'])}.")
        errors = _column(chunked, "relative_error")
        sentences.append(
            f"The error against the exact gradient falls as N^{slope(ns, errors):.2f} (to {errors[-1]:.2g} at "
            f"N = {_sci(ns[-1])}), the N^-1/2 of an unbiased estimator, with no floor in sight.")
    dims = [r for r in results if r["sweep"] == "d" and r["executed"]]
    mlp = [r for r in results if r["sweep"] == "params" and r["executed"]]
    dim_text = (f"CPU time vs D has slope {slope(_column(dims[-2:], 'size'), _column(dims[-2:], 'cpu_seconds')):.2f} "
                "over the last decade of D" if len(dims) > 1 else "")
    if mlp:
        ratio = min(4 * r["num_samples"] * r["num_params"] / r["total_bytes"] for r in mlp)
        chunked, unchunked = _rows(mlp, "params", True), _rows(mlp, "params", False)
        cost = max((c["cpu_seconds"] / u["cpu_seconds"] for c, u in zip(chunked, unchunked)), default=None)
        sentences.append(
            (f"{dim_text}; for" if dim_text else "For") + f" the MLP policy, compiled memory stays at least "
            f"{ratio:.0f}× below the N × params floats of per-sample gradients (the estimate is one reverse pass "
            "of a surrogate), and chunking bounds the activations by the chunk"
            + (f" for at most {cost:.1f}× the unchunked CPU time (recomputation)." if cost else "."))
    elif dim_text:
        sentences.append(dim_text + ".")
    return " ".join(sentences)


def section(config: Config, command: str, results: list[dict], machine_info: str, run_seconds: float) -> str:
    """The RESULTS.md section for this benchmark."""
    parts = [
        SECTION,
        f"Command: `{command}`. The jitted `est.estimate` of `lt.score_function(f, family, num_samples=N, "
        "baseline=lt.baselines.leave_one_out(), chunk_size=…)`: compile time; compiled memory from "
        "`jax.jit(fn).lower(...).compile().memory_analysis()` (temp: temporaries; "
        "total: temporaries + arguments + outputs; the outputs include the N f-values and baselines, "
        "and unchunked the N samples, which `est.estimate` returns in its aux); peak "
        "resident memory of the process during the estimates above its resident memory just before them "
        "(Linux VmHWM, reset after `malloc_trim`; below some 50 MB it mostly reads memory the allocator "
        "already held); medians of the wall time and of the process CPU time (all threads: the work done, "
        "whatever share of the shared cores the run got) of "
        f"{config.repeats} estimates after a warm-up one, except where the warm-up took over "
        f"{config.single_call_seconds:g} s: then that single call, compiled beforehand, is the figure (marked "
        "“no warm-up”). Unchunked programs over "
        f"{config.max_run_gib:g} GiB of compiled memory are compiled, not run. ‖ĝ − g‖/‖g‖: relative error of "
        f"the first estimate against the exact gradient of E[Σ x²]. The run took {run_seconds / 60:.1f} minutes, "
        f"{max(r.get('seconds', 0) for r in results) / run_seconds:.0%} of it in the longest single estimate.",
        f"Machine: {machine_info}. No accelerator was available for this run; on one, the same command reports "
        "the device's samples/s and compiled memory (peak RSS then measures host memory only).",
    ]
    titles = {"n": f"vs N: D = {config.dim} Gaussian, f(x) = Σ x²",
              "d": f"vs D: N = {_sci(config.dims_num_samples)}, chunk {_sci(config.dims_chunk_size)}",
              "params": f"vs parameters: MLP policy ({NUM_OBS} → hidden → hidden → {NUM_ACTIONS} actions), "
                        f"N = {config.mlp_num_samples}, f((o, a)) = o_a"}
    for sweep in SWEEPS:
        if any(r["sweep"] == sweep for r in results):
            parts += [f"### {titles[sweep]}", table(results, sweep)]
    parts += [f"![time and memory vs N, D and parameters]({PLOT_PATH.name})", interpretation(results)]
    return "\n\n".join(parts) + "\n"


def _ints(values: list[float]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(Config.sweeps))
    parser.add_argument("--ns", type=float, nargs="+", default=list(Config.ns), help="N of the n sweep (1e7 is fine)")
    parser.add_argument("--dim", type=int, default=Config.dim)
    parser.add_argument("--chunk-size", type=float, default=Config.chunk_size)
    parser.add_argument("--dims", type=float, nargs="+", default=list(Config.dims))
    parser.add_argument("--hiddens", type=int, nargs="+", default=list(Config.hiddens))
    parser.add_argument("--repeats", type=int, default=Config.repeats)
    parser.add_argument("--replot", action="store_true",
                        help=f"redraw the plot and section from {JSON_PATH.name} instead of measuring")
    parser.add_argument("--quick", action="store_true", help="tiny smoke configuration; writes nothing here")
    args = parser.parse_args()

    if args.replot:
        saved = json.loads(JSON_PATH.read_text())
        config = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()})
        results, machine_info, command = saved["results"], saved["machine"], saved["command"]
        run_seconds = saved["run_seconds"]
    else:
        config = dataclasses.replace(QUICK, sweeps=tuple(args.sweeps)) if args.quick else Config(
            sweeps=tuple(args.sweeps), ns=_ints(args.ns), dim=args.dim, chunk_size=int(args.chunk_size),
            dims=_ints(args.dims), hiddens=tuple(args.hiddens), repeats=args.repeats)
        start = time.perf_counter()
        results = run(config)
        run_seconds = time.perf_counter() - start
        machine_info = machine()
        command = " ".join([COMMAND] + sys.argv[1:])
    print(machine_info)
    for sweep in config.sweeps:
        print(table(results, sweep))
    print(interpretation(results))
    if args.quick:
        path = pathlib.Path(tempfile.gettempdir()) / "scaling_quick.png"
        plot(results, config, path)
        print(f"wrote {path}")
        return
    JSON_PATH.write_text(json.dumps({"config": dataclasses.asdict(config), "command": command, "machine": machine_info,
                                     "run_seconds": run_seconds, "results": results}, indent=1) + "\n")
    plot(results, config, PLOT_PATH)
    write_section(SECTION, section(config, command, results, machine_info, run_seconds))
    print(f"wrote {RESULTS_PATH}, {PLOT_PATH} and {JSON_PATH}")


if __name__ == "__main__":
    main()
