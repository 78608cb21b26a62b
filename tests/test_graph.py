"""Tests of lt.graph and lt.sites against exact expectations (enumeration, quadrature, dynamic programming).

The stochastic tests are statistical: each draws many independent jitted
estimates at a fixed key and checks them with lt.testing (unbiasedness, or
a variance ratio), at a false-rejection probability of at most 1e-3 each.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import logtrick as lt
from logtrick.rl import tabular

# Compiled to run once on small arrays: LLVM's optimisations would cost more than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
LOO = lt.baselines.leave_one_out()
bern, cat = lt.families.bernoulli(), lt.families.categorical()


def _estimates(est, params, num_estimates, *args, seed=0):
    """``num_estimates`` independent gradient estimates of ``est`` (vmapped over keys, one compile)."""
    keys = jax.random.split(jax.random.key(seed), num_estimates)
    state = est.init(params)
    return jit(jax.vmap(lambda k: est.estimate(params, state, k, *args)[0]))(keys)


# --- a chain a -> b -> c and a fan-out a -> (b, c) of categorical sites, a cost at every node -------------------

K = 3
CHAIN_PARAMS = {"a": jnp.array([0.2, -0.4, 0.1]),
                "b": jnp.array([[0.5, -0.2, 0.0], [0.1, 0.3, -0.6], [-0.3, 0.2, 0.4]]),
                "c": jnp.array([[0.0, 0.7, -0.1], [0.4, -0.5, 0.2], [0.3, 0.1, -0.2]])}
R_A, R_B, R_C = jnp.array([1.0, -2.0, 0.5]), jnp.arange(9.0).reshape(3, 3) / 4, jnp.cos(jnp.arange(9.0)).reshape(3, 3)


def chain(params, key, sample):
    ka, kb, kc = jax.random.split(key, 3)
    a = sample("a", cat, params["a"], ka)
    b = sample("b", cat, params["b"][a], kb)
    c = sample("c", cat, params["c"][b], kc)
    return {"a": R_A[a], "b": R_B[a, b], "c": R_C[b, c]}


def fan_out(params, key, sample):
    ka, kb, kc = jax.random.split(key, 3)
    a = sample("a", cat, params["a"], ka)
    b = sample("b", cat, params["b"][a], kb)
    c = sample("c", cat, params["c"][a], kc)
    return {"a": R_A[a], "b": R_B[a, b], "c": R_C[a, c]}


def chain_exact(params):
    pa, pb, pc = (jax.nn.softmax(params[k]) for k in "abc")
    return pa @ (R_A + jnp.sum(pb * (R_B + jnp.sum(pc * R_C, axis=1)), axis=1))


def fan_out_exact(params):
    pa, pb, pc = (jax.nn.softmax(params[k]) for k in "abc")
    return pa @ (R_A + jnp.sum(pb * R_B, axis=1) + jnp.sum(pc * R_C, axis=1))


def summed(model):
    """The same program with its costs added into one: every site is credited with everything it reaches."""
    return lambda params, key, sample: sum(jax.tree_util.tree_leaves(model(params, key, sample)))


@pytest.mark.parametrize("model, exact", [(chain, chain_exact), (fan_out, fan_out_exact)], ids=["chain", "fan_out"])
def test_discrete_graphs_are_unbiased_and_credit_per_node(model, exact):
    """Unbiased against enumeration, and per-node costs have less variance than their sum (same keys): fails if
    the credit were biased, or if a node's score were weighted by costs upstream of it."""
    sites = {"b": lt.sites.score_function(baseline=LOO)}
    per_node = lt.graph(model, num_samples=4, sites=sites)
    whole = lt.graph(summed(model), num_samples=4, sites=sites)
    keys = jax.random.split(jax.random.key(0), 3000)
    both = jit(jax.vmap(lambda k: (per_node.estimate(CHAIN_PARAMS, per_node.init(CHAIN_PARAMS), k)[0],
                                   whole.estimate(CHAIN_PARAMS, whole.init(CHAIN_PARAMS), k)[0])))(keys)
    expected = jax.grad(exact)(CHAIN_PARAMS)
    assert lt.testing.check_unbiased(both[0], expected).verdict == "consistent"
    assert lt.testing.check_unbiased(both[1], expected).verdict == "consistent"
    lt.testing.assert_variance_ratio(both[0], both[1], at_most=1.0)
    with pytest.raises(AssertionError):
        lt.testing.assert_unbiased(jax.tree_util.tree_map(lambda e: e * 1.05, both[0]), expected)


# --- a plate of 64 Bernoulli latents with per-latent costs --------------------------------------------------------

D = 64
PLATE_LOGITS = jax.random.normal(jax.random.key(1), (D,))
PLATE_DATA = jax.random.normal(jax.random.key(2), (D,)) + 0.5


def plate_costs(z, logits, x):
    """log p(x_d, z_d) - log q(z_d | θ_d), per latent (−log q differentiated: its pathwise term too)."""
    return stats.norm.logpdf(x, 2 * z - 1, 1.0) + jnp.log(0.5) - bern.log_prob_elements(logits, z)


def plate(logits, key, sample, x):
    z = sample("z", bern, logits, key)
    return plate_costs(z, logits, x)


def test_plate_credit_is_per_latent():
    """The graph's variance equals that of the per-latent estimator vmapped over the plate (the credit is found),
    and the same program with summed costs is rejected by the same check (whole-plate credit)."""
    num_samples, m = 8, 1000
    graph = lt.graph(plate, num_samples=num_samples, sites={"z": lt.sites.score_function(baseline=LOO)})
    whole = lt.graph(lambda p, k, s, x: jnp.sum(plate(p, k, s, x)), num_samples=num_samples,
                     sites={"z": lt.sites.score_function(baseline=LOO)})
    latent = lt.score_function(lambda z, logit, x: plate_costs(z, logit, x), bern, num_samples=num_samples,
                               baseline=LOO)

    def per_latent(key):
        """The total derivative of each latent's loss: its score part and −log q's pathwise part."""
        total = jax.grad(lambda logit, k, x: latent.loss(logit, (), k, logit, x)[0])
        return jax.vmap(total)(PLATE_LOGITS, jax.random.split(key, D), PLATE_DATA)

    keys = jax.random.split(jax.random.key(3), m)
    state = graph.init(PLATE_LOGITS)
    g, w, p = jit(jax.vmap(lambda k: (graph.estimate(PLATE_LOGITS, state, k, PLATE_DATA)[0],
                                      whole.estimate(PLATE_LOGITS, state, k, PLATE_DATA)[0], per_latent(k))))(keys)
    expected = jax.grad(lambda t: jnp.sum(sum(jnp.exp(bern.log_prob_elements(t, z)) * plate_costs(z, t, PLATE_DATA)
                                              for z in (jnp.zeros(D), jnp.ones(D)))))(PLATE_LOGITS)
    assert lt.testing.check_unbiased(g, expected).verdict == "consistent"
    lt.testing.assert_variance_ratio(g, p, at_most=1.1)
    lt.testing.assert_variance_ratio(p, g, at_most=1.1)
    with pytest.raises(AssertionError, match="ratio"):
        lt.testing.assert_variance_ratio(w, p, at_most=1.1)


# --- a tabular MDP as a lax.scan program ---------------------------------------------------------------------------

HORIZON, GAMMA = 5, 0.9
MDP = tabular.random_mdp(jax.random.key(4), num_states=4, num_actions=3)
MDP_LOGITS = jax.random.normal(jax.random.key(5), (4, 3))


def episode(logits, key, sample):
    """One episode: the actions are a site drawn per step; the environment's draws are plain jax.random."""
    k0, k_steps = jax.random.split(key)

    def step(s, k):
        ka, ks = jax.random.split(k)
        a = sample("action", cat, logits[s], ka)
        return jax.random.categorical(ks, jnp.log(MDP.transitions[s, a])), MDP.rewards[s, a]

    s0 = jax.random.categorical(k0, jnp.log(MDP.initial))
    _, rewards = jax.lax.scan(step, s0, jax.random.split(k_steps, HORIZON))
    return rewards * GAMMA ** jnp.arange(HORIZON)


def test_scan_policy_gradient_is_reward_to_go():
    """Unbiased against the dynamic-programming return, and the variance of RLOO with reward-to-go (per-step
    credit found through the carry), which the whole-return estimator exceeds (the same check rejects it)."""
    num_episodes, m = 8, 2000
    graph = lt.graph(episode, num_samples=num_episodes, sites={"action": lt.sites.score_function(baseline=LOO)})
    keys = jax.random.split(jax.random.key(6), m)
    kwargs = dict(horizon=HORIZON, gamma=GAMMA, num_episodes=num_episodes, baseline="leave_one_out")
    g, rtg, whole = jit(jax.vmap(lambda k: (
        graph.estimate(MDP_LOGITS, graph.init(MDP_LOGITS), k)[0],
        tabular.policy_gradient(MDP, MDP_LOGITS, k, reward_to_go=True, **kwargs),
        tabular.policy_gradient(MDP, MDP_LOGITS, k, reward_to_go=False, **kwargs))))(keys)
    expected = jax.grad(tabular.exact_return, argnums=1)(MDP, MDP_LOGITS, horizon=HORIZON, gamma=GAMMA)
    assert lt.testing.check_unbiased(g, expected).verdict == "consistent"
    lt.testing.assert_variance_ratio(g, rtg, at_most=1.15)
    lt.testing.assert_variance_ratio(rtg, g, at_most=1.15)
    with pytest.raises(AssertionError, match="ratio"):
        lt.testing.assert_variance_ratio(whole, g, at_most=1.15)


# --- a two-layer sigmoid belief net, DisARM on one layer and score function on the other ------------------------

SBN_PARAMS = {"a": jnp.array([0.3, -0.5, 0.8]), "W": jnp.array([[0.5, -1.0, 0.3], [1.2, 0.4, -0.7]]),
              "c": jnp.array([0.1, -0.2])}
SBN_TARGET = jnp.array([1.0, 0.0])


def sbn(params, key, sample):
    k1, k2 = jax.random.split(key)
    z1 = sample("z1", bern, params["a"], k1)
    z2 = sample("z2", bern, params["W"] @ z1 + params["c"], k2)
    return {"z1": jnp.sum(z1 * jnp.array([1.0, -0.5, 2.0])), "z2": jnp.sum((z2 - SBN_TARGET) ** 2) * (1 + z1[0])}


def sbn_exact(params):
    s1, s2 = lt.exact.bernoulli_support(3), lt.exact.bernoulli_support(2)

    def given(z1):
        p2 = jnp.exp(jax.vmap(lambda z2: bern.log_prob(params["W"] @ z1 + params["c"], z2))(s2))
        return jnp.sum(z1 * jnp.array([1.0, -0.5, 2.0])) + p2 @ (jnp.sum((s2 - SBN_TARGET) ** 2, axis=1) * (1 + z1[0]))

    return jnp.exp(jax.vmap(lambda z1: bern.log_prob(params["a"], z1))(s1)) @ jax.vmap(given)(s1)


@pytest.mark.parametrize("sites", [{"z1": lt.sites.disarm(), "z2": lt.sites.score_function(baseline=LOO)},
                                   {"z1": lt.sites.score_function(baseline=LOO), "z2": lt.sites.disarm()},
                                   {"z1": lt.sites.disarm(), "z2": lt.sites.disarm()}],
                         ids=["disarm_loo", "loo_disarm", "disarm_disarm"])
def test_sigmoid_belief_net_per_layer_estimators(sites):
    """Unbiased against enumeration with DisARM on one or both layers (antithetic particle groups) and
    leave-one-out on the other; the same estimates scaled by 1.05 are rejected by the same check."""
    est = lt.graph(sbn, num_samples=8, sites=sites)
    g = _estimates(est, SBN_PARAMS, 3000)
    expected = jax.grad(sbn_exact)(SBN_PARAMS)
    assert lt.testing.check_unbiased(g, expected).verdict == "consistent"
    with pytest.raises(AssertionError):
        lt.testing.assert_unbiased(jax.tree_util.tree_map(lambda e: e * 1.05, g), expected)


# --- a pathwise Gaussian site feeding a score-function Bernoulli site --------------------------------------------

MIXED_PARAMS = {"loc": jnp.array(0.3), "log_scale": jnp.array(-0.4), "v": jnp.array(1.5)}


def mixed(params, key, sample, w):
    kx, kb = jax.random.split(key)
    x = sample("x", lt.families.normal(), {"loc": params["loc"], "log_scale": params["log_scale"]}, kx)
    b = sample("b", bern, params["v"] * x, kb)
    return {"x": (x - w) ** 2, "b": b * (1 + jnp.sin(3 * x))}


def mixed_exact(params, w):
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    x = params["loc"] + jnp.exp(params["log_scale"]) * nodes
    g = (x - w) ** 2 + jax.nn.sigmoid(params["v"] * x) * (1 + jnp.sin(3 * x))
    return jnp.dot(weights, g) / np.sqrt(2 * np.pi)


def test_pathwise_gaussian_feeding_score_function_bernoulli():
    """Unbiased against Gauss-Hermite quadrature in the site params and in the costs' own argument w; dropping
    the Bernoulli's score (its site made pathwise, which a step function does not allow) is rejected in the
    Gaussian's params, which reach that score through x."""
    w = jnp.array(0.5)
    right = lt.graph(mixed, num_samples=4, sites={"x": lt.sites.pathwise(), "b": lt.sites.score_function(LOO)})
    wrong = lt.graph(mixed, num_samples=4, sites={"x": lt.sites.pathwise(), "b": lt.sites.pathwise()})
    keys = jax.random.split(jax.random.key(7), 3000)
    total = lambda est: lambda k: jax.grad(lambda p, w: est.loss(p, est.init(p), k, w)[0], argnums=(0, 1))(
        MIXED_PARAMS, w)
    g, bad = jit(jax.vmap(lambda k: (total(right)(k), total(wrong)(k))))(keys)
    expected = jax.grad(mixed_exact, argnums=(0, 1))(MIXED_PARAMS, w)
    assert lt.testing.check_unbiased(g, expected).verdict == "consistent"
    gaussian = lambda tree: {k: tree[0][k] for k in ("loc", "log_scale")}
    assert lt.testing.check_unbiased(gaussian(bad), gaussian(expected)).verdict == "biased"


# --- an enumerated site between two sampled ones, and the Hessian ------------------------------------------------

ENUM_PARAMS = {"s": jnp.array([0.4, -0.3]), "e": jnp.array([[0.2, -0.1, 0.5], [-0.6, 0.3, 0.0]]),
               "t": jnp.array([[0.7, -0.2], [0.0, 0.4], [-0.5, 0.1]])}
R_S, R_E = jnp.array([0.5, -1.0]), jnp.array([[1.0, 0.0, 2.0], [-1.0, 1.5, 0.5]])
R_T = jnp.array([[2.0, -1.0], [0.5, 1.0], [-2.0, 0.3]])


def enum_chain(params, key, sample):
    k1, k2, k3 = jax.random.split(key, 3)
    s = sample("s", cat, params["s"], k1)
    e = sample("e", cat, params["e"][s], k2)
    t = sample("t", cat, params["t"][e], k3)
    return {"s": R_S[s], "e": R_E[s, e], "t": R_T[e, t]}


def enum_chain_exact(params):
    ps, pe, pt = (jax.nn.softmax(params[k]) for k in "set")
    return ps @ (R_S + jnp.sum(pe * (R_E + (pt * R_T).sum(1)), axis=1))


ENUM_SITES = {"s": lt.sites.score_function(baseline=LOO), "e": lt.sites.enumerate(jnp.arange(3)),
              "t": lt.sites.score_function(baseline=LOO)}


def test_enumerated_site_between_sampled_sites():
    """Unbiased against enumeration with the middle site summed exactly and leave-one-out on the sites upstream
    and downstream of it; with every site enumerated the estimate is the exact gradient."""
    g = _estimates(lt.graph(enum_chain, num_samples=4, sites=ENUM_SITES), ENUM_PARAMS, 3000)
    expected = jax.grad(enum_chain_exact)(ENUM_PARAMS)
    assert lt.testing.check_unbiased(g, expected).verdict == "consistent"
    exact_e = _estimates(lt.graph(enum_chain, num_samples=4, sites={**ENUM_SITES, "s": lt.sites.enumerate(
        jnp.arange(2)), "t": lt.sites.enumerate(jnp.arange(2))}), ENUM_PARAMS, 2)
    for name in ENUM_PARAMS:
        np.testing.assert_allclose(exact_e[name][0], expected[name], rtol=1e-5, atol=1e-6)


def test_hessian_of_two_site_model():
    """jax.hessian of the loss (leave-one-out baselines: Loaded DiCE) is unbiased for the exact Hessian; the same
    estimates with the cross block between the two sites halved are rejected."""
    params = {"a": CHAIN_PARAMS["a"], "b": CHAIN_PARAMS["b"]}

    def two(params, key, sample):
        ka, kb = jax.random.split(key)
        a = sample("a", cat, params["a"], ka)
        b = sample("b", cat, params["b"][a], kb)
        return {"a": R_A[a], "b": R_B[a, b]}

    def exact(params):
        pa, pb = jax.nn.softmax(params["a"]), jax.nn.softmax(params["b"])
        return pa @ (R_A + jnp.sum(pb * R_B, axis=1))

    est = lt.graph(two, num_samples=4, sites={"a": lt.sites.score_function(LOO), "b": lt.sites.score_function(LOO)})
    keys = jax.random.split(jax.random.key(8), 4000)
    h = jit(jax.vmap(lambda k: jax.hessian(lambda p: est.loss(p, est.init(p), k)[0])(params)))(keys)
    expected = jax.hessian(exact)(params)
    assert lt.testing.check_unbiased(h, expected).verdict == "consistent"
    halved = {**h, "a": {**h["a"], "b": h["a"]["b"] / 2}}
    assert lt.testing.check_unbiased(halved, expected).verdict == "biased"


# --- composition: per-datapoint vmap, state through an outer jax.grad ------------------------------------------

def test_loss_composes_under_vmap_and_grad_with_state():
    """The loss vmapped over datapoints equals the per-datapoint calls, and a moving-average baseline's state
    comes back through value_and_grad(has_aux=True), updated once per call."""
    est = lt.graph(plate, num_samples=4, sites={"z": lt.sites.score_function(lt.baselines.moving_average(0.5))})
    logits, xs = PLATE_LOGITS[:5], jnp.stack([PLATE_DATA[:5], PLATE_DATA[5:10]])
    keys = jax.random.split(jax.random.key(9), 2)
    state = est.init(logits)

    def batch_loss(logits, state):
        values, (states, _) = jax.vmap(est.loss, in_axes=(None, None, 0, 0))(logits, state, keys, xs)
        return jnp.mean(values), states

    (value, states), grads = jit(jax.value_and_grad(batch_loss, has_aux=True))(logits, state)
    singles = [jit(est.loss)(logits, state, k, x) for k, x in zip(keys, xs)]
    np.testing.assert_allclose(value, np.mean([v for v, _ in singles]), rtol=1e-6)
    np.testing.assert_allclose(states["z"].count, [1, 1])
    np.testing.assert_allclose(states["z"].average, [s["z"].average for _, (s, _) in singles], rtol=1e-6)
    assert grads.shape == logits.shape and np.all(np.isfinite(grads))


# --- bad input names the site --------------------------------------------------------------------------------------

def _loss_shape(model, sites=None, params=jnp.zeros(3)):
    est = lt.graph(model, num_samples=4, sites=sites)
    return jax.eval_shape(est.loss, params, est.init(params), jax.random.key(0))


def test_errors_name_the_site():
    """Each mistake raises at trace time with a message naming the site (or cost) and what to do."""
    def twice(p, k, sample):
        return jnp.sum(sample("z", bern, p, k)) + jnp.sum(sample("z", bern, p, k))

    with pytest.raises(ValueError, match="'z' is drawn more than once"):
        _loss_shape(twice)
    with pytest.raises(ValueError, match="names 'zz', which the program never draws; it draws \\['z'\\]"):
        _loss_shape(lambda p, k, sample: jnp.sum(sample("z", bern, p, k)), {"zz": lt.sites.pathwise()})
    with pytest.raises(TypeError, match=r"cost\['n'\] has dtype int32 \(cast it to float\)"):
        _loss_shape(lambda p, k, sample: {"n": jnp.sum(sample("z", bern, p, k)).astype(jnp.int32)})
    with pytest.raises(TypeError, match="cost has dtype complex64"):
        _loss_shape(lambda p, k, sample: jnp.sum(sample("z", bern, p, k)) * 1j)
    unsummed = bern._replace(log_prob=bern.log_prob_elements)
    with pytest.raises(ValueError, match="site 'z': `family.log_prob` must return a scalar per draw, got shape"):
        _loss_shape(lambda p, k, sample: jnp.sum(sample("z", unsummed, p, k)))
    with pytest.raises(ValueError, match="site 'z' is drawn inside jax.vmap"):
        _loss_shape(lambda p, k, sample: jnp.sum(jax.vmap(lambda l, kk: sample("z", bern, l, kk))(
            p, jax.random.split(k, 3))))
    with pytest.raises(ValueError, match="site 'z' is drawn inside `cond`"):
        _loss_shape(lambda p, k, sample: jax.lax.cond(p[0] > 0, lambda: jnp.sum(sample("z", bern, p, k)),
                                                      lambda: 0.0))
    with pytest.raises(ValueError, match="site 'z' is lt.sites.disarm\\(\\), which serves a lt.families.bernoulli"):
        _loss_shape(lambda p, k, sample: sample("z", lt.families.normal(), {"loc": p, "log_scale": p}, k).sum(),
                    {"z": lt.sites.disarm()})
    with pytest.raises(ValueError, match=r"site 'c' is lt.sites.pathwise\(\), but its family draws integers"):
        _loss_shape(lambda p, k, sample: sample("c", cat, p, k).astype(jnp.float32), {"c": lt.sites.pathwise()})
    with pytest.raises(ValueError, match="multiple of 2"):
        lt.graph(twice, num_samples=3, sites={"z": lt.sites.disarm()})


def test_nested_scan_program_is_credited_per_step_and_unbiased():
    """A site drawn in a scan inside a scan: cost ys[t, s] is credited to a[t, s] and to every a of earlier outer
    steps only, and the estimate is unbiased against the closed form E = 21 σ(p) (the log-probabilities collected
    from the nested scans line up with that credit)."""
    def nested(p, key, sample):
        def outer(c, k):
            def inner(c2, kk):
                a = sample("a", bern, p, kk)
                return c2 + a, 2.0 * a
            c2, ys = jax.lax.scan(inner, 0.0, jax.random.split(k, 3))
            return c + c2, ys + c
        return jax.lax.scan(outer, 0.0, jax.random.split(key, 2))[1]

    graph_module = importlib.import_module("logtrick.graph")
    program = lambda p, key: nested(p, key, graph_module._make_sample({}, {}, {}))
    closed = jax.make_jaxpr(program)(jnp.array(0.0), jax.random.key(0))
    eye, ones = np.eye(3, dtype=bool), np.ones((3, 3), bool)
    np.testing.assert_array_equal(graph_module._credit(closed.jaxpr, len(closed.jaxpr.invars)).matrix > 0,
                                  np.block([[eye, ~ones], [ones, eye]]))
    p = jnp.array(0.3)
    g = _estimates(lt.graph(nested, num_samples=4, sites={"a": lt.sites.score_function(LOO)}), p, 3000)
    expected = jax.grad(lambda p: 21 * jax.nn.sigmoid(p))(p)
    assert lt.testing.check_unbiased(g, expected).verdict == "consistent"
    assert lt.testing.check_unbiased(g * 1.05, expected).verdict == "biased"
