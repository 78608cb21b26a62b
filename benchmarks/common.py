"""What the benchmarks share: compile and interleaved timing, the machine line, the RESULTS.md section writer."""

from __future__ import annotations

import datetime
import math
import os
import pathlib
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

RESULTS_PATH = pathlib.Path(__file__).resolve().parent / "RESULTS.md"


def compile_timed(fn: Callable, *args: Any) -> tuple[float, Any]:
    """Wall seconds of tracing, lowering and compiling ``jax.jit(fn)`` for ``args``, and the compiled function."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start, compiled


class Times(NamedTuple):
    """Per-call seconds of each timed sample: wall clock, and process CPU time (all threads)."""

    wall: list[float]
    cpu: list[float]


def interleaved_times(calls: dict[str, Callable[[], Any]], *, repeats: int,
                      min_sample_seconds: float) -> dict[str, Times]:
    """Seconds per call of each of ``calls``, ``repeats`` timed samples each, methods interleaved.

    Every call is warmed up first and timed once alone, which fixes how many
    back-to-back blocked calls make one sample (enough to last
    ``min_sample_seconds``); then round r times every method once, in an order
    rotated by r, so that a change in the machine's load hits all methods alike.
    Wall time is what a caller waits; CPU time is the work done, which the
    other jobs on a shared machine disturb much less. Take medians.
    """

    def sample(call, number):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(number):
            jax.block_until_ready(call())
        return (time.perf_counter() - wall) / number, (time.process_time() - cpu) / number

    names = list(calls)
    for call in calls.values():
        jax.block_until_ready(call())
    number = {name: max(1, math.ceil(min_sample_seconds / sample(calls[name], 1)[0])) for name in names}
    times = {name: Times([], []) for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu = sample(calls[name], number[name])
            times[name].wall.append(wall)
            times[name].cpu.append(cpu)
    return times


def paired_ratio(samples: list[float], others: list[float]) -> float:
    """Median over rounds of ``samples[r] / others[r]``, two methods' samples of :func:`interleaved_times`.

    The two were timed back to back in each round, so a load that drifts
    between rounds cancels in the ratio.
    """
    return statistics.median(a / b for a, b in zip(samples, others))


def median_iqr(samples: list[float]) -> tuple[float, float, float]:
    """Median, first and third quartile of ``samples``."""
    q1, median, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return median, q1, q3


def large_passes(hlo: str, size: int) -> int:
    """Instructions of the HLO entry computation that read or write an array of ≥ ``size`` elements.

    Each such instruction (a fusion, mostly) is one pass over memory of that size, the
    cost that dominates for large arrays; tuples and their element accessors are not counted.
    """
    entry = hlo[hlo.index("\nENTRY"):]
    entry = entry[:entry.index("\n}")]
    elements = {}
    count = 0
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?%(\S+) = \w+\[([\d,]*)\]\S* ([\w-]+)\((.*)", line)
        if not match:
            continue
        name, dims, opcode, rest = match.groups()
        elements[name] = int(np.prod([int(d) for d in dims.split(",") if d]))
        operands = re.findall(r"%([\w.-]+)", rest.split("), ")[0])
        touched = [elements[name]] + [elements.get(o, 0) for o in operands]
        if opcode not in ("parameter", "get-tuple-element", "bitcast") and max(touched) >= size:
            count += 1
    return count


def machine() -> str:
    """CPU model, core count, load average, memory, jax version and device, date."""
    cpu = platform.processor() or platform.machine()
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (f"{cpu}, {os.cpu_count()} cores shared with other jobs (1-minute load average "
            f"{os.getloadavg()[0]:.1f} at the end of the run), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB memory, "
            f"jax {jax.__version__} ({jax.default_backend()}: {jax.devices()[0].device_kind}), "
            f"Python {platform.python_version()}, {datetime.date.today().isoformat()}")


def write_section(title: str, text: str, path: pathlib.Path = RESULTS_PATH) -> None:
    """Replaces the section headed ``title`` in ``path`` (up to the next ``## ``), or appends ``text``."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(title)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(title))
        new = old[:start] + text + (old[end + 1:] if end >= 0 else "")
    path.write_text(new)


def publish(title: str, command: str, report: str, section: Callable[[str, str], str], *, quick: bool) -> None:
    """Prints the machine line and ``report``; unless ``quick``, writes ``section(command line, machine)`` to RESULTS.md.

    The command line is ``command`` followed by this process's arguments.
    """
    machine_info = machine()
    print(machine_info)
    print(report)
    if not quick:
        write_section(title, section(" ".join([command] + sys.argv[1:]), machine_info))
        print(f"wrote {RESULTS_PATH}")
