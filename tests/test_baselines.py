"""Baselines keep the score-function estimator unbiased and reduce its variance; the optimal control variate too.

Statistical tests: fixed keys, many independent estimates and
`lt.testing.assert_unbiased` against exact gradients (closed forms, enumeration).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
NORMAL, BERNOULLI = lt.families.normal(), lt.families.bernoulli()
PARAMS = {"loc": jnp.array([2.0, -1.5]), "log_scale": jnp.array([-0.5, 0.2])}
F = lambda x: jnp.sum((x - 0.5) ** 2)
SHIFTED = lambda x: F(x) + 20.0
EXACT = lt.exact.normal_quadratic(0.5)
LOGITS = jnp.array([-1.0, -0.3, 0.2, 0.8, 1.5])
WEIGHTS = jnp.array([0.7, -0.4, 1.1, 0.5, -0.9])
BERNOULLI_F = lambda b: (jnp.dot(WEIGHTS, b) - 1.0) ** 2
BERNOULLI_EXACT = lt.exact.expectation(BERNOULLI_F, BERNOULLI, lt.exact.bernoulli_support(5))


def draw(fn, seed, num_estimates):
    return jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), num_estimates))


# --- leave_one_out_mean ------------------------------------------------------------------------------------------


def test_leave_one_out_mean_values_and_axis():
    np.testing.assert_allclose(lt.baselines.leave_one_out_mean(jnp.array([1.0, 2.0, 6.0])), [4.0, 3.5, 1.5])
    values = np.random.default_rng(0).normal(size=(4, 5))
    expected = (values.sum(axis=1, keepdims=True) - values) / 4
    np.testing.assert_allclose(lt.baselines.leave_one_out_mean(jnp.asarray(values), axis=1), expected, rtol=1e-5,
                               atol=1e-6)
    b, state = lt.baselines.leave_one_out().apply(jnp.array([1.0, 2.0, 6.0]), ())
    np.testing.assert_allclose(b, [4.0, 3.5, 1.5])
    assert state == () and lt.baselines.leave_one_out().min_samples == 2
    with pytest.raises(ValueError, match="at least 2 entries along axis 0"):
        lt.baselines.leave_one_out_mean(jnp.ones(1))


def test_leave_one_out_mean_is_shift_invariant():
    """m(v + c) = m(v) + c up to the rounding of c alone, for offsets up to 10^7 (float32)."""
    values = jnp.array([0.25, -1.5, 3.0, 0.75, 2.0])
    base = lt.baselines.leave_one_out_mean(values)
    for offset in (1e3, 1e5, 1e7):
        shifted = lt.baselines.leave_one_out_mean(values + offset)
        # Each of v + c and the result is rounded once: at most two float32 spacings of c.
        np.testing.assert_allclose(shifted - offset, base, atol=2 * float(np.spacing(np.float32(offset))))
        advantages = (values + offset) - shifted
        np.testing.assert_allclose(advantages, values - base, atol=2 * float(np.spacing(np.float32(offset))))


@pytest.mark.parametrize("value", [0.1, 3.7, -123.456, 1e6 + 0.3])
def test_leave_one_out_mean_of_equal_values_is_exact(value):
    """A group of equal values: m_i = v_i bit for bit, so every advantage v_i - m_i is exactly 0."""
    for n in (2, 3, 7, 10):
        values = jnp.full(n, value, jnp.float32)
        np.testing.assert_array_equal(values - lt.baselines.leave_one_out_mean(values), 0.0)


# --- Baselines in the score-function estimator --------------------------------------------------------------------

BASELINE_ESTIMATORS = {
    "none": lt.score_function(SHIFTED, NORMAL, num_samples=16),
    "leave_one_out": lt.score_function(SHIFTED, NORMAL, num_samples=16, baseline=lt.baselines.leave_one_out()),
    # A baseline that removes the shift of 20 but not E[F]: less of a reduction than leave-one-out's.
    "shift only": lt.score_function(SHIFTED, NORMAL, num_samples=16, baseline=lt.Baseline(
        init=lambda params: (), apply=lambda v, s: (jnp.full_like(v, 20.0), s))),
    # The classic mistake: a baseline that includes the sample's own value.
    "own sample": lt.score_function(SHIFTED, NORMAL, num_samples=4, baseline=lt.Baseline(
        init=lambda params: (), apply=lambda v, s: (jnp.full_like(v, jnp.mean(v)), s))),
}


@functools.cache
def baseline_draws():
    """10⁴ estimates of each estimator, all from the same keys (paired)."""
    return draw(lambda key: {name: est.estimate(PARAMS, (), key)[0] for name, est in BASELINE_ESTIMATORS.items()},
                0, 10000)


def test_leave_one_out_unbiased_and_reduces_variance():
    """Statistical, paired: unbiased, and f shifted by 20 (same gradient) keeps at most 0.10 of its variance with
    leave-one-out; a baseline that removes the shift alone (ratio 0.19) is rejected by the same assertion."""
    draws = baseline_draws()
    expected = jax.grad(EXACT)(PARAMS)
    lt.testing.assert_unbiased(draws["none"], expected)
    lt.testing.assert_unbiased(draws["leave_one_out"], expected)
    # Ratio 0.084 (median over 30 other seeds of 10⁴ estimates, range 0.081-0.089); 0.10 is the least c of
    # 0.005 steps at which all 30 give a paired z > 5.
    lt.testing.assert_variance_ratio(draws["leave_one_out"], draws["none"], at_most=0.10)
    with pytest.raises(AssertionError, match="not shown"):
        lt.testing.assert_variance_ratio(draws["shift only"], draws["none"], at_most=0.10)


def test_own_sample_in_baseline_is_caught_as_biased():
    """Statistical: a baseline that includes the sample's own value is biased and the test rejects it."""
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(baseline_draws()["own sample"], jax.grad(EXACT)(PARAMS))


def test_moving_average_first_call_is_zero_then_bias_corrected():
    baseline = lt.baselines.moving_average(0.9)
    state = baseline.init(PARAMS)
    assert int(state.count) == 0 and float(state.average) == 0.0
    b, state = baseline.apply(jnp.array([4.0, 6.0]), state)
    np.testing.assert_allclose(b, [0.0, 0.0])
    b, state = baseline.apply(jnp.array([1.0, 1.0]), state)
    np.testing.assert_allclose(b, [5.0, 5.0], rtol=1e-6)
    # m = 0.9 (0.1 * 5) + 0.1 * 1 and t = 2: b = m / (1 - 0.9^2).
    b, state = baseline.apply(jnp.array([0.0, 0.0]), state)
    np.testing.assert_allclose(b, [(0.45 + 0.1) / 0.19] * 2, rtol=1e-5)
    assert int(state.count) == 3


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_moving_average_rejects_bad_decay(decay):
    with pytest.raises(ValueError, match="moving_average: `decay`"):
        lt.baselines.moving_average(decay)


def test_none_baseline():
    b, state = lt.baselines.none().apply(jnp.array([1.0, 2.0]), lt.baselines.none().init(PARAMS))
    np.testing.assert_array_equal(b, 0.0)
    assert state == ()


# --- GRPO's group normalisation: biased, and its bias measured ----------------------------------------------------


def grpo_advantages(rewards, ddof=0):
    """Shao et al.'s GRPO advantage (r - mean r) / (std r + 1e-6) over a group (axis 0; population std, ddof = 0),
    in float64 numpy."""
    r = np.asarray(rewards, np.float64)
    return (r - r.mean(axis=0)) / (r.std(axis=0, ddof=ddof) + 1e-6)


def test_group_normalised_bias_is_measured():
    """Statistical: GRPO normalisation is biased: the test rejects it; its length and angle are off (printed); each
    estimate is (1/N) Σ_i A_i (b_i - σ(θ)) with the GRPO advantage A of its group written out in numpy."""
    est = lt.score_function(BERNOULLI_F, BERNOULLI, num_samples=4, baseline=lt.baselines.group_normalised())
    estimates, aux = draw(lambda k: est.estimate(LOGITS, (), k)[::2], 4, 3000)  # (grads, aux)
    exact = np.asarray(jax.grad(BERNOULLI_EXACT)(LOGITS))
    report = lt.testing.accuracy(estimates, exact)
    angle = np.degrees(np.arccos(report.cosine_of_mean))
    length = np.linalg.norm(np.asarray(estimates).mean(axis=0)) / np.linalg.norm(exact)
    print(f"GRPO: |mean| / |exact| = {length:.2f}, angle {angle:.0f} degrees, relative bias "
          f"{report.relative_bias:.2f}, max |z| {report.max_abs_z:.0f}")
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(estimates, exact)
    scores = np.asarray(aux["samples"], np.float64) - np.asarray(jax.nn.sigmoid(LOGITS), np.float64)
    by_hand = lambda ddof: np.mean(grpo_advantages(aux["f"].T, ddof).T[..., None] * scores, axis=1)
    np.testing.assert_allclose(estimates, by_hand(0), rtol=1e-4, atol=1e-5)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        np.testing.assert_allclose(estimates, by_hand(1), rtol=1e-4, atol=1e-5)


def test_group_normalised_values():
    """GRPO advantages of groups of 2, 3 and 8 rewards and of (5, 4) per-step returns, offsets up to 10³: the
    baseline's f - b, `normalise_group` and `lt.rl.group_normalised_advantages` equal the paper's formula in
    numpy; the sample std (ddof = 1) in its place would not; a group of equal values gives exactly 0."""
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=shape).astype(np.float32) + offset
              for shape, offset in (((2,), 0.0), ((3,), 5.0), ((8,), -40.0), ((5, 4), 1e3))]

    def check(reference):
        for values in groups:
            want = reference(values)
            np.testing.assert_allclose(lt.baselines.normalise_group(values), want, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(lt.rl.group_normalised_advantages(values), want, rtol=1e-4, atol=1e-4)
            if values.ndim == 1:
                b, _ = lt.baselines.group_normalised().apply(jnp.asarray(values), ())
                np.testing.assert_allclose(values - b, want, rtol=1e-4, atol=1e-4)

    check(grpo_advantages)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check(lambda values: grpo_advantages(values, ddof=1))
    b, _ = lt.baselines.group_normalised().apply(jnp.full(4, 3.7), ())
    np.testing.assert_array_equal(jnp.full(4, 3.7) - b, 0.0)
    with pytest.raises(ValueError, match="group_normalised: `eps`"):
        lt.baselines.group_normalised(-1.0)


# --- The optimal control variate ------------------------------------------------------------------------------------


def fixed_family(index, score):
    """Every draw is the fixed (index, score) pair; log p(x|θ) = θ·score, so the score of x is ``score``."""
    xs = (jnp.asarray(index), jnp.asarray(score, jnp.float32))
    return lt.Family(lambda params, key, n: xs, lambda params, x: jnp.sum(params * x[1]))


def control_variate(values, squared_scores, *, decay=0.0, state=None):
    """(c, the estimate, the new state) of one call on samples with the given f values and squared scores."""
    values, scores = jnp.asarray(values), jnp.sqrt(jnp.asarray(squared_scores, jnp.float32))
    est = lt.optimal_control_variate(lambda x: values[x[0]], fixed_family(jnp.arange(len(values)), scores),
                                     num_samples=len(values), decay=decay)
    params = jnp.zeros(scores.shape[1])
    state = est.init(params) if state is None else state
    grads, state, aux = jit(est.estimate)(params, state, jax.random.key(0))
    return aux["control_variate"], grads, state


def test_optimal_coefficients_leave_one_out_and_the_estimate():
    """c_i = Σ_{k≠i} f_k s_k² / Σ_{k≠i} s_k², and the gradient is (1/N) Σ_i (f_i - c_i) s_i."""
    values, s2 = np.array([1.0, 2.0, 6.0]), np.array([[1.0], [3.0], [0.0]])
    c, grads, _ = control_variate(values, s2)
    np.testing.assert_allclose(c[:, 0], [6.0 / 3.0, 1.0 / 1.0, 7.0 / 4.0], rtol=1e-6)
    np.testing.assert_allclose(grads, [np.mean((values - c[:, 0]) * np.sqrt(s2[:, 0]))], rtol=1e-5)
    # Sample 0's others have no score: the leave-one-out mean of f.
    c, _, _ = control_variate(values, [[1.0], [0.0], [0.0]])
    np.testing.assert_allclose(c[:, 0], [4.0, 1.0, 1.0], rtol=1e-6)


def test_optimal_from_two_samples_is_leave_one_out():
    """With N = 2 and nothing pooled, c_i = f_k s_k² / s_k² is the other sample's f, in every coordinate."""
    c, _, _ = control_variate([1.5, -2.0], [[0.3, 1.0, 2.0], [0.7, 0.1, 4.0]])
    np.testing.assert_allclose(c, np.broadcast_to([[-2.0], [1.5]], (2, 3)), rtol=1e-6)


def test_optimal_pools_previous_calls():
    """The decayed sums of earlier calls enter c; the current sample never enters its own c."""
    _, _, state = control_variate([1.0, 3.0], [[1.0], [1.0]], decay=0.5)
    np.testing.assert_allclose(state.numerator, [2.0])  # 0.5 * (1 + 3)
    np.testing.assert_allclose(state.denominator, [1.0])  # 0.5 * (1 + 1)
    c, _, _ = control_variate([10.0, 20.0], [[2.0], [1.0]], decay=0.5, state=state)
    # c_0 = (2 + 20 * 1) / (1 + 1); c_1 = (2 + 10 * 2) / (1 + 2).
    np.testing.assert_allclose(c[:, 0], [11.0, 22.0 / 3.0], rtol=1e-6)


CENTRED = {"loc": jnp.array([0.5, 0.5]), "log_scale": PARAMS["log_scale"]}


def optimal_and_leave_one_out(num_samples, decay, warm_up, num_estimates, seed):
    """Paired estimates at CENTRED: the optimal control variate after ``warm_up`` calls at the same params, and
    leave-one-out, both from the same final key."""
    optimal = lt.optimal_control_variate(SHIFTED, NORMAL, num_samples=num_samples, decay=decay)
    loo = lt.score_function(SHIFTED, NORMAL, num_samples=num_samples, baseline=lt.baselines.leave_one_out())

    def one(k):
        warm, k = jax.random.split(k)
        state = jax.lax.fori_loop(0, warm_up, lambda i, s: optimal.estimate(CENTRED, s, jax.random.fold_in(warm, i))[1],
                                  optimal.init(CENTRED))
        return optimal.estimate(CENTRED, state, k)[0], loo.estimate(CENTRED, (), k)[0]

    return draw(one, seed, num_estimates)


def test_optimal_pooled_unbiased_and_below_leave_one_out():
    """Statistical, paired: pooled over 20 calls (decay 0.9) at N = 16, the optimal control variate is unbiased and
    has at most 0.63 times leave-one-out's variance.

    At loc = 0.5, f = Σ (x - 0.5)² + 20 is even in the noise, where E[f s²] / E[s²]
    is far from E[f] (for one coordinate: 3σ² + 20 and 5σ² + 20 against σ² + 20).
    """
    optimal, loo = optimal_and_leave_one_out(16, 0.9, 20, 20000, 0)
    lt.testing.assert_unbiased(optimal, jax.grad(EXACT)(CENTRED))
    # Ratio 0.560 (median over 30 other seeds of 2·10⁴ estimates, range 0.546-0.579); 0.63 is the least c of
    # 0.01 steps at which all 30 give a paired z > 4.5.
    lt.testing.assert_variance_ratio(optimal, loo, at_most=0.63)


def test_optimal_default_from_the_batch_alone_below_leave_one_out():
    """Statistical, paired: with the default decay 0, from one batch of N = 64, the optimal control variate is
    unbiased and has at most 0.78 times leave-one-out's variance."""
    optimal, loo = optimal_and_leave_one_out(64, 0.0, 0, 20000, 1)
    lt.testing.assert_unbiased(optimal, jax.grad(EXACT)(CENTRED))
    # Ratio 0.694 (median over 30 other seeds of 2·10⁴ estimates, range 0.660-0.717); 0.78 is the least c of
    # 0.01 steps at which all 30 give a paired z > 4.5.
    lt.testing.assert_variance_ratio(optimal, loo, at_most=0.78)


def test_optimal_unbiased_on_bernoulli_logits():
    """Statistical: unbiased on 5 Bernoulli logits against enumeration, N = 4, from the batch alone."""
    est = lt.optimal_control_variate(BERNOULLI_F, BERNOULLI, num_samples=4)
    estimates = draw(lambda k: est.estimate(LOGITS, est.init(LOGITS), k)[0], 3, 2000)
    lt.testing.assert_unbiased(estimates, jax.grad(BERNOULLI_EXACT)(LOGITS))
