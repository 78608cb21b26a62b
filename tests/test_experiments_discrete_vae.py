"""Tests of experiments.discrete_vae: the exact sums, a tiny run, and every method's gradient against the exact one."""

import dataclasses
import functools
from typing import NamedTuple
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import logtrick as lt
from experiments import discrete_vae as dv

# D = 4 latents (16 configurations), hidden width 4, a few steps.
CONFIG = dataclasses.replace(dv.QUICK, num_train=200, num_latents=4, hidden=4, batch_size=8, num_steps=4, eval_every=2,
                             variance_steps=(4,), num_variance_draws=4, variance_batch_size=6, num_seeds=2,
                             models=("linear",), methods=("exact",))
# Methods whose gradient is unbiased for the ELBO; VIMCO's is for its K-sample bound.
UNBIASED = ("reinforce_loo", "arm", "disarm", "relax")
SAMPLED = (*UNBIASED, "vimco", "gumbel_st")
NUM_DRAWS = 1000
# The straight-through bias at the test's parameters, measured 0.13, its Monte Carlo error 0.009.
GUMBEL_BIAS_FLOOR = 0.1
# A broken variant: REINFORCE whose baseline, the mean of all K values, includes each sample's own.
OWN_SAMPLE = "reinforce_own_sample_baseline"
OWN_SAMPLE_BASELINE = lt.baselines.Baseline(init=lambda params: (),
                                            apply=lambda values, state: (jnp.full_like(values, values.mean()), state))


@pytest.fixture(scope="module")
def data() -> dv.Data:
    return dv.load_data(CONFIG)


@pytest.fixture(scope="module")
def vae() -> dv.VAE:
    return dv.make_vae(CONFIG, "linear")


def perturbed_params(vae: dv.VAE, data: dv.Data) -> dv.Params:
    """The experiment's initial VAE parameters plus N(0, 0.3²) noise (traced inside the shared function)."""
    k_init, k_noise = jax.random.split(jax.random.key(0))
    flat, unravel = ravel_pytree(dv.init_params(CONFIG, vae, k_init, jnp.mean(data.train, axis=0)))
    return unravel(flat + 0.3 * jax.random.normal(k_noise, flat.shape))


def exact_bound_loss(vae: dv.VAE, params: dv.Params, xs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """-(1/B) Σ_n E[log (1/K) Σ_k w_k] by enumeration of all (2^D)^K K-tuples of latents (K = 4), and the bounds."""
    configs = lt.exact.bernoulli_support(CONFIG.num_latents)
    bernoulli = lt.families.bernoulli()
    axes = [(slice(None),) + (None,) * k for k in range(4)]     # the K = 4 draws on 4 broadcast axes

    def bound(x):
        logits = vae.encoder.apply(params["encoder"], x)
        log_w = jax.vmap(lambda b: dv.log_weight(vae, b, logits, params["decoder"], x))(configs)
        log_q = jax.vmap(lambda b: bernoulli.log_prob(logits, b))(configs)
        log_q_tuple = sum(log_q[a] for a in axes)
        bound_tuple = jnp.logaddexp(jnp.logaddexp(log_w[axes[0]], log_w[axes[1]]),
                                    jnp.logaddexp(log_w[axes[2]], log_w[axes[3]])) - jnp.log(4.0)
        return jnp.sum(jnp.exp(log_q_tuple) * bound_tuple)

    bounds = jax.vmap(bound)(xs)
    return -jnp.mean(bounds), bounds


class Draws(NamedTuple):
    """What the shared compiled function returns; leading axis NUM_DRAWS on the sampled quantities."""

    grads: dict[str, dv.Params]     # each sampled method's gradients of the batch loss, encoder and decoder
    values: dict[str, jax.Array]    # and the batch loss itself
    cv_loss: jax.Array              # RELAX's batch-mean Σ_d ĝ_d² per draw
    cv_grads: dv.Params             # RELAX's batch-mean ∇_ψ Σ_d ĝ_d² per draw
    exact: dv.Params                # the exact method's gradient
    terms_grad: dv.Params           # jax.grad of -mean ELBO from dv.exact_terms
    bound_grad: dv.Params           # the exact gradient of -mean K-sample bound
    bounds: jax.Array               # per image: the exact K-sample bound,
    elbos: jax.Array                # ELBO and
    log_marginals: jax.Array        # log p(x)
    terms: tuple[jax.Array, ...]    # dv.exact_terms of 3 held-out images
    enumerated: tuple[jax.Array, ...]  # the same by lt.exact sums, one image at a time


@pytest.fixture(scope="module")
def relax_start(vae) -> lt.discrete.RelaxState:
    """RELAX's initial state in the experiment, in one compiled call."""
    return jax.jit(lambda: dv.ESTIMATORS["relax"](CONFIG, vae).init(jnp.zeros(CONFIG.num_latents)))()


@pytest.fixture(scope="module")
def draw(vae, data):
    """``draw(relax_state, key) -> Draws`` at :func:`perturbed_params`, every method at once: one compiled function."""
    xs = data.train[:3]
    own_sample = lambda config, vae: lt.score_function(functools.partial(dv.elbo_integrand, vae),
                                                       lt.families.bernoulli(), num_samples=config.num_samples,
                                                       baseline=OWN_SAMPLE_BASELINE)
    with mock.patch.dict(dv.ESTIMATORS, {OWN_SAMPLE: own_sample}):
        losses = {m: dv.make_loss(CONFIG, vae, m) for m in (*SAMPLED, OWN_SAMPLE, "exact")}
        states = {m: dv.ESTIMATORS[m](CONFIG, vae).init(jnp.zeros(CONFIG.num_latents))
                  for m in (*SAMPLED, OWN_SAMPLE) if m != "relax"}
    support = lt.exact.bernoulli_support(CONFIG.num_latents)
    bernoulli = lt.families.bernoulli()

    def terms_loss(params):
        expected, kl, log_marginal = dv.exact_terms(vae, params, xs)
        return -jnp.mean(expected - kl), (expected - kl, log_marginal)

    def one_image(params, x):
        logits = vae.encoder.apply(params["encoder"], x)
        log_lik = jax.vmap(lambda b: dv.log_likelihood(vae, params["decoder"], x, b))(support)
        expected = lt.exact.expectation(lambda b: dv.log_likelihood(vae, params["decoder"], x, b), bernoulli, support)
        kl = lt.exact.expectation(lambda b: bernoulli.log_prob(logits, b) - dv.log_prior(b), bernoulli, support)
        return expected(logits), kl(logits), jax.nn.logsumexp(log_lik) - jnp.log(support.shape[0])

    @functools.partial(jax.jit, compiler_options=dv.COMPILER_OPTIONS)
    def fn(relax_state, key):
        params = perturbed_params(vae, data)
        keys, grads, values, aux = jax.random.split(key, NUM_DRAWS), {}, {}, {}
        for m, state in {**states, "relax": relax_state}.items():
            (values[m], aux[m]), grads[m] = jax.vmap(
                lambda k: jax.value_and_grad(losses[m], has_aux=True)(params, state, xs, k))(keys)
        terms_grad, (elbos, log_marginals) = jax.grad(terms_loss, has_aux=True)(params)
        bound_grad, bounds = jax.grad(lambda p: exact_bound_loss(vae, p, xs), has_aux=True)(params)
        return Draws(grads, values, jnp.mean(aux["relax"]["cv_loss"], axis=1),
                     jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=1), aux["relax"]["cv_grads"]),
                     jax.grad(lambda p: losses["exact"](p, (), xs, key)[0])(params), terms_grad, bound_grad,
                     bounds, elbos, log_marginals, dv.exact_terms(vae, params, data.test[:3]),
                     jax.vmap(functools.partial(one_image, params))(data.test[:3]))

    return fn


@pytest.fixture(scope="module")
def initial(draw, relax_start) -> Draws:
    """Draws at the experiment's initial control variate."""
    return draw(relax_start, jax.random.key(3))


def test_exact_terms_match_enumeration(initial):
    """E_q[log p(x|b)], KL and log p(x) of the VAE against lt.exact sums, one image at a time."""
    for got, want in zip(initial.terms, initial.enumerated):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_exact_method_is_the_exact_elbo_gradient(initial):
    """The ``exact`` method's loss gradient is jax.grad of -mean ELBO from exact_terms; ELBO < K-bound < log p(x)."""
    assert tuple(dv.ESTIMATORS) == dv.METHODS
    np.testing.assert_allclose(ravel_pytree(initial.exact)[0], ravel_pytree(initial.terms_grad)[0],
                               rtol=1e-4, atol=1e-6)
    assert np.all(initial.elbos < initial.bounds) and np.all(initial.bounds < initial.log_marginals)


@pytest.mark.parametrize("method", UNBIASED)
def test_elbo_gradient_is_unbiased(initial, method):
    """Statistical: NUM_DRAWS gradients of the batch loss (3 images), encoder and decoder, z-tested
    against the exact method's gradient at the same parameters."""
    lt.testing.assert_unbiased(initial.grads[method], initial.exact)


def test_vimco_gradient_is_unbiased_for_its_bound(initial):
    """Statistical: VIMCO's batch-loss gradients against the exact gradient of the K-sample bound (all K-tuples)."""
    lt.testing.assert_unbiased(initial.grads["vimco"], initial.bound_grad)


def test_gumbel_straight_through_bias_is_detected(initial):
    """Statistical: the same test rejects the straight-through Gumbel gradient, biased by design, and its
    relative bias ‖E ĝ - ∇‖ / ‖∇‖ is at least GUMBEL_BIAS_FLOOR, over 10 times its Monte Carlo error."""
    with pytest.raises(AssertionError, match="estimates are biased"):
        lt.testing.assert_unbiased(initial.grads["gumbel_st"], initial.exact)
    flat = np.asarray(jax.vmap(lambda g: ravel_pytree(g)[0])(initial.grads["gumbel_st"]), np.float64)
    exact = np.asarray(ravel_pytree(initial.exact)[0], np.float64)
    monte_carlo_error = np.sqrt(np.sum(flat.var(axis=0, ddof=1)) / NUM_DRAWS) / np.linalg.norm(exact)
    relative_bias = lt.testing.accuracy(flat, exact).relative_bias
    assert relative_bias > GUMBEL_BIAS_FLOOR > 10 * monte_carlo_error, (relative_bias, monte_carlo_error)


def test_a_baseline_that_sees_its_own_sample_is_rejected(initial):
    """Statistical: the test that passes leave-one-out REINFORCE rejects it with the baseline taken as the mean
    of all K values, own sample included, which shrinks the score term by (K - 1) / K."""
    with pytest.raises(AssertionError, match="estimates are biased"):
        lt.testing.assert_unbiased(initial.grads[OWN_SAMPLE], initial.exact)


@pytest.mark.parametrize("method", (*UNBIASED, "gumbel_st"))
def test_elbo_loss_value_is_unbiased(initial, method):
    """Statistical: NUM_DRAWS values of the batch loss tested against the exact -mean ELBO of the 3 images."""
    lt.testing.assert_unbiased(initial.values[method], -np.mean(initial.elbos))


def test_vimco_loss_value_is_the_k_sample_bound_not_the_elbo(initial):
    """Statistical: VIMCO's batch-loss values are unbiased for -mean K-sample bound (all K-tuples enumerated),
    and the same test rejects them as estimates of -mean ELBO, the other methods' objective."""
    lt.testing.assert_unbiased(initial.values["vimco"], -np.mean(initial.bounds))
    with pytest.raises(AssertionError, match="estimates are biased"):
        lt.testing.assert_unbiased(initial.values["vimco"], -np.mean(initial.elbos))


def test_relax_control_variate_trains(draw, relax_start):
    """Statistical: from a poor control variate (η = 0, so c = r_ρ ≈ 0), one step of the experiment's caller-side
    Adam (``dv.train_control_variate``, learning rate 0.1, on the mean cv gradient of NUM_DRAWS draws) lowers the
    mean cv_loss Σ_d ĝ_d² over fresh draws (a one-sided z-test at 3 standard errors), and the gradient stays
    unbiased with the trained ψ."""
    optimizer = dv.cv_optimizer(dataclasses.replace(CONFIG, cv_learning_rate=0.1))
    poor = relax_start._replace(cv_params={**relax_start.cv_params, "scale": jnp.zeros(())})
    before = draw(poor, jax.random.key(4))
    trained, _ = jax.jit(lambda s, g: dv.train_control_variate(optimizer, s, optimizer.init(s.cv_params),
                                                               {"cv_grads": g}))(poor, before.cv_grads)
    after = draw(trained, jax.random.key(5))
    b, a = np.asarray(before.cv_loss), np.asarray(after.cv_loss)
    z = (b.mean() - a.mean()) / np.sqrt((b.var(ddof=1) + a.var(ddof=1)) / NUM_DRAWS)
    assert z > 3.0, (b.mean(), a.mean(), z)
    lt.testing.assert_unbiased(after.grads["relax"], after.exact)


@pytest.mark.slow
def test_tiny_run():
    """An exact-gradient run of two vmapped seeds: finite curves, ELBO ≤ log p(x), a zero gradient variance beside
    a positive exact ‖∇‖², a table row."""
    result = dv.run(CONFIG)
    r = result["runs"]["linear"]["methods"]["exact"]
    for name in ("train_elbo", "test_elbo", "train_log_likelihood", "test_log_likelihood"):
        curves = np.asarray(r[name])
        assert curves.shape == (CONFIG.num_seeds, CONFIG.num_steps // CONFIG.eval_every + 1)
        assert np.all(np.isfinite(curves))
    for split in ("train", "test"):
        assert np.all(np.asarray(r[f"{split}_elbo"]) <= np.asarray(r[f"{split}_log_likelihood"]) + 1e-4)
    assert np.asarray(r["grad_variance"]).shape == (CONFIG.num_seeds, len(CONFIG.variance_steps))
    assert np.all(np.asarray(r["grad_variance"]) < 1e-12) and np.all(np.asarray(r["exact_grad_sq_norm"]) > 0)
    assert dv.format_table(result).count("\n") == 2
