"""lt.qmc.sobol and sampler="rqmc": nets, exact marginals, unbiased estimators, and their faster convergence.

The stochastic tests are statistical (fixed keys, `lt.testing.assert_unbiased`
at α = 1e-3 against exact gradients). The convergence tests measure slopes of
log MSE against log N over independent randomisations, with margins many
standard errors wide; `experiments/qmc.py` measures them in full.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
NORMAL = lt.families.normal()
GAUSS = {"loc": jnp.array([0.3, -0.5]), "log_scale": jnp.array([-0.2, 0.1])}
K = jnp.array([1.5, 0.7])


def smooth(x):
    return jnp.sum(jnp.cos(K * x)) + x[0] * x[1]


def smooth_exact(params):
    loc, scale = params["loc"], jnp.exp(params["log_scale"])
    return jnp.sum(jnp.exp(-0.5 * (K * scale) ** 2) * jnp.cos(K * loc)) + loc[0] * loc[1]


@pytest.mark.parametrize("dims", [(0, 1), (2, 5)])
def test_points_form_a_net(dims):
    """Every randomisation of 2^8 points puts one point in each elementary box of area 2^-8 of the 2-D projection
    on dimensions (0, 1) (t = 0), and at most 2^t in those of dimensions (2, 5) (t ≤ 2), for every split."""
    u = np.asarray(lt.qmc.sobol(jax.random.key(3), 256, 6))[:, dims]
    counts = []
    for k1 in range(9):
        cells = np.floor(u[:, 0] * 2**k1) * 2 ** (8 - k1) + np.floor(u[:, 1] * 2 ** (8 - k1))
        counts.append(np.bincount(cells.astype(int), minlength=256).max())
    assert max(counts) <= (1 if dims == (0, 1) else 4), counts
    assert 0.0 < u.min() and u.max() < 1.0


def test_each_point_is_uniform_and_offsets_continue_the_net():
    """Statistical: over 2000 randomisations, points 0, 5 and 100 of a 6-D net have the moments of U(0, 1);
    the points of one randomisation made in two pieces (static and traced offsets) are those made at once."""
    points = jit(jax.vmap(lambda k: lt.qmc.sobol(k, 128, 6)[jnp.array([0, 5, 100])]))(
        jax.random.split(jax.random.key(0), 2000))
    lt.testing.assert_unbiased({"u": points, "u2": points**2},
                               {"u": jnp.full((3, 6), 0.5), "u2": jnp.full((3, 6), 1 / 3)})
    key = jax.random.key(1)
    whole = lt.qmc.sobol(key, 24, 3)
    np.testing.assert_array_equal(lt.qmc.sobol(key, 8, 3, offset=16), whole[16:])
    np.testing.assert_array_equal(jax.jit(lambda o: lt.qmc.sobol(key, 8, 3, offset=o))(8), whole[8:16])


def test_rqmc_estimators_are_unbiased():
    """Statistical: score function with leave-one-out across 4 randomisations (chunked too), pathwise, and the
    score function on Bernoulli and categorical samples (inverse CDFs), against exact gradients."""
    loo = lt.baselines.leave_one_out()
    ests = {
        "score, leave-one-out": lt.score_function(smooth, NORMAL, num_samples=32, baseline=loo, sampler="rqmc",
                                                  num_randomisations=4),
        "score, leave-one-out, chunked": lt.score_function(smooth, NORMAL, num_samples=32, baseline=loo,
                                                           sampler="rqmc", num_randomisations=4, chunk_size=4),
        "pathwise": lt.pathwise(smooth, NORMAL, num_samples=16, sampler="rqmc"),
    }
    bits = lambda b: (b[0] + 2.0 * b[1] - b[2]) ** 2  # noqa: E731
    logits, classes = jnp.array([0.4, -1.0, 1.5]), jnp.array([[0.5, -1.0, 0.0, 1.0, 0.2], [0.0, 0.3, -0.4, 2.0, 1.0]])
    table = jnp.arange(10.0).reshape(2, 5) ** 1.5
    cat = lambda x: table[0, x[0]] * table[1, x[1]]  # noqa: E731
    discrete = {"bernoulli": lt.score_function(bits, lt.families.bernoulli(), num_samples=16, sampler="rqmc"),
                "categorical": lt.score_function(cat, lt.families.categorical(), num_samples=16, sampler="rqmc")}

    def one(key):
        out = {name: est.estimate(GAUSS, est.init(GAUSS), key)[0] for name, est in ests.items()}
        out["bernoulli"] = discrete["bernoulli"].estimate(logits, (), key)[0]
        out["categorical"] = discrete["categorical"].estimate(classes, (), key)[0]
        return out

    estimates = jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 400))
    exact = {name: jax.grad(smooth_exact)(GAUSS) for name in ests}
    exact["bernoulli"] = jax.grad(lt.exact.expectation(bits, lt.families.bernoulli(), lt.exact.bernoulli_support(3)))(
        logits)
    exact["categorical"] = jax.grad(lt.exact.expectation(cat, lt.families.categorical(),
                                                         lt.exact.categorical_support(5, 2)))(classes)
    lt.testing.assert_unbiased(estimates, exact)


def squared_errors(make, exact, sizes, num_randomisations):
    """Squared errors ‖ĝ − ∇J‖² of estimators make(N), shape (len(sizes), num_randomisations)."""
    flat_exact = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(exact)])

    def at(n):
        est = make(n)

        def error(key):
            grads = est.estimate(GAUSS, (), key)[0]
            flat = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(grads)])
            return jnp.sum((flat - flat_exact) ** 2)

        return jax.vmap(error)(jax.random.split(jax.random.key(n), num_randomisations))

    return np.asarray(jit(lambda: jnp.stack([at(n) for n in sizes]))())


def test_mse_falls_faster_than_one_over_n_on_a_smooth_problem():
    """Statistical: pathwise on the smooth problem, N = 16 ... 1024, 64 randomisations each: the fitted slope of
    log MSE against log N is below -1.5 under RQMC (about -1 under Monte Carlo)."""
    sizes = [16, 64, 256, 1024]
    slopes = {}
    for sampler in ("mc", "rqmc"):
        errors = squared_errors(lambda n: lt.pathwise(smooth, NORMAL, num_samples=n, sampler=sampler),
                                jax.grad(smooth_exact)(GAUSS), sizes, 64)
        slopes[sampler] = np.polyfit(np.log(sizes), np.log(errors.mean(axis=1)), 1)[0]
    assert slopes["rqmc"] < -1.5 and -1.3 < slopes["mc"] < -0.7, slopes


def test_no_worse_than_monte_carlo_on_a_discontinuous_problem():
    """Statistical: the score function of E[1(x_0 > 0.2) + 1(x_1 > -0.4)], N = 128, 400 randomisations: the RQMC
    mean squared error is below 1.3 × Monte Carlo's (each mean has a relative standard error near 0.07)."""
    step = lambda x: (x[0] > 0.2) + (x[1] > -0.4)  # noqa: E731
    exact = jax.grad(lambda p: jnp.sum(jax.scipy.stats.norm.sf(jnp.array([0.2, -0.4]), p["loc"],
                                                                jnp.exp(p["log_scale"]))))(GAUSS)
    mse = {sampler: squared_errors(lambda n: lt.score_function(step, NORMAL, num_samples=n, sampler=sampler),
                                   exact, [128], 400).mean() for sampler in ("mc", "rqmc")}
    assert mse["rqmc"] < 1.3 * mse["mc"], mse


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="score_function: under sampler='rqmc' .* set `num_randomisations` >= 2"):
        lt.score_function(smooth, NORMAL, num_samples=8, sampler="rqmc", baseline=lt.baselines.leave_one_out())
    with pytest.raises(ValueError, match="score_function: `num_randomisations` .* 1 unless sampler='rqmc'"):
        lt.score_function(smooth, NORMAL, num_samples=8, num_randomisations=2)
    with pytest.raises(ValueError, match="score_function: `num_samples` must be a multiple of num_randomisations=3"):
        lt.score_function(smooth, NORMAL, num_samples=8, sampler="rqmc", num_randomisations=3)
    with pytest.raises(ValueError, match="score_function: under sampler='rqmc' a chunk lies within one randomisation"):
        lt.score_function(smooth, NORMAL, num_samples=8, sampler="rqmc", num_randomisations=4, chunk_size=4)
    with pytest.raises(ValueError, match="score_function: antithetic=True and sampler='rqmc'"):
        lt.score_function(smooth, NORMAL, num_samples=8, sampler="rqmc", antithetic=True)
    no_inverse = lt.Family(NORMAL.sample, NORMAL.log_prob)
    with pytest.raises(ValueError, match="score_function: sampler='rqmc' needs a family with `inverse_cdf`"):
        lt.score_function(smooth, no_inverse, num_samples=8, sampler="rqmc")
    with pytest.raises(ValueError, match="pathwise: sampler='rqmc' transforms uniforms, so `rsample` must be a Family"):
        lt.pathwise(smooth, NORMAL.sample, num_samples=8, sampler="rqmc")
    with pytest.raises(ValueError, match="sobol: `dim` must be an int in"):
        lt.qmc.sobol(jax.random.key(0), 8, 30000)
    with pytest.raises(ValueError, match="sobol: `offset` \\+ `num_points` must be at most 2\\^32"):
        lt.qmc.sobol(jax.random.key(0), 8, 2, offset=2**32 - 4)
