"""One score-function estimate with its samples sharded over every device, checked against one device.

Each device draws, evaluates and differentiates N / num_devices of the samples;
the mean and the leave-one-out sums are all-reduced. The sharded gradient is
compared with the same estimator, same key, on one device (where that fits),
and with the exact gradient of E[Σ_d cos(2 x_d)].

    # 4 simulated devices on a CPU:
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m experiments.sharded_estimate
    # every GPU / TPU core of this host:
    python -m experiments.sharded_estimate --num-samples 10000000 --chunk-size 100000
    # several hosts: the same command on each, with its process id (or --multi-host under SLURM / on a TPU pod):
    python -m experiments.sharded_estimate --coordinator HOST0:1234 --num-processes 2 --process-id 0

writes ``results/sharded_estimate.json`` (from process 0).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

import logtrick as lt
from experiments import common


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      num_samples: N, a multiple of the number of devices.
      chunk_size: samples per chunk (dividing N), or None for one chunk.
      dim: D, the dimension of the Gaussian.
      seed: PRNG seed of the parameters and of the estimate.
    """

    num_samples: int = 2**16
    chunk_size: int | None = None
    dim: int = 100
    seed: int = 0


QUICK = Config(num_samples=2**12, dim=10)


def f(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.cos(2.0 * x))


def sample_sharding() -> NamedSharding:
    """The sample axis laid over every device (of every process)."""
    return NamedSharding(jax.make_mesh((jax.device_count(),), ("samples",)), PartitionSpec("samples"))


def make_estimate(num_samples: int, chunk_size: int | None,
                  sharding: NamedSharding | None) -> Callable[[np.ndarray, np.ndarray, np.ndarray], Any]:
    """A jitted ``(loc, log_scale, key_data) -> grads`` on host inputs (replicated on every process)."""
    est = lt.score_function(f, lt.families.normal(), num_samples=num_samples, chunk_size=chunk_size,
                            baseline=lt.baselines.leave_one_out(), sample_sharding=sharding)

    @jax.jit
    def estimate(loc, log_scale, key_data):
        params = {"loc": loc, "log_scale": log_scale}
        return est.estimate(params, est.init(params), jax.random.wrap_key_data(key_data))[0]

    return estimate


def inputs(config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loc, log_scale, key_data) as host arrays, the same on every process."""
    rng = np.random.default_rng(config.seed)
    loc = rng.normal(size=config.dim).astype(np.float32)
    log_scale = (0.3 * rng.normal(size=config.dim)).astype(np.float32)
    return loc, log_scale, np.asarray(jax.random.key_data(jax.random.key(config.seed)))


def exact_gradient(loc: np.ndarray, log_scale: np.ndarray) -> dict[str, np.ndarray]:
    """``jax.grad`` of the closed form of E[Σ_d cos(2 x_d)]."""
    grad = jax.jit(jax.grad(lt.exact.normal_cosine(2.0)), compiler_options=common.FAST_COMPILE)
    grads = grad({"loc": jnp.asarray(loc), "log_scale": jnp.asarray(log_scale)})
    return jax.tree_util.tree_map(np.asarray, grads)


def local(tree: Any) -> Any:
    """The (replicated) value of a global array, as numpy on this process."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_shards[0].data), tree)


def run(config: Config) -> dict[str, Any]:
    """The sharded estimate, timed, against the exact gradient and (on one process) the one-device estimate."""
    args = inputs(config)
    sharded = make_estimate(config.num_samples, config.chunk_size, sample_sharding())
    start = time.perf_counter()
    grads = local(jax.block_until_ready(sharded(*args)))
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(sharded(*args))
    seconds = time.perf_counter() - start
    exact = exact_gradient(*args[:2])
    difference = None
    if jax.process_count() == 1:
        one = local(make_estimate(config.num_samples, config.chunk_size, None)(*args))
        difference = max(float(np.max(np.abs(grads[k] - one[k]))) for k in grads)
    return {
        "config": dataclasses.asdict(config), "seed": config.seed,
        "num_devices": jax.device_count(), "platform": jax.devices()[0].platform,
        "num_processes": jax.process_count(), "samples_per_device": config.num_samples // jax.device_count(),
        "compile_and_first_run_seconds": first, "estimate_seconds": seconds,
        "samples_per_second": config.num_samples / seconds,
        "relative_error_loc": float(np.linalg.norm(grads["loc"] - exact["loc"]) / np.linalg.norm(exact["loc"])),
        "max_abs_gradient": max(float(np.max(np.abs(g))) for g in grads.values()),
        "max_abs_difference_one_device": difference,
    }


def report(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"{results['num_devices']} devices ({results['platform']}), {results['num_processes']} process(es); "
        f"N = {config['num_samples']}, D = {config['dim']}, {results['samples_per_device']} samples per device",
        f"compile + first run {results['compile_and_first_run_seconds']:.2f} s; one estimate "
        f"{results['estimate_seconds'] * 1e3:.1f} ms ({results['samples_per_second']:.3g} samples/s)",
        f"relative error of the loc gradient against the exact one: {results['relative_error_loc']:.3g}",
    ]
    if results["max_abs_difference_one_device"] is not None:
        lines.append(f"max |sharded - one device| = {results['max_abs_difference_one_device']:.3g} "
                     f"(same key; float reassociation only; max |gradient| {results['max_abs_gradient']:.3g})")
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--num-samples", type=int)
    parser.add_argument("--chunk-size", type=int)
    parser.add_argument("--dim", type=int)
    parser.add_argument("--coordinator", help="host:port of process 0, for several hosts")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--multi-host", action="store_true", help="jax.distributed.initialize() with auto-detection")
    args = parser.parse_args()
    if args.coordinator or args.multi_host:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    flags = {"num_samples": args.num_samples, "chunk_size": args.chunk_size, "dim": args.dim}
    config = dataclasses.replace(QUICK if args.quick else Config(), seed=args.seed,
                                 **{k: v for k, v in flags.items() if v is not None})
    start = time.perf_counter()
    results = run(config)
    if jax.process_index() == 0:
        results["machine"] = common.machine_info()
        results["wall_seconds"] = time.perf_counter() - start
        print(report(results))
        name = "sharded_estimate_quick" if args.quick else "sharded_estimate"
        print(f"wrote {common.save_json(results, args.out, name)}")


if __name__ == "__main__":
    main()
