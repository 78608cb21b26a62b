"""What every experiment shares: its flags, the machine record, the JSON writer and the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import time
from typing import Any, Callable

import jax

# XLA:CPU options for a function compiled to run once on small arrays, such as a study's draw of many
# independent estimates: without LLVM's optimisations it compiles several times faster, and its run
# time, a small fraction of the compile time, grows by a small factor.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def machine_info() -> dict[str, Any]:
    """Platform, CPU count, 1-minute load average, Python, JAX and devices."""
    return {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()[0], "python": platform.python_version(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()]}


def parser(doc: str) -> argparse.ArgumentParser:
    """The flags every experiment takes: ``--quick``, ``--seed``, ``--out``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
    return p


def save_json(results: dict[str, Any], out: pathlib.Path, name: str) -> pathlib.Path:
    """Writes ``out/name.json`` (creating ``out``) and returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, indent=1))
    return path


def main(
    doc: str,
    name: str,
    *,
    config: Any,
    quick: Any,
    run: Callable[[Any], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
    plots: dict[str, Callable[[dict[str, Any], pathlib.Path], None]],
    summary: Callable[[dict[str, Any]], Any] | None = None,
) -> None:
    """The command line of a study: flags, ``run`` timed, printed report, JSON and PNGs.

    Writes ``out/name.json`` (``name_quick`` with ``--quick``) with ``machine``,
    ``wall_seconds`` and, if given, ``summary(results)`` added, and one
    ``out/name<suffix>.png`` per entry of ``plots``.
    """
    args = parser(doc).parse_args()
    config = dataclasses.replace(quick if args.quick else config, seed=args.seed)
    start = time.perf_counter()
    results = run(config)
    results["machine"] = machine_info()
    results["wall_seconds"] = time.perf_counter() - start
    if summary is not None:
        results["summary"] = summary(results)
    print(report(results))
    name = f"{name}_quick" if args.quick else name
    save_json(results, args.out, name)
    for suffix, plot in plots.items():
        plot(results, args.out / f"{name}{suffix}.png")
    written = [f"{args.out / name}.json"] + [f"{name}{suffix}.png" for suffix in plots]
    print(f"study took {results['wall_seconds']:.1f} s; wrote {', '.join(written)}")
