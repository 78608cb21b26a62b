"""Estimators for any family (score function, pathwise, optimal control variate, VIMCO) against exact gradients.

Stochastic tests are statistical: many independent estimates from a fixed key
and `lt.testing.assert_unbiased` (a Bonferroni test whose standard errors are
measured from those estimates) against derivatives of an exact expectation
(closed forms, enumeration with `lt.exact.estimator`, Gauss-Hermite quadrature
with `lt.exact.quadrature_estimator`). Compile time dominates, so one jitted,
vmapped function draws every estimator of a problem at once and the tests share
its draws.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import logtrick as lt

# The tests compile many small programs, each run once: LLVM's optimisations cost more than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
NORMAL, BERNOULLI, CATEGORICAL = lt.families.normal(), lt.families.bernoulli(), lt.families.categorical()


def draw(fn, seed, num_estimates):
    """``fn(key)`` for ``num_estimates`` independent keys, in one compiled program."""
    return jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), num_estimates))


def grad_and_args_grad(est, params, state, key, *args):
    """(estimate's params gradient, the loss's gradients in args, the loss's value)."""
    grads, _, _ = est.estimate(params, state, key, *args)
    value, args_grads = jax.value_and_grad(lambda a: est.loss(params, state, key, *a)[0])(args)
    return grads, args_grads, value


# --- A 3-d Gaussian: params, args and Hessians of every estimator --------------------------------------------------

GAUSS = {"loc": jnp.array([0.5, -1.0, 2.0]), "log_scale": jnp.array([0.0, -0.5, 0.3])}


def terms(x):
    """Six test functions of one sample x, shape (3,), stacked: shape (6,)."""
    return jnp.stack([jnp.asarray(3.0, x.dtype), jnp.sum(2.0 * x), jnp.sum((x - 1.0) ** 2),
                      jnp.sum(jnp.exp(-0.5 * x**2)), jnp.sum(jnp.cos(2.0 * x)), jnp.sum(x > 0.3).astype(x.dtype)])


def exact_terms(params):
    """E[terms(x)] in closed form, differentiable in params."""
    return jnp.stack([jnp.float32(3.0), jnp.sum(2.0 * params["loc"]), lt.exact.normal_quadratic(1.0)(params),
                      lt.exact.normal_exp_square(0.5)(params), lt.exact.normal_cosine(2.0)(params),
                      lt.exact.normal_step(0.3)(params)])


def f(x, w):
    """f(x, w) = Σ_j w_j t_j(x): ∂²loss/∂θ∂w_j is the estimator's gradient for f = t_j alone."""
    return jnp.dot(w, terms(x))


def smooth(x, w):
    """The five differentiable terms, for the pathwise estimator."""
    return jnp.dot(w, terms(x)[:5])


def exact_f(params, w):
    return jnp.dot(w, exact_terms(params))


def exact_smooth(params, w):
    return jnp.dot(w, exact_terms(params)[:5])


GAUSSIAN = {
    "score_function": (lt.score_function(f, NORMAL, num_samples=64), exact_f),
    "leave_one_out": (lt.score_function(f, NORMAL, num_samples=64, baseline=lt.baselines.leave_one_out()), exact_f),
    "antithetic": (lt.score_function(f, NORMAL, num_samples=64, baseline=lt.baselines.leave_one_out(),
                                     antithetic=True), exact_f),
    "pathwise": (lt.pathwise(smooth, NORMAL.sample, num_samples=16), exact_smooth),
    "optimal_control_variate": (lt.optimal_control_variate(f, NORMAL, num_samples=64), exact_f),
}


def weights_for(exact):
    return jnp.ones(6 if exact is exact_f else 5)


def gaussian_derivatives(est, params, key, w, second_order):
    """Value, params gradient (``estimate``), args gradient and, if ``second_order``, the Hessian in (params, w)."""
    state = est.init(params)
    grads, (w_grad,), value = grad_and_args_grad(est, params, state, key, w)
    if not second_order:
        return value, grads, w_grad
    hessian = jax.hessian(lambda p, a: est.loss(p, state, key, a)[0], argnums=(0, 1))(params, w)
    return value, grads, w_grad, hessian


def exact_derivatives(exact, params, w):
    return (exact(params, w), *jax.grad(exact, argnums=(0, 1))(params, w),
            jax.hessian(exact, argnums=(0, 1))(params, w))


@functools.cache
def gaussian_expected():
    """The exact derivatives of both test functions, by name."""
    return jit(lambda: {exact.__name__: exact_derivatives(exact, GAUSS, weights_for(exact))
                        for exact in (exact_f, exact_smooth)})()


@functools.cache
def gaussian_draws():
    def one(key):
        keys = jax.random.split(key, len(GAUSSIAN))
        return {name: gaussian_derivatives(est, GAUSS, k, weights_for(exact), name != "antithetic")
                for (name, (est, exact)), k in zip(GAUSSIAN.items(), keys)}

    return draw(one, 0, 2000)


@pytest.mark.parametrize("name", GAUSSIAN)
def test_gaussian_value_params_args_and_hessian_unbiased(name):
    """Statistical: value, ∇_θ (``estimate``), ∇_w and (but for antithetic) the (θ, w) Hessian, against closed forms.

    Column j of the mixed block ∂²/∂θ∂w is the estimator's gradient for the
    test function t_j alone (constant, linear, quadratic, exp(-x²/2), cos 2x,
    and the non-smooth 1{x > 0.3}, the last not for pathwise), so each is
    checked separately; the θθ block is the Hessian of E[f] (DiCE, Loaded DiCE
    with leave-one-out; the no-baseline DiCE Hessian for the optimal control
    variate; pathwise second derivatives).
    """
    draws = gaussian_draws()[name]
    lt.testing.assert_unbiased(draws, gaussian_expected()[GAUSSIAN[name][1].__name__][:len(draws)])


def test_antithetic_gaussian_keeps_the_odd_part_for_loc():
    """Statistical, paired: pairs (ε, -ε) are unbiased; on f even about loc the loc gradient has no variance left, and
    the scale gradient, which keeps only the even part of f, pays for it with at least 1/0.6 times the variance."""
    centred = {"loc": jnp.array([1.0, 1.0, 1.0]), "log_scale": GAUSS["log_scale"]}
    quadratic = lambda x: jnp.sum((x - 1.0) ** 2)
    ests = [lt.score_function(quadratic, NORMAL, num_samples=16, baseline=lt.baselines.leave_one_out(),
                              antithetic=antithetic) for antithetic in (True, False)]
    paired, independent = draw(lambda k: tuple(e.estimate(centred, (), k)[0] for e in ests), 5, 20000)
    lt.testing.assert_unbiased(paired, jax.grad(lt.exact.normal_quadratic(1.0))(centred))
    # loc: exactly 0 (f is the same at ±ε and the loc score changes sign, so each pair cancels); 1e-12 leaves room
    # for float32 rounding (measured 3e-16).
    lt.testing.assert_variance_ratio(paired["loc"], independent["loc"], at_most=1e-12)
    # log_scale: a pair's members share f and score, so the pairs are leave-one-out on 8 draws against 16.
    # Independent / antithetic 0.494 (median over 30 other seeds of 2·10⁴ estimates, range 0.465-0.517); 0.6 is
    # the least c of 0.02 steps at which all 30 give a paired z > 4.5.
    lt.testing.assert_variance_ratio(independent["log_scale"], paired["log_scale"], at_most=0.6)


def test_antithetic_chunked_and_errors():
    est = lt.score_function(lambda x: jnp.sum((x - 1.0) ** 2), NORMAL, num_samples=8, chunk_size=4, antithetic=True,
                            baseline=lt.baselines.leave_one_out())
    grads, _, aux = jit(est.estimate)(GAUSS, est.init(GAUSS), jax.random.key(0))
    assert aux["baseline"].shape == (8,) and np.all(np.isfinite(grads["loc"]))
    # Pair members share their baseline.
    np.testing.assert_allclose(aux["baseline"][:2], aux["baseline"][2:4])
    with pytest.raises(ValueError, match="multiples of 2"):
        lt.score_function(jnp.sum, NORMAL, num_samples=6, chunk_size=3, antithetic=True)
    with pytest.raises(ValueError, match="antithetic_sample"):
        lt.score_function(jnp.sum, lt.families.poisson(), num_samples=4, antithetic=True)
    with pytest.raises(ValueError, match="num_samples"):
        lt.score_function(jnp.sum, NORMAL, num_samples=2, antithetic=True, baseline=lt.baselines.leave_one_out())


# --- Discrete families, pytree samples, flax params, a vmapped batch of latents -------------------------------------

BERNOULLI_LOGITS = jnp.array([-1.0, 0.0, 0.5, 1.5, -0.3, 0.8])
TARGET = jnp.linspace(0.2, 0.8, 6)
BATCH_LOGITS = jnp.stack([BERNOULLI_LOGITS, -BERNOULLI_LOGITS, 0.5 * BERNOULLI_LOGITS + 0.3])


def bernoulli_f(b, target):
    return jnp.sum((b - target) ** 2) + jnp.prod(b[:3])


def payoff_f(x, payoff):
    return payoff[0, x[0]] * payoff[1, x[1]]


class Policy(nn.Module):
    @nn.compact
    def __call__(self, obs):
        return nn.Dense(3)(jnp.tanh(nn.Dense(8)(obs)))


POLICY = Policy()
OBSERVATIONS = jnp.array([[1.0, -0.5], [0.2, 0.7]])


def policy_sample(params, key, n):
    k_obs, k_act = jax.random.split(key)
    idx = jax.random.randint(k_obs, (n,), 0, 2)
    return idx, jax.random.categorical(k_act, POLICY.apply(params, OBSERVATIONS[idx]))


def policy_log_prob(params, x):
    idx, action = x
    return jnp.log(0.5) + jax.nn.log_softmax(POLICY.apply(params, OBSERVATIONS[idx]))[action]


POLICY_FAMILY = lt.Family(policy_sample, policy_log_prob)
ANTITHETIC_LOGITS = jnp.array([-1.0, -0.2, 0.3, 0.9, 2.0])
antithetic_f = lambda b: jnp.sum(b * jnp.arange(1.0, 6.0)) ** 2 / 10.0
ANTITHETIC_EXACT = lt.exact.estimator(antithetic_f, BERNOULLI, lt.exact.bernoulli_support(5))

# name: (estimator, params, args, exact estimator)
DISCRETE = {
    "bernoulli": (lt.score_function(bernoulli_f, BERNOULLI, num_samples=32), BERNOULLI_LOGITS, (TARGET,),
                  lt.exact.estimator(bernoulli_f, BERNOULLI, lt.exact.bernoulli_support(6))),
    "categorical batch": (lt.score_function(payoff_f, CATEGORICAL, num_samples=32),
                          jnp.array([[0.1, -0.4, 0.3, 0.0], [1.0, 0.0, -1.0, 0.5]]),
                          (jnp.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]]),),
                          lt.exact.estimator(payoff_f, CATEGORICAL, lt.exact.categorical_support(4, 2))),
    # The support 0..59 holds all but 1e-20 of the mass.
    "poisson": (lt.score_function(lambda x: jnp.minimum(x, 4).astype(jnp.float32), lt.families.poisson(),
                                  num_samples=32), jnp.log(jnp.float32(2.5)), (),
                lt.exact.estimator(lambda x: jnp.minimum(x, 4).astype(jnp.float32), lt.families.poisson(),
                                   jnp.arange(60))),
    "flax policy, pytree samples": (
        lt.score_function(lambda x, reward: reward[x[0], x[1]], POLICY_FAMILY, num_samples=16,
                          baseline=lt.baselines.leave_one_out()),
        POLICY.init(jax.random.key(0), OBSERVATIONS[0]), (jnp.array([[1.0, 0.0, -1.0], [2.0, -0.5, 0.3]]),),
        lt.exact.estimator(lambda x, reward: reward[x[0], x[1]], POLICY_FAMILY,
                           (jnp.repeat(jnp.arange(2), 3), jnp.tile(jnp.arange(3), 2)))),
    "antithetic": (lt.score_function(antithetic_f, BERNOULLI, num_samples=4, antithetic=True), ANTITHETIC_LOGITS, (),
                   ANTITHETIC_EXACT),
    "independent": (lt.score_function(antithetic_f, BERNOULLI, num_samples=4), ANTITHETIC_LOGITS, (), ANTITHETIC_EXACT),
    "antithetic, chunked": (lt.score_function(antithetic_f, BERNOULLI, num_samples=8, chunk_size=4, antithetic=True,
                                              baseline=lt.baselines.leave_one_out()), ANTITHETIC_LOGITS, (),
                            ANTITHETIC_EXACT),
    # The broken variant: the same chunked pairs, each sample's leave-one-out baseline including its partner.
    "partner in baseline": (lt.score_function(antithetic_f, lt.Family(BERNOULLI.antithetic_sample, BERNOULLI.log_prob),
                                              num_samples=8, chunk_size=4, baseline=lt.baselines.leave_one_out()),
                            ANTITHETIC_LOGITS, (), ANTITHETIC_EXACT),
}
BROKEN = ("independent", "partner in baseline")
BATCH_EST = lt.score_function(bernoulli_f, BERNOULLI, num_samples=8, baseline=lt.baselines.leave_one_out())


def exact_grads(exact, params, args):
    return jax.grad(lambda p, a: exact.loss(p, (), jax.random.key(0), *a)[0], argnums=(0, 1))(params, args)


def batch_gradient(key):
    """∇ of Σ_b loss_b for a vmapped batch of independent latents, one key each: shape (3, 6)."""
    keys = jax.random.split(key, BATCH_LOGITS.shape[0])
    loss = lambda logits, k: BATCH_EST.loss(logits, (), k, TARGET)[0]
    return jax.grad(lambda logits: jnp.sum(jax.vmap(loss)(logits, keys)))(BATCH_LOGITS)


@functools.cache
def discrete_draws():
    def one(key):
        keys = dict(zip([*DISCRETE, "batch"], jax.random.split(key, len(DISCRETE) + 1)))
        keys["independent"] = keys["antithetic"]  # paired for the variance test
        out = {name: grad_and_args_grad(est, params, est.init(params), keys[name], *args)[:2]
               for name, (est, params, args, _) in DISCRETE.items()}
        out["batch"] = batch_gradient(keys["batch"])
        return out

    return draw(one, 1, 2000)


@pytest.mark.parametrize("name", [n for n in DISCRETE if n not in BROKEN])
def test_discrete_params_and_args_unbiased(name):
    """Statistical: ∇_θ and ∇_args against enumeration (Bernoulli, a batch of categoricals, Poisson, a flax policy
    whose samples are (observation, action) tuples, antithetic Bernoulli pairs unchunked and in chunks of 2 pairs)."""
    _, params, args, exact = DISCRETE[name]
    lt.testing.assert_unbiased(discrete_draws()[name], jit(exact_grads, static_argnums=0)(exact, params, args))


def test_antithetic_bernoulli_variance_and_layout():
    """Statistical, paired: pairs (u, 1 - u) at N = 4 on 5 Bernoulli variables have at most 0.64 times the variance of
    independent draws, both unbiased; chunked pairs whose baseline includes the partner are caught as biased."""
    draws = discrete_draws()
    _, params, _, exact = DISCRETE["independent"]
    expected = jit(exact_grads, static_argnums=0)(exact, params, ())
    lt.testing.assert_unbiased(draws["independent"], expected)
    # Ratio 0.555 (median over 30 other seeds of 2000 estimates, range 0.537-0.577); 0.64 is the least c of 0.02
    # steps at which all 30 give a paired z > 4.5.
    lt.testing.assert_variance_ratio(draws["antithetic"][0], draws["independent"][0], at_most=0.64)
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(draws["partner in baseline"], expected)
    b = BERNOULLI.antithetic_sample(params, jax.random.key(0), 1000)
    np.testing.assert_allclose(b.mean(0), jax.nn.sigmoid(params), atol=0.06)
    # With u and 1 - u, a coordinate with p < 1/2 is never 1 in both members of a pair.
    assert not np.any((b[:500, 0] == 1) & (b[500:, 0] == 1))
    x = NORMAL.antithetic_sample(GAUSS, jax.random.key(0), 6)
    np.testing.assert_allclose(x[:3] + x[3:], jnp.broadcast_to(2 * GAUSS["loc"], (3, 3)), rtol=1e-5)


def test_vmap_over_a_batch_of_latents_unbiased_per_latent():
    """Statistical: ∇ of the sum of a vmapped loss over 3 independent latents is each one's unbiased gradient."""
    exact = DISCRETE["bernoulli"][3]
    expected = jit(jax.vmap(lambda logits: exact_grads(exact, logits, (TARGET,))[0]))(BATCH_LOGITS)
    lt.testing.assert_unbiased(discrete_draws()["batch"], expected)


def test_vmap_of_loss_over_params_keys_and_states_equals_per_element_calls():
    """Each element of a vmapped loss (own params, key, moving-average state) is the loss called on it alone."""
    est = lt.score_function(bernoulli_f, BERNOULLI, num_samples=8, baseline=lt.baselines.moving_average(0.5))
    states = lt.baselines.MovingAverageState(average=jnp.array([0.5, 1.0, 2.0]), count=jnp.array([1, 3, 2], jnp.int32))
    keys = jax.random.split(jax.random.key(2), 3)

    def value_grad(logits, state, key):
        (value, (state, aux)), grads = jax.value_and_grad(lambda p: est.loss(p, state, key, TARGET),
                                                          has_aux=True)(logits)
        return value, state, aux, grads

    batched = jit(jax.vmap(value_grad))(BATCH_LOGITS, states, keys)
    single = jit(value_grad)
    for i in range(3):
        element = single(BATCH_LOGITS[i], jax.tree_util.tree_map(lambda s: s[i], states), keys[i])
        for x, y in zip(jax.tree_util.tree_leaves(element), jax.tree_util.tree_leaves(batched)):
            np.testing.assert_allclose(y[i], x, rtol=1e-5, atol=1e-6)
    value, new_states, aux, _ = batched
    np.testing.assert_allclose(value, aux["f"].mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(new_states.count, states.count + 1)


# --- Closures over traced values and f depending on θ itself (the ELBO) --------------------------------------------

ELBO_Q = {"loc": jnp.array([0.3, -0.4]), "log_scale": jnp.array([-0.2, 0.1])}


def log_target(x):
    return jnp.sum(jax.scipy.stats.norm.logpdf(x, jnp.array([1.0, -0.5]), 0.7))


def elbo_term(x, q):
    """log p(x) - log q_θ(x): quadratic in x, so 4-point Gauss-Hermite quadrature is exact."""
    return log_target(x) - NORMAL.log_prob(q, x)


EXACT_ELBO = lt.exact.quadrature_estimator(elbo_term, num_points=4)
ELBO_ESTIMATORS = {
    "score_function": lambda f: lt.score_function(f, NORMAL, num_samples=32, baseline=lt.baselines.leave_one_out()),
    "pathwise": lambda f: lt.pathwise(f, NORMAL.sample, num_samples=8),
}


class Decoder(nn.Module):
    @nn.compact
    def __call__(self, z):
        return nn.Dense(4)(z)


DECODER = Decoder()
DECODER_PARAMS = DECODER.init(jax.random.key(1), jnp.zeros(3))
Z_LOGITS = jnp.array([0.4, -0.6, 1.2])


def log_likelihood(z, decoder_params):
    """log p(x_obs | z) under Bernoulli pixels with logits decoder(z)."""
    logits = DECODER.apply(decoder_params, z)
    x = jnp.array([1.0, 0.0, 1.0, 1.0])
    return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits))


def decoder_estimator(f):
    return lt.score_function(f, BERNOULLI, num_samples=16, baseline=lt.baselines.leave_one_out())


def elbo_total_derivatives(loss):
    """Value, gradient and Hessian of ``loss(θ)`` (the total derivatives when f depends on θ too)."""
    return loss(ELBO_Q), jax.grad(loss)(ELBO_Q), jax.hessian(loss)(ELBO_Q)


@functools.cache
def closure_draws():
    def one(key):
        out = {}
        for name, make in ELBO_ESTIMATORS.items():
            as_arg = make(elbo_term)
            out[name, "arg"] = elbo_total_derivatives(lambda q: as_arg.loss(q, (), key, q)[0])
            out[name, "closure"] = elbo_total_derivatives(
                lambda q: make(lambda x: elbo_term(x, q)).loss(q, (), key)[0])
        as_arg = decoder_estimator(log_likelihood)
        out["decoder", "arg"] = jax.grad(lambda z, d: as_arg.loss(z, (), key, d)[0], argnums=(0, 1))(
            Z_LOGITS, DECODER_PARAMS)
        out["decoder", "closure"] = jax.grad(
            lambda z, d: decoder_estimator(lambda b: log_likelihood(b, d)).loss(z, (), key)[0], argnums=(0, 1))(
            Z_LOGITS, DECODER_PARAMS)
        return out

    return draw(one, 3, 2000)


@pytest.mark.parametrize("name", ELBO_ESTIMATORS)
def test_elbo_total_derivatives_first_and_second_order(name):
    """Statistical: f = log p(x) - log q_θ(x) as an arg or a closure over θ: value, total gradient and Hessian.

    Same key, same result either way; both against quadrature (exact: f is quadratic in x).
    """
    draws = closure_draws()
    expected = jit(lambda: elbo_total_derivatives(lambda q: EXACT_ELBO.loss(q, (), jax.random.key(0), q)[0]))()
    lt.testing.assert_unbiased(draws[name, "arg"], expected)
    for x, y in zip(jax.tree_util.tree_leaves(draws[name, "arg"]), jax.tree_util.tree_leaves(draws[name, "closure"])):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def test_closure_over_a_traced_flax_decoder_gets_its_pathwise_gradient():
    """Statistical: f closes over a flax decoder's params traced by an outer jax.grad: no silent zero gradient.

    Latents z ~ Bernoulli(θ), 3 bits; the decoder's and θ's gradients against enumeration of the 8 outcomes,
    and equal to passing the decoder as an arg.
    """
    draws = closure_draws()
    exact = lt.exact.estimator(log_likelihood, BERNOULLI, lt.exact.bernoulli_support(3))
    expected = jit(exact_grads, static_argnums=0)(exact, Z_LOGITS, (DECODER_PARAMS,))
    lt.testing.assert_unbiased(draws["decoder", "closure"], (expected[0], expected[1][0]))
    assert all(np.all(np.abs(leaf).max(axis=0) > 0) for leaf in jax.tree_util.tree_leaves(draws["decoder", "closure"]))
    for x, y in zip(jax.tree_util.tree_leaves(draws["decoder", "arg"]),
                    jax.tree_util.tree_leaves(draws["decoder", "closure"])):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


# --- State through an outer value_and_grad and a lax.scan of training steps -----------------------------------------

STEP_LOGITS = jnp.array([-1.0, -0.3, 0.2, 0.8, 1.5])
WEIGHTS = jnp.array([0.7, -0.4, 1.1, 0.5, -0.9])
NUM_STEPS, LEARNING_RATE, L2 = 12, 0.1, 0.05


def weighted_f(b, w):
    return (jnp.dot(w, b) - 1.0) ** 2


EXACT_WEIGHTED = lt.exact.estimator(weighted_f, BERNOULLI, lt.exact.bernoulli_support(5))
STATEFUL = {
    "moving_average": lt.score_function(weighted_f, BERNOULLI, num_samples=8,
                                        baseline=lt.baselines.moving_average(0.8)),
    "optimal_control_variate": lt.optimal_control_variate(weighted_f, BERNOULLI, num_samples=8, decay=0.9),
}


def user_loss(est, params, state, key):
    """A user's training loss: the estimator's loss term plus an L2 penalty, the new state in its aux."""
    value, (state, aux) = est.loss(params["logits"], state, key, params["w"])
    return value + L2 * jnp.sum(params["w"] ** 2), (state, aux)


def train(est, key):
    """SGD on ``user_loss`` in a lax.scan; per step the gradient's error against the exact gradient at that step."""
    exact_grad = jax.grad(lambda p: user_loss(EXACT_WEIGHTED, p, (), key)[0])

    def step(carry, k):
        params, state = carry
        (_, (state, aux)), grads = jax.value_and_grad(functools.partial(user_loss, est), has_aux=True)(params, state, k)
        error = jax.tree_util.tree_map(jnp.subtract, grads, exact_grad(params))
        params = jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads)
        return (params, state), (error, aux)

    params = {"logits": STEP_LOGITS, "w": WEIGHTS}
    init = (params, est.init(params["logits"]))
    (_, state), (errors, aux) = jax.lax.scan(step, init, jax.random.split(key, NUM_STEPS))
    return state, jax.tree_util.tree_map(lambda e: e[-1], errors), aux


@functools.cache
def training_draws():
    return draw(lambda key: {name: train(est, k) for (name, est), k in zip(STATEFUL.items(), jax.random.split(key))},
                4, 1000)


@pytest.mark.parametrize("name", STATEFUL)
def test_state_threads_through_value_and_grad_and_scan(name):
    """Statistical: training steps thread the estimator's state through a user's value_and_grad inside lax.scan.

    The state updates (the moving average is the decayed mean of every step's f
    values, its baseline the bias-corrected average of the previous steps; the
    optimal control variate's pooled sums fill), and at the last step the
    gradients of θ and of f's weights are unbiased for the exact gradient at the
    params the chain has reached (the error ĝ - g has mean zero).
    """
    state, last_error, aux = training_draws()[name]
    lt.testing.assert_unbiased(last_error, jax.tree_util.tree_map(lambda e: np.zeros(e.shape[1:]), last_error))
    if name == "moving_average":
        np.testing.assert_array_equal(state.count, NUM_STEPS)
        average, baselines = np.zeros(len(state.count)), []
        for t in range(NUM_STEPS):
            baselines.append(average / (1.0 - 0.8**t) if t else average)
            average = 0.8 * average + 0.2 * np.asarray(aux["f"][:, t]).mean(axis=1)
        np.testing.assert_allclose(state.average, average, rtol=1e-5)
        np.testing.assert_allclose(aux["baseline"][:, :, 0], np.stack(baselines, axis=1), rtol=1e-5, atol=1e-6)
    else:
        assert np.all(state.denominator > 0) and np.all(np.isfinite(state.numerator))
        # Pooled sums: the coefficients of the last step are not the batch's leave-one-out means.
        f_last = np.asarray(aux["f"][:, -1])
        loo = (f_last.sum(axis=1, keepdims=True) - f_last) / (f_last.shape[1] - 1)
        assert not np.allclose(aux["control_variate"][:, -1, :, 0], loo)


# --- VIMCO against enumeration of all K-tuples ---------------------------------------------------------------------

K = 3
THETA = jnp.array([0.5, -0.3, 1.0, 0.0, -1.0])
PHI = jnp.log(jnp.array([0.05, 0.4, 0.1, 0.3, 0.15])) - 1.0
TUPLES = lt.exact.categorical_support(5, K)


def log_weight(x, theta, phi):
    """l(x) = log p_φ(x) - log q(x|θ)."""
    return phi[x] - jax.nn.log_softmax(theta)[x]


def exact_bound(theta_q, theta, phi):
    """E_{x_1..K ~ q(θ_q)}[log (1/K) Σ_k exp(l(x_k; θ, φ))], summed over all 5^K tuples."""
    log_q = jax.nn.log_softmax(theta_q)[TUPLES]
    log_weights = jax.vmap(jax.vmap(lambda x: log_weight(x, theta, phi)))(TUPLES)
    return jnp.sum(jnp.exp(jnp.sum(log_q, axis=1)) * (jax.nn.logsumexp(log_weights, axis=1) - jnp.log(K)))


def naive_grad(theta, phi, key):
    """Score function with the bound as every sample's learning signal, plus the direct term."""
    xs = CATEGORICAL.sample(theta, key, K)

    def surrogate(t):
        bound = jax.nn.logsumexp(jax.vmap(lambda x: log_weight(x, t, phi))(xs)) - jnp.log(K)
        return bound + jax.lax.stop_gradient(bound) * jnp.sum(jax.vmap(lambda x: CATEGORICAL.log_prob(t, x))(xs))

    return jax.grad(surrogate)(theta)


def vimco_by_hand(xs, signal=None):
    """Mnih and Rezende's VIMCO estimate from K samples, in numpy: (∂/∂θ through q, (∂/∂θ through -log q in the
    weight, ∂/∂φ)), and the learning signals L̂(k) = L - log (1/K) (Σ_{j≠k} e^{l_j} + e^{mean_{j≠k} l_j});
    ``signal`` replaces L̂ (the broken variant)."""
    theta, phi = np.asarray(THETA, np.float64), np.asarray(PHI, np.float64)
    q = np.exp(theta - scipy.special.logsumexp(theta))
    l = phi[xs] - np.log(q[xs])  # (M, K)
    bound = scipy.special.logsumexp(l, axis=1, keepdims=True) - np.log(K)
    others = ~np.eye(K, dtype=bool)
    replaced = [np.concatenate([l[:, others[k]], l[:, others[k]].mean(axis=1, keepdims=True)], axis=1)
                for k in range(K)]
    signals = bound - np.stack([scipy.special.logsumexp(r, axis=1) - np.log(K) for r in replaced], axis=1)
    signals = signals if signal is None else signal(l, bound)
    scores = np.eye(5)[xs] - q  # ∇_θ log q(x_k|θ), (M, K, 5)
    weights = np.exp(l - scipy.special.logsumexp(l, axis=1, keepdims=True))[..., None]
    return (np.sum(signals[..., None] * scores, axis=1),
            (-np.sum(weights * scores, axis=1), np.sum(weights * np.eye(5)[xs], axis=1))), signals


def test_vimco_unbiased_in_params_args_and_closure_and_below_naive():
    """Statistical: 5 classes, K = 3, exact over 125 tuples.

    ``estimate`` is ∂/∂θ through q only; the args gradients are ∂/∂θ through
    -log q in the weight and ∂/∂φ; θ passed both as params and as an arg, or
    closed over, gives the total derivative. On every key the learning signals
    and gradients equal the paper's formula written out in numpy (with the bound
    itself as every signal they would not). The loss's value is the bound.
    Paired: VIMCO's variance is at most 0.052 times the naive score function's
    on the same samples.
    """
    est = lt.vimco(log_weight, CATEGORICAL, num_samples=K)

    def per_key(key):
        grads, _, aux = est.estimate(THETA, (), key, THETA, PHI)
        value, args_grads = jax.value_and_grad(lambda t, p: est.loss(THETA, (), key, t, p)[0], argnums=(0, 1))(
            THETA, PHI)
        total = jax.grad(lambda t, p: est.loss(t, (), key, t, p)[0], argnums=(0, 1))(THETA, PHI)
        closure = jax.grad(lambda t, p: lt.vimco(lambda x: log_weight(x, t, p), CATEGORICAL, num_samples=K).loss(
            t, (), key)[0], argnums=(0, 1))(THETA, PHI)
        return (grads, args_grads, total, closure, naive_grad(THETA, PHI, key), value, aux,
                CATEGORICAL.sample(THETA, key, K))

    grads, args_grads, total, closure, naive, value, aux, xs = draw(per_key, 0, 2000)
    expected_q, expected_theta, expected_phi = jit(jax.grad(exact_bound, argnums=(0, 1, 2)))(THETA, THETA, PHI)
    lt.testing.assert_unbiased((grads, args_grads), (expected_q, (expected_theta, expected_phi)))
    lt.testing.assert_unbiased(total, (expected_q + expected_theta, expected_phi))
    lt.testing.assert_unbiased(naive, expected_q + expected_theta)

    def check(by_hand):
        (q_grads, hand_args), signals = by_hand
        np.testing.assert_allclose(aux["learning_signal"], signals, rtol=1e-4, atol=1e-5)
        for x, y in zip(jax.tree_util.tree_leaves((grads, args_grads)), jax.tree_util.tree_leaves((q_grads, hand_args)),
                        strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)

    check(vimco_by_hand(np.asarray(xs)))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check(vimco_by_hand(np.asarray(xs), signal=lambda l, bound: np.broadcast_to(bound, l.shape)))
    for x, y in zip(jax.tree_util.tree_leaves(total), jax.tree_util.tree_leaves(closure)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # Ratio 0.0407 (median over 30 other seeds of 2000 estimates, range 0.038-0.043); 0.052 is the least c of
    # 0.002 steps at which all 30 give a paired z > 4.5.
    lt.testing.assert_variance_ratio(total[0], naive, at_most=0.052)
    assert aux["f"].shape == aux["learning_signal"].shape == (2000, K) and aux["bound"].shape == (2000,)
    np.testing.assert_allclose(aux["bound"], jax.nn.logsumexp(aux["f"], axis=1) - np.log(K), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, aux["bound"], rtol=1e-6)


# --- Per-sample terms, memory, input checks --------------------------------------------------------------------------


def test_jacobians_and_scores():
    """Per-sample terms f(x_i) ∇ log p(x_i), the scores and the no-baseline estimate of one key equal the Gaussian's
    closed-form score ((x - μ)/σ², ((x - μ)/σ)² - 1) written out in numpy on the estimate's samples; a log-scale
    score without its -1 would not."""
    cosine = lambda x: jnp.sum(jnp.cos(2.0 * x))
    key = jax.random.key(3)
    jac = lt.score_function_jacobians(cosine, NORMAL, GAUSS, key, num_samples=50)
    grads, _, aux = jit(lt.score_function(cosine, NORMAL, num_samples=50).estimate)(GAUSS, (), key)
    assert jac["loc"].shape == (50, 3) and aux["f"].shape == (50,)
    xs = np.asarray(aux["samples"], np.float64)
    s = lt.scores(NORMAL, GAUSS, aux["samples"])
    loc, sigma = np.asarray(GAUSS["loc"], np.float64), np.exp(np.asarray(GAUSS["log_scale"], np.float64))
    values = np.cos(2.0 * xs).sum(axis=1, keepdims=True)

    def check(score):
        for name in GAUSS:
            np.testing.assert_allclose(s[name], score[name], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(jac[name], values * score[name], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(grads[name], np.mean(values * score[name], axis=0), rtol=1e-4, atol=1e-5)

    check({"loc": (xs - loc) / sigma**2, "log_scale": ((xs - loc) / sigma) ** 2 - 1.0})
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check({"loc": (xs - loc) / sigma**2, "log_scale": ((xs - loc) / sigma) ** 2})


def test_mean_gradient_never_materialises_per_sample_gradients():
    """A 300k-parameter policy and 4096 samples: compiled temporaries far below N x P floats."""
    num_obs, num_actions, hidden, n = 64, 16, 512, 4096
    mlp = nn.Sequential([nn.Dense(hidden), nn.relu, nn.Dense(hidden), nn.relu, nn.Dense(num_actions)])
    params = mlp.init(jax.random.key(0), jnp.zeros(num_obs))
    num_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
    assert num_params > 300_000

    def sample(params, key, k):
        k_obs, k_act = jax.random.split(key)
        obs = jax.random.normal(k_obs, (k, num_obs))
        return obs, jax.random.categorical(k_act, mlp.apply(params, obs))

    def log_prob(params, x):
        obs, action = x
        return jax.nn.log_softmax(mlp.apply(params, obs))[action]

    est = lt.score_function(lambda x: x[1].astype(jnp.float32), lt.Family(sample, log_prob), num_samples=n)
    compiled = jax.jit(est.estimate).lower(params, (), jax.random.key(0)).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < n * num_params * 4 / 100, (temp, n * num_params * 4)


def test_num_samples_validation():
    with pytest.raises(ValueError, match="score_function: `num_samples` must be an int >= 1"):
        lt.score_function(jnp.sum, NORMAL, num_samples=0)
    with pytest.raises(ValueError, match="`num_samples` must be an int >= 2"):
        lt.score_function(jnp.sum, NORMAL, num_samples=1, baseline=lt.baselines.leave_one_out())
    with pytest.raises(ValueError, match="pathwise: `num_samples`"):
        lt.pathwise(jnp.sum, NORMAL.sample, num_samples=2.0)
    with pytest.raises(ValueError, match="optimal_control_variate: `num_samples` must be an int >= 2"):
        lt.optimal_control_variate(jnp.sum, NORMAL, num_samples=1)
    with pytest.raises(ValueError, match="optimal_control_variate: `decay`"):
        lt.optimal_control_variate(jnp.sum, NORMAL, num_samples=4, decay=1.0)
    with pytest.raises(ValueError, match="vimco: `num_samples` must be an int >= 2"):
        lt.vimco(log_weight, CATEGORICAL, num_samples=1)
    with pytest.raises(ValueError, match="score_function_jacobians: `num_samples`"):
        lt.score_function_jacobians(jnp.sum, NORMAL, GAUSS, jax.random.key(0), num_samples=0)
