"""Tutorial 2: a discrete VAE trained with several estimators, each a loss term in the same training step.

Binarised 8×8 digits; two categorical latents of 8 classes (64 configurations, so the exact ELBO is a sum and
exact-gradient training is one more estimator); a linear encoder and decoder. The estimator is one line of the
model: ``est.loss(logits, state, key, logits, decoder, image)`` per image, vmapped over the batch, its
gradient flowing into the encoder through the logits and into the decoder pathwise.

    python docs/tutorials/discrete_vae.py [--quick] [--out DIR]
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from sklearn.datasets import load_digits

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import logtrick as lt  # noqa: E402

D, K, PIXELS = 2, 8, 64


def decode(decoder, y):
    """Bernoulli pixel logits from the (D, K) one-hot or relaxed code."""
    return y.reshape(-1) @ decoder["w"] + decoder["b"]


def elbo_integrand(y, logits, decoder, image):
    """log p(x | y) − KL(q ‖ uniform prior): its expectation under q is the ELBO."""
    pixel_logits = decode(decoder, y)
    log_lik = jnp.sum(image * pixel_logits - jax.nn.softplus(pixel_logits))
    q = jax.nn.softmax(logits)
    return log_lik - jnp.sum(q * jnp.log(q * K + 1e-12))


def of_classes(x, logits, decoder, image):
    return elbo_integrand(jax.nn.one_hot(x, K), logits, decoder, image)


ESTIMATORS = {
    "exact": lt.exact.estimator(of_classes, lt.families.categorical(), lt.exact.categorical_support(K, D)),
    "REINFORCE + leave-one-out": lt.score_function(of_classes, lt.families.categorical(), num_samples=4,
                                                   baseline=lt.baselines.leave_one_out()),
    "unordered set": lt.categorical.unordered_set(of_classes, num_samples=4),
    "ReinMax (biased)": lt.categorical.reinmax(elbo_integrand, num_samples=4),
}


def encode(params, images):
    return (images @ params["encoder"]["w"] + params["encoder"]["b"]).reshape(-1, D, K)


def mean_loss(est, params, key, images):
    """Minus the mean over images of the estimator's loss term (an estimate of the ELBO)."""
    logits = encode(params, images)
    keys = jax.random.split(key, images.shape[0])
    per_image = jax.vmap(lambda lg, k, x: est.loss(lg, (), k, lg, params["decoder"], x)[0])(logits, keys, images)
    return -jnp.mean(per_image)


def make_chunk(est, images, optimizer, steps):
    """``steps`` Adam steps on minibatches of 64 images, one jitted lax.scan."""

    def step(carry, key):
        params, opt_state = carry
        batch_key, loss_key = jax.random.split(key)
        batch = images[jax.random.choice(batch_key, images.shape[0], (64,))]
        grads = jax.grad(lambda p: mean_loss(est, p, loss_key, batch))(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    return jax.jit(lambda carry, key: jax.lax.scan(step, carry, jax.random.split(key, steps))[0])


def main(out: pathlib.Path, quick: bool) -> None:
    images = jnp.asarray(load_digits().images.reshape(-1, PIXELS) / 16.0 > 0.5, jnp.float32)
    num_chunks, chunk_steps = (1, 10) if quick else (8, 50)
    exact_elbo = jax.jit(lambda p: -mean_loss(ESTIMATORS["exact"], p, jax.random.key(0), images))
    optimizer = optax.adam(3e-2)
    curves = {}
    names = list(ESTIMATORS)[:2] if quick else list(ESTIMATORS)  # --quick: a smoke test, two estimators
    for name in names:
        est = ESTIMATORS[name]
        params = {"encoder": {"w": jnp.zeros((PIXELS, D * K)), "b": jnp.zeros(D * K)},
                  "decoder": {"w": 0.01 * jax.random.normal(jax.random.key(1), (D * K, PIXELS)),
                              "b": jnp.zeros(PIXELS)}}
        carry, chunk = (params, optimizer.init(params)), make_chunk(est, images, optimizer, chunk_steps)
        elbos = [float(exact_elbo(params))]
        for i in range(num_chunks):
            carry = chunk(carry, jax.random.key(i))
            elbos.append(float(exact_elbo(carry[0])))
        curves[name] = elbos
        print(f"{name:28s} exact ELBO after {num_chunks * chunk_steps} steps: {elbos[-1]:.2f} nats")
    fig, ax = plt.subplots(figsize=(5.5, 3.5), constrained_layout=True)
    for name, elbos in curves.items():
        ax.plot(np.arange(num_chunks + 1) * chunk_steps, elbos, "o-", ms=3, label=name)
    ax.set(xlabel="Adam steps", ylabel="exact ELBO (nats)", title=f"{D} categorical latents of {K} classes")
    ax.legend(fontsize=8)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "discrete_vae.png", dpi=110)
    print(f"wrote {out / 'discrete_vae.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/tutorials"))
    args = parser.parse_args()
    main(args.out, args.quick)
