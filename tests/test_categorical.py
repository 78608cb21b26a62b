"""lt.categorical and lt.sum_and_sample against the exact gradient of categorical expectations.

Stochastic tests are statistical: many independent estimates from a fixed key
and `lt.testing.assert_unbiased` against enumeration (`lt.exact.estimator`),
in the logits and in f's own parameters: of the 8 classes of one variable for
sum-and-sample, of the 5³ = 125 configurations of 3 variables with an f that
couples them for the other estimators. The biased estimators are rejected by
the same test, and their bias is measured (printed with ``pytest -s``; quoted
in the README).
"""

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
CATEGORICAL = lt.families.categorical()
LOGITS = jnp.array([2.0, 1.5, 0.5, 0.0, -0.5, -1.0, 0.3, -2.0])
TABLE = jnp.array([6.0, 2.0, 5.0, 3.5, 1.0, 4.0, 7.0, 2.5])
NUM_ESTIMATES = 2000


def lookup(x, table):
    return table[x]


def exact_variance_ratio():
    """Total variance of sum-and-sample without a baseline over the plain score function's, 6 f evaluations each,
    exactly by enumeration in numpy: with h(x) = f(x) ∇log q(x) = f(x) (e_x - q), the plain estimate has
    (1/6) Var_q h, and sum-and-sample (1/4) (1 - q_C)² Var_r h, r = q(· | x ∉ C), C the 2 likeliest classes."""
    q, table = np.asarray(jax.nn.softmax(LOGITS), np.float64), np.asarray(TABLE, np.float64)
    h = table[:, None] * (np.eye(8) - q)
    variance = lambda weights, rows: weights @ np.sum((rows - weights @ rows) ** 2, axis=1)
    q_summed = q[:2].sum()
    return (1 - q_summed) ** 2 * variance(q[2:] / (1 - q_summed), h[2:]) / 4 / (variance(q, h) / 6)


def test_sum_and_sample_unbiased_in_logits_and_args_below_score_function():
    """Statistical: K = 8, with and without leave-one-out, ∇_logits (``estimate``) and ∇_table against enumeration.

    A baseline subtracted from the sampled term alone would be biased by
    b ∇q_C; with f around 4 that bias is many standard errors wide. Paired
    against the plain score function at the same number of f evaluations
    (2 summed + 4 sampled = 6) on the same keys, the variance ratio is 0.1716
    (exact) ± 0.035 without a baseline and at most 0.05 with leave-one-out.
    Also checks the loss's value and the aux entries.
    """
    plain = lt.score_function(lookup, CATEGORICAL, num_samples=6)
    summed = lt.sum_and_sample(lookup, num_summed=2, num_samples=4)
    loo = lt.sum_and_sample(lookup, num_summed=2, num_samples=4, baseline=lt.baselines.leave_one_out())

    def grads(est, key):
        logits_grad, _, aux = est.estimate(LOGITS, (), key, TABLE)
        value, table_grad = jax.value_and_grad(lambda t: est.loss(LOGITS, (), key, t)[0])(TABLE)
        return (logits_grad, table_grad), value, aux

    def per_key(key):
        return grads(plain, key)[0], grads(summed, key)[0], grads(loo, key)

    keys = jax.random.split(jax.random.key(0), NUM_ESTIMATES)
    reference, no_baseline, (with_loo, values, aux) = jit(jax.vmap(per_key))(keys)
    exact = lt.exact.estimator(lookup, CATEGORICAL, lt.exact.categorical_support(8))
    expected = jit(jax.grad(lambda p, t: exact.loss(p, (), jax.random.key(0), t)[0], argnums=(0, 1)))(LOGITS, TABLE)
    for estimates in (no_baseline, with_loo):
        lt.testing.assert_unbiased(estimates, expected)
    ratio = exact_variance_ratio()
    np.testing.assert_allclose(ratio, 0.1716, atol=1e-4)
    # The margins: 30 other seeds of 2000 estimates (ratios 0.163-0.179 without a baseline; 0.040-0.044, median
    # 0.0418, with leave-one-out) all give a paired z > 4.5 at them, on both sides.
    lt.testing.assert_variance_ratio(no_baseline[0], reference[0], at_most=ratio + 0.035)
    lt.testing.assert_variance_ratio(reference[0], no_baseline[0], at_most=1 / (ratio - 0.035))
    lt.testing.assert_variance_ratio(with_loo[0], reference[0], at_most=0.05)

    np.testing.assert_array_equal(aux["summed_classes"], np.broadcast_to([0, 1], (NUM_ESTIMATES, 2)))
    assert aux["f"].shape == aux["baseline"].shape == (NUM_ESTIMATES, 4)
    assert not np.any(np.isin(aux["f"], TABLE[:2]))
    q = jax.nn.softmax(LOGITS)
    expected_values = np.sum(q[:2] * aux["f_summed"], axis=1) + (1.0 - q[:2].sum()) * np.mean(aux["f"], axis=1)
    np.testing.assert_allclose(values, expected_values, rtol=1e-5)


def test_sum_and_sample_nonfinite_summed_f_gives_nan_grads():
    """A non-finite f on a summed class: NaN value and every entry of both gradients, state unchanged."""
    est = lt.sum_and_sample(lambda x, t: jnp.where(x == 0, jnp.inf, t[x]), num_summed=2, num_samples=3,
                            baseline=lt.baselines.moving_average(0.9))
    state = est.init(LOGITS)

    def step(logits, table):
        (value, (new_state, aux)), grads = jax.value_and_grad(
            lambda p, t: est.loss(p, state, jax.random.key(0), t), argnums=(0, 1), has_aux=True)(logits, table)
        return value, new_state, aux, grads

    value, new_state, aux, grads = jit(step)(LOGITS, TABLE)
    assert np.isnan(value) and all(np.all(np.isnan(g)) for g in grads)
    assert np.all(np.isfinite(aux["f"])) and not np.all(np.isfinite(aux["f_summed"]))
    assert int(new_state.count) == int(state.count)


def test_sum_and_sample_bad_arguments():
    with pytest.raises(ValueError, match="sum_and_sample: `num_summed` must be an int >= 1"):
        lt.sum_and_sample(lookup, num_summed=0, num_samples=4)
    with pytest.raises(ValueError, match="sum_and_sample: `num_samples` must be an int >= 2"):
        lt.sum_and_sample(lookup, num_summed=1, num_samples=1, baseline=lt.baselines.leave_one_out())
    key = jax.random.key(0)
    est = lt.sum_and_sample(lookup, num_summed=8, num_samples=4)
    with pytest.raises(ValueError, match="sum_and_sample: `num_summed` must be < K=8"):
        jax.eval_shape(est.estimate, LOGITS, (), key, TABLE)
    est = lt.sum_and_sample(lookup, num_summed=2, num_samples=4)
    with pytest.raises(ValueError, match=r"sum_and_sample: `params` must be logits of shape \(K,\)"):
        jax.eval_shape(est.estimate, LOGITS.reshape(2, 4), (), key, TABLE)


# ---------------------------------------------------------------- lt.categorical on 3 variables of 5 classes

RNG = np.random.default_rng(0)
PAIR_A, PAIR_B = jnp.asarray(RNG.normal(size=(5, 5)), jnp.float32), jnp.asarray(RNG.normal(size=(5, 5)), jnp.float32)
LINEAR_C = jnp.asarray(RNG.normal(size=5), jnp.float32)
JOINT_LOGITS = jnp.asarray(RNG.normal(size=(3, 5)), jnp.float32)
W = jnp.float32(0.7)


def coupled(x, w):
    """f(x, w) = sin(2 (A[x0, x1] + B[x1, x2])) + c[x2] w + 1[x0 = x2] w²: every pair of variables interacts."""
    return jnp.sin(2 * (PAIR_A[x[0], x[1]] + PAIR_B[x[1], x[2]])) + LINEAR_C[x[2]] * w + (x[0] == x[2]) * w**2


def coupled_relaxed(y, w):
    """The same f of one-hot rows y (3, 5), extended multilinearly to the simplex."""
    return (jnp.sin(2 * (y[0] @ PAIR_A @ y[1] + y[1] @ PAIR_B @ y[2])) + (LINEAR_C @ y[2]) * w
            + (y[0] @ y[2]) * w**2)


@functools.cache
def joint_exact():
    est = lt.exact.estimator(coupled, CATEGORICAL, lt.exact.categorical_support(5, 3))
    return jax.grad(lambda p, w: est.loss(p, (), jax.random.key(0), w)[0], argnums=(0, 1))(JOINT_LOGITS, W)


def draw_gradients(ests, num_estimates, seed=1):
    """{name: (logits grads, w grads)} of independent estimates, all estimators in one compiled function."""

    def one(key):
        return {name: jax.grad(lambda p, w: est.loss(p, est.init(p), key, w)[0], argnums=(0, 1))(JOINT_LOGITS, W)
                for name, est in ests.items()}

    return jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), num_estimates))


def test_unbiased_categorical_estimators_against_enumeration():
    """Statistical: 10000 estimates each of the unordered set estimator (k = 2 and 6 distinct configurations),
    IndeCateR (1 sample, 15 f evaluations), ARSM (1 sample, 31), categorical RELAX with a non-trivial control
    variate and leave-one-out REINFORCE (4 samples) are centred on the exact gradient in the logits and in w (one
    Bonferroni test over all)."""
    cv = lambda phi, z, w: jnp.sum(phi * jax.nn.softmax(z)) * w  # noqa: E731
    ests = {"unordered_set k=2": lt.categorical.unordered_set(coupled, num_samples=2),
            "unordered_set k=6": lt.categorical.unordered_set(coupled, num_samples=6),
            "indecater": lt.categorical.indecater(coupled, num_samples=1),
            "arsm": lt.categorical.arsm(coupled, num_samples=1),
            "relax": lt.categorical.relax(coupled, cv, jnp.asarray(RNG.normal(size=(3, 5)), jnp.float32),
                                          num_samples=2),
            "leave-one-out": lt.score_function(coupled, CATEGORICAL, num_samples=4,
                                               baseline=lt.baselines.leave_one_out())}
    estimates = draw_gradients(ests, 10_000)
    lt.testing.assert_unbiased(estimates, {name: joint_exact() for name in ests})


def test_arsm_loses_to_leave_one_out_at_equal_cost():
    """Statistical: at 31 f evaluations each (one ARSM sample: 1 + 3·10 swaps), leave-one-out REINFORCE with 31
    samples has at most a quarter of ARSM's total variance (measured: 0.11×; the literature's claim checked)."""
    ests = {"arsm": lt.categorical.arsm(coupled, num_samples=1),
            "loo": lt.score_function(coupled, CATEGORICAL, num_samples=31, baseline=lt.baselines.leave_one_out())}
    estimates = draw_gradients(ests, 4000, seed=4)
    report = lt.testing.assert_variance_ratio(estimates["loo"][0], estimates["arsm"][0], at_most=0.25)
    print(f"leave-one-out / ARSM total variance at 31 f evaluations: {report.ratio:.3f}")


def permutation_probability(p, members):
    """P(the first |members| draws without replacement are ``members``, in any order), by summing orders."""
    total = 0.0
    for order in itertools.permutations(members):
        prob, used = 1.0, 0.0
        for s in order:
            prob *= p[s] / (1 - used)
            used += p[s]
        total += prob
    return total


def test_unordered_set_weights_are_exact_set_probabilities_and_the_whole_support_is_exact():
    """The weights p(s) P^{D\\s}(S\\s) / P(S) of one draw equal a brute-force sum over the orders of the set
    (3 variables of 5 classes, k = 5); with k = K^D (2 variables of 2 classes, k = 4) the estimate is the exact
    gradient."""
    est = lt.categorical.unordered_set(coupled, num_samples=5)
    _, _, aux = jit(est.estimate)(JOINT_LOGITS, (), jax.random.key(3), W)
    probs = np.asarray(jax.nn.softmax(JOINT_LOGITS), np.float64)
    xs = np.asarray(aux["samples"])
    assert len({tuple(x) for x in xs}) == 5
    p = {i: np.prod(probs[np.arange(3), x]) for i, x in enumerate(xs)}
    p_set = permutation_probability(p, list(p))
    expected = [p[s] * permutation_probability({t: p[t] / (1 - p[s]) for t in p if t != s}, [t for t in p if t != s])
                / p_set for s in p]
    np.testing.assert_allclose(aux["weights"], expected, rtol=1e-4)

    table = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    f = lambda x, w: table[x[0], x[1]] * w  # noqa: E731
    logits = jnp.array([[0.3, -0.4], [1.2, 0.1]])
    exact = lt.exact.estimator(f, CATEGORICAL, lt.exact.categorical_support(2, 2))
    whole = lt.categorical.unordered_set(f, num_samples=4)
    grad = lambda e: jit(jax.grad(lambda p, w: e.loss(p, (), jax.random.key(5), w)[0], argnums=(0, 1)))  # noqa
    for got, want in zip(grad(whole)(logits, W), grad(exact)(logits, W)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_unordered_set_draws_sets_without_replacement():
    """Statistical: over 20000 draws of k = 2 configurations of 2 variables of 3 classes, the frequency of each
    of the 36 unordered pairs is its probability under sampling without replacement (α = 1e-3, Bonferroni)."""
    logits = jnp.array([[0.5, -0.3, 1.0], [0.0, 0.8, -1.2]])
    est = lt.categorical.unordered_set(lambda x: jnp.float32(0.0), num_samples=2)
    samples = jit(jax.vmap(lambda k: est.loss(logits, (), k)[1][1]["samples"]))(
        jax.random.split(jax.random.key(7), 20_000))
    codes = np.sort(np.asarray(samples[..., 0] * 3 + samples[..., 1]), axis=1)
    pairs = list(itertools.combinations(range(9), 2))
    assert np.all(codes[:, 0] < codes[:, 1])
    index = {pair: i for i, pair in enumerate(pairs)}
    counts = np.eye(len(pairs))[[index[tuple(c)] for c in codes]]
    probs = np.asarray(jax.nn.softmax(logits), np.float64)
    p = {c: probs[0, c // 3] * probs[1, c % 3] for c in range(9)}
    lt.testing.assert_unbiased(counts, np.array([permutation_probability(p, pair) for pair in pairs]))


BIASED = {
    "straight_through": lt.categorical.straight_through(coupled_relaxed, num_samples=1),
    "gumbel_softmax τ=0.5": lt.categorical.gumbel_softmax(coupled_relaxed, num_samples=1, temperature=0.5),
    "gumbel_softmax τ=0.5, straight-through": lt.categorical.gumbel_softmax(
        coupled_relaxed, num_samples=1, temperature=0.5, straight_through=True),
    "gumbel_rao τ=0.5, M=10": lt.categorical.gumbel_rao(coupled_relaxed, num_samples=1, num_gumbels=10,
                                                        temperature=0.5),
    "reinmax τ=1": lt.categorical.reinmax(coupled_relaxed, num_samples=1, temperature=1.0),
}


@pytest.fixture(scope="module")
def biased_estimates():
    return draw_gradients(BIASED, 40_000, seed=2)


def test_biased_categorical_estimators_are_rejected_and_their_bias_measured(biased_estimates):
    """Statistical (40000 one-sample estimates each): every relaxation-based estimator's logits gradient is
    rejected by the unbiasedness test, with its relative bias ‖E ĝ − ∇‖/‖∇‖ and the cosine of its mean measured;
    in w, those that evaluate f at the one-hot sample are unbiased, the relaxed Gumbel-softmax is not."""
    exact = joint_exact()
    for name, (logits_grads, w_grads) in biased_estimates.items():
        accuracy = lt.testing.accuracy(logits_grads, exact[0])
        print(f"{name}: relative bias {accuracy.relative_bias:.3f}, cosine of the mean "
              f"{accuracy.cosine_of_mean:.3f}, max |z| {accuracy.max_abs_z:.1f}")
        assert accuracy.verdict == "biased", (name, accuracy)
        if name == "gumbel_softmax τ=0.5":
            assert lt.testing.check_unbiased(w_grads, exact[1]).verdict == "biased"
        else:
            lt.testing.assert_unbiased(w_grads, exact[1])


def test_gumbel_rao_has_the_mean_of_straight_through_gumbel_softmax_and_less_variance(biased_estimates):
    """Statistical: Rao-Blackwellising over the Gumbels given the sample keeps the mean (the difference of two
    independent sets of 40000 estimates is centred on 0) and lowers the variance (paired ratio ≤ 0.8)."""
    rao = biased_estimates["gumbel_rao τ=0.5, M=10"][0]
    st = biased_estimates["gumbel_softmax τ=0.5, straight-through"][0]
    lt.testing.assert_unbiased(rao - st, jnp.zeros_like(JOINT_LOGITS))
    report = lt.testing.assert_variance_ratio(rao, st, at_most=0.8)
    print(f"Gumbel-Rao / straight-through Gumbel-softmax total variance: {report.ratio:.3f}")


def test_reinmax_is_unbiased_where_f_is_a_polynomial_of_low_degree_and_straight_through_is_not():
    """Statistical (40000 estimates each): for f(y) = (y0ᵀ A y1)(y1ᵀ B y2) + (c·y2) w + (y0·y2) w², of degree
    at most 2 in each variable's one-hot vector, ReinMax (τ = 1, second order) passes the unbiasedness test in the
    logits where straight-through (first order) is rejected."""
    def polynomial(y, w):
        return (y[0] @ PAIR_A @ y[1]) * (y[1] @ PAIR_B @ y[2]) + (LINEAR_C @ y[2]) * w + (y[0] @ y[2]) * w**2

    exact_est = lt.exact.estimator(lambda x, w: polynomial(jax.nn.one_hot(x, 5), w), CATEGORICAL,
                                   lt.exact.categorical_support(5, 3))
    exact = jax.grad(lambda p: exact_est.loss(p, (), jax.random.key(0), W)[0])(JOINT_LOGITS)
    estimates = draw_gradients({"reinmax": lt.categorical.reinmax(polynomial, num_samples=1),
                                "straight_through": lt.categorical.straight_through(polynomial, num_samples=1)},
                               40_000, seed=6)
    lt.testing.assert_unbiased(estimates["reinmax"][0], exact)
    assert lt.testing.check_unbiased(estimates["straight_through"][0], exact).verdict == "biased"


def test_categorical_estimators_nonfinite_f_gives_nan_grads():
    """One non-finite f value (at class 0 of variable 0) makes the logits and w gradients NaN."""
    bad = lambda x, w: jnp.where(x[0] == 0, jnp.nan, w * x[1])  # noqa: E731
    logits = jnp.zeros((3, 5)).at[0, 0].set(8.0)  # class 0 of variable 0 is drawn almost surely
    for est in (lt.categorical.unordered_set(bad, num_samples=3), lt.categorical.indecater(bad, num_samples=1)):
        grads = jit(jax.grad(lambda p, w: est.loss(p, (), jax.random.key(0), w)[0], argnums=(0, 1)))(logits, W)
        assert all(np.all(np.isnan(g)) for g in grads)


@pytest.mark.parametrize("make, message", [
    (lambda: lt.categorical.unordered_set(coupled, num_samples=1), "unordered_set: `num_samples` must be an int >= 2"),
    (lambda: lt.categorical.unordered_set(coupled, num_samples=17), "unordered_set: `num_samples` must be at most 16"),
    (lambda: lt.categorical.indecater(coupled, num_samples=0), "indecater: `num_samples` must be an int >= 1"),
    (lambda: lt.categorical.arsm(coupled, num_samples=0), "arsm: `num_samples` must be an int >= 1"),
    (lambda: lt.categorical.gumbel_rao(coupled_relaxed, num_samples=1, num_gumbels=0),
     "gumbel_rao: `num_gumbels` must be an int >= 1"),
    (lambda: lt.categorical.reinmax(coupled_relaxed, num_samples=1, temperature=0.0),
     "reinmax: `temperature` must be a finite number > 0"),
    (lambda: lt.categorical.gumbel_softmax(coupled_relaxed, num_samples=2, temperature=-1.0),
     "categorical.gumbel_softmax: `temperature`"),
])
def test_categorical_bad_arguments(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


@pytest.mark.parametrize("logits, message", [
    (jnp.float32(0.3), "must be logits of shape batch \\+ \\(K,\\)"),
    (jnp.zeros((3, 1)), "K >= 2 classes"),
])
def test_categorical_logits_without_a_class_axis_are_rejected(logits, message):
    for est in (lt.categorical.unordered_set(coupled, num_samples=2), lt.categorical.indecater(coupled, num_samples=1),
                lt.categorical.arsm(coupled, num_samples=1), lt.categorical.reinmax(coupled_relaxed, num_samples=1)):
        with pytest.raises(ValueError, match=message):
            jax.eval_shape(est.loss, logits, (), jax.random.key(0), W)


def test_unordered_set_refuses_more_samples_than_configurations():
    est = lt.categorical.unordered_set(lambda x: jnp.float32(1.0), num_samples=5)
    with pytest.raises(ValueError, match="unordered_set: `num_samples` = 5 distinct configurations exceed the 2"):
        jax.eval_shape(est.loss, jnp.zeros((2, 2)), (), jax.random.key(0))
