"""The estimator contract of `lt.from_loss`: non-finite f, argument checks, and an estimator built from a loss.

The one stochastic test is statistical: many independent estimates from a fixed
key and `lt.testing.assert_unbiased` against the gradient of an enumeration.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
NORMAL, BERNOULLI, CATEGORICAL = lt.families.normal(), lt.families.bernoulli(), lt.families.categorical()
GAUSS = {"loc": jnp.array([0.5, -1.0, 2.0]), "log_scale": jnp.array([0.0, -0.5, 0.3])}
LOGITS = jnp.array([0.3, -0.2, 1.0, 0.0])


def gated(x, w, bad):
    """w·x, or ``bad`` where x_0 > 0 (about 2/3 of the samples of GAUSS)."""
    return jnp.where(x[0] > 0.0, bad, jnp.dot(w, x))


GATED = lt.score_function(gated, NORMAL, num_samples=16, baseline=lt.baselines.moving_average(0.9))


@jit
def gated_derivatives(state, w, bad):
    """A user's value_and_grad (has_aux) and Hessian of the estimator's loss, in params and in w."""
    key = jax.random.key(0)
    loss = lambda p, a: GATED.loss(p, state, key, a, bad)
    (value, (new_state, aux)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(GAUSS, w)
    hessian = jax.hessian(lambda p, a: loss(p, a)[0], argnums=(0, 1))(GAUSS, w)
    return value, new_state, aux, grads, hessian


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf, 0.0])
def test_nonfinite_f_makes_every_derivative_nan_and_keeps_the_state(bad):
    """One non-finite f value: value NaN, every first and second derivative NaN (params and args), state unchanged.

    The finite ``bad = 0.0`` is the control: finite derivatives and an updated state.
    """
    state = lt.baselines.MovingAverageState(average=jnp.float32(1.5), count=jnp.int32(3))
    value, new_state, aux, grads, hessian = gated_derivatives(state, jnp.ones(3), jnp.float32(bad))
    leaves = jax.tree_util.tree_leaves((value, grads, hessian))
    if np.isfinite(bad):
        assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
        assert int(new_state.count) == 4 and float(new_state.average) != 1.5
        return
    assert not np.all(np.isfinite(aux["f"]))
    assert all(np.all(np.isnan(leaf)) for leaf in leaves)
    assert int(new_state.count) == 3 and float(new_state.average) == 1.5


def test_nonfinite_f_makes_every_entry_of_every_derivative_nan():
    """The contract's "every derivative is NaN", also for the entries of an arg that f reads sparsely.

    f(x, table) = table[x] with table[0] = inf: the gradient in the table
    entries that no sample looked up must be NaN too, not 0.
    """
    table = jnp.array([jnp.inf, 1.0, 2.0, 3.0])
    est = lt.score_function(lambda x, t: t[x], CATEGORICAL, num_samples=2)
    logits = jnp.array([5.0, -5.0, -5.0, -5.0])  # with this key both samples are class 0 (p = 0.9999 each)
    loss = lambda p, t: est.loss(p, (), jax.random.key(0), t)[0]
    grads = jit(jax.grad(loss, argnums=(0, 1)))(logits, table)
    assert all(np.all(np.isnan(leaf)) for leaf in jax.tree_util.tree_leaves(grads)), grads


def one_sample_loss(params, state, key, *args):
    """A score-function loss for one Bernoulli sample, written by hand: f(x) ⊡(log p(x|θ))."""
    x = jax.lax.stop_gradient(BERNOULLI.sample(params, key, 1))[0]
    value = jnp.sum((x - args[0]) ** 2)
    return value * lt.magic_box(BERNOULLI.log_prob(params, x)), (state, {"f": value})


CUSTOM = lt.from_loss(lambda params: (), one_sample_loss, caller="my_estimator")


def test_from_loss_builds_an_unbiased_estimator():
    """Statistical: the hand-written one-sample loss gives unbiased θ and args gradients against enumeration."""
    target = jnp.array([0.2, 0.9, 0.5, 0.1])

    def one(key):
        grads, _, _ = CUSTOM.estimate(LOGITS, (), key, target)
        return grads, jax.grad(lambda a: CUSTOM.loss(LOGITS, (), key, a)[0])(target)

    draws = jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 2000))
    exact = lt.exact.estimator(lambda x, a: jnp.sum((x - a) ** 2), BERNOULLI, lt.exact.bernoulli_support(4))
    expected = jax.grad(lambda p, a: exact.loss(p, (), jax.random.key(0), a)[0], argnums=(0, 1))(LOGITS, target)
    lt.testing.assert_unbiased(draws, expected)
    assert CUSTOM.init(LOGITS) == ()


def test_from_loss_guards_every_listed_key():
    """A non-finite value under any ``guarded`` aux key, not only "f", makes the gradient NaN."""

    def loss(params, state, key):
        value = jnp.sum(params**2)
        return value, (state, {"f": value, "g": jnp.log(params[0])})

    est = lt.from_loss(lambda params: (), loss, caller="my_estimator", guarded=("f", "g"))
    grads, _, _ = est.estimate(LOGITS, (), jax.random.key(1))
    assert np.all(np.isfinite(grads))
    grads, _, aux = est.estimate(-LOGITS, (), jax.random.key(1))
    assert np.isfinite(aux["f"]) and np.isnan(aux["g"]) and np.all(np.isnan(grads))


def test_from_loss_rejects_a_non_scalar_loss():
    est = lt.from_loss(lambda params: (), lambda p, s, k: (p * 2.0, (s, {"f": p})), caller="my_estimator")
    with pytest.raises(ValueError, match="my_estimator: the loss must be a scalar"):
        est.loss(LOGITS, (), jax.random.key(0))


ANY_F = lambda x, *args: jnp.sum(jnp.asarray(x, jnp.float32))
# name: (estimator, params)
ALL = {
    "score_function": (lt.score_function(ANY_F, NORMAL, num_samples=4), GAUSS),
    "pathwise": (lt.pathwise(ANY_F, NORMAL.sample, num_samples=4), GAUSS),
    "measure_valued": (lt.measure_valued(ANY_F, CATEGORICAL, num_samples=4), LOGITS),
    "optimal_control_variate": (lt.optimal_control_variate(ANY_F, NORMAL, num_samples=4), GAUSS),
    "vimco": (lt.vimco(ANY_F, CATEGORICAL, num_samples=4), LOGITS),
    "delta_method": (lt.delta_method(ANY_F, num_samples=4), GAUSS),
    "sum_and_sample": (lt.sum_and_sample(ANY_F, num_summed=1, num_samples=4), LOGITS),
    "unordered_set": (lt.categorical.unordered_set(ANY_F, num_samples=3), LOGITS),
    "indecater": (lt.categorical.indecater(ANY_F, num_samples=1), LOGITS),
    "arsm": (lt.categorical.arsm(ANY_F, num_samples=1), LOGITS),
    "categorical.relax": (lt.categorical.relax(ANY_F, lambda phi, z, *a: jnp.sum(z), (), num_samples=2), LOGITS),
    "reinmax": (lt.categorical.reinmax(ANY_F, num_samples=2), LOGITS),
    "exact.estimator": (lt.exact.estimator(ANY_F, CATEGORICAL, lt.exact.categorical_support(4)), LOGITS),
    "exact.quadrature_estimator": (lt.exact.quadrature_estimator(ANY_F, num_points=4), GAUSS),
}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("arg", ["a string", print, {"w": jnp.ones(2), "how": "mean"}], ids=["str", "function", "dict"])
def test_args_that_are_not_arrays_raise_a_type_error_naming_the_estimator(name, arg):
    est, params = ALL[name]
    with pytest.raises(TypeError, match=rf"^{name}: the extra arguments .* must be pytrees of arrays"):
        est.loss(params, est.init(params), jax.random.key(0), jnp.ones(2), arg)


def bad_family(family, *, log_prob=None, sample=None):
    return lt.Family(sample or family.sample, log_prob or family.log_prob)


VECTOR_F = lambda x, *args: jnp.atleast_1d(jnp.asarray(x, jnp.float32))[:2] * jnp.ones(2)
VECTOR_LOG_PROB = lambda params, x: jnp.ones(2)
# (estimator, params, the argument named in the error)
MALFORMED = {
    "score_function f": (lt.score_function(VECTOR_F, NORMAL, num_samples=4), GAUSS, "`f`"),
    "score_function log_prob": (lt.score_function(ANY_F, bad_family(NORMAL, log_prob=VECTOR_LOG_PROB), num_samples=4),
                                GAUSS, "`family.log_prob`"),
    "score_function sample": (lt.score_function(ANY_F, bad_family(NORMAL, sample=lambda p, k, n: p["loc"]),
                                                num_samples=4), GAUSS, "leading axis num_samples=4"),
    "pathwise f": (lt.pathwise(VECTOR_F, NORMAL.sample, num_samples=4), GAUSS, "`f`"),
    "measure_valued f": (lt.measure_valued(VECTOR_F, NORMAL, num_samples=4), GAUSS, "`f`"),
    "score_function inverse_cdf": (lt.score_function(ANY_F, NORMAL._replace(inverse_cdf=lambda p, u: u[0]),
                                                     num_samples=4, sampler="rqmc"), GAUSS, "`family.inverse_cdf`"),
    "optimal_control_variate f": (lt.optimal_control_variate(VECTOR_F, NORMAL, num_samples=4), GAUSS, "`f`"),
    "optimal_control_variate log_prob": (
        lt.optimal_control_variate(ANY_F, bad_family(NORMAL, log_prob=VECTOR_LOG_PROB), num_samples=4), GAUSS,
        "`family.log_prob`"),
    "vimco log_weight": (lt.vimco(VECTOR_F, CATEGORICAL, num_samples=4), LOGITS, "`log_weight`"),
    "vimco log_prob": (lt.vimco(ANY_F, bad_family(CATEGORICAL, log_prob=VECTOR_LOG_PROB), num_samples=4), LOGITS,
                       "`family.log_prob`"),
    "delta_method f": (lt.delta_method(VECTOR_F, num_samples=4), GAUSS, "`f`"),
    "sum_and_sample f": (lt.sum_and_sample(VECTOR_F, num_summed=1, num_samples=4), LOGITS, "`f`"),
    "unordered_set f": (lt.categorical.unordered_set(VECTOR_F, num_samples=3), LOGITS, "`f`"),
    "indecater f": (lt.categorical.indecater(VECTOR_F, num_samples=1), LOGITS, "`f`"),
    "straight_through f": (lt.categorical.straight_through(VECTOR_F, num_samples=2), LOGITS, "`f`"),
    "gumbel_rao f": (lt.categorical.gumbel_rao(VECTOR_F, num_samples=2), LOGITS, "`f`"),
    "exact.estimator f": (lt.exact.estimator(VECTOR_F, CATEGORICAL, lt.exact.categorical_support(4)), LOGITS, "`f`"),
    "exact.estimator log_prob": (lt.exact.estimator(ANY_F, bad_family(CATEGORICAL, log_prob=VECTOR_LOG_PROB),
                                                    lt.exact.categorical_support(4)), LOGITS, "`family.log_prob`"),
    "exact.quadrature_estimator f": (lt.exact.quadrature_estimator(VECTOR_F, num_points=4), GAUSS, "`f`"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_f_log_prob_or_samples_raise_a_value_error_naming_the_argument(name):
    """Checked at trace time, under jit, before anything runs."""
    est, params, argument = MALFORMED[name]
    caller = name.rsplit(" ", 1)[0]
    with pytest.raises(ValueError, match=rf"^{caller}: .*{argument}"):
        jax.eval_shape(est.estimate, params, est.init(params), jax.random.key(0))
