"""A Bernoulli VAE on binarised 8×8 digits: discrete gradient estimators against the exact gradient.

Data: ``sklearn.datasets.load_digits`` (1797 images of 8×8 pixels), binarised
as x = 1[pixel / 16 > 0.5], one fixed random split into 1500 training and 297
held-out images. Model: D = 12 Bernoulli latents b with the prior p(b) =
Bernoulli(½)^D, an encoder q(b|x) = Π_d Bernoulli(σ(e_θ(x)_d)) and a decoder
p(x|b) = Π_i Bernoulli(σ(g_φ(b)_i)) over the 64 pixels, both either linear
(e_θ(x) = Wx + c, g_φ(b) = Vb + d) or a flax MLP with one tanh hidden layer.
The objective is the ELBO

    ELBO(x) = E_{q(b|x)}[log p(x|b)] - KL(q(b|x) ‖ p(b)),

with the KL in closed form. With D = 12 every expectation over b is an exact
sum over the 2^12 = 4096 latent configurations (one decoder pass over all of
them, shared by the whole batch), so the ELBO and the marginal likelihood
log p(x) = log Σ_b p(b) p(x|b) are evaluated exactly, and ``exact`` trains on
the exact gradient.

Every method is a factory in :data:`ESTIMATORS` returning an estimator of
E_{q(b|x)}[f(b, logits, decoder_params, x)] for one image, with

    f(b, logits, φ, x) = log p(x|b) - KL(q(b|x) ‖ p(b)),   E_q[f] = ELBO(x),

φ the decoder's parameters; the KL, in closed form, is a constant in b.
Per datapoint the loss term is one call,
``est.loss(logits_n, state, key_n, logits_n, decoder_params, x_n)``, vmapped
over the batch: its value estimates ELBO(x_n), its gradient w.r.t. the logits
(the estimator's own) flows into the encoder by the chain rule, and its
gradient w.r.t. f's arguments (the decoder, and the KL through the logits) is
the pathwise one from the same samples. Every sampling method draws K = 4
discrete evaluations of f per datapoint and step (K = 4: the smallest even
count, as ARM and DisARM need pairs, above the 2 that leave-one-out and VIMCO
need). The methods:

    exact          ``lt.exact.estimator``: Σ_b q(b|x) f(b) over all 4096 b (the
                   decoder pass over them is shared by the batch)
    reinforce_loo  ``lt.score_function`` with ``lt.baselines.leave_one_out()``
    arm            ``lt.discrete.arm`` (2 antithetic pairs)
    disarm         ``lt.discrete.disarm`` (2 antithetic pairs)
    relax          ``lt.discrete.relax``, control variate
                   c(z) = η log p(x_n|σ(z/λ)) - KL + r_ρ(z, x_n) (REBAR's plus a small tanh net)
    vimco          ``lt.vimco`` on the K-sample bound (a different objective)
    gumbel_st      ``lt.discrete.gumbel_softmax(straight_through=True)``, biased

RELAX's control variate is one set of parameters ψ = (η, λ, ρ) shared by all
datapoints (amortised: r_ρ sees x_n; one control variate per training image
would need 1500 states, each updated only when its image is drawn). The
estimator keeps ψ fixed within a step and reports ``aux["cv_grads"]``, the
ψ-gradient of Σ_d ĝ_{n,d}² (ĝ_n the estimate for datapoint n's logits); the
training step averages it over the batch and takes one Adam step on ψ.

VIMCO optimises the K-sample importance-weighted bound
E[log (1/K) Σ_k p(x, b_k) / q(b_k|x)] ≥ ELBO instead of the ELBO, with log
weights log p(x_n|b) + log p(b) - log q(b|logits_n). Its ELBO is reported
like the others', but it is not what it maximises: compare its exact log p(x).

Training: Adam on minibatches, seeds vmapped, each run one jitted
``lax.scan`` over steps, cut into chunks between checkpoints. At every
checkpoint the train and held-out ELBO and log p(x) are computed exactly; at a
few, the variance of the encoder-gradient estimate over fresh draws on a fixed
batch (mean per-parameter variance) next to the exact gradient's squared norm.

    python -m experiments.discrete_vae [--quick]

writes ``results/discrete_vae.json`` and ``results/discrete_vae_curves.png``.

References:
  Kingma and Welling, "Auto-Encoding Variational Bayes", 2014.
  Williams, "Simple statistical gradient-following algorithms for
  connectionist reinforcement learning", 1992.
  Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for
  Free!", 2019.
  Yin and Zhou, "ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
  Networks", 2019.
  Dong, Mnih and Tucker, "DisARM: An Antithetic Gradient Estimator for Binary
  Latent Variables", 2020.
  Grathwohl et al., "Backpropagation through the Void: Optimizing control
  variates for black-box gradient estimation", 2018.
  Tucker et al., "REBAR: Low-variance, unbiased gradient estimates for
  discrete latent variable models", 2017.
  Mnih and Rezende, "Variational Inference for Monte Carlo Objectives", 2016.
  Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax",
  2017; Bengio, Léonard and Courville, "Estimating or Propagating Gradients
  Through Stochastic Neurons for Conditional Computation", 2013.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

import logtrick as lt
from experiments import common

MODELS = ("linear", "nonlinear")
METHODS = ("exact", "reinforce_loo", "arm", "disarm", "relax", "vimco", "gumbel_st")
LABELS = {
    "exact": "exact gradient",
    "reinforce_loo": "REINFORCE + leave-one-out",
    "arm": "ARM",
    "disarm": "DisARM",
    "relax": "RELAX",
    "vimco": "VIMCO (K-sample bound)",
    "gumbel_st": "Gumbel straight-through (biased)",
}
COLORS = {"exact": "k", "reinforce_loo": "tab:blue", "arm": "tab:orange", "disarm": "tab:green",
          "relax": "tab:red", "vimco": "tab:purple", "gumbel_st": "tab:brown"}
NUM_PIXELS = 64
# XLA:CPU options: LLVM at -O1 without its expensive passes compiles about twice as fast, and runs as fast.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}

Params = Any


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      num_train: training images (the rest of the 1797 are held out).
      num_latents: D, Bernoulli latents (the exact sums run over 2^D configurations).
      hidden: width of the tanh hidden layer of the nonlinear encoder and decoder.
      num_samples: K, discrete f evaluations per datapoint and step for every estimator.
      batch_size: datapoints per minibatch.
      num_steps: Adam steps per run (a multiple of ``eval_every``).
      eval_every: steps between checkpoints (exact ELBO on the train and held-out sets).
      variance_steps: checkpoints at which the gradient variance is measured.
      num_variance_draws: independent gradient estimates per variance measurement.
      variance_batch_size: the fixed batch (the first training images) of the variance measurement.
      learning_rate: Adam step size for the VAE, every method.
      cv_hidden: width of the tanh hidden layer of RELAX's control-variate net.
      cv_learning_rate: Adam step size for RELAX's control variate; 0 keeps it fixed (and skips its training).
      relax_temperature: initial temperature λ of RELAX's concrete term.
      gumbel_temperature: temperature τ of the straight-through Gumbel estimator.
      num_seeds: seeds, vmapped in one run per (model, method).
      models: which of :data:`MODELS` to train.
      methods: which of :data:`METHODS` to train.
      seed: PRNG seed (initialisation and sampling; the data split is fixed).
    """

    num_train: int = 1500
    num_latents: int = 12
    hidden: int = 32
    num_samples: int = 4
    batch_size: int = 50
    num_steps: int = 5000
    eval_every: int = 250
    variance_steps: tuple[int, ...] = (0, 500, 2000, 5000)
    num_variance_draws: int = 100
    variance_batch_size: int = 100
    learning_rate: float = 3e-3
    cv_hidden: int = 16
    cv_learning_rate: float = 3e-3
    relax_temperature: float = 0.5
    gumbel_temperature: float = 0.5
    num_seeds: int = 3
    models: tuple[str, ...] = MODELS
    methods: tuple[str, ...] = METHODS
    seed: int = 0

    def __post_init__(self):
        if self.num_steps % self.eval_every:
            raise ValueError(f"Config: `num_steps` must be a multiple of `eval_every` ({self.eval_every})")
        if any(s % self.eval_every or not 0 <= s <= self.num_steps for s in self.variance_steps):
            raise ValueError(f"Config: `variance_steps` must be checkpoints (multiples of {self.eval_every} "
                             f"up to {self.num_steps}), got {self.variance_steps}")
        if self.num_samples < 2 or self.num_samples % 2:
            raise ValueError(f"Config: `num_samples` must be even and >= 2 (ARM/DisARM pairs), got {self.num_samples}")
        if not set(self.models) <= set(MODELS) or not set(self.methods) <= set(METHODS):
            raise ValueError(f"Config: `models` must be among {MODELS} and `methods` among {METHODS}")


QUICK = Config(num_train=300, num_latents=6, hidden=8, batch_size=10, num_steps=20, eval_every=10,
               variance_steps=(20,), num_variance_draws=8, variance_batch_size=10, num_seeds=2, models=("linear",),
               methods=("exact", "reinforce_loo", "relax"))


class Data(NamedTuple):
    """Binarised digits: ``train`` (num_train, 64) and ``test`` (the rest, 64), float32 0/1."""

    train: jax.Array
    test: jax.Array


def load_data(config: Config) -> Data:
    """The digits, binarised at half intensity, in one fixed random order: the first ``num_train`` train."""
    from sklearn.datasets import load_digits

    images = (load_digits().data / 16.0 > 0.5).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    return Data(jnp.asarray(images[order[:config.num_train]]), jnp.asarray(images[order[config.num_train:]]))


class Net(nn.Module):
    """Logits: Dense(features) of the input (linear), or of a tanh hidden layer of width ``hidden``."""

    features: int
    hidden: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.hidden is not None:
            x = jnp.tanh(nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dense(self.features, name="out")(x)


class VAE(NamedTuple):
    """The encoder x ↦ logits of q(b|x), shape (D,), and the decoder b ↦ logits of p(x|b), shape (64,)."""

    encoder: Net
    decoder: Net


def make_vae(config: Config, model: str) -> VAE:
    """The linear or the one-hidden-layer tanh VAE of ``config``."""
    hidden = {"linear": None, "nonlinear": config.hidden}[model]
    return VAE(Net(config.num_latents, hidden), Net(NUM_PIXELS, hidden))


def init_params(config: Config, vae: VAE, key: jax.Array, pixel_mean: jax.Array) -> Params:
    """Flax's default initialisation; the decoder's output bias at the logit of the mean training pixel."""
    k_enc, k_dec = jax.random.split(key)
    decoder = vae.decoder.init(k_dec, jnp.zeros(config.num_latents))
    mean = jnp.clip(pixel_mean, 1e-3, 1 - 1e-3)
    decoder["params"]["out"]["bias"] = jnp.log(mean) - jnp.log1p(-mean)
    return {"encoder": vae.encoder.init(k_enc, jnp.zeros(NUM_PIXELS)), "decoder": decoder}


def log_likelihood(vae: VAE, decoder_params: Params, x: jax.Array, b: jax.Array) -> jax.Array:
    """log p(x|b) = Σ_i x_i l_i - softplus(l_i), l = g_φ(b); b may be relaxed (in [0, 1]^D)."""
    logits = vae.decoder.apply(decoder_params, b)
    return jnp.dot(x, logits) - jnp.sum(jax.nn.softplus(logits))


def log_prior(b: jax.Array) -> jax.Array:
    """log p(b) = -D log 2."""
    return -b.shape[-1] * jnp.log(2.0)


def kl_to_prior(logits: jax.Array) -> jax.Array:
    """KL(q ‖ Bernoulli(½)^D) = Σ_d [q_d log q_d + (1 - q_d) log(1 - q_d) + log 2], q = σ(logits)."""
    q = jax.nn.sigmoid(logits)
    return jnp.sum(q * jax.nn.log_sigmoid(logits) + (1 - q) * jax.nn.log_sigmoid(-logits) + jnp.log(2.0))


def exact_terms(vae: VAE, params: Params, xs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """E_q[log p(x|b)], KL(q ‖ p) and log p(x) of each image of ``xs`` (n, 64), each shape (n,), by enumeration.

    One decoder pass over all 2^D configurations b, shared by the batch:
    E_q[log p(x|b)] = Σ_b q(b|x) log p(x|b) and log p(x) = logsumexp_b [log p(b) + log p(x|b)];
    differentiable in the encoder and decoder parameters.
    """
    support = lt.exact.bernoulli_support(vae.encoder.features)
    dec_logits = vae.decoder.apply(params["decoder"], support)
    log_lik = xs @ dec_logits.T - jnp.sum(jax.nn.softplus(dec_logits), axis=1)
    logits = vae.encoder.apply(params["encoder"], xs)
    log_q = jax.nn.log_sigmoid(logits) @ support.T + jax.nn.log_sigmoid(-logits) @ (1 - support).T
    expected = jnp.sum(jnp.exp(log_q) * log_lik, axis=1)
    log_marginal = jax.nn.logsumexp(log_lik, axis=1) + log_prior(support[0])
    return expected, jax.vmap(kl_to_prior)(logits), log_marginal


def elbo_integrand(vae: VAE, b: jax.Array, logits: jax.Array, decoder_params: Params, x: jax.Array) -> jax.Array:
    """f(b) = log p(x|b) - KL(q(·|x) ‖ p): E_{q(b|x)}[f] = ELBO(x), the KL in closed form (a constant in b)."""
    return log_likelihood(vae, decoder_params, x, b) - kl_to_prior(logits)


def log_weight(vae: VAE, b: jax.Array, logits: jax.Array, decoder_params: Params, x: jax.Array) -> jax.Array:
    """VIMCO's log weight log p(x, b) - log q(b|x) = log p(x|b) + log p(b) - log q(b|x)."""
    return log_likelihood(vae, decoder_params, x, b) + log_prior(b) - lt.families.bernoulli().log_prob(logits, b)


def initial_cv_params(config: Config) -> Params:
    """RELAX's initial control variate: η = 1, λ = ``relax_temperature``, r_ρ's output layer zero (c is REBAR's)."""
    net = Net(1, config.cv_hidden)
    rho = net.init(jax.random.key(0), jnp.zeros(config.num_latents + NUM_PIXELS))
    rho["params"]["out"]["kernel"] = jnp.zeros_like(rho["params"]["out"]["kernel"])
    log_temperature = jnp.log(jnp.asarray(config.relax_temperature, jnp.float32))
    return {"scale": jnp.ones(()), "log_temperature": log_temperature, "net": rho}


def control_variate(vae: VAE, net: Net, cv_params: Params, z: jax.Array, logits: jax.Array,
                    decoder_params: Params, x: jax.Array) -> jax.Array:
    """RELAX's c_ψ(z) = η log p(x|σ(z/λ)) - KL(q(·|x) ‖ p) + r_ρ([z, x]).

    REBAR's concrete relaxation of f plus a tanh net ``net`` that sees the
    image; ``cv_params`` ψ = {"scale": η, "log_temperature": log λ, "net": ρ}.
    """
    relaxed = jax.nn.sigmoid(z / jnp.exp(cv_params["log_temperature"]))
    return (cv_params["scale"] * log_likelihood(vae, decoder_params, x, relaxed) - kl_to_prior(logits)
            + net.apply(cv_params["net"], jnp.concatenate([z, x]))[0])


def relax_estimator(config: Config, vae: VAE) -> lt.Estimator:
    """RELAX with :func:`control_variate`; its ψ is trained by the caller (:func:`train_control_variate`)."""
    return lt.discrete.relax(functools.partial(elbo_integrand, vae),
                             functools.partial(control_variate, vae, Net(1, config.cv_hidden)),
                             initial_cv_params(config), num_samples=config.num_samples)


# method -> factory(config, vae) of the estimator of E_{q(b|x)}[f(b, logits, decoder_params, x)] for one image.
ESTIMATORS: dict[str, Callable[[Config, VAE], lt.Estimator]] = {
    "exact": lambda config, vae: lt.exact.estimator(
        functools.partial(elbo_integrand, vae), lt.families.bernoulli(),
        lt.exact.bernoulli_support(config.num_latents)),
    "reinforce_loo": lambda config, vae: lt.score_function(
        functools.partial(elbo_integrand, vae), lt.families.bernoulli(), num_samples=config.num_samples,
        baseline=lt.baselines.leave_one_out()),
    "arm": lambda config, vae: lt.discrete.arm(functools.partial(elbo_integrand, vae),
                                               num_samples=config.num_samples),
    "disarm": lambda config, vae: lt.discrete.disarm(functools.partial(elbo_integrand, vae),
                                                     num_samples=config.num_samples),
    "relax": relax_estimator,
    "vimco": lambda config, vae: lt.vimco(functools.partial(log_weight, vae), lt.families.bernoulli(),
                                          num_samples=config.num_samples),
    "gumbel_st": lambda config, vae: lt.discrete.gumbel_softmax(
        functools.partial(elbo_integrand, vae), num_samples=config.num_samples,
        temperature=config.gumbel_temperature, straight_through=True),
}


def make_loss(config: Config, vae: VAE, method: str) -> Callable:
    """``loss(params, est_state, xs, key) -> (-(1/B) Σ_n value_n, aux)`` over a batch ``xs`` (B, 64).

    value_n is the estimator's loss at the encoder's logits for x_n, with
    (logits_n, decoder parameters, x_n) as f's arguments: its value estimates
    ELBO(x_n) (VIMCO: the K-sample bound), its gradient w.r.t. the encoder and
    decoder parameters is the method's estimate. ``aux`` is the estimators'
    aux, each leaf with a leading batch axis. The estimators return their
    state unchanged (RELAX's ψ is trained by the caller), so it is not returned.
    """
    est = ESTIMATORS[method](config, vae)

    def datapoint(params, est_state, x, key):
        logits = vae.encoder.apply(params["encoder"], x)
        value, (_, aux) = est.loss(logits, est_state, key, logits, params["decoder"], x)
        return value, aux

    def loss(params, est_state, xs, key):
        keys = jax.random.split(key, xs.shape[0])
        values, aux = jax.vmap(datapoint, (None, None, 0, 0))(params, est_state, xs, keys)
        return -jnp.mean(values), aux

    return loss


def cv_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam at ``cv_learning_rate`` for RELAX's control variate; at 0 it stays fixed (its gradient is not formed)."""
    return optax.adam(config.cv_learning_rate) if config.cv_learning_rate > 0 else optax.set_to_zero()


def train_control_variate(optimizer: optax.GradientTransformation, est_state: Any, opt_state: Any,
                          aux: dict[str, Any]) -> tuple[Any, Any]:
    """One ``optimizer`` step on RELAX's ψ along the batch mean of ``aux["cv_grads"]``, the gradient of
    (1/B) Σ_n Σ_d ĝ_{n,d}²: one control variate shared by all images. Other estimators' states pass through."""
    if not isinstance(est_state, lt.discrete.RelaxState):
        return est_state, opt_state
    grads = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), aux["cv_grads"])
    updates, opt_state = optimizer.update(grads, opt_state, est_state.cv_params)
    return est_state._replace(cv_params=optax.apply_updates(est_state.cv_params, updates)), opt_state


class TrainState(NamedTuple):
    """What a training run carries from step to step: the VAE and its Adam state, the estimator state
    (RELAX's :class:`logtrick.discrete.RelaxState`, else ``()``) and its control variate's optimizer state."""

    params: Params
    opt_state: Any
    est_state: Any
    cv_opt_state: Any


def make_train_step(config: Config, vae: VAE, method: str) -> Callable[[TrainState, jax.Array, jax.Array], TrainState]:
    """``train_step(state, xs, key) -> state``: one Adam step on the minibatch ``xs`` (and one on RELAX's ψ)."""
    loss = make_loss(config, vae, method)
    optimizer, cv_opt = optax.adam(config.learning_rate), cv_optimizer(config)

    def train_step(state, xs, key):
        grads, aux = jax.grad(loss, has_aux=True)(state.params, state.est_state, xs, key)
        updates, opt_state = optimizer.update(grads, state.opt_state)
        est_state, cv_opt_state = train_control_variate(cv_opt, state.est_state, state.cv_opt_state, aux)
        return TrainState(optax.apply_updates(state.params, updates), opt_state, est_state, cv_opt_state)

    return train_step


def init_train_state(config: Config, vae: VAE, method: str, params: Params) -> TrainState:
    """The state a run of ``method`` starts from, at the VAE parameters ``params`` (one seed)."""
    est_state = ESTIMATORS[method](config, vae).init(jnp.zeros(config.num_latents))
    cv_opt_state = (cv_optimizer(config).init(est_state.cv_params)
                    if isinstance(est_state, lt.discrete.RelaxState) else ())
    return TrainState(params, optax.adam(config.learning_rate).init(params), est_state, cv_opt_state)


def make_chunk(config: Config, vae: VAE, method: str, data: Data) -> Callable[[TrainState, jax.Array], TrainState]:
    """``chunk(state, key) -> state``: ``eval_every`` steps in one ``lax.scan``; minibatches without replacement."""
    train_step = make_train_step(config, vae, method)

    def step(state, key):
        k_batch, k_step = jax.random.split(key)
        idx = jax.random.choice(k_batch, data.train.shape[0], (config.batch_size,), replace=False)
        return train_step(state, data.train[idx], k_step), None

    def chunk(state, key):
        return jax.lax.scan(step, state, jax.random.split(key, config.eval_every))[0]

    return chunk


def make_evaluate(vae: VAE, data: Data) -> Callable[[Params], dict[str, jax.Array]]:
    """``evaluate(params)``: mean exact ELBO and log p(x) over the train and the held-out images."""

    def evaluate(params):
        out = {}
        for split, xs in (("train", data.train), ("test", data.test)):
            expected, kl, log_marginal = exact_terms(vae, params, xs)
            out[f"{split}_elbo"] = jnp.mean(expected - kl)
            out[f"{split}_log_likelihood"] = jnp.mean(log_marginal)
        return out

    return evaluate


def make_variance(config: Config, vae: VAE, method: str, data: Data) -> Callable[[TrainState, jax.Array], dict]:
    """``variance(state, key)``: the spread of the encoder-gradient estimate on the fixed variance batch.

    ``num_variance_draws`` estimates of ∇_θ loss from fresh keys at the same
    parameters and estimator state; returns their variance averaged over the P
    encoder parameters, (1/P) Σ_p Var[ĝ_p], and ‖∇_θ(-mean ELBO)‖² of the
    exact gradient at the same parameters (the ELBO's also for VIMCO). For
    ``exact`` the variance is zero.
    """
    loss = make_loss(config, vae, method)
    xs = data.train[:config.variance_batch_size]

    def exact_loss(encoder, decoder):
        expected, kl, _ = exact_terms(vae, {"encoder": encoder, "decoder": decoder}, xs)
        return -jnp.mean(expected - kl)

    def variance(state, key):
        def encoder_gradient(k):
            grads = jax.grad(lambda p: loss(p, state.est_state, xs, k)[0])(state.params)
            return ravel_pytree(grads["encoder"])[0]

        draws = jax.vmap(encoder_gradient)(jax.random.split(key, config.num_variance_draws))
        exact = ravel_pytree(jax.grad(exact_loss)(state.params["encoder"], state.params["decoder"]))[0]
        return {"grad_variance": jnp.mean(jnp.var(draws, axis=0, ddof=1)), "exact_grad_sq_norm": jnp.sum(exact**2)}

    return variance


def _stack(trees: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


class Checkpoints(NamedTuple):
    """What :func:`run_checkpoints` measured: exact evaluations at every checkpoint, probes at some, times."""

    evals: dict[str, np.ndarray]
    probes: list[Any]
    compile_train: float
    compile_probe: float
    train_seconds: float


def run_checkpoints(config: Config, init_state: Callable, chunk_fn: Callable, probe_fn: Callable, params: Params,
                    evaluate: Callable, keys: jax.Array, bar: tqdm, *, compiler_options: dict) -> Checkpoints:
    """All seeds of one (model, method) vmapped, chunk by chunk, with the exact evaluation at every checkpoint.

    ``params`` are the seeds' initial VAE parameters (shared by the methods), ``evaluate`` the compiled,
    seed-vmapped evaluation, ``keys`` (num_seeds,) the seeds' keys: chunk c trains on fold_in(fold_in(key, 1),
    c), the probe at step s (a step of ``config.variance_steps``) draws from fold_in(fold_in(key, 2), s).
    Training time is the chunks' wall time to ``block_until_ready``; compile times (initial state and chunk;
    the probe) are measured apart, ahead of time.
    """
    def chunk(state, key, c):
        return chunk_fn(state, jax.random.fold_in(jax.random.fold_in(key, 1), c))

    def probe(state, key, step):
        return probe_fn(state, jax.random.fold_in(jax.random.fold_in(key, 2), step))

    start = time.perf_counter()
    state = jax.jit(jax.vmap(init_state), compiler_options=compiler_options)(params)
    index = jnp.zeros((), jnp.int32)
    chunk = jax.jit(jax.vmap(chunk, (0, 0, None))).lower(state, keys, index).compile(compiler_options)
    compile_train = time.perf_counter() - start
    start = time.perf_counter()
    probe = jax.jit(jax.vmap(probe, (0, 0, None))).lower(state, keys, index).compile(compiler_options)
    compile_probe = time.perf_counter() - start

    evals, probes, train_seconds = [evaluate(state.params)], [], 0.0
    if 0 in config.variance_steps:
        probes.append(probe(state, keys, 0))
    for c in range(config.num_steps // config.eval_every):
        start = time.perf_counter()
        state = jax.block_until_ready(chunk(state, keys, c))
        train_seconds += time.perf_counter() - start
        evals.append(evaluate(state.params))
        if (c + 1) * config.eval_every in config.variance_steps:
            probes.append(probe(state, keys, (c + 1) * config.eval_every))
        bar.update()
    return Checkpoints(_stack(evals), probes, compile_train, compile_probe, train_seconds)


def train_run(config: Config, vae: VAE, method: str, data: Data, params: Params, evaluate: Callable,
              keys: jax.Array, bar: tqdm) -> dict[str, Any]:
    """One (model, method) by :func:`run_checkpoints`, the gradient variance as its probe."""
    run = run_checkpoints(config, lambda p: init_train_state(config, vae, method, p),
                          make_chunk(config, vae, method, data), make_variance(config, vae, method, data), params,
                          evaluate, keys, bar, compiler_options=COMPILER_OPTIONS)
    variances = _stack(run.probes)
    return {
        "steps": list(range(0, config.num_steps + 1, config.eval_every)),
        **{name: curve.T.tolist() for name, curve in run.evals.items()},
        "variance_steps": list(config.variance_steps),
        "grad_variance": variances["grad_variance"].T.tolist(),
        "exact_grad_sq_norm": variances["exact_grad_sq_norm"].T.tolist(),
        "compile_seconds": run.compile_train,
        "compile_variance_seconds": run.compile_probe,
        "train_seconds": run.train_seconds,
    }


class Study(NamedTuple):
    """The parts of a VAE study that :func:`run_study` drives (this module's, or another VAE experiment's)."""

    make_vae: Callable
    init_params: Callable
    make_evaluate: Callable
    train_run: Callable
    compiler_options: Callable[[], dict]


def run_study(config: Config, study: Study, *, progress: bool = False) -> dict[str, Any]:
    """Trains every (model, method) of ``config``; returns JSON-ready results.

    Seed i's key is ``split(key(seed), num_seeds)[i]``; per seed, every method
    starts from the same VAE parameters (from fold_in(key, 0)) and trains on
    the same keys.
    """
    data = load_data(config)
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    pixel_mean = np.mean(np.asarray(data.train), axis=0)
    options = study.compiler_options()
    bar = tqdm(total=len(config.models) * len(config.methods) * (config.num_steps // config.eval_every),
               disable=not progress, unit="chunk")
    results = {}
    for model in config.models:
        vae = study.make_vae(config, model)
        params = jax.jit(jax.vmap(lambda k: study.init_params(config, vae, jax.random.fold_in(k, 0), pixel_mean)),
                         compiler_options=options)(keys)
        start = time.perf_counter()
        evaluate = jax.jit(jax.vmap(study.make_evaluate(vae, data))).lower(params).compile(options)
        results[model] = {"num_encoder_params": int(ravel_pytree(params["encoder"])[0].size) // config.num_seeds,
                          "compile_evaluate_seconds": time.perf_counter() - start, "methods": {}}
        for method in config.methods:
            bar.set_description(f"{model} {method}")
            results[model]["methods"][method] = study.train_run(config, vae, method, data, params, evaluate, keys,
                                                                bar)
    bar.close()
    return {"config": dataclasses.asdict(config), "seeds": list(range(config.num_seeds)),
            "num_train": int(data.train.shape[0]), "num_test": int(data.test.shape[0]), "runs": results}


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """:func:`run_study` of this module's VAE."""
    return run_study(config, Study(make_vae, init_params, make_evaluate, train_run, lambda: COMPILER_OPTIONS),
                     progress=progress)


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, method): final ELBOs and log p(x) (mean, std over seeds), variance, times."""
    rows = []
    for model, runs in results["runs"].items():
        for method, r in runs["methods"].items():
            row = {"model": model, "method": method}
            for name in ("train_elbo", "test_elbo", "test_log_likelihood"):
                final = np.asarray(r[name])[:, -1]
                row[name] = float(final.mean())
                row[f"{name}_std"] = float(final.std(ddof=1)) if final.size > 1 else 0.0
            row["grad_variance"] = float(np.mean(np.asarray(r["grad_variance"])[:, -1]))
            row["exact_grad_sq_norm"] = float(np.mean(np.asarray(r["exact_grad_sq_norm"])[:, -1]))
            row["train_seconds"] = r["train_seconds"]
            row["compile_seconds"] = r["compile_seconds"]
            rows.append(row)
    return rows


def format_table(results: dict[str, Any]) -> str:
    """The markdown table of :func:`summary_rows`."""
    config = results["config"]
    lines = [
        f"| model | estimator | train ELBO | held-out ELBO | held-out log p(x) | grad variance | ‖exact ∇‖²/P | "
        f"train time ({config['num_seeds']} seeds) | compile |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary_rows(results):
        p = results["runs"][row["model"]]["num_encoder_params"]
        variance = "0 (exact)" if row["method"] == "exact" else f"{row['grad_variance']:.3g}"
        lines.append(
            f"| {row['model']} | {LABELS[row['method']]} | {row['train_elbo']:.2f} ± {row['train_elbo_std']:.2f} | "
            f"{row['test_elbo']:.2f} ± {row['test_elbo_std']:.2f} | {row['test_log_likelihood']:.2f} ± "
            f"{row['test_log_likelihood_std']:.2f} | {variance} | {row['exact_grad_sq_norm'] / p:.3g} | "
            f"{row['train_seconds']:.1f} s | {row['compile_seconds']:.1f} s |")
    return "\n".join(lines)


def table_notes(results: dict[str, Any]) -> str:
    """What the columns of :func:`format_table` are."""
    config = results["config"]
    notes = (f"Exact ELBO and log p(x) in nats per image after {config['num_steps']} Adam steps (enumeration of all "
             f"{2 ** config['num_latents']} latent configurations), mean ± std over {config['num_seeds']} seeds. "
             f"Grad variance: Var[ĝ_p] over {config['num_variance_draws']} draws of the encoder-gradient estimate on "
             f"a fixed batch of {config['variance_batch_size']} training images, averaged over the P encoder "
             f"parameters, at step {config['variance_steps'][-1]}, next to the exact gradient's ‖∇‖²/P at the "
             "same parameters (mean over seeds). Train time: the run of all seeds (vmapped), compile excluded; "
             "compile: the training chunk.")
    if "vimco" in config["methods"]:
        notes += (" VIMCO trains on the K-sample importance-weighted bound, not the ELBO: its variance is that of "
                  "its own objective's gradient estimate, its ‖∇‖² the ELBO's.")
    return notes


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Per model (rows): exact train ELBO, held-out ELBO and held-out log p(x) (mean over seeds, band min–max)
    and the encoder-gradient variance, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    models = list(results["runs"])
    panels = (("train_elbo", "exact train ELBO"), ("test_elbo", "exact held-out ELBO"),
              ("test_log_likelihood", "exact held-out log p(x)"))
    fig, axes = plt.subplots(len(models), 4, figsize=(22, 4.8 * len(models)), squeeze=False, constrained_layout=True)
    for row, model in zip(axes, models):
        runs = results["runs"][model]["methods"]
        for method, r in runs.items():
            steps = np.asarray(r["steps"])
            for ax, (name, _) in zip(row, panels):
                curves = np.asarray(r[name])
                ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=COLORS[method], alpha=0.15, lw=0)
                ax.plot(steps, curves.mean(axis=0), color=COLORS[method], lw=1.8, label=LABELS[method],
                        ls="--" if method == "vimco" else "-")
            if method != "exact":
                variance = np.asarray(r["grad_variance"])
                row[3].plot(r["variance_steps"], variance.mean(axis=0), "o-", color=COLORS[method],
                            label=LABELS[method])
        if "exact" in runs:
            exact = runs["exact"]
            norm = np.asarray(exact["exact_grad_sq_norm"]).mean(axis=0) / results["runs"][model]["num_encoder_params"]
            row[3].plot(exact["variance_steps"], norm, "k:", marker="s", label="‖exact ∇‖²/P (exact run)")
        for ax, (name, title) in zip(row, panels):
            finals = [np.mean(np.asarray(r[name])[:, -1]) for r in runs.values()]
            ax.set(title=f"{model}: {title} (nats per image)", xlabel="Adam step", xlim=(0, config["num_steps"]),
                   ylim=(min(finals) - 0.5 * (max(finals) - min(finals)) - 2.0, max(finals) + 0.3))
            ax.grid(alpha=0.3)
        row[3].set(yscale="log", xlabel="Adam step",
                   title=f"{model}: encoder-gradient variance, mean over\nthe "
                         f"{results['runs'][model]['num_encoder_params']} parameters ({config['num_variance_draws']} "
                         f"draws, fixed batch of {config['variance_batch_size']})")
        row[3].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    axes[0, 3].legend(fontsize=7)
    fig.suptitle(f"Bernoulli VAE on binarised 8×8 digits ({results['num_train']} train / {results['num_test']} held "
                 f"out), {config['num_latents']} Bernoulli latents, K = {config['num_samples']} f evaluations per "
                 f"image and step, batch {config['batch_size']}, Adam lr {config['learning_rate']:g}, "
                 f"{config['num_seeds']} seeds (line: mean, band: min–max)\n"
                 "VIMCO (dashed) maximises the K-sample bound, not the ELBO: compare it on log p(x)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "discrete_vae", config=Config(), quick=QUICK, run=lambda config: run(config, progress=True),
                report=lambda results: format_table(results) + "\n" + table_notes(results),
                plots={"_curves": plot}, summary=summary_rows)

if __name__ == "__main__":
    main()
