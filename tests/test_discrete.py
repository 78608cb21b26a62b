"""Estimators for Bernoulli latents (lt.discrete) against exact gradients.

Stochastic tests here are statistical: many independent estimates from a fixed
key and `lt.testing.assert_unbiased` (a Bonferroni test with the estimator's
own standard error) against the exact gradients, in the logits and in f's own
parameter w, of the expectation over all 2^6 outcomes (`lt.exact.estimator`),
or of a Gauss-Legendre quadrature for the relaxed objective.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import logtrick as lt
from logtrick import discrete

# The tests compile many small programs, each run once: LLVM's optimisations cost more than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

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
W = jnp.array([2.0, -0.5, 0.3, 0.8, -0.2, 0.4])
TEMPERATURE = 0.5
NUM_ESTIMATES = 400


def key(seed):
    """A key of the "rbg" PRNG: its XLA programs compile several times faster on CPU than threefry's; under vmap
    the batch's draws come from one stream, so independent estimates stay independent."""
    return jax.random.key(seed, impl="rbg")


def f(b, w):
    """A quadratic form, a square in the parameter w and w₀ times a product of three variables; also defined on
    [0, 1]^6."""
    d = b - TARGET
    return d @ QUADRATIC @ d + (jnp.dot(w, b) - 1.0) ** 2 + w[0] * b[0] * b[1] * b[2]


def loss_grads(est, logits=LOGITS):
    """``key -> (∂/∂logits, ∂/∂w)`` of ``est.loss`` from the estimator's initial state."""
    return lambda k: jax.grad(est.loss, argnums=(0, 3), has_aux=True)(logits, est.init(logits), k, W)[0]


@pytest.fixture(scope="module")
def exact_grads():
    exact = lt.exact.estimator(f, lt.families.bernoulli(), lt.exact.bernoulli_support(D))
    return loss_grads(exact)(key(0))


# --- ARM, DisARM, and REINFORCE at the same number of f evaluations -------------------------------------------------


@pytest.fixture(scope="module")
def pair_estimates():
    """2000 estimates each, 2 f evaluations per estimate; ARM and DisARM from the same uniform draws, in one
    compiled function, and DisARM's pairs and f values."""
    rloo = lt.score_function(f, lt.families.bernoulli(), num_samples=2, baseline=lt.baselines.leave_one_out())
    arm, rloo = (loss_grads(est) for est in (discrete.arm(f, num_samples=2), rloo))
    disarm = discrete.disarm(f, num_samples=2)
    disarm_with_aux = lambda k: jax.grad(disarm.loss, argnums=(0, 3), has_aux=True)(LOGITS, (), k, W)
    draws = lt.testing.draw_estimates(lambda k: (arm(k), *disarm_with_aux(k), rloo(jax.random.fold_in(k, 1))),
                                      key(0), num_estimates=2000)
    arm, disarm, (_, aux), rloo = draws
    return {"arm": arm, "disarm": disarm, "rloo": rloo, "disarm_aux": aux}


@pytest.mark.parametrize("name", ["arm", "disarm", "rloo"])
def test_unbiased_at_two_f_evaluations(pair_estimates, exact_grads, name):
    """Statistical: ARM and DisARM (one pair) and 2-sample REINFORCE-LOO are unbiased in the logits and, pathwise,
    in w; 2000 estimates."""
    lt.testing.assert_unbiased(pair_estimates[name], exact_grads)


def exact_pair_moments():
    """E ĝ_d and E ĝ_d² of one ARM and one DisARM pair, exactly, in numpy.

    u_d falls in one of three intervals of [0, 1] cut at min(p_d, 1 - p_d) and max(p_d, 1 - p_d), p = σ(θ), on
    each of which the pair (b_d, b̃_d) = (1[u_d < p_d], 1[1 - u_d < p_d]) is fixed: (1, 0), then (1, 1) if p_d ≥ ½
    else (0, 0), then (0, 1). A sum over the 3^6 cells of the integrals of u_d - ½ and (u_d - ½)² (ARM, Yin and
    Zhou's (f(b̃) - f(b))(u - ½)) or of the constant ½ (f(b) - f(b̃)) (-1)^{b̃_d} 1[b_d ≠ b̃_d] σ(|θ_d|) (DisARM).
    """
    p = np.asarray(jax.nn.sigmoid(LOGITS), np.float64)
    cuts = np.stack([np.zeros(D), np.minimum(p, 1 - p), np.maximum(p, 1 - p), np.ones(D)], axis=1)
    length, first, second = (np.diff(g, axis=1) for g in (cuts, (cuts - 0.5) ** 2 / 2, (cuts - 0.5) ** 3 / 3))
    cells = np.array(list(itertools.product(range(3), repeat=D)))
    middle = (p >= 0.5).astype(np.float64)
    b = np.where(cells == 0, 1.0, np.where(cells == 2, 0.0, middle))
    b_partner = np.where(cells == 0, 0.0, np.where(cells == 2, 1.0, middle))
    f_b, f_partner = (np.asarray(jax.vmap(f, (0, None))(jnp.asarray(x, jnp.float32), W), np.float64)
                      for x in (b, b_partner))
    columns = np.arange(D)
    lengths = length[columns, cells]
    others = np.stack([np.prod(np.delete(lengths, d, axis=1), axis=1) for d in range(D)], axis=1)
    delta = (f_partner - f_b)[:, None]
    arm = (np.sum(delta * first[columns, cells] * others, axis=0),
           np.sum(delta**2 * second[columns, cells] * others, axis=0))
    g = -0.5 * delta * (1 - 2 * b_partner) * (b != b_partner) * np.asarray(jax.nn.sigmoid(jnp.abs(LOGITS)))
    probability = np.prod(lengths, axis=1)
    return arm, (probability @ g, probability @ g**2)


def disarm_by_hand(aux, factor):
    """Dong et al.'s DisARM estimate from each pair (b, b̃) and its f values, in numpy; ``factor`` is σ(|θ|), or 1
    for the broken variant."""
    (b, b_partner), (f_b, f_partner) = np.swapaxes(aux["samples"], 0, 1), np.swapaxes(aux["f"], 0, 1)
    return 0.5 * (f_b - f_partner)[:, None] * (1 - 2 * b_partner) * (b != b_partner) * factor


def test_disarm_is_arm_conditioned_on_the_pair(pair_estimates, exact_grads):
    """Statistical, paired (the same pairs): DisARM = E[ARM | b, b̃] has ARM's mean and 0.811 times its total
    variance, exact by enumerating the cells of u; its estimates are the paper's formula on their pairs.

    The exact moments give both means as the exact gradient; E[g_DisARM (g_ARM - g_DisARM)] = 0 per coordinate;
    the paired ratio lies in 0.811 ± 0.06. DisARM without its σ(|θ|) factor is rejected by the same checks. The
    w-gradients, the mean ∇_w f over the same pairs, are equal.
    """
    arm, disarm = pair_estimates["arm"], pair_estimates["disarm"]
    (arm_mean, arm_square), (disarm_mean, disarm_square) = exact_pair_moments()
    np.testing.assert_allclose(arm_mean, exact_grads[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(disarm_mean, exact_grads[0], rtol=1e-4, atol=1e-6)
    ratio = np.sum(disarm_square - disarm_mean**2) / np.sum(arm_square - arm_mean**2)
    np.testing.assert_allclose(ratio, 0.811, atol=5e-4)

    # ± 0.06: the least margin of 0.01 steps at which 30 other seeds of 2000 estimates (ratios 0.796-0.824) all
    # give a paired z > 4.5 on both sides.
    def check(g_disarm):
        lt.testing.assert_variance_ratio(g_disarm, arm[0], at_most=ratio + 0.06)
        lt.testing.assert_variance_ratio(arm[0], g_disarm, at_most=1 / (ratio - 0.06))

    check(disarm[0])
    lt.testing.assert_unbiased(disarm[0] * (arm[0] - disarm[0]), jnp.zeros(D))
    sigma = np.asarray(jax.nn.sigmoid(jnp.abs(LOGITS)))
    np.testing.assert_allclose(disarm[0], disarm_by_hand(pair_estimates["disarm_aux"], sigma), rtol=1e-4, atol=1e-5)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        np.testing.assert_allclose(disarm[0], disarm_by_hand(pair_estimates["disarm_aux"], 1.0), rtol=1e-4,
                                   atol=1e-5)
    with pytest.raises(AssertionError, match="not shown"):
        check(disarm[0] / sigma)
    np.testing.assert_array_equal(arm[1], disarm[1])


def test_pairs_are_the_familys_antithetic_pairs():
    """With one key, ARM and DisARM evaluate f at the pairs of `bernoulli().antithetic_sample` (b = 1[u < σ(θ)]
    first, then b̃ = 1[1 - u < σ(θ)]), and `families.antithetic_bernoulli` makes them from u."""
    arm, disarm = discrete.arm(f, num_samples=8), discrete.disarm(f, num_samples=8)
    aux = jit(lambda k: [est.estimate(LOGITS, (), k, W)[2] for est in (arm, disarm)])(key(3))
    family_pairs = lt.families.bernoulli().antithetic_sample(LOGITS, key(3), 8)
    for a in aux:
        np.testing.assert_array_equal(a["samples"], family_pairs)
        np.testing.assert_allclose(a["f"], jax.vmap(f, (0, None))(family_pairs, W), rtol=1e-6)
    u = jnp.array([[0.1, 0.5, 0.5]])
    b, b_partner = lt.families.antithetic_bernoulli(jnp.array([0.0, 0.0, 2.0]), u)
    np.testing.assert_array_equal(b, [[1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(b_partner, [[0.0, 0.0, 1.0]])


# --- RELAX and REBAR ----------------------------------------------------------------------------------------------


def mlp_control_variate(phi, z, w):
    """A tanh MLP of (z, w): a control variate that uses f's parameter too."""
    return jnp.dot(phi["w2"], jnp.tanh(phi["w1"] @ jnp.concatenate([z, w]) + phi["b1"])) + phi["b2"]


def mlp_init(rng, hidden=16):
    k1, k2 = jax.random.split(rng)
    return {"w1": jax.random.normal(k1, (hidden, 2 * D)) / np.sqrt(2 * D), "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden,)) / np.sqrt(hidden), "b2": jnp.zeros(())}


CONTROL_VARIATES = {
    "rebar": lambda: discrete.rebar(f, temperature=2.0, scale=0.5),
    "relax_mlp": lambda: discrete.relax(f, mlp_control_variate, mlp_init(key(7))),
}


def learning_run(est, rng, steps=300, num_estimates=1000):
    """300 Adam steps on the cv params from aux["cv_grads"] by the caller; estimates over fresh keys before and
    after, from one compiled function fed the initial or the learned cv params."""
    adam = optax.adam(1e-2)

    @jit
    def train(cv_params, k):
        def step(carry, kk):
            phi, opt_state = carry
            aux = est.loss(LOGITS, discrete.RelaxState(phi, ()), kk, W)[1][1]
            updates, opt_state = adam.update(aux["cv_grads"], opt_state, phi)
            return (optax.apply_updates(phi, updates), opt_state), None

        return jax.lax.scan(step, (cv_params, adam.init(cv_params)), jax.random.split(k, steps))[0][0]

    @jit
    def draws(cv_params, k):
        def one(kk):
            grads, (state, aux) = jax.grad(est.loss, argnums=(0, 3), has_aux=True)(
                LOGITS, discrete.RelaxState(cv_params, ()), kk, W)
            return grads, aux["cv_loss"], state.cv_params

        return jax.vmap(one)(jax.random.split(k, num_estimates))

    k_train, k_before, k_after = jax.random.split(rng, 3)
    initial = est.init(LOGITS).cv_params
    learned = train(initial, k_train)
    return initial, learned, draws(initial, k_before), draws(learned, k_after)


@pytest.mark.parametrize("name", CONTROL_VARIATES)
def test_relax_unbiased_before_and_after_caller_training_and_training_lowers_cv_loss(exact_grads, name):
    """Statistical: REBAR (started at scale 0.5, temperature 2) and RELAX with a random 16-unit MLP control variate
    of (z, w) are unbiased in the logits and, pathwise, in w with the initial and with the learned control variate
    (1000 estimates each); aux["cv_loss"] is Σ_d ĝ_d² of the call's own logits gradient; without an optimizer the
    state comes back unchanged; 300 Adam steps of the caller on aux["cv_grads"] lower the mean cv_loss over 1000
    fresh keys."""
    est = CONTROL_VARIATES[name]()
    initial, learned, before, after = learning_run(est, key(11))
    for cv_params, (grads, cv_loss, returned) in ((initial, before), (learned, after)):
        lt.testing.assert_unbiased(grads, exact_grads)
        np.testing.assert_allclose(cv_loss, jnp.sum(grads[0] ** 2, axis=1), rtol=1e-4)
        for p, r in zip(jax.tree_util.tree_leaves(cv_params), jax.tree_util.tree_leaves(returned)):
            np.testing.assert_array_equal(r, np.broadcast_to(p, r.shape))
    loss_before, loss_after = float(before[1].mean()), float(after[1].mean())
    print(f"{name}: mean cv_loss {loss_before:.3f} -> {loss_after:.3f}; |exact|² {float(jnp.sum(exact_grads[0]**2)):.3f}")
    if name == "rebar":
        print({k: float(v) for k, v in learned.items()})
    assert loss_after < loss_before


def test_relax_state_threads_through_an_outer_grad_and_scan():
    """REBAR with its own Adam inside a `lax.scan` of 100 SGD steps on (logits, w), each an outer
    `jax.grad(..., has_aux=True)` of the loss with the state taken from its aux: the estimator's own step equals
    the caller's Adam step on aux["cv_grads"], which is ∇_φ aux["cv_loss"]; the state advances every step; the
    exact objective falls."""
    adam, steps = optax.adam(1e-2), 100
    est = discrete.rebar(f, temperature=2.0, scale=0.5, optimizer=adam)
    exact = lt.exact.estimator(f, lt.families.bernoulli(), lt.exact.bernoulli_support(D))
    objective = lambda theta, w: exact.loss(theta, (), key(0), w)[0]

    @jit
    def run(k):
        def step(carry, kk):
            theta, w, state = carry
            (g_theta, g_w), (new_state, aux) = jax.grad(est.loss, argnums=(0, 3), has_aux=True)(theta, state, kk, w)
            updates, _ = adam.update(aux["cv_grads"], state.opt_state, state.cv_params)
            external = optax.apply_updates(state.cv_params, updates)
            mismatch = jnp.max(jnp.stack([jnp.max(jnp.abs(a - b)) for a, b in zip(
                jax.tree_util.tree_leaves(external), jax.tree_util.tree_leaves(new_state.cv_params))]))
            return (theta - 0.05 * g_theta, w - 0.05 * g_w, new_state), mismatch

        state = est.init(LOGITS)
        (theta, w, state), mismatch = jax.lax.scan(step, (LOGITS, W, state), jax.random.split(k, steps))
        cv_loss = lambda phi: est.loss(theta, discrete.RelaxState(phi, state.opt_state), k, w)[1][1]["cv_loss"]
        aux = est.loss(theta, state, k, w)[1][1]
        return theta, w, state, mismatch, jax.grad(cv_loss)(state.cv_params), aux["cv_grads"]

    theta, w, state, mismatch, autodiff, cv_grads = run(key(5))
    assert float(mismatch.max()) < 1e-6
    for a, b in zip(jax.tree_util.tree_leaves(autodiff), jax.tree_util.tree_leaves(cv_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert int(state.opt_state[0].count) == steps
    assert float(objective(theta, w)) < float(objective(LOGITS, W)) - 0.5


def test_vmap_over_a_batch_of_matrix_logits():
    """`jax.vmap` of the loss over a batch of two (3, 4) logits (one key each, RELAX's state shared): grads of
    each item's shape, equal to the unbatched loss on that item, and RELAX's cv_grads averaged over the batch
    are a pytree like its cv params. Threefry keys, whose draws do not change under vmap."""
    logits = jnp.linspace(-1.0, 1.0, 24).reshape(2, 3, 4)
    g = lambda b, a: jnp.sum(b[0] * b[1]) - a * jnp.sum(b[2] ** 2)
    estimators = {
        "disarm": discrete.disarm(g, num_samples=4),
        "relax": discrete.relax(g, lambda phi, z, a: phi * a * jnp.sum(jnp.tanh(z)), jnp.float32(0.5),
                                num_samples=2),
        "gumbel_softmax": discrete.gumbel_softmax(g, num_samples=4, straight_through=True),
    }
    keys = jax.random.split(jax.random.key(0), 2)
    for name, est in estimators.items():
        state = est.init(logits[0])
        grad = jax.grad(est.loss, argnums=(0, 3), has_aux=True)

        @jit
        def batched_and_single(logits, keys):
            batched = jax.vmap(grad, (0, None, 0, None))(logits, state, keys, 1.5)
            return batched, [grad(logits[i], state, keys[i], 1.5) for i in range(2)]

        ((g_theta, g_a), (_, aux)), singles = batched_and_single(logits, keys)
        assert g_theta.shape == (2, 3, 4) and g_a.shape == (2,), name
        assert np.all(np.isfinite(g_theta)), name
        for i, ((s_theta, s_a), _) in enumerate(singles):
            np.testing.assert_allclose(g_theta[i], s_theta, rtol=1e-5, atol=1e-6, err_msg=name)
            np.testing.assert_allclose(g_a[i], s_a, rtol=1e-5, atol=1e-6, err_msg=name)
        if name == "relax":
            assert jnp.shape(jnp.mean(aux["cv_grads"], axis=0)) == jnp.shape(state.cv_params)


# --- Gumbel-softmax (binary Concrete) -----------------------------------------------------------------------------

LINEAR = jnp.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0])


def relaxed_linear_objective(logits, a, num_nodes=64):
    """E[Σ_d a_d σ(z_d/τ)], z_d = θ_d + logit(u), u ~ U(0,1): Gauss-Legendre over u per coordinate."""
    t, w = np.polynomial.legendre.leggauss(num_nodes)
    u, w = jnp.asarray((t + 1) / 2, jnp.float32), jnp.asarray(w / 2, jnp.float32)
    y = jax.nn.sigmoid((logits[:, None] + jnp.log(u) - jnp.log1p(-u)) / TEMPERATURE)
    return jnp.dot(a, y @ w)


def relative_bias(estimates, expected):
    return float(jnp.linalg.norm(estimates.mean(0) - expected) / jnp.linalg.norm(expected))


@pytest.mark.parametrize("straight_through", [False, True])
def test_gumbel_softmax_unbiased_for_relaxed_objective_biased_for_discrete(exact_grads, straight_through):
    """Statistical (400 estimates of 8 draws): for f(x, a) = a·x the logits gradient is unbiased for
    ∇_θ E[f(σ(z/τ), a)] (quadrature) and the a-gradient for that of the relaxed objective (relaxed) or of the
    discrete one, σ(θ) (straight-through: forward at b). For the non-linear f the test detects the logits
    gradient's bias against the exact discrete gradient; the w-gradient's bias is measured, and is zero
    straight-through."""
    linear = discrete.gumbel_softmax(lambda x, a: jnp.dot(a, x), num_samples=8, temperature=TEMPERATURE,
                                     straight_through=straight_through)
    est = discrete.gumbel_softmax(f, num_samples=8, temperature=TEMPERATURE, straight_through=straight_through)
    grad_linear = lambda k: jax.grad(linear.loss, argnums=(0, 3), has_aux=True)(LOGITS, (), k, LINEAR)[0]
    estimates_linear, estimates = lt.testing.draw_estimates(
        lambda k: (grad_linear(k), loss_grads(est)(jax.random.fold_in(k, 1))), key(2), num_estimates=NUM_ESTIMATES)

    relaxed = jax.grad(relaxed_linear_objective, argnums=(0, 1))(LOGITS, LINEAR)
    expected = (relaxed[0], jax.nn.sigmoid(LOGITS)) if straight_through else relaxed
    lt.testing.assert_unbiased(estimates_linear, expected)

    bias = [relative_bias(e, x) for e, x in zip(estimates, exact_grads)]
    print(f"gumbel_softmax(straight_through={straight_through}, τ={TEMPERATURE}): relative bias "
          f"logits {bias[0]:.3f}, w {bias[1]:.3f}")
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(estimates[0], exact_grads[0])
    if straight_through:
        lt.testing.assert_unbiased(estimates[1], exact_grads[1])


def test_gumbel_softmax_forward_values():
    """Relaxed: f at y ∈ (0, 1); straight-through: f at the discrete b."""
    ests = [discrete.gumbel_softmax(lambda x: x[0], num_samples=16, straight_through=st) for st in (False, True)]
    relaxed, straight = jit(lambda k: [est.estimate(LOGITS, (), k)[2]["f"] for est in ests])(key(4))
    assert np.all((relaxed > 0) & (relaxed < 1)) and not np.all((relaxed == 0) | (relaxed == 1))
    assert np.all((straight == 0) | (straight == 1))


# --- Errors -------------------------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="num_samples.*even"):
        discrete.arm(f, num_samples=3)
    with pytest.raises(ValueError, match="num_samples.*even"):
        discrete.disarm(f, num_samples=5)
    with pytest.raises(ValueError, match="num_samples"):
        discrete.relax(f, lambda phi, z, w: 0.0, (), num_samples=0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            discrete.rebar(f, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            discrete.gumbel_softmax(f, num_samples=2, temperature=bad)
    with pytest.raises(TypeError, match="optimizer"):
        discrete.relax(f, lambda phi, z, w: 0.0, (), optimizer="adam")
    with pytest.raises(ValueError, match="`f` must return a scalar"):
        jax.jit(discrete.disarm(lambda b: b, num_samples=2).estimate)(LOGITS, (), key(0))
    with pytest.raises(ValueError, match="`control_variate` must return a scalar"):
        est = discrete.relax(f, lambda phi, z, w: z, ())
        jax.jit(est.estimate)(LOGITS, est.init(LOGITS), key(0), W)
    with pytest.raises(TypeError, match="arm.*args"):
        discrete.arm(f, num_samples=2).loss(LOGITS, (), key(0), "w")
    with pytest.raises(TypeError, match="single floating-point array"):
        discrete.arm(f, num_samples=2).init({"logits": LOGITS})
    with pytest.raises(TypeError, match="floating dtype"):
        discrete.gumbel_softmax(f, num_samples=2).init(jnp.arange(6))
