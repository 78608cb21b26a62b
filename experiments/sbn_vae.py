"""A VAE with two stochastic Bernoulli layers on binarised digits, trained with per-site estimators of ``lt.graph``.

The two-layer linear setting of the REBAR, RELAX and DisARM papers, small enough to enumerate:

    guide  q(z1|x) = Bernoulli(W1 x + b1),  q(z2|z1) = Bernoulli(W2 z1 + b2),      z1 ∈ {0,1}^8, z2 ∈ {0,1}^4
    model  p(z2) = Bernoulli(a),  p(z1|z2) = Bernoulli(V2 z2 + c2),  p(x|z1) = Bernoulli(V1 z1 + c1),  x ∈ {0,1}^64

The program returns the five ELBO terms as costs (log p(x|z1), log p(z1|z2), log p(z2), −log q(z1|x),
−log q(z2|z1)); ``lt.graph`` credits each layer's score with the terms it reaches (z2's never sees
log p(x|z1)), and −log q is differentiated (its total derivative). Methods, all with N = 4 particles per image:
exact (the gradient of the ELBO summed over all 2^12 configurations), the score function on both layers
without and with leave-one-out baselines, DisARM on the first layer with leave-one-out on the second, and
DisARM on both. Reported over seeds: exact train and held-out ELBO during and after training, the total
variance of each estimator's encoder gradient on a fixed batch at the initial and final parameters of the
exact run, whether each is unbiased there (``lt.testing.check_unbiased``), and the time per step.

Run from the repository root::

    python -m experiments.sbn_vae            # writes results/sbn_vae.json and results/sbn_vae_curves.png
    python -m experiments.sbn_vae --quick

References:
  Tucker et al., "REBAR: Low-variance, unbiased gradient estimates for discrete latent variable models",
  2017. Grathwohl et al., "Backpropagation through the Void", 2018. Dong, Mnih and Tucker, "DisARM: An
  Antithetic Gradient Estimator for Binary Latent Variables", 2020.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import logtrick as lt
from experiments import common

bern = lt.families.bernoulli()
LOO = lt.baselines.leave_one_out()
Z1, Z2 = 8, 4
PIXELS = 64


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      num_train: training images.
      num_test: held-out images after them (None: all the rest of the 1797).
      batch_size: images per step.
      num_steps: Adam steps per run.
      learning_rate: Adam's.
      num_particles: N, particles per image and step.
      eval_every: steps between exact ELBO evaluations.
      num_seeds: seeds per method.
      num_variance_draws: gradient estimates for the variance and the unbiasedness check.
      variance_batch_size: images in the fixed batch of those estimates.
      methods: names from :data:`METHODS`.
      seed: the first seed.
    """

    num_train: int = 1000
    num_test: int | None = None
    batch_size: int = 50
    num_steps: int = 5000
    learning_rate: float = 3e-3
    num_particles: int = 4
    eval_every: int = 500
    num_seeds: int = 3
    num_variance_draws: int = 1000
    variance_batch_size: int = 10
    methods: tuple[str, ...] = ("exact", "score_function", "score_function_loo", "disarm_loo", "disarm")
    seed: int = 0


QUICK = Config(num_train=200, batch_size=10, num_steps=20, eval_every=10, num_seeds=1, num_variance_draws=40,
               variance_batch_size=4)
METHODS: dict[str, dict[str, lt.sites.Site] | None] = {
    "exact": None,
    "score_function": {"z1": lt.sites.score_function(), "z2": lt.sites.score_function()},
    "score_function_loo": {"z1": lt.sites.score_function(LOO), "z2": lt.sites.score_function(LOO)},
    "disarm_loo": {"z1": lt.sites.disarm(), "z2": lt.sites.score_function(LOO)},
    "disarm": {"z1": lt.sites.disarm(), "z2": lt.sites.disarm()},
}


def load_data(config: Config) -> tuple[jax.Array, jax.Array]:
    """The digits, binarised at half intensity, in one fixed random order: (train, held out)."""
    from sklearn.datasets import load_digits

    images = (load_digits().data / 16.0 > 0.5).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    end = None if config.num_test is None else config.num_train + config.num_test
    test = order[config.num_train:end]
    return jnp.asarray(images[order[:config.num_train]]), jnp.asarray(images[test])


def init_params(key: jax.Array) -> dict[str, dict[str, jax.Array]]:
    """Linear layers ``{"w", "b"}``: the guide's q1 (x → z1) and q2 (z1 → z2); the model's prior, p1, px."""
    layer = lambda k, n_out, n_in: {"w": 0.1 * jax.random.normal(k, (n_out, n_in)), "b": jnp.zeros(n_out)}
    ks = jax.random.split(key, 4)
    return {"q1": layer(ks[0], Z1, PIXELS), "q2": layer(ks[1], Z2, Z1), "prior": {"b": jnp.zeros(Z2)},
            "p1": layer(ks[2], Z1, Z2), "px": layer(ks[3], PIXELS, Z1)}


def dense(layer: dict[str, jax.Array], v: jax.Array) -> jax.Array:
    return layer["w"] @ v + layer["b"]


def elbo_terms(params: dict, key: jax.Array, sample: Callable, x: jax.Array) -> dict[str, jax.Array]:
    """The program: one particle for one image x, the five ELBO terms as costs."""
    k1, k2 = jax.random.split(key)
    q1 = dense(params["q1"], x)
    z1 = sample("z1", bern, q1, k1)
    q2 = dense(params["q2"], z1)
    z2 = sample("z2", bern, q2, k2)
    return {"log_px": bern.log_prob(dense(params["px"], z1), x),
            "log_pz1": bern.log_prob(dense(params["p1"], z2), z1),
            "log_pz2": bern.log_prob(params["prior"]["b"], z2),
            "neg_log_q1": -bern.log_prob(q1, z1), "neg_log_q2": -bern.log_prob(q2, z2)}


def exact_elbo(params: dict, x: jax.Array) -> jax.Array:
    """The ELBO of one image, summed over the 2^8 × 2^4 configurations (matrix products, not a loop)."""
    s1, s2 = lt.exact.bernoulli_support(Z1), lt.exact.bernoulli_support(Z2)
    log_prob = lambda logits, z: jnp.sum(z * logits - jax.nn.softplus(logits), axis=-1)
    lq1 = log_prob(dense(params["q1"], x), s1)                                              # (256,)
    lq2 = log_prob(s1 @ params["q2"]["w"].T + params["q2"]["b"], s2[:, None, :]).T         # (256, 16)
    lpz2 = log_prob(params["prior"]["b"], s2)                                                # (16,)
    lpz1 = log_prob(s2 @ params["p1"]["w"].T + params["p1"]["b"], s1[:, None, :])         # (256, 16)
    lpx = log_prob(s1 @ params["px"]["w"].T + params["px"]["b"], x)                         # (256,)
    log_q = lq1[:, None] + lq2
    return jnp.sum(jnp.exp(log_q) * (lpx[:, None] + lpz1 + lpz2[None, :] - log_q))


def mean_exact_elbo(params: dict, xs: jax.Array) -> jax.Array:
    return jnp.mean(jax.lax.map(lambda x: exact_elbo(params, x), xs, batch_size=256))


def make_loss(method: str, config: Config) -> Callable:
    """``loss(params, key, xs) -> −ELBO estimate`` of a batch, whose gradient is the method's."""
    if METHODS[method] is None:
        return lambda params, key, xs: -jnp.mean(jax.vmap(exact_elbo, in_axes=(None, 0))(params, xs))
    est = lt.graph(elbo_terms, num_samples=config.num_particles, sites=METHODS[method])

    def loss(params, key, xs):
        keys = jax.random.split(key, xs.shape[0])
        values, _ = jax.vmap(est.loss, in_axes=(None, None, 0, 0))(params, est.init(params), keys, xs)
        return -jnp.mean(values)

    return loss


def encoder(grads: dict) -> dict:
    return {"q1": grads["q1"], "q2": grads["q2"]}


def gradient_report(draws: Callable, exact_grad: Callable, params: dict, xs: jax.Array, key: jax.Array,
                    num_draws: int) -> dict[str, Any]:
    """Total encoder-gradient variance over ``num_draws`` estimates, and the unbiasedness verdict (all params).

    ``draws(params, keys, xs)``: estimates for each key; ``exact_grad(params, key, xs)``: the exact gradient.
    """
    estimates = draws(params, jax.random.split(key, num_draws), xs)
    variance = sum(float(np.sum(np.var(np.asarray(leaf, np.float64), axis=0, ddof=1)))
                   for leaf in jax.tree_util.tree_leaves(encoder(estimates)))
    verdict = lt.testing.check_unbiased(estimates, exact_grad(params, key, xs)).verdict
    return {"encoder_variance": variance, "verdict": verdict}


def train(method: str, config: Config, seed: int, data: tuple[jax.Array, jax.Array]) -> dict[str, Any]:
    """One run: exact ELBO curves, final params, median step time."""
    train_x, test_x = data
    opt = optax.adam(config.learning_rate)
    loss = make_loss(method, config)

    @jax.jit
    def step(params, opt_state, key):
        k_batch, k_loss = jax.random.split(key)
        xs = train_x[jax.random.choice(k_batch, train_x.shape[0], (config.batch_size,), replace=False)]
        grads = jax.grad(loss)(params, k_loss, xs)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    evaluate = jax.jit(lambda p: (mean_exact_elbo(p, train_x), mean_exact_elbo(p, test_x)))
    params = init_params(jax.random.key(seed))
    opt_state = opt.init(params)
    curve, step_seconds = [], []
    for t, key in enumerate(jax.random.split(jax.random.key(seed + 1000), config.num_steps + 1)):
        if t % config.eval_every == 0 or t == config.num_steps:
            train_elbo, test_elbo = evaluate(params)
            curve.append({"step": t, "train_elbo": float(train_elbo), "test_elbo": float(test_elbo)})
        if t == config.num_steps:
            break
        start = time.perf_counter()
        params, opt_state = jax.block_until_ready(step(params, opt_state, key))
        step_seconds.append(time.perf_counter() - start)
    return {"curve": curve, "params": params, "step_seconds": statistics.median(step_seconds[5:] or step_seconds)}


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    data = load_data(config)
    runs = {method: [] for method in config.methods}
    final_params = {}
    for method in config.methods:
        for seed in range(config.seed, config.seed + config.num_seeds):
            result = train(method, config, seed, data)
            if method == "exact" and seed == config.seed:
                final_params = result.pop("params")
            else:
                result.pop("params")
            runs[method].append(result)
            if progress:
                last = result["curve"][-1]
                print(f"{method} seed {seed}: train ELBO {last['train_elbo']:.2f}, held out {last['test_elbo']:.2f}, "
                      f"{result['step_seconds'] * 1e3:.2f} ms/step", flush=True)
    xs = data[0][:config.variance_batch_size]
    exact_grad = jax.jit(jax.grad(make_loss("exact", config)))
    checkpoints = {"initial": init_params(jax.random.key(config.seed)), "final": final_params or None}
    gradients = {}
    for method in config.methods:
        if METHODS[method] is None:
            continue
        draws = jax.jit(jax.vmap(jax.grad(make_loss(method, config)), in_axes=(None, 0, None)))
        gradients[method] = {name: gradient_report(draws, exact_grad, p, xs, jax.random.key(7),
                                                   config.num_variance_draws)
                             for name, p in checkpoints.items() if p is not None}
    return {"config": dataclasses.asdict(config), "runs": runs, "gradients": gradients,
            "num_train": int(data[0].shape[0]), "num_test": int(data[1].shape[0])}


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method: final exact ELBOs (mean and std over seeds), gradient variance, verdicts, time."""
    out = []
    for method, runs in results["runs"].items():
        final = [r["curve"][-1] for r in runs]
        row = {"method": method,
               "train_elbo": statistics.mean(f["train_elbo"] for f in final),
               "train_std": statistics.pstdev(f["train_elbo"] for f in final),
               "test_elbo": statistics.mean(f["test_elbo"] for f in final),
               "test_std": statistics.pstdev(f["test_elbo"] for f in final),
               "ms_per_step": 1e3 * statistics.median(r["step_seconds"] for r in runs)}
        for name, g in results["gradients"].get(method, {}).items():
            row[f"variance_{name}"] = g["encoder_variance"]
            row[f"verdict_{name}"] = g["verdict"]
        out.append(row)
    return out


def format_table(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [f"Two-layer Bernoulli VAE (z1: {Z1}, z2: {Z2} units), {results['num_train']} train / "
             f"{results['num_test']} held-out digits, {cfg['num_steps']} Adam steps of batch {cfg['batch_size']}, "
             f"N = {cfg['num_particles']} particles, {cfg['num_seeds']} seeds (mean ± std)",
             "",
             "| method | train ELBO | held-out ELBO | encoder-gradient variance at init | at the end | unbiased "
             "(init / end) | ms per step |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for r in rows(results):
        variance = lambda name: f"{r[f'variance_{name}']:.4g}" if f"variance_{name}" in r else "0 (exact)"
        verdicts = (f"{r.get('verdict_initial', '—')} / {r.get('verdict_final', '—')}"
                    if "verdict_initial" in r else "—")
        lines.append(f"| {r['method']} | {r['train_elbo']:.2f} ± {r['train_std']:.2f} | {r['test_elbo']:.2f} ± "
                     f"{r['test_std']:.2f} | {variance('initial')} | {variance('final')} | {verdicts} "
                     f"| {r['ms_per_step']:.2f} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, title in zip(axes, ("train_elbo", "test_elbo"), ("train", "held out")):
        for method, runs in results["runs"].items():
            steps = [c["step"] for c in runs[0]["curve"]]
            values = np.array([[c[key] for c in r["curve"]] for r in runs])
            line, = ax.plot(steps, values.mean(0), label=method)
            ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
        ax.set_title(f"exact ELBO, {title}")
        ax.set_xlabel("Adam step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ELBO (nats per image)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Two-layer Bernoulli VAE on binarised digits, per-site estimators of lt.graph (line: mean, "
                 "band: min–max over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "sbn_vae", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=format_table, plots={"_curves": plot}, summary=rows)


if __name__ == "__main__":
    main()
