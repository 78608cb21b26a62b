"""A categorical VAE on binarised 8×8 digits: categorical gradient estimators against the exact gradient.

Data: the binarised ``sklearn`` digits of :mod:`experiments.discrete_vae`
(1500 training and 297 held-out images of 64 pixels). Model: D = 4 categorical
latents z_d ∈ {0, …, K-1}, K = 8, with the uniform prior p(z) = K^{-D}, an
encoder q(z|x) = Π_d Categorical(softmax(e_θ(x)_d)), e_θ(x) of shape (D, K),
and a decoder p(x|z) = Π_i Bernoulli(σ(g_φ(y)_i)) over the 64 pixels, where y
is the one-hot code of z, shape (D, K), flattened to DK = 32 inputs; both
networks either linear or a flax MLP with one tanh hidden layer. The objective
is the ELBO

    ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) ‖ p(z)),
    KL(q ‖ p) = Σ_d Σ_k q_dk log q_dk + D log K   (closed form).

Every expectation over z is an exact sum over the K^D = 4096 configurations
(one decoder pass over all of them, shared by the batch): the ELBO, its
gradient and log p(x) = log Σ_z p(z) p(x|z) are exact, and ``exact`` trains on
the exact gradient.

Every method of :data:`METHODS` estimates E_{q(z|x)}[f] for one image with one
of two integrands sharing the decoder,

    f(z, logits, φ, x) = log p(x | onehot(z)) - KL,   z int32 of shape (D,)   (unbiased estimators),
    f̃(y, logits, φ, x) = log p(x | y) - KL,           y float of shape (D, K)  (relaxations),

f(z) = f̃(onehot(z)), E_q[f] = ELBO(x). Per datapoint the loss term is
``est.loss(logits_n, state, key_n, logits_n, decoder_params, x_n)``, vmapped
over the batch: its gradient w.r.t. the logits (the estimator's own) flows
into the encoder by the chain rule, the one w.r.t. f's arguments (decoder, KL)
is pathwise from the same samples. All methods but ``exact``,
``indecater`` and ``reinforce_loo_32`` evaluate f (or f̃) M = 8 times per
datapoint and step:

    exact               ``lt.exact.estimator`` over all 4096 z (K^D evaluations)
    reinforce_loo       ``lt.score_function``, ``lt.baselines.leave_one_out()``, M samples
    unordered_set       ``lt.categorical.unordered_set``: M distinct joint configurations
    relax               ``lt.categorical.relax``, control variate
                        c(z) = η log p(x|softmax(z/λ)) - KL + r_ρ(z, x) (REBAR's plus a small tanh net)
    straight_through    ``lt.categorical.straight_through`` (biased)
    gumbel_softmax      ``lt.categorical.gumbel_softmax``, τ = 0.5, relaxed forward (biased)
    gumbel_softmax_st   the same, straight-through (biased)
    gumbel_rao          ``lt.categorical.gumbel_rao``, 10 Gumbels per sample (biased)
    reinmax             ``lt.categorical.reinmax``, τ = 1 (biased)
    indecater           ``lt.categorical.indecater``, one sample: D·K = 32 evaluations (its decoder
                        gradient is pathwise at that one sample)
    reinforce_loo_32    leave-one-out REINFORCE at IndeCateR's budget, D·K = 32 samples

RELAX's control variate ψ = (η, log λ, ρ) is shared by all datapoints (r_ρ
sees x_n); the estimator keeps ψ fixed within a step and reports
``aux["cv_grads"]``, which the training step averages over the batch for one
Adam step on ψ (:func:`experiments.discrete_vae.train_control_variate`).

Training: Adam on minibatches, seeds vmapped, each run one jitted
``lax.scan`` over steps, cut into chunks between checkpoints. At every
checkpoint the train and held-out ELBO and log p(x) are computed exactly; at
a few, ``num_variance_draws`` estimates of the encoder gradient of the loss on
a fixed batch, from fresh keys, are compared with the exact gradient ∇ by
``lt.testing.accuracy``: the variance (mean over the P encoder parameters),
the relative bias ‖E ĝ - ∇‖ / ‖∇‖ beside its Monte Carlo floor
√(Σ_p Var ĝ_p / draws) / ‖∇‖, cos(E ĝ, ∇), and the verdict of
``lt.testing.check_unbiased`` (max |z| and threshold).

Default configuration: batch 50, 2000 Adam steps at learning rate 3e-3,
checkpoints every 200 steps, gradient accuracy at steps 0, 1000 and 2000
(300 draws on 50 training images: below 300 the z-test also requires each
coordinate's draws to look Gaussian), 3 seeds.

    python -m experiments.categorical_vae [--quick]

writes ``results/categorical_vae.json`` and ``results/categorical_vae_curves.png``.

References:
  Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", 2017;
  Maddison, Mnih and Teh, "The Concrete Distribution", 2017.
  Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a Baseline for Free!", 2019.
  Kool, van Hoof and Welling, "Estimating Gradients for Discrete Random Variables by Sampling without
  Replacement", 2020.
  Grathwohl et al., "Backpropagation through the Void: Optimizing control variates for black-box gradient
  estimation", 2018.
  Bengio, Léonard and Courville, "Estimating or Propagating Gradients Through Stochastic Neurons for
  Conditional Computation", 2013.
  Paulus, Maddison and Krause, "Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
  Estimator", 2021.
  Liu et al., "Bridging Discrete and Backpropagation: Straight-Through and Beyond", 2023.
  De Smet, Sansone and Zuidberg Dos Martires, "Differentiable Sampling of Categorical Distributions Using the
  CatLog-Derivative Trick", 2023.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

import logtrick as lt
from experiments import common
from experiments import discrete_vae as dv

MODELS = ("linear", "nonlinear")
NUM_PIXELS = dv.NUM_PIXELS
COMPILER_OPTIONS = dv.COMPILER_OPTIONS

Params = Any


@dataclasses.dataclass(frozen=True)
class Config:
    """Study configuration.

    Attributes:
      num_train: training images (the rest of the 1797 are held out).
      num_variables: D, categorical latents.
      num_classes: K, classes per latent (the exact sums run over K^D configurations).
      hidden: width of the tanh hidden layer of the nonlinear encoder and decoder.
      num_samples: M, f evaluations per datapoint and step of the budget-matched estimators.
      batch_size: datapoints per minibatch.
      num_steps: Adam steps per run (a multiple of ``eval_every``).
      eval_every: steps between checkpoints (exact ELBO on the train and held-out sets).
      variance_steps: checkpoints at which the gradient's variance and bias are measured.
      num_variance_draws: independent gradient estimates per measurement (≥ 30).
      variance_batch_size: the fixed batch (the first training images) of the measurement.
      learning_rate: Adam step size for the VAE, every method.
      cv_hidden: width of the tanh hidden layer of RELAX's control-variate net.
      cv_learning_rate: Adam step size for RELAX's control variate; 0 keeps it fixed.
      relax_temperature: initial temperature λ of RELAX's concrete term.
      gumbel_temperature: τ of the Gumbel-softmax estimators.
      num_gumbels: conditional Gumbel draws per sample of Gumbel-Rao.
      reinmax_temperature: τ of ReinMax.
      num_seeds: seeds, vmapped in one run per (model, method).
      models: which of :data:`MODELS` to train.
      methods: which of :data:`METHODS` to train.
      seed: PRNG seed (initialisation and sampling; the data split is fixed).
    """

    num_train: int = 1500
    num_variables: int = 4
    num_classes: int = 8
    hidden: int = 32
    num_samples: int = 8
    batch_size: int = 50
    num_steps: int = 2000
    eval_every: int = 200
    variance_steps: tuple[int, ...] = (0, 1000, 2000)
    num_variance_draws: int = 300
    variance_batch_size: int = 50
    learning_rate: float = 3e-3
    cv_hidden: int = 16
    cv_learning_rate: float = 3e-3
    relax_temperature: float = 0.5
    gumbel_temperature: float = 0.5
    num_gumbels: int = 10
    reinmax_temperature: float = 1.0
    num_seeds: int = 3
    models: tuple[str, ...] = MODELS
    methods: tuple[str, ...] = ("exact", "reinforce_loo", "unordered_set", "relax", "straight_through",
                                "gumbel_softmax", "gumbel_softmax_st", "gumbel_rao", "reinmax", "indecater",
                                "reinforce_loo_32")
    seed: int = 0

    def __post_init__(self):
        if self.num_steps % self.eval_every:
            raise ValueError(f"Config: `num_steps` must be a multiple of `eval_every` ({self.eval_every})")
        if any(s % self.eval_every or not 0 <= s <= self.num_steps for s in self.variance_steps):
            raise ValueError(f"Config: `variance_steps` must be checkpoints (multiples of {self.eval_every} "
                             f"up to {self.num_steps}), got {self.variance_steps}")
        if self.num_samples < 2 or self.num_variance_draws < lt.testing.MIN_ESTIMATES:
            raise ValueError(f"Config: `num_samples` must be >= 2 (leave-one-out) and `num_variance_draws` >= "
                             f"{lt.testing.MIN_ESTIMATES}, got {self.num_samples} and {self.num_variance_draws}")
        if not set(self.models) <= set(MODELS) or not set(self.methods) <= set(METHODS):
            raise ValueError(f"Config: `models` must be among {MODELS} and `methods` among {tuple(METHODS)}")


class VAE(NamedTuple):
    """The encoder x ↦ the D·K logits of q(z|x) (reshaped to (D, K) by :func:`encode`), the decoder y ↦ the 64
    pixel logits of p(x|y), y the one-hot (or relaxed) code of z of shape (D, K), flattened; and K."""

    encoder: dv.Net
    decoder: dv.Net
    num_classes: int


def make_vae(config: Config, model: str) -> VAE:
    """The linear or the one-hidden-layer tanh VAE of ``config``."""
    hidden = {"linear": None, "nonlinear": config.hidden}[model]
    return VAE(dv.Net(config.num_variables * config.num_classes, hidden), dv.Net(NUM_PIXELS, hidden),
               config.num_classes)


def init_params(config: Config, vae: VAE, key: jax.Array, pixel_mean: jax.Array) -> Params:
    """Flax's default initialisation; the decoder's output bias at the logit of the mean training pixel."""
    k_enc, k_dec = jax.random.split(key)
    decoder = vae.decoder.init(k_dec, jnp.zeros(config.num_variables * config.num_classes))
    mean = jnp.clip(pixel_mean, 1e-3, 1 - 1e-3)
    decoder["params"]["out"]["bias"] = jnp.log(mean) - jnp.log1p(-mean)
    return {"encoder": vae.encoder.init(k_enc, jnp.zeros(NUM_PIXELS)), "decoder": decoder}


def encode(vae: VAE, encoder_params: Params, x: jax.Array) -> jax.Array:
    """Logits of q(z|x), shape batch + (D, K), for images ``x`` of shape batch + (64,)."""
    return vae.encoder.apply(encoder_params, x).reshape(x.shape[:-1] + (-1, vae.num_classes))


def log_likelihood(vae: VAE, decoder_params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """log p(x|y) = Σ_i x_i l_i - softplus(l_i), l = g_φ(y), for a code y of shape (D, K), one-hot or relaxed."""
    return dv.log_likelihood(vae, decoder_params, x, y.reshape(-1))


def kl_to_prior(logits: jax.Array) -> jax.Array:
    """KL(q ‖ Uniform(K)^D) = Σ_d Σ_k q_dk log q_dk + D log K, q = softmax(logits), logits of shape (D, K)."""
    log_q = jax.nn.log_softmax(logits)
    return jnp.sum(jnp.exp(log_q) * log_q) + logits.shape[0] * jnp.log(logits.shape[1])


def exact_terms(vae: VAE, params: Params, xs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """E_q[log p(x|z)], KL(q ‖ p) and log p(x) of each image of ``xs`` (n, 64), each shape (n,), by enumeration.

    One decoder pass over all K^D one-hot codes, shared by the batch:
    E_q[log p(x|z)] = Σ_z q(z|x) log p(x|z), log q(z|x) = Σ_d log q_d(z_d), and
    log p(x) = logsumexp_z log p(x|z) - D log K; differentiable in the encoder and decoder parameters.
    """
    logits = encode(vae, params["encoder"], xs)
    num_variables, num_classes = logits.shape[1:]
    codes = jax.nn.one_hot(lt.exact.categorical_support(num_classes, num_variables), num_classes)
    codes = codes.reshape(codes.shape[0], -1)
    dec_logits = vae.decoder.apply(params["decoder"], codes)
    log_lik = xs @ dec_logits.T - jnp.sum(jax.nn.softplus(dec_logits), axis=1)
    log_q = jax.nn.log_softmax(logits).reshape(xs.shape[0], -1) @ codes.T
    expected = jnp.sum(jnp.exp(log_q) * log_lik, axis=1)
    log_marginal = jax.nn.logsumexp(log_lik, axis=1) - num_variables * jnp.log(num_classes)
    return expected, jax.vmap(kl_to_prior)(logits), log_marginal


def relaxed_integrand(vae: VAE, y: jax.Array, logits: jax.Array, decoder_params: Params, x: jax.Array) -> jax.Array:
    """f̃(y) = log p(x|y) - KL(q(·|x) ‖ p), y of shape (D, K), one-hot or relaxed; differentiable in y."""
    return log_likelihood(vae, decoder_params, x, y) - kl_to_prior(logits)


def elbo_integrand(vae: VAE, z: jax.Array, logits: jax.Array, decoder_params: Params, x: jax.Array) -> jax.Array:
    """f(z) = f̃(onehot(z)) for classes z, int32 of shape (D,): E_{q(z|x)}[f] = ELBO(x)."""
    return relaxed_integrand(vae, jax.nn.one_hot(z, vae.num_classes), logits, decoder_params, x)


def initial_cv_params(config: Config) -> Params:
    """RELAX's initial control variate: η = 1, λ = ``relax_temperature``, r_ρ's output layer zero (c is REBAR's)."""
    net = dv.Net(1, config.cv_hidden)
    rho = net.init(jax.random.key(0), jnp.zeros(config.num_variables * config.num_classes + NUM_PIXELS))
    rho["params"]["out"]["kernel"] = jnp.zeros_like(rho["params"]["out"]["kernel"])
    log_temperature = jnp.log(jnp.asarray(config.relax_temperature, jnp.float32))
    return {"scale": jnp.ones(()), "log_temperature": log_temperature, "net": rho}


def control_variate(vae: VAE, net: dv.Net, cv_params: Params, z: jax.Array, logits: jax.Array,
                    decoder_params: Params, x: jax.Array) -> jax.Array:
    """RELAX's c_ψ(z) = η log p(x|softmax(z/λ)) - KL(q(·|x) ‖ p) + r_ρ([z, x]), z of shape (D, K).

    z are the Gumbel-perturbed logits; ψ = {"scale": η, "log_temperature": log λ, "net": ρ}.
    """
    relaxed = jax.nn.softmax(z / jnp.exp(cv_params["log_temperature"]))
    return (cv_params["scale"] * log_likelihood(vae, decoder_params, x, relaxed) - kl_to_prior(logits)
            + net.apply(cv_params["net"], jnp.concatenate([z.reshape(-1), x]))[0])


def relax_estimator(config: Config, vae: VAE) -> lt.Estimator:
    """RELAX with :func:`control_variate`; its ψ is trained by the caller (``dv.train_control_variate``)."""
    return lt.categorical.relax(functools.partial(elbo_integrand, vae),
                                functools.partial(control_variate, vae, dv.Net(1, config.cv_hidden)),
                                initial_cv_params(config), num_samples=config.num_samples)


class Method(NamedTuple):
    """A method of the study: its label, its estimator factory(config, vae) of E_{q(z|x)}[f] for one image, its f
    evaluations per datapoint and step, and whether its gradient is biased by design."""

    label: str
    estimator: Callable[[Config, VAE], lt.Estimator]
    evaluations: Callable[[Config], int]
    biased: bool


def _budget(config: Config) -> int:
    return config.num_samples


def _per_class(config: Config) -> int:
    return config.num_variables * config.num_classes


def _f(vae: VAE) -> Callable:
    return functools.partial(elbo_integrand, vae)


def _f_relaxed(vae: VAE) -> Callable:
    return functools.partial(relaxed_integrand, vae)


METHODS: dict[str, Method] = {
    "exact": Method("exact gradient", lambda config, vae: lt.exact.estimator(
        _f(vae), lt.families.categorical(), lt.exact.categorical_support(config.num_classes, config.num_variables)),
        lambda config: config.num_classes ** config.num_variables, False),
    "reinforce_loo": Method("REINFORCE + leave-one-out", lambda config, vae: lt.score_function(
        _f(vae), lt.families.categorical(), num_samples=config.num_samples,
        baseline=lt.baselines.leave_one_out()), _budget, False),
    "unordered_set": Method("unordered set (without replacement)", lambda config, vae: lt.categorical.unordered_set(
        _f(vae), num_samples=config.num_samples), _budget, False),
    "relax": Method("RELAX", relax_estimator, _budget, False),
    "straight_through": Method("straight-through", lambda config, vae: lt.categorical.straight_through(
        _f_relaxed(vae), num_samples=config.num_samples), _budget, True),
    "gumbel_softmax": Method("Gumbel-softmax (relaxed)", lambda config, vae: lt.categorical.gumbel_softmax(
        _f_relaxed(vae), num_samples=config.num_samples, temperature=config.gumbel_temperature), _budget, True),
    "gumbel_softmax_st": Method("Gumbel-softmax straight-through", lambda config, vae: lt.categorical.gumbel_softmax(
        _f_relaxed(vae), num_samples=config.num_samples, temperature=config.gumbel_temperature,
        straight_through=True), _budget, True),
    "gumbel_rao": Method("Gumbel-Rao", lambda config, vae: lt.categorical.gumbel_rao(
        _f_relaxed(vae), num_samples=config.num_samples, num_gumbels=config.num_gumbels), _budget, True),
    "reinmax": Method("ReinMax", lambda config, vae: lt.categorical.reinmax(
        _f_relaxed(vae), num_samples=config.num_samples, temperature=config.reinmax_temperature), _budget, True),
    "indecater": Method("IndeCateR", lambda config, vae: lt.categorical.indecater(_f(vae), num_samples=1),
                        _per_class, False),
    "reinforce_loo_32": Method("REINFORCE + leave-one-out, D·K samples", lambda config, vae: lt.score_function(
        _f(vae), lt.families.categorical(), num_samples=_per_class(config),
        baseline=lt.baselines.leave_one_out()), _per_class, False),
}
COLORS = {"exact": "k", "reinforce_loo": "tab:blue", "unordered_set": "tab:green", "relax": "tab:red",
          "straight_through": "tab:brown", "gumbel_softmax": "tab:pink", "gumbel_softmax_st": "tab:olive",
          "gumbel_rao": "tab:purple", "reinmax": "tab:orange", "indecater": "tab:cyan",
          "reinforce_loo_32": "tab:gray"}

QUICK = Config(num_train=300, hidden=8, batch_size=10, num_steps=20, eval_every=10, variance_steps=(20,),
               num_variance_draws=30, variance_batch_size=10, num_seeds=2, models=("linear",),
               methods=("exact", "reinforce_loo", "unordered_set", "relax", "gumbel_rao", "indecater"))


def make_loss(config: Config, vae: VAE, method: str) -> Callable:
    """``loss(params, est_state, xs, key) -> (-(1/B) Σ_n value_n, aux)`` over a batch ``xs`` (B, 64).

    value_n is the estimator's loss at the encoder's logits for x_n, with
    (logits_n, decoder parameters, x_n) as f's arguments: its gradient w.r.t.
    the encoder and decoder parameters is the method's estimate. ``aux``: the
    estimators' aux, each leaf with a leading batch axis.
    """
    est = METHODS[method].estimator(config, vae)

    def datapoint(params, est_state, x, key):
        logits = encode(vae, params["encoder"], x)
        value, (_, aux) = est.loss(logits, est_state, key, logits, params["decoder"], x)
        return value, aux

    def loss(params, est_state, xs, key):
        keys = jax.random.split(key, xs.shape[0])
        values, aux = jax.vmap(datapoint, (None, None, 0, 0))(params, est_state, xs, keys)
        return -jnp.mean(values), aux

    return loss


def make_train_step(config: Config, vae: VAE, method: str) -> Callable[[dv.TrainState, jax.Array, jax.Array],
                                                                      dv.TrainState]:
    """``train_step(state, xs, key) -> state``: one Adam step on the minibatch ``xs`` (and one on RELAX's ψ)."""
    loss = make_loss(config, vae, method)
    optimizer, cv_opt = optax.adam(config.learning_rate), dv.cv_optimizer(config)

    def train_step(state, xs, key):
        grads, aux = jax.grad(loss, has_aux=True)(state.params, state.est_state, xs, key)
        updates, opt_state = optimizer.update(grads, state.opt_state)
        est_state, cv_opt_state = dv.train_control_variate(cv_opt, state.est_state, state.cv_opt_state, aux)
        return dv.TrainState(optax.apply_updates(state.params, updates), opt_state, est_state, cv_opt_state)

    return train_step


def init_train_state(config: Config, vae: VAE, method: str, params: Params) -> dv.TrainState:
    """The state a run of ``method`` starts from, at the VAE parameters ``params`` (one seed)."""
    est_state = METHODS[method].estimator(config, vae).init(jnp.zeros((config.num_variables, config.num_classes)))
    cv_opt_state = (dv.cv_optimizer(config).init(est_state.cv_params)
                    if isinstance(est_state, lt.discrete.RelaxState) else ())
    return dv.TrainState(params, optax.adam(config.learning_rate).init(params), est_state, cv_opt_state)


def make_chunk(config: Config, vae: VAE, method: str, data: dv.Data) -> Callable[[dv.TrainState, jax.Array],
                                                                                 dv.TrainState]:
    """``chunk(state, key) -> state``: ``eval_every`` steps in one ``lax.scan``; minibatches without replacement."""
    train_step = make_train_step(config, vae, method)

    def step(state, key):
        k_batch, k_step = jax.random.split(key)
        idx = jax.random.choice(k_batch, data.train.shape[0], (config.batch_size,), replace=False)
        return train_step(state, data.train[idx], k_step), None

    def chunk(state, key):
        return jax.lax.scan(step, state, jax.random.split(key, config.eval_every))[0]

    return chunk


def make_evaluate(vae: VAE, data: dv.Data) -> Callable[[Params], dict[str, jax.Array]]:
    """``evaluate(params)``: mean exact ELBO and log p(x) over the train and the held-out images."""

    def evaluate(params):
        out = {}
        for split, xs in (("train", data.train), ("test", data.test)):
            expected, kl, log_marginal = exact_terms(vae, params, xs)
            out[f"{split}_elbo"] = jnp.mean(expected - kl)
            out[f"{split}_log_likelihood"] = jnp.mean(log_marginal)
        return out

    return evaluate


def make_gradient_draws(config: Config, vae: VAE, method: str, data: dv.Data) -> Callable[[dv.TrainState, jax.Array],
                                                                                          dict[str, jax.Array]]:
    """``draws(state, key)``: encoder-gradient estimates on the fixed batch, and the exact gradient.

    ``num_variance_draws`` estimates of ∇_θ loss from fresh keys at the same
    parameters and estimator state, shape (draws, P), and ∇_θ(-mean ELBO) of
    the same batch by enumeration, shape (P,), P the encoder's parameters.
    """
    loss = make_loss(config, vae, method)
    xs = data.train[:config.variance_batch_size]

    def exact_loss(encoder, decoder):
        expected, kl, _ = exact_terms(vae, {"encoder": encoder, "decoder": decoder}, xs)
        return -jnp.mean(expected - kl)

    def draws(state, key):
        def encoder_gradient(k):
            grads = jax.grad(lambda p: loss(p, state.est_state, xs, k)[0])(state.params)
            return ravel_pytree(grads["encoder"])[0]

        estimates = jax.vmap(encoder_gradient)(jax.random.split(key, config.num_variance_draws))
        exact = ravel_pytree(jax.grad(exact_loss)(state.params["encoder"], state.params["decoder"]))[0]
        return {"estimates": estimates, "exact": exact}

    return draws


def gradient_accuracy(estimates: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """Variance, relative bias and its Monte Carlo floor, cosines and the z-test of (draws, P) estimates of the
    encoder gradient ``exact`` (P,), one seed."""
    estimates, exact = np.asarray(estimates, np.float64), np.asarray(exact, np.float64)
    acc = lt.testing.accuracy(estimates, exact)
    variance = estimates.var(axis=0, ddof=1)
    norm = np.linalg.norm(exact)
    return {"grad_variance": float(variance.mean()), "exact_grad_sq_norm": float(norm**2),
            "relative_bias": acc.relative_bias, "bias_floor": float(np.sqrt(variance.sum() / len(estimates)) / norm),
            "cosine_of_mean": acc.cosine_of_mean, "cosine": acc.cosine, "max_abs_z": acc.max_abs_z,
            "threshold": acc.threshold, "verdict": acc.verdict}


def _seedwise(draws: dict[str, jax.Array]) -> list[dict[str, Any]]:
    """:func:`gradient_accuracy` of each seed of seed-vmapped :func:`make_gradient_draws` output."""
    return [gradient_accuracy(e, g) for e, g in zip(np.asarray(draws["estimates"]), np.asarray(draws["exact"]))]


def train_run(config: Config, vae: VAE, method: str, data: dv.Data, params: Params, evaluate: Callable,
              keys: jax.Array, bar: tqdm) -> dict[str, Any]:
    """One (model, method) by :func:`experiments.discrete_vae.run_checkpoints`, the gradient draws as its probe.

    Accuracy entries are (num_seeds, len(variance_steps)) lists.
    """
    run = dv.run_checkpoints(config, lambda p: init_train_state(config, vae, method, p),
                             make_chunk(config, vae, method, data), make_gradient_draws(config, vae, method, data),
                             params, evaluate, keys, bar, compiler_options=COMPILER_OPTIONS)
    accuracies = [_seedwise(draws) for draws in run.probes]
    return {
        "evaluations": METHODS[method].evaluations(config),
        "steps": list(range(0, config.num_steps + 1, config.eval_every)),
        **{name: curve.T.tolist() for name, curve in run.evals.items()},
        "variance_steps": list(config.variance_steps),
        **{name: [[a[s][name] for a in accuracies] for s in range(config.num_seeds)] for name in accuracies[0][0]},
        "compile_seconds": run.compile_train,
        "compile_draws_seconds": run.compile_probe,
        "train_seconds": run.train_seconds,
    }


def run(config: Config, *, progress: bool = False) -> dict[str, Any]:
    """:func:`experiments.discrete_vae.run_study` of the categorical VAE, with each method's f evaluations."""
    study = dv.Study(make_vae, init_params, make_evaluate, train_run, lambda: COMPILER_OPTIONS)
    results = dv.run_study(config, study, progress=progress)
    return {**results, "evaluations": {m: METHODS[m].evaluations(config) for m in config.methods}}


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, method): final ELBOs and log p(x) (mean, std over seeds), the gradient's accuracy at
    the last variance step (mean over seeds), the z-test at the first and the last (its verdicts counted over the
    seeds, its max |z| and threshold averaged), times."""
    rows = []
    for model, runs in results["runs"].items():
        for method, r in runs["methods"].items():
            row = {"model": model, "method": method, "evaluations": r["evaluations"]}
            for name in ("train_elbo", "test_elbo", "test_log_likelihood"):
                final = np.asarray(r[name])[:, -1]
                row[name] = float(final.mean())
                row[f"{name}_std"] = float(final.std(ddof=1)) if final.size > 1 else 0.0
            for name in ("grad_variance", "exact_grad_sq_norm", "relative_bias", "bias_floor", "cosine_of_mean"):
                row[name] = float(np.mean(np.asarray(r[name])[:, -1]))
            row["z_test"] = {}
            for i in (0, -1):
                verdicts = [v[i] for v in r["verdict"]]
                row["z_test"][r["variance_steps"][i]] = {
                    "rejections": verdicts.count("biased"), "inconclusive": verdicts.count("inconclusive"),
                    **{name: float(np.mean(np.asarray(r[name])[:, i])) for name in ("max_abs_z", "threshold")}}
            row["train_seconds"] = r["train_seconds"]
            row["compile_seconds"] = r["compile_seconds"]
            rows.append(row)
    return rows


def _z_test(test: dict[str, Any], num_seeds: int) -> str:
    return (f"{test['rejections']}/{num_seeds} reject, {test['inconclusive']} inconcl. (max \\|z\\| "
            f"{test['max_abs_z']:.0f} vs {test['threshold']:.1f})")


def format_table(results: dict[str, Any]) -> str:
    """The markdown table of :func:`summary_rows`."""
    seeds, steps = results["config"]["num_seeds"], results["config"]["variance_steps"]
    lines = [
        "| model | estimator | f evals | train ELBO | held-out ELBO | held-out log p(x) | grad variance | "
        f"rel. bias (MC floor) | cos(E ĝ, ∇) | z-test, step {steps[0]} | z-test, step {steps[-1]} | train time | "
        "compile |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for row in summary_rows(results):
        exact = row["method"] == "exact"
        variance = "0 (exact)" if exact else f"{row['grad_variance']:.3g}"
        tests = ["—" if exact else _z_test(test, seeds) for test in row["z_test"].values()]
        lines.append(
            f"| {row['model']} | {METHODS[row['method']].label} | {row['evaluations']} | "
            f"{row['train_elbo']:.2f} ± {row['train_elbo_std']:.2f} | {row['test_elbo']:.2f} ± "
            f"{row['test_elbo_std']:.2f} | {row['test_log_likelihood']:.2f} ± {row['test_log_likelihood_std']:.2f} | "
            f"{variance} | {row['relative_bias']:.3f} ({row['bias_floor']:.3f}) | {row['cosine_of_mean']:.3f} | "
            f"{' | '.join(tests)} | {row['train_seconds']:.1f} s | {row['compile_seconds']:.1f} s |")
    return "\n".join(lines)


def table_notes(results: dict[str, Any]) -> str:
    """What the columns of :func:`format_table` are."""
    config = results["config"]
    return (f"Exact ELBO and log p(x) in nats per image after {config['num_steps']} Adam steps (enumeration of all "
            f"{config['num_classes'] ** config['num_variables']} latent configurations), mean ± std over "
            f"{config['num_seeds']} seeds. f evals: f evaluations per datapoint and step. Gradient columns: "
            f"{config['num_variance_draws']} draws of the encoder-gradient estimate on a fixed batch of "
            f"{config['variance_batch_size']} training images at step {config['variance_steps'][-1]}, against the "
            "exact gradient ∇ at the same parameters, mean over seeds: the variance averaged over the encoder "
            "parameters; ‖E ĝ - ∇‖/‖∇‖ and, in brackets, the floor an unbiased estimator reaches with that many "
            "draws, √(Σ_p Var ĝ_p / draws)/‖∇‖; cos(E ĝ, ∇). z-test: at the first and the last "
            "of those steps, the seeds on which `lt.testing.check_unbiased` finds the estimates biased or cannot "
            "judge them (a coordinate's tails too heavy for that many draws), α = 1e-3, Bonferroni over the "
            "parameters; its max |z| (over the judged coordinates, mean over seeds; where the verdict is "
            "inconclusive it includes coordinates whose draws are nearly constant, compared on the floored standard "
            "error) and threshold. Train time: the run of all seeds (vmapped), compile excluded; compile: the "
            "training chunk.")


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Per model (rows): exact held-out ELBO (mean over seeds, band min–max), the encoder-gradient variance and
    its relative bias, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    models = list(results["runs"])
    fig, axes = plt.subplots(len(models), 3, figsize=(19, 5 * len(models)), squeeze=False, constrained_layout=True)
    for row, model in zip(axes, models):
        runs = results["runs"][model]["methods"]
        for method, r in runs.items():
            label = f"{METHODS[method].label} ({r['evaluations']})"
            steps, curves = np.asarray(r["steps"]), np.asarray(r["test_elbo"])
            style = {"color": COLORS[method], "ls": "--" if METHODS[method].biased else "-"}
            row[0].fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=COLORS[method], alpha=0.12, lw=0)
            row[0].plot(steps, curves.mean(axis=0), lw=1.6, label=label, **style)
            if method != "exact":
                for ax, name in zip(row[1:], ("grad_variance", "relative_bias")):
                    ax.plot(r["variance_steps"], np.asarray(r[name]).mean(axis=0), marker="o", label=label, **style)
        finals = [np.mean(np.asarray(r["test_elbo"])[:, -1]) for r in runs.values()]
        best = max(finals)
        row[0].set(title=f"{model}: exact held-out ELBO (nats per image)", xlabel="Adam step",
                   xlim=(0, config["num_steps"]), ylim=(min(finals) - 0.3 * (best - min(finals)) - 2.0, best + 1.0))
        num_params = results["runs"][model]["num_encoder_params"]
        row[1].set(yscale="log", xlabel="Adam step",
                   title=f"{model}: encoder-gradient variance, mean over the {num_params} parameters\n"
                         f"({config['num_variance_draws']} draws, fixed batch of {config['variance_batch_size']})")
        row[2].set(yscale="log", xlabel="Adam step", title=f"{model}: relative bias ‖E ĝ - ∇‖ / ‖∇‖ (same draws)")
        for ax in row:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Categorical VAE on binarised 8×8 digits ({results['num_train']} train / {results['num_test']} held "
                 f"out), {config['num_variables']} latents × {config['num_classes']} classes, batch "
                 f"{config['batch_size']}, Adam lr {config['learning_rate']:g}, {config['num_seeds']} seeds (line: "
                 "mean, band: min–max); f evaluations per image and step in brackets; dashed: biased by design")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    common.main(__doc__, "categorical_vae", config=Config(), quick=QUICK,
                run=lambda config: run(config, progress=True),
                report=lambda results: format_table(results) + "\n" + table_notes(results),
                plots={"_curves": plot}, summary=summary_rows)


if __name__ == "__main__":
    main()
