"""The README's quoted figures against the files that produced them: benchmarks/RESULTS.md and results/*.json.

Each check locates its figures in the README (failing when one is missing), reads the same figure from the
source, and requires the two to agree to the README's printed precision: |source - printed| at most half a
unit in the printed figure's last place.
"""

import functools
import json
import pathlib
import re
from typing import Callable, NamedTuple

import numpy as np
import pytest

from experiments import (calibration, categorical_vae, discrete_vae, exact_check, kl_truth_table, qmc, sbn_vae,
                         sequence_rl)

ROOT = pathlib.Path(__file__).parents[1]
NUMBER = r"[−-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
QUANTITY = rf"{NUMBER}(?:\s?(?:µs|ms|kB|MB|GB|s)\b|×)?"
SCALES = {"µs": 1e-6, "ms": 1e-3, "s": 1.0, "kB": 1e3, "MB": 1e6, "GB": 1e9}


class Figure(NamedTuple):
    """A figure as the README prints it, where (``span``), what its source says, and whether they agree."""

    label: str
    span: tuple[int, int]
    printed: str
    source: str
    agrees: bool


@functools.cache
def results_md() -> str:
    return (ROOT / "benchmarks" / "RESULTS.md").read_text()


@functools.cache
def results_json(name: str) -> dict:
    return json.loads((ROOT / "results" / f"{name}.json").read_text())


def quantity(text: str) -> tuple[float, float]:
    """The leading number of ``text`` in base units (s, B; ×, none: 1) and half a unit of its last printed place."""
    match = re.match(rf"\s*({NUMBER})\s*(µs|ms|s|kB|MB|GB)?", text.replace("−", "-"))
    assert match, f"no number in {text!r}"
    number, unit = match.groups()
    mantissa, _, exponent = number.partition("e")
    decimals = len(mantissa.partition(".")[2])
    scale = SCALES.get(unit, 1.0) * 10.0 ** int(exponent or 0)
    return float(mantissa) * scale, 0.5 * 10.0**-decimals * scale


def agrees(printed: str, source: str | float) -> bool:
    """|source - printed| ≤ half a unit in the printed figure's last place (and a float's rounding)."""
    value, half_unit = quantity(printed)
    exact = quantity(source)[0] if isinstance(source, str) else float(source)
    return abs(exact - value) <= half_unit * (1 + 1e-9)


def figure(label: str, readme: str, span: tuple[int, int], source: str | float) -> Figure:
    printed = readme[span[0]:span[1]]
    return Figure(label, span, printed, str(source), agrees(printed, source))


def search(pattern: str, text: str, what: str) -> re.Match:
    match = re.search(pattern, text)
    assert match, f"{what}: not found (pattern {pattern!r})"
    return match


def section(text: str, heading: str) -> tuple[int, str]:
    """The offset and text of the markdown section whose heading line starts with ``heading``."""
    match = search(rf"(?m)^{re.escape(heading)}.*$", text, heading)
    level = len(heading) - len(heading.lstrip("#"))
    end = re.search(rf"(?m)^#{{1,{level}}} ", text[match.end():])
    stop = match.end() + end.start() if end else len(text)
    return match.start(), text[match.start():stop]


class Cell(NamedTuple):
    text: str
    span: tuple[int, int]


def cells(line: re.Match) -> list[Cell]:
    """The cells of a markdown table line (split at unescaped bars), stripped, with their spans."""
    bars = [m.start() for m in re.finditer(r"(?<!\\)\|", line.group())]
    out = []
    for a, b in zip(bars, bars[1:]):
        raw = line.group()[a + 1:b]
        start = line.start() + a + 1 + len(raw) - len(raw.lstrip())
        out.append(Cell(raw.strip(), (start, start + len(raw.strip()))))
    return out


def table(text: str, heading: str, after: str = "") -> list[dict[str, Cell]]:
    """The rows, as {header: cell}, of the first markdown table in section ``heading`` after the text ``after``."""
    offset, body = section(text, heading)
    start = body.find(after)
    assert start >= 0, f"{heading}: {after!r} not found"
    rows = []
    for line in re.compile(r"(?m)^.*$").finditer(text, offset + start, offset + len(body)):
        if line.group().startswith("|"):
            rows.append(cells(line))
        elif rows:
            break
    assert len(rows) > 2, f"{heading}: no table after {after!r}"
    header = [c.text for c in rows[0]]
    return [dict(zip(header, row)) for row in rows[2:]]


def spans(cell: Cell) -> list[tuple[int, int]]:
    """The spans of the figures (numbers with their units) in a table cell."""
    found = [(cell.span[0] + m.start(), cell.span[0] + m.end()) for m in re.finditer(QUANTITY, cell.text)]
    assert found, f"no figure in the cell {cell.text!r}"
    return found


def one(rows: list[dict[str, Cell]], **where: str) -> dict[str, Cell]:
    """The one row whose cells equal ``where``."""
    found = [r for r in rows if all(r[k].text == v for k, v in where.items())]
    assert len(found) == 1, f"{len(found)} rows with {where}"
    return found[0]


# ---------------------------------------------------------------- the checks: README -> figures


def cartpole(readme: str) -> list[Figure]:
    """The CartPole paragraph: the library / plain-JAX ratios (RESULTS.md) and the solve times (results JSON)."""
    rows = table(results_md(), "## CartPole REINFORCE")
    match = search(r"compile \+ run at ([0-9.]+)× a plain-JAX REINFORCE's with one seed and ([0-9.]+)× with 8 seeds",
                   readme, "CartPole ratios")
    figures = [figure(f"CartPole library / plain, {seeds} seed(s)", readme, match.span(i),
                      one(rows, seeds=str(seeds), method="library / plain")["compile + run (s)"].text)
               for i, seeds in ((1, 1), (2, 8))]
    match = search(r"reaches (\d+) \(solved at ≥ (\d+)\) in about (\d+) s wall for one seed and under (\d+) s for "
                   r"8 seeds", readme, "CartPole solve times")
    one_seed, eight = results_json("cartpole"), results_json("cartpole_seeds8")
    worst = max(eight["solve_seconds"])
    return figures + [
        figure("CartPole final return", readme, match.span(1), min(one_seed["final_return"], eight["final_return"])),
        figure("CartPole solved threshold", readme, match.span(2), one_seed["config"]["threshold"]),
        figure("CartPole solve time, 1 seed", readme, match.span(3), one_seed["solve_seconds"][0]),
        Figure("CartPole solve time, 8 seeds (a bound)", match.span(4), match.group(4), str(worst),
               worst < float(match.group(4))),
    ]


def score_function_benchmark(readme: str) -> list[Figure]:
    """The Benchmarks table: times and ratios of the score-function benchmark."""
    source = table(results_md(), "## Score-function mean gradient")
    columns = {"library": "library", "hand-written floor": "floor", "per-sample vmap(grad)": "vmap_grad",
               "optax 0.1.9 `score_function_jacobians`": "optax 0.1.9", "library/floor": "library/floor",
               "optax/library": "optax/library"}
    figures = []
    for row in table(readme, "## Benchmarks"):
        match = one(source, D=row["D"].text)
        figures += [figure(f"score function D = {row['D'].text}, {name}", readme, spans(row[name])[0],
                           match[theirs].text) for name, theirs in columns.items()]
    return figures


def scaling_benchmark(readme: str) -> list[Figure]:
    """The scaling table: compiled memory, CPU time and samples/s against the vs-N table of RESULTS.md."""
    source = table(results_md(), "### vs N")
    columns = {"compiled memory": "compiled total", "CPU time per estimate": "CPU time",
               "samples/s (wall)": "samples/s"}
    figures = []
    for row in table(readme, "## Scale", after="python -m benchmarks.scaling"):
        chunk = row["`chunk_size`"].text
        match = one(source, N=row["N"].text, mode="unchunked" if chunk == "none" else f"chunk {chunk}")
        figures += [figure(f"scaling N = {row['N'].text}, chunk {chunk}, {name}", readme, spans(row[name])[0],
                           match[theirs].text) for name, theirs in columns.items() if row[name].text != "—"]
    return figures


# README row of the composition table -> (RESULTS.md section, its row there).
COMPOSITION = {
    "plate, `vmap` of `est.loss` per latent, −log q differentiated":
        ("## Plate of Bernoulli latents", "logtrick per latent (vmap of est.loss)"),
    "plate, the same with θ under `stop_gradient` in f (NumPyro's estimator)":
        ("## Plate of Bernoulli latents", "logtrick per latent, sg(θ) in f_d"),
    "plate, per-latent leave-one-out": ("## Plate of Bernoulli latents", "logtrick per latent, leave-one-out"),
    "plate, one `score_function` on all 64 logits (no plate structure)":
        ("## Plate of Bernoulli latents", "logtrick joint score_function"),
    "MLP policy, per-state leave-one-out": ("## Vmapped categorical MLP policy", "library"),
}


def composition_benchmarks(readme: str) -> list[Figure]:
    """The composition table: variance / NumPyro (exact where RESULTS.md has it) and CPU time / hand-written."""
    rows = table(readme, "### Composition")
    assert {r[""].text for r in rows} == set(COMPOSITION), [r[""].text for r in rows]
    figures = []
    for row in rows:
        heading, name = COMPOSITION[row[""].text]
        match = one(table(results_md(), heading), **{"method" if "Plate" in heading else "gradient": name})
        variance = row["gradient variance / NumPyro `TraceGraph_ELBO`"]
        time = row["time / hand-written surrogate (CPU)"]
        if variance.text:
            source = match["/ NumPyro (exact)"].text or match["/ NumPyro"].text
            figures.append(figure(f"{name}: variance", readme, spans(variance)[0], source))
        if time.text:
            source = match["/ hand-written (wall / CPU)"].text.split("/")[1]
            figures.append(figure(f"{name}: CPU time", readme, spans(time)[0], source))
    return figures


# README name -> RESULTS.md estimator of the discrete VAE step table.
VAE_STEP = {"ARM": "ARM", "DisARM": "DisARM", "VIMCO": "VIMCO (K-sample bound)",
            "Gumbel straight-through": "Gumbel straight-through (biased)", "RELAX": "RELAX",
            "exact enumeration": "exact gradient"}


def discrete_vae_benchmark(readme: str) -> list[Figure]:
    """The discrete VAE step-cost ranges over the two models, × REINFORCE + leave-one-out."""
    source = table(results_md(), "## Discrete VAE: training-step cost")
    figures = []
    for name, theirs in VAE_STEP.items():
        match = search(rf"[,:;] {re.escape(name)} ([0-9.]+)–([0-9.]+)×", readme, f"discrete VAE step, {name}")
        ratios = [quantity(r["× REINFORCE + LOO"].text)[0] for r in source if r["estimator"].text == theirs]
        assert len(ratios) == 2, (name, ratios)
        figures += [figure(f"discrete VAE step, {name} {end}", readme, match.span(i), value)
                    for i, end, value in ((1, "low", min(ratios)), (2, "high", max(ratios)))]
    match = search(r"\(([0-9.]+)–([0-9.]+)× with its control variate held fixed", readme,
                   "RELAX, control variate fixed")
    fixed = [quantity(r["× REINFORCE + LOO"].text)[0] for r in source
             if r["estimator"].text == "RELAX, control variate fixed"]
    return figures + [figure(f"discrete VAE step, RELAX fixed, {end}", readme, match.span(i), value)
                      for i, end, value in ((1, "low", min(fixed)), (2, "high", max(fixed)))]


def rows_of(label: str, readme: str, lines: list[str], key_cells: int, heading: str | None = None) -> list[Figure]:
    """Each of ``lines`` (markdown table rows) found in the README (in section ``heading``, if given) by its
    first ``key_cells`` cells and equal to it there."""
    start = section(readme, heading)[0] if heading else 0
    figures = []
    for line in lines:
        key = "|".join(line.split("|")[:key_cells + 1])
        match = re.compile(rf"(?m)^{re.escape(key)}\|.*$").search(readme, start)
        assert match, f"{label} row {key}: not found"
        figures.append(Figure(f"{label} row {key}", match.span(), match.group(), line, match.group() == line))
    return figures


def discrete_vae_table(readme: str) -> list[Figure]:
    """Every row of the VAE results table is ``experiments.discrete_vae.format_table`` of its JSON."""
    return rows_of("discrete VAE", readme, discrete_vae.format_table(results_json("discrete_vae")).splitlines()[2:], 2)


def categorical_vae_table(readme: str) -> list[Figure]:
    """Every row of the categorical VAE table is ``experiments.categorical_vae.format_table`` of its JSON."""
    lines = categorical_vae.format_table(results_json("categorical_vae")).splitlines()[2:]
    return rows_of("categorical VAE", readme, lines, 2, heading="### A categorical VAE")


def kl_truth_table_rows(readme: str) -> list[Figure]:
    """Every row of the KL truth table is ``experiments.kl_truth_table.format_table`` of its JSON."""
    lines = [line for line in kl_truth_table.format_table(results_json("kl_truth_table")).splitlines()
             if line.startswith("| ") and not line.startswith(("| configuration", "| ---"))]
    return rows_of("KL truth table", readme, lines, 2, heading="### Which gradient each sequence-level RL loss")


def sequence_rl_table(readme: str) -> list[Figure]:
    """Every row of the transformer RL table is ``experiments.sequence_rl.format_table`` of its JSON."""
    lines = sequence_rl.format_table(results_json("sequence_rl")).splitlines()[2:]
    return rows_of("sequence RL", readme, lines, 1, heading="### A transformer trained from scratch")


def sbn_vae_table(readme: str) -> list[Figure]:
    """Every row of the two-layer VAE table is ``experiments.sbn_vae.format_table`` of its JSON."""
    return rows_of("two-layer VAE", readme, sbn_vae.format_table(results_json("sbn_vae")).splitlines()[4:], 1)


def qmc_table(readme: str) -> list[Figure]:
    """Every row of the RQMC slope table is ``experiments.qmc.format_table`` of its JSON."""
    return rows_of("RQMC", readme, qmc.format_table(results_json("qmc")).splitlines()[2:], 3)


def calibration_table(readme: str) -> list[Figure]:
    """The calibration table is ``experiments.calibration.format_table`` of its JSON, row by row, and the worst
    rejection rates over α after it."""
    results = results_json("calibration")
    figures = rows_of("calibration", readme, calibration.format_table(results).splitlines()[2:], 2)
    match = search(rf"\(worst: ({NUMBER})× α; the plain z-test reaches ({NUMBER})× α\)", readme, "calibration worst")
    return figures + [figure("calibration worst", readme, match.span(1), results["summary"]["worst_rejected_over_alpha"]),
                      figure("calibration worst plain z", readme, match.span(2),
                             results["summary"]["worst_plain_z_over_alpha"])]


def rebar_toy(readme: str) -> list[Figure]:
    """The REBAR toy sentence: mean log10 variances at t = 0.499."""
    rows = results_json("rebar_toy")["estimators"]
    match = search(rf"At t = 0\.499 the mean log10 variance of the gradient over training is ({NUMBER}) for "
                   rf"single-sample REINFORCE and for REBAR, ({NUMBER}) for RELAX, and ({NUMBER}), ({NUMBER}), "
                   rf"({NUMBER}) for leave-one-out, ARM and DisARM", readme, "REBAR toy variances")
    names = (("reinforce", 1), ("rebar", 1), ("relax", 2), ("loo", 3), ("arm", 4), ("disarm", 5))
    return [figure(f"REBAR toy {name}", readme, match.span(i), rows[name]["targets"]["0.499"]["mean_log10_variance"])
            for name, i in names]


# README row of the D = 200 table -> results key.
HIGHDIM = {"exact gradient": "exact", "REINFORCE": "reinforce", "REINFORCE + leave-one-out": "loo",
           "REINFORCE + optimal baseline (pooled, decay 0.9)": "optimal", "DisARM": "disarm", "RELAX": "relax"}


def rebar_toy_highdim(readme: str) -> list[Figure]:
    """The D = 200 table: final objective (mean ± std over seeds), mean σ(θ), mean log10 variance; the optimum."""
    results = results_json("rebar_toy_highdim")
    rows = table(readme, "### Discrete latents", after="rebar_toy_highdim")
    assert {r["estimator"].text for r in rows} == set(HIGHDIM)
    optimum = search(r"final objective \(optimum ([0-9.]+)\)", readme, "highdim optimum")
    figures = [figure("highdim optimum", readme, optimum.span(1), results["objective_range"]["0.499"][1])]
    for row in rows:
        name = row["estimator"].text
        data = results["estimators"][HIGHDIM[name]]["targets"]["0.499"]
        final = np.asarray(data["final_objective"])
        objective = next(cell for key, cell in row.items() if key.startswith("final objective"))
        mean, *std = spans(objective)
        figures.append(figure(f"highdim {name} objective", readme, mean, final.mean()))
        figures += [figure(f"highdim {name} objective std", readme, span, final.std(ddof=1)) for span in std]
        figures.append(figure(f"highdim {name} σ(θ)", readme, spans(row["mean σ(θ)"])[0],
                              np.mean(data["final_probability"])))
        if data["mean_log10_variance"] is not None:
            figures.append(figure(f"highdim {name} variance", readme, spans(row["mean log10 Σ_d Var ĝ_d"])[0],
                                  data["mean_log10_variance"]))
    return figures


def exact_check_block(readme: str) -> list[Figure]:
    """The headline table is ``experiments.exact_check.table`` of its JSON, row by row, and the sentence after it
    quotes its largest error and threshold."""
    results = results_json("exact_check")
    figures = []
    for line in exact_check.table(results).splitlines()[3:3 + len(results["rows"])]:
        key = line[:37]     # the problem and param columns
        match = search(rf"(?m)^{re.escape(key)}.*$", readme, f"exact check row {key.strip()}")
        figures.append(Figure(f"exact check row {key.strip()}", match.span(), match.group(), line,
                              match.group() == line))
    match = search(rf"The largest error is ({NUMBER}) standard errors over (\d+) coordinates \(the test's "
                   rf"threshold at α = 10⁻³ is ({NUMBER})\)", readme, "exact check sentence")
    test = results["z_test"][exact_check.REFERENCE]
    return figures + [figure("exact check largest error", readme, match.span(1), test["max_abs_z"]),
                      figure("exact check coordinates", readme, match.span(2), len(results["rows"])),
                      figure("exact check threshold", readme, match.span(3), test["threshold"])]


def ipd_lola(readme: str) -> list[Figure]:
    """The LOLA sentence: final reward per round of both agents, Loaded DiCE vs exact LOLA, and naive learners."""
    summary = results_json("ipd_hessian")["summary"]
    match = search(rf"final reward per round ({NUMBER})/({NUMBER}) vs ({NUMBER})/({NUMBER}); naive learners "
                   rf"({NUMBER})/({NUMBER})", readme, "LOLA rewards")
    methods = ("lola_loaded_dice", "lola", "naive")
    return [figure(f"LOLA {method} agent {agent + 1}", readme, match.span(1 + 2 * i + agent),
                   summary[method]["final_mean"][agent]) for i, method in enumerate(methods) for agent in (0, 1)]


CHECKS: dict[str, Callable[[str], list[Figure]]] = {fn.__name__: fn for fn in (
    cartpole, score_function_benchmark, scaling_benchmark, composition_benchmarks, discrete_vae_benchmark,
    discrete_vae_table, categorical_vae_table, kl_truth_table_rows, sequence_rl_table, sbn_vae_table, qmc_table, calibration_table, rebar_toy, rebar_toy_highdim, exact_check_block,
    ipd_lola)}


def assert_agree(figures: list[Figure]) -> None:
    """Asserts that every figure agrees with its source, listing those that do not."""
    wrong = [f"  {f.label}: README {f.printed!r}, source {f.source!r}" for f in figures if not f.agrees]
    assert not wrong, "README figures differ from their source:\n" + "\n".join(wrong)


def changed(readme: str, span: tuple[int, int]) -> str:
    """``readme`` with the last digit inside ``span`` lowered by one (0 becomes 9)."""
    text = readme[span[0]:span[1]]
    i = max(i for i, c in enumerate(text) if c.isdigit())
    return readme[:span[0]] + text[:i] + str((int(text[i]) - 1) % 10) + text[i + 1:] + readme[span[1]:]


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text()


@pytest.mark.parametrize("check", CHECKS)
def test_readme_figures_agree_with_their_source(readme, check):
    """Every located figure agrees with its source to the printed precision; fails if one is missing."""
    figures = CHECKS[check](readme)
    assert figures
    assert_agree(figures)


@pytest.mark.parametrize("check", CHECKS)
def test_a_changed_figure_is_rejected(readme, check):
    """The same check rejects the README with any one of its figures changed in its last printed digit."""
    for f in CHECKS[check](readme):
        with pytest.raises(AssertionError, match="differ from their source|not found"):
            assert_agree(CHECKS[check](changed(readme, f.span)))
