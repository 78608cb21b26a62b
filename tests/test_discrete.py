"""Estimators for Bernoulli latents (lt.discrete) against exact gradients.

Stochastic tests here are statistical: many independent estimates from a fixed
key and `lt.testing.assert_unbiased` (a Bonferroni z-test with the estimator's
own standard error) against `jax.grad` of the exact expectation over all 2^6
outcomes, or of a Gauss-Legendre quadrature for the relaxed objective.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import logtrick as lt
from logtrick import discrete

D = 6
LOGITS = jnp.array([-1.0, 0.0, 0.5, 1.5, -0.3, 0.8])
TARGET = jnp.linspace(0.2, 0.8, D)
QUADRATIC = jnp.array(
    [[1.0, 0.3, -0.5, 0.0, 0.2, 0.0],
     [0.3, -0.8, 0.0, 0.4, 0.0, -0.3],
     [-0.5, 0.0, 0.6, 0.0, -0.7, 0.1],
     [0.0, 0.4, 0.0, 1.2, 0.0, 0.5],
     [0.2, 0.0, -0.7, 0.0, -0.4, 0.0],
     [0.0, -0.3, 0.1, 0.5, 0.0, 0.9]])
TEMPERATURE = 0.5
NUM_ESTIMATES = 400


def key(seed):
    """A key of the "rbg" PRNG: its XLA programs compile several times faster on CPU than threefry's; under vmap
    the batch's draws come from one stream, so independent estimates stay independent."""
    return jax.random.key(seed, impl="rbg")


def f(b):
    """A quadratic form plus a product of three variables; also defined on [0, 1]^6."""
    d = b - TARGET
    return d @ QUADRATIC @ d + 2.0 * b[0] * b[1] * b[2]


@pytest.fixture(scope="module")
def exact_grad():
    return jax.grad(lt.exact.expectation(f, lt.families.bernoulli(), lt.exact.bernoulli_support(D)))(LOGITS)


def relative_bias(estimates, expected):
    return float(jnp.linalg.norm(estimates.mean(0) - expected) / jnp.linalg.norm(expected))


# --- ARM, DisARM, and REINFORCE at the same number of f evaluations -------------------------------------------------


@pytest.fixture(scope="module")
def pair_estimates():
    """2000 estimates each, 2 f evaluations per estimate; ARM and DisARM from the same uniform draws."""
    m = 2000
    rloo = lt.score_function(f, lt.families.bernoulli(), num_samples=2, baseline=lt.baselines.leave_one_out())
    return {
        "arm": lt.testing.draw_estimates(discrete.arm(f, num_samples=2), LOGITS, key(0), num_estimates=m),
        "disarm": lt.testing.draw_estimates(discrete.disarm(f, num_samples=2), LOGITS, key(0), num_estimates=m),
        "rloo": lt.testing.draw_estimates(rloo, LOGITS, key(1), num_estimates=m),
    }


@pytest.mark.parametrize("name", ["arm", "disarm", "rloo"])
def test_unbiased_at_two_f_evaluations(pair_estimates, exact_grad, name):
    """Statistical: ARM and DisARM (one pair) and 2-sample REINFORCE-LOO are unbiased; 2000 estimates."""
    lt.testing.assert_unbiased(pair_estimates[name], exact_grad)


def test_disarm_variance_at_most_arm(pair_estimates):
    """Statistical: per coordinate, Var DisARM ≤ Var ARM, from the same draws (DisARM = E[ARM | b, b̃]).

    Measured (2000 estimates, 2 f evaluations each; coordinates 0..5), variance per coordinate:
    ARM    [0.160 0.126 0.111 0.147 0.130 0.158] (total 0.832),
    DisARM [0.143 0.098 0.099 0.104 0.114 0.138] (total 0.696),
    RLOO   [0.226 0.211 0.177 0.134 0.190 0.187] (total 1.125; recorded, not asserted).
    """
    var = {name: np.var(np.asarray(e), axis=0, ddof=1) for name, e in pair_estimates.items()}
    print({name: np.round(v, 3).tolist() for name, v in var.items()})
    assert np.all(var["disarm"] <= var["arm"]), var


def test_arm_and_disarm_share_pairs():
    """With one key the two estimators see the same pairs (equal aux["f"]); f(b) of the pairs, then f(b̃)."""
    arm, disarm = discrete.arm(f, num_samples=8), discrete.disarm(f, num_samples=8)
    values = jax.jit(lambda k: [est.estimate(LOGITS, (), k)[2]["f"] for est in (arm, disarm)])(key(3))
    np.testing.assert_array_equal(values[0], values[1])
    assert values[0].shape == (8,)


# --- RELAX and REBAR ----------------------------------------------------------------------------------------------


def mlp_control_variate(phi, z):
    return jnp.dot(phi["w2"], jnp.tanh(phi["w1"] @ z + phi["b1"])) + phi["b2"]


def mlp_init(rng, hidden=16):
    k1, k2 = jax.random.split(rng)
    return {"w1": jax.random.normal(k1, (hidden, D)) / np.sqrt(D), "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden,)) / np.sqrt(hidden), "b2": jnp.zeros(())}


CONTROL_VARIATES = {
    "rebar": lambda optimizer: discrete.rebar(f, temperature=2.0, scale=0.5, optimizer=optimizer),
    "relax_mlp": lambda optimizer: discrete.relax(f, mlp_control_variate, mlp_init(key(7)), optimizer=optimizer),
}


def learning_run(make, rng, steps=300, num_estimates=1000):
    """300 Adam steps on the cv params; fixed-cv estimates and cv_loss over fresh keys before and after.

    The estimates come from the estimator without an optimizer (a fixed control variate), fed the initial or the
    learned cv params through its state, so one compiled function serves both.
    """
    learner, fixed = make(optax.adam(1e-2)), make(None)

    @jax.jit
    def train(state, k):
        step = lambda s, kk: (learner.estimate(LOGITS, s, kk)[1], None)
        return jax.lax.scan(step, state, jax.random.split(k, steps))[0]

    @jax.jit
    def draws(cv_params, k):
        estimate = lambda kk: fixed.estimate(LOGITS, discrete.RelaxState(cv_params, ()), kk)
        grads, states, aux = jax.vmap(estimate)(jax.random.split(k, num_estimates))
        return grads, aux["cv_loss"], states.cv_params

    k_train, k_before, k_after = jax.random.split(rng, 3)
    initial = fixed.init(LOGITS).cv_params
    learned = train(learner.init(LOGITS), k_train)
    return initial, learned, draws(initial, k_before), draws(learned.cv_params, k_after)


@pytest.mark.parametrize("name", CONTROL_VARIATES)
def test_relax_unbiased_before_and_after_learning_and_learning_lowers_cv_loss(exact_grad, name):
    """Statistical: REBAR (started at scale 0.5, temperature 2) and RELAX with a random 16-unit MLP control variate
    are unbiased with the fixed initial and with the learned control variate (1000 estimates each), and 300 Adam
    steps lower the mean cv_loss Σ_d ĝ_d² over 1000 fresh keys (‖∇‖² = 0.072 of it is not variance). Measured:
    REBAR 1.60 -> 0.85 (learned scale 1.35, temperature 0.94); RELAX-MLP 3.14 -> 1.01."""
    initial, learned, before, after = learning_run(CONTROL_VARIATES[name], key(11))
    assert isinstance(learned, discrete.RelaxState)
    for cv_params, (grads, _, returned) in ((initial, before), (learned.cv_params, after)):
        lt.testing.assert_unbiased(grads, exact_grad)
        for p, r in zip(jax.tree_util.tree_leaves(cv_params), jax.tree_util.tree_leaves(returned)):
            np.testing.assert_array_equal(r, np.broadcast_to(p, r.shape))  # no optimizer: cv params unchanged
    loss_before, loss_after = float(before[1].mean()), float(after[1].mean())
    print(f"{name}: mean cv_loss {loss_before:.3f} -> {loss_after:.3f}")
    if name == "rebar":
        print({k: float(v) for k, v in learned.cv_params.items()})
    assert loss_after < loss_before


# --- Gumbel-softmax (binary Concrete) -----------------------------------------------------------------------------

LINEAR = jnp.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0])


def relaxed_linear_objective(logits, num_nodes=64):
    """E[Σ_d a_d σ(z_d/τ)], z_d = θ_d + logit(u), u ~ U(0,1): Gauss-Legendre over u per coordinate."""
    t, w = np.polynomial.legendre.leggauss(num_nodes)
    u, w = jnp.asarray((t + 1) / 2, jnp.float32), jnp.asarray(w / 2, jnp.float32)
    y = jax.nn.sigmoid((logits[:, None] + jnp.log(u) - jnp.log1p(-u)) / TEMPERATURE)
    return jnp.dot(LINEAR, y @ w)


@pytest.mark.parametrize("straight_through", [False, True])
def test_gumbel_softmax_unbiased_for_relaxed_objective_biased_for_discrete(exact_grad, straight_through):
    """Statistical: for linear f, unbiased for ∇E[f(σ(z/τ))] (quadrature); for the non-linear f, the z-test
    detects the bias against the exact discrete gradient. Measured relative bias ‖E ĝ - ∇‖/‖∇‖ at τ = 0.5
    (400 x 8 draws): 0.25 relaxed, 0.37 straight-through."""
    rng = key(2)
    linear = discrete.gumbel_softmax(lambda x: jnp.dot(LINEAR, x), num_samples=8, temperature=TEMPERATURE,
                                     straight_through=straight_through)
    estimates = lt.testing.draw_estimates(linear, LOGITS, rng, num_estimates=NUM_ESTIMATES)
    lt.testing.assert_unbiased(estimates, jax.grad(relaxed_linear_objective)(LOGITS))

    est = discrete.gumbel_softmax(f, num_samples=8, temperature=TEMPERATURE, straight_through=straight_through)
    estimates = lt.testing.draw_estimates(est, LOGITS, rng, num_estimates=NUM_ESTIMATES)
    bias = relative_bias(estimates, exact_grad)
    print(f"gumbel_softmax(straight_through={straight_through}): relative bias {bias:.3f}")
    with pytest.raises(AssertionError, match="biased"):
        lt.testing.assert_unbiased(estimates, exact_grad)
    assert bias > 0.1


def test_gumbel_softmax_forward_values():
    """Relaxed: f at y ∈ (0, 1); straight-through: f at the discrete b."""
    ests = [discrete.gumbel_softmax(lambda x: x[0], num_samples=16, straight_through=st) for st in (False, True)]
    relaxed, straight = jax.jit(lambda k: [est.estimate(LOGITS, (), k)[2]["f"] for est in ests])(key(4))
    assert np.all((relaxed > 0) & (relaxed < 1)) and not np.all((relaxed == 0) | (relaxed == 1))
    assert np.all((straight == 0) | (straight == 1))


# --- Shapes, jit and errors ---------------------------------------------------------------------------------------


def test_jit_on_matrix_logits():
    """A (3, 4) logits array: grads of that shape under jit (ARM shares DisARM's sampling, REBAR is a RELAX)."""
    logits = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
    g = lambda b: jnp.sum(b[0] * b[1]) - jnp.sum(b[2] ** 2)
    estimators = {
        "disarm": (discrete.disarm(g, num_samples=4), 4),
        "relax": (discrete.relax(g, lambda phi, z: phi * jnp.sum(jnp.tanh(z)), jnp.float32(0.5), num_samples=2,
                                 optimizer=optax.sgd(0.1)), 2),
        "gumbel_softmax": (discrete.gumbel_softmax(g, num_samples=4, straight_through=True), 4),
    }
    for name, (est, n) in estimators.items():
        grads, _, aux = jax.jit(est.estimate)(logits, est.init(logits), key(0))
        assert grads.shape == (3, 4), name
        assert np.all(np.isfinite(grads)), name
        assert aux["f"].shape == (n,), name


def test_errors():
    with pytest.raises(ValueError, match="num_samples.*even"):
        discrete.arm(f, num_samples=3)
    with pytest.raises(ValueError, match="num_samples.*even"):
        discrete.disarm(f, num_samples=5)
    with pytest.raises(ValueError, match="num_samples"):
        discrete.relax(f, lambda phi, z: 0.0, (), num_samples=0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            discrete.rebar(f, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            discrete.gumbel_softmax(f, num_samples=2, temperature=bad)
    with pytest.raises(ValueError, match="`f` must return a scalar"):
        jax.jit(discrete.disarm(lambda b: b, num_samples=2).estimate)(LOGITS, (), key(0))
    with pytest.raises(ValueError, match="`control_variate` must return a scalar"):
        est = discrete.relax(f, lambda phi, z: z, ())
        jax.jit(est.estimate)(LOGITS, est.init(LOGITS), key(0))
    with pytest.raises(TypeError, match="single floating-point array"):
        discrete.arm(f, num_samples=2).init({"logits": LOGITS})
    with pytest.raises(TypeError, match="floating dtype"):
        discrete.gumbel_softmax(f, num_samples=2).init(jnp.arange(6))
