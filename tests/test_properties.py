"""Property-based tests of the estimator contract across shapes, dtypes and pytrees of params and samples.

Hypothesis draws shapes from a small set so that compiled functions are reused, and runs a few derandomised
examples per property by default; ``pytest -m slow_properties`` runs the same properties on many more examples.
Malformed input is checked by tracing only (``jax.eval_shape``). The unbiasedness property is statistical: many
independent estimates and `lt.testing.assert_unbiased` against the gradient of an enumeration.
"""

import functools
import itertools
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

import logtrick as lt

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
# No shrinking: every new shape is a compile, and a failing example is small already.
FEW = settings(max_examples=2, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate))
MANY = settings(FEW, max_examples=100)


def properties(few=FEW, examples=(), **strategies):
    """The property as two tests: ``few`` examples by default, 100 under ``-m slow_properties``; both also run
    the explicit ``examples`` (dicts of arguments)."""

    def with_examples(prop):
        test = given(**strategies)(prop)
        for kwargs in examples:
            test = example(**kwargs)(test)
        return test

    return lambda prop: (few(with_examples(prop)), pytest.mark.slow_properties(MANY(with_examples(prop))))


NORMAL, BERNOULLI, CATEGORICAL, POISSON = (lt.families.normal(), lt.families.bernoulli(), lt.families.categorical(),
                                           lt.families.poisson())
SHAPES = st.sampled_from([(), (1,), (3,), (2, 2)])
DTYPES = st.sampled_from(["float32", "float64", "bfloat16"])
SEEDS = st.integers(0, 2**31 - 1)
NUM_CLASSES, NUM_SAMPLES = 3, 4


def product(**families):
    """Independent families as one: params and samples are dicts of theirs; antithetic if all of them are."""

    def sampler(method):
        def sample(params, key, n):
            keys = jax.random.split(key, len(families))
            return {name: getattr(fam, method)(params[name], k, n) for (name, fam), k in zip(families.items(), keys)}

        return sample

    def log_prob(params, x):
        return sum(fam.log_prob(params[name], x[name]) for name, fam in families.items())

    antithetic = all(fam.antithetic_sample for fam in families.values())
    return lt.Family(sampler("sample"), log_prob, sampler("antithetic_sample") if antithetic else None)


BITS_AND_COUNTS, TWO_NORMALS = product(bits=BERNOULLI, counts=POISSON), product(a=NORMAL, b=NORMAL)
BITS_AND_REALS = product(bits=BERNOULLI, reals=NORMAL)


def f(x, w, bad):
    """Σ over the sample's leaves of Σ tanh(w x - 0.3), plus ``bad``: bounded, differentiable in x, w and bad."""
    return sum(jnp.sum(jnp.tanh(w["scale"] * leaf - 0.3)) for leaf in jax.tree_util.tree_leaves(x)) + bad


def logits(rng, shape, dtype):
    return jnp.asarray(0.5 * rng.standard_normal(shape), dtype)


def normal_params(rng, shape, dtype):
    return {"loc": logits(rng, shape, dtype), "log_scale": logits(rng, shape, dtype)}


# params kind: (rng, shape, dtype) -> params
PARAMS = {
    "normal": normal_params,
    "logits": logits,
    "categorical": lambda rng, shape, dtype: logits(rng, shape + (NUM_CLASSES,), dtype),
    "bits_and_counts": lambda rng, shape, dtype: {"bits": logits(rng, shape, dtype),
                                                  "counts": logits(rng, shape, dtype)},
    "two_normals": lambda rng, shape, dtype: {"a": normal_params(rng, shape, dtype),
                                              "b": normal_params(rng, shape, dtype)},
    "bits_and_reals": lambda rng, shape, dtype: {"bits": logits(rng, shape, dtype),
                                                 "reals": normal_params(rng, shape, dtype)},
}


def bernoulli_support(shape):
    return lt.exact.bernoulli_support(max(1, int(np.prod(shape, dtype=int)))).reshape((-1,) + shape)


@functools.cache
def exact_bernoulli(shape):
    return lt.exact.estimator(f, BERNOULLI, bernoulli_support(shape))


def fixed(est):
    return lambda shape: est


LOO, AVERAGE = lt.baselines.leave_one_out(), lt.baselines.moving_average(0.9)
SF = functools.partial(lt.score_function, f, num_samples=NUM_SAMPLES)
# name: (params kind, shape -> estimator of E[f], the estimator's name in its errors); ``loss`` and ``estimate``
# take f's (w, bad) as args. The first, each property's first example, is stateful and continuous.
CASES = {
    "score_function normal moving_average": ("normal", fixed(SF(NORMAL, baseline=AVERAGE)), "score_function"),
    "score_function categorical": ("categorical", fixed(SF(CATEGORICAL)), "score_function"),
    "score_function normal antithetic leave_one_out": (
        "normal", fixed(SF(NORMAL, antithetic=True, baseline=LOO)), "score_function"),
    "score_function bernoulli chunked moving_average": (
        "logits", fixed(SF(BERNOULLI, chunk_size=2, baseline=AVERAGE)), "score_function"),
    "score_function bernoulli and poisson leave_one_out": (
        "bits_and_counts", fixed(SF(BITS_AND_COUNTS, baseline=LOO)), "score_function"),
    "pathwise two normals": (
        "two_normals", fixed(lt.pathwise(f, TWO_NORMALS.sample, num_samples=NUM_SAMPLES)), "pathwise"),
    "discrete.arm": ("logits", fixed(lt.discrete.arm(f, num_samples=NUM_SAMPLES)), "arm"),
    "discrete.disarm": ("logits", fixed(lt.discrete.disarm(f, num_samples=NUM_SAMPLES)), "disarm"),
    "vimco categorical": ("categorical", fixed(lt.vimco(f, CATEGORICAL, num_samples=NUM_SAMPLES)), "vimco"),
    "exact.estimator bernoulli": ("logits", exact_bernoulli, "exact.estimator"),
}
CASE_NAMES = st.sampled_from(list(CASES))


def problem(name, shape, dtype, seed):
    """(estimator, params, args) of a case; call under ``jax.enable_x64`` for float64."""
    kind, make, _ = CASES[name]
    params = PARAMS[kind](np.random.default_rng(seed), shape, jnp.dtype(dtype))
    return make(shape), params, ({"scale": jnp.asarray(1.5, dtype)}, jnp.asarray(0.0, dtype))


def keys_of(seed):
    """Three keys, the first and the last equal."""
    return jax.random.split(jax.random.key(seed), 2)[jnp.array([0, 1, 0])]


@functools.cache
def program(est):
    """Compiled once: the loss's value, state, gradients and max |f|, vmapped over keys; ``estimate`` on keys[1]."""

    def loss_and_grads(params, state, key, w, bad):
        (value, (new_state, aux)), grads = jax.value_and_grad(est.loss, argnums=(0, 3, 4), has_aux=True)(
            params, state, key, w, bad)
        return value, new_state, grads, jnp.max(jnp.abs(aux["f"]))

    def both(params, state, keys, w, bad):
        return (jax.vmap(loss_and_grads, in_axes=(None, None, 0, None, None))(params, state, keys, w, bad),
                est.estimate(params, state, keys[1], w, bad)[:2])

    return jit(both)


class Compiled(NamedTuple):
    """:func:`program` on a problem, with f as given and with ``bad`` non-finite (so is every f value)."""

    state: Any
    losses: tuple  # (value, new_state, (params, w, bad) gradients), each leaf with leading axis 3 (keys_of)
    estimate: tuple  # (grads, new_state) of ``estimate`` on the second key, not vmapped
    nonfinite: tuple  # losses with bad = NaN or ±inf
    rounding: float  # eps of the params' least precise dtype times max(1, |f|): see assert_close


def compiled(est, params, args, seed, nonfinite_f=np.nan):
    state, (w, bad) = est.init(params), args
    (*losses, f_max), estimate = program(est)(params, state, keys_of(seed), w, bad)
    (*nonfinite, _), _ = program(est)(params, state, keys_of(seed), w, jnp.full_like(bad, nonfinite_f))
    eps = max(float(jnp.finfo(leaf.dtype).eps) for leaf in jax.tree_util.tree_leaves(params))
    return Compiled(state, tuple(losses), estimate, tuple(nonfinite), eps * max(1.0, float(np.max(f_max))))


def eager(est, params, args, seed):
    """(grads, new_state) of eager ``estimate`` calls on each of :func:`keys_of`."""
    state = est.init(params)
    return [est.estimate(params, state, key, *args)[:2] for key in keys_of(seed)]


def leaves64(tree):
    return [np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(tree)]


def row(tree, i):
    return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)


def assert_close(actual, expected, rounding, what):
    """Each float leaf within 16 ``rounding`` times its largest magnitude (at least 1) of ``expected``; ints equal.

    jit and vmap reassociate sums and fuse operations: an estimate Σ_i f_i s_i / N then moves by a few eps of
    its terms, whose size is |f| times that of the estimate (the scores are of order 1 here) however much they
    cancel. The eps is that of the least precise dtype: a float32 state computed from bfloat16 f values is
    rounded to bfloat16 in an eager call, not under jit.
    """
    for a, e, leaf in zip(leaves64(actual), leaves64(expected), jax.tree_util.tree_leaves(expected)):
        inexact = jnp.issubdtype(leaf.dtype, jnp.inexact)
        tol = 16 * rounding * max(1.0, float(np.max(np.abs(e), initial=0.0))) if inexact else 0.0
        assert np.all(np.abs(a - e) <= tol), f"{what}: max difference {np.max(np.abs(a - e))} > {tol}"


def assert_equal(a, b, what):
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(leaves64(a), leaves64(b))), what


def assert_like(tree, like, what):
    """``tree`` has the pytree structure, shapes and dtypes of ``like``."""
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(like), (
        f"{what}: structure {jax.tree_util.tree_structure(tree)} is not {jax.tree_util.tree_structure(like)}")
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(like)):
        assert (jnp.shape(a), jnp.result_type(a)) == (jnp.shape(b), jnp.result_type(b)), (
            f"{what}: a leaf of shape {jnp.shape(a)} and dtype {jnp.result_type(a)}, "
            f"not {jnp.shape(b)} and {jnp.result_type(b)}")


def assert_contract(c, params, args):
    """The contract under jit and vmap; the AssertionError names the property that fails."""
    (value, new_state, (loss_params, *loss_args)), (grads, state) = c.losses, c.estimate
    assert_like(grads, params, "grads")
    assert_like(state, c.state, "new state")
    assert_like(row(loss_args, 0), list(args), "the loss's gradient in args")
    assert_equal(row(loss_params, 2), row(loss_params, 0), "the same key gives different estimates")
    assert_close(row(loss_params, 1), grads, c.rounding, "the loss's gradient, vmapped, against estimate")
    assert_close(row(new_state, 1), state, c.rounding, "the loss's new state, vmapped, against estimate's")
    assert np.all(np.isfinite(np.asarray(value, np.float64))), "finite f gives a non-finite loss"


def assert_nonfinite_policy(c):
    """Every f value non-finite: the value and every derivative, in params and args, NaN; the state unchanged."""
    value, new_state, grads = c.nonfinite
    for name, tree in [("value", value), ("params gradient", grads[0]), ("args gradient", grads[1:])]:
        assert all(np.all(np.isnan(leaf)) for leaf in leaves64(tree)), f"non-finite f: {name} not all NaN"
    for i in range(3):
        assert_equal(row(new_state, i), c.state, "non-finite f: the state changed")


def assert_matches_eager(c, calls):
    """The compiled program (jit, and jit of vmap) against eager calls with the same keys."""
    (g0, s0), (g1, s1), (again, _) = calls
    assert_equal(again, g0, "the same key gives different eager estimates")
    assert_close(c.estimate, (g1, s1), c.rounding, "jit against eager")
    assert_close((row(c.losses[2][0], 0), row(c.losses[1], 0)), (g0, s0), c.rounding, "jit of vmap against eager")


def contract(name, shape, dtype, seed, nonfinite_f):
    """The contract eager, under jit and vmap (see the assert_ helpers); fails on any estimator breaking one part."""
    with jax.enable_x64(dtype == "float64"):
        est, params, args = problem(name, shape, dtype, seed)
        c = compiled(est, params, args, seed, nonfinite_f)
        assert_contract(c, params, args)
        assert_nonfinite_policy(c)
        assert_matches_eager(c, eager(est, params, args, seed))


# Each example compiles a program and, eagerly, every operation for its shape and dtype: the costliest property,
# so the default run draws the case too; an explicit float64 example joins its two drawn ones.
test_contract, test_contract_many = properties(
    examples=[dict(name="vimco categorical", shape=(2, 2), dtype="float64", seed=1, nonfinite_f=np.inf)],
    name=CASE_NAMES, shape=SHAPES, dtype=DTYPES, seed=SEEDS,
    nonfinite_f=st.sampled_from([np.nan, np.inf, -np.inf]))(contract)


# --- The checks reject broken estimators -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    """The first example of the properties above (compiled already), and its eager calls: a stateful estimator."""
    est, params, args = problem(next(iter(CASES)), (), "float32", 0)
    return compiled(est, params, args, 0), eager(est, params, args, 0), params, args


def test_the_reference_passes(reference):
    """The control of the broken variants below: the unbroken outputs pass every check."""
    c, calls, params, args = reference
    assert_contract(c, params, args)
    assert_nonfinite_policy(c)
    assert_matches_eager(c, calls)


def scaled(tree, factor):
    return jax.tree_util.tree_map(lambda leaf: leaf * factor, tree)


def cast(tree, dtype):
    return jax.tree_util.tree_map(lambda leaf: leaf.astype(dtype), tree)


def replace(tree, i, new):
    return tree[:i] + (new,) + tree[i + 1:]


@pytest.mark.parametrize("broken, match", [
    (lambda c: c._replace(estimate=replace(c.estimate, 0, scaled(c.estimate[0], 2.0))), "the loss's gradient"),
    (lambda c: c._replace(estimate=replace(c.estimate, 0, cast(c.estimate[0], jnp.bfloat16))), "grads: a leaf of"),
    (lambda c: c._replace(estimate=replace(c.estimate, 0, (c.estimate[0],))), "grads: structure"),
    (lambda c: c._replace(estimate=replace(c.estimate, 1, c.state)), "the loss's new state"),
    (lambda c: c._replace(losses=replace(c.losses, 2, row(c.losses[2], jnp.array([0, 1, 1])))), "the same key"),
    (lambda c: c._replace(nonfinite=c.losses), "non-finite f: value not all NaN"),
    (lambda c: c._replace(nonfinite=replace(c.nonfinite, 2, c.nonfinite[2][:1] + c.losses[2][1:])),
     "non-finite f: args gradient not all NaN"),
    (lambda c: c._replace(nonfinite=replace(c.nonfinite, 1, c.losses[1])), "the state changed"),
], ids=["estimate is twice the loss gradient", "grads in another dtype", "grads in another pytree",
        "estimate does not update the state", "the same key gives another estimate", "non-finite f ignored", "non-finite f: finite derivatives in args",
        "non-finite f updates the state"])
def test_the_contract_checks_reject_broken_outputs(reference, broken, match):
    """Each check of the contract fails on outputs broken in the way it names."""
    c, _, params, args = reference
    with pytest.raises(AssertionError, match=match):
        assert_contract(broken(c), params, args)
        assert_nonfinite_policy(broken(c))


def test_the_eager_check_rejects_an_estimator_with_hidden_state():
    """An estimator drawing its samples from a counter instead of the key: eager calls differ, jit freezes one."""
    counter = itertools.count()
    est, params, args = problem(next(iter(CASES)), (), "float32", 0)
    hidden = lt.from_loss(est.init, lambda p, s, k, *a: est.loss(p, s, jax.random.key(next(counter)), *a),
                          caller="hidden_state")
    c, calls = compiled(hidden, params, args, 0), eager(hidden, params, args, 0)
    with pytest.raises(AssertionError, match="the same key gives different eager estimates"):
        assert_matches_eager(c, calls)
    with pytest.raises(AssertionError, match="jit against eager"):
        assert_matches_eager(c, calls[:2] + calls[:1])


# --- Malformed input: the documented error, naming the argument, at trace time ----------------------------------

W, NO_BAD = {"scale": jnp.asarray(1.5)}, jnp.asarray(0.0)


def trace(est, params, *args, state=None):
    """Traces ``estimate`` without compiling or running it."""
    state = est.init(params) if state is None else state
    return jax.eval_shape(lambda p, s, k: est.estimate(p, s, k, *args), params, state, jax.random.key(0))


def params_of(kind, shape):
    return PARAMS[kind](np.random.default_rng(0), shape, jnp.float32)


OUT_SHAPES = st.sampled_from([(1,), (2,), (2, 1)])
# the estimator's name in its errors: (g, shape -> estimator with g as its f, params kind, f's name in the errors)
USERS_OF_F = {
    "score_function": (lambda g, shape: lt.score_function(g, BITS_AND_COUNTS, num_samples=4), "bits_and_counts", "f"),
    "pathwise": (lambda g, shape: lt.pathwise(g, TWO_NORMALS.sample, num_samples=4), "two_normals", "f"),
    "optimal_control_variate": (lambda g, shape: lt.optimal_control_variate(g, NORMAL, num_samples=4), "normal", "f"),
    "vimco": (lambda g, shape: lt.vimco(g, CATEGORICAL, num_samples=4), "categorical", "log_weight"),
    "arm": (lambda g, shape: lt.discrete.arm(g, num_samples=4), "logits", "f"),
    "disarm": (lambda g, shape: lt.discrete.disarm(g, num_samples=4), "logits", "f"),
    "gumbel_softmax": (lambda g, shape: lt.discrete.gumbel_softmax(g, num_samples=4), "logits", "f"),
    "exact.estimator": (lambda g, shape: lt.exact.estimator(g, BERNOULLI, bernoulli_support(shape)), "logits", "f"),
}


@pytest.mark.parametrize("caller", USERS_OF_F)
def non_scalar_f(caller, shape, out_shape):
    """An f returning an array for one sample raises the ValueError that names f and the shape it returned."""
    make, kind, name = USERS_OF_F[caller]
    est = make(lambda x, *args: jnp.zeros(out_shape), shape)
    message = f"{caller}: `{name}` must return a scalar for one sample; got shape {out_shape} per sample"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        trace(est, params_of(kind, shape), W, NO_BAD)


test_non_scalar_f, test_non_scalar_f_many = properties(shape=SHAPES, out_shape=OUT_SHAPES)(non_scalar_f)

# the estimator's name in its errors: (family, shape -> estimator, params kind, family)
USERS_OF_FAMILIES = {
    "score_function": (lambda fam, shape: SF(fam), "bits_and_counts", BITS_AND_COUNTS),
    "optimal_control_variate": (lambda fam, shape: lt.optimal_control_variate(f, fam, num_samples=4), "normal",
                                NORMAL),
    "vimco": (lambda fam, shape: lt.vimco(f, fam, num_samples=4), "categorical", CATEGORICAL),
    "exact.estimator": (lambda fam, shape: lt.exact.estimator(f, fam, bernoulli_support(shape)), "logits", BERNOULLI),
}


@pytest.mark.parametrize("caller", USERS_OF_FAMILIES)
def non_scalar_log_prob(caller, shape, out_shape):
    """A log_prob returning an array for one sample raises the ValueError that names ``family.log_prob``."""
    make, kind, family = USERS_OF_FAMILIES[caller]
    est = make(family._replace(log_prob=lambda params, x: jnp.zeros(out_shape)), shape)
    message = f"{caller}: `family.log_prob` must return a scalar for one sample; got shape {out_shape} per sample"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        trace(est, params_of(kind, shape), W, NO_BAD)


test_non_scalar_log_prob, test_non_scalar_log_prob_many = properties(shape=SHAPES, out_shape=OUT_SHAPES)(
    non_scalar_log_prob)

# name: (family -> estimator, params kind, family, the sampler's attribute, its name in the errors)
SAMPLERS = {
    "score_function": (lambda fam: SF(fam), "bits_and_counts", BITS_AND_COUNTS, "sample", "family.sample"),
    "score_function antithetic": (lambda fam: SF(fam, antithetic=True), "bits_and_reals", BITS_AND_REALS,
                                  "antithetic_sample", "family.antithetic_sample"),
    "optimal_control_variate": (lambda fam: lt.optimal_control_variate(f, fam, num_samples=4), "bits_and_counts",
                                BITS_AND_COUNTS, "sample", "family.sample"),
    "vimco": (lambda fam: lt.vimco(f, fam, num_samples=4), "bits_and_counts", BITS_AND_COUNTS, "sample",
              "family.sample"),
    "pathwise": (lambda fam: lt.pathwise(f, fam.sample, num_samples=4), "two_normals", TWO_NORMALS, "sample",
                 "rsample"),
}
WRONG_SAMPLES = {"one sample short": lambda leaf: leaf[1:], "no sample axis": lambda leaf: leaf[0]}


@pytest.mark.parametrize("name", SAMPLERS)
def samples_without_the_sample_axis(name, shape, leaf, wrong):
    """Samples lacking the leading axis N in any leaf raise the ValueError naming the sampler, leaf and shape."""
    make, kind, family, attribute, source = SAMPLERS[name]
    sampler = getattr(family, attribute)
    path = sorted(jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        jax.eval_shape(lambda p, k: sampler(p, k, 4), params_of(kind, shape), jax.random.key(0))))[leaf]

    def broken(params, key, n):
        return jax.tree_util.tree_map_with_path(
            lambda p, x: WRONG_SAMPLES[wrong](x) if jax.tree_util.keystr(p) == path else x, sampler(params, key, n))

    shape_of_leaf = jnp.shape(WRONG_SAMPLES[wrong](jnp.zeros((4,) + shape)))
    message = (f"{name.split()[0]}: {source} must return leaves with leading axis num_samples=4; "
               f"leaf {path} has shape {shape_of_leaf}")
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        trace(make(family._replace(**{attribute: broken})), params_of(kind, shape), W, NO_BAD)


test_samples_without_the_sample_axis, test_samples_without_the_sample_axis_many = properties(
    shape=SHAPES, leaf=st.integers(0, 1), wrong=st.sampled_from(list(WRONG_SAMPLES)))(samples_without_the_sample_axis)


@st.composite
def args_with_one_non_array(draw):
    """(args, where, type name): extra arguments with one non-array leaf, nested in lists, tuples and dicts."""
    leaf = draw(st.sampled_from(["mean", len, object()]))
    tree, path = leaf, ""
    for container in draw(st.lists(st.sampled_from(["dict", "list", "tuple"]), max_size=3)):
        if container == "dict":
            tree, path = {"k": tree, "w": jnp.ones(2)}, f"['k']{path}"
        else:
            i = draw(st.integers(0, 1))
            items = [jnp.zeros(()), jnp.zeros(())]
            items[i] = tree
            tree, path = (list if container == "list" else tuple)(items), f"[{i}]{path}"
    i = draw(st.integers(0, 2))
    args = [jnp.ones(2), {"w": jnp.ones(2)}, 1.0]
    args[i] = tree
    return tuple(args), f"args[{i}]{path}", type(leaf).__name__


def args_not_arrays(name, shape, args_where_type):
    """A non-array leaf anywhere in the extra arguments raises the TypeError naming the estimator and the leaf."""
    args, where, type_name = args_where_type
    est, params, _ = problem(name, shape, "float32", 0)
    message = f"{CASES[name][2]}: the extra arguments of `loss`/`estimate` are passed to f and differentiated"
    with pytest.raises(TypeError, match="^" + re.escape(message) + ".*" + re.escape(f"{where} is a {type_name}.")):
        trace(est, params, *args)


test_args_not_arrays, test_args_not_arrays_many = properties(
    settings(FEW, max_examples=4), name=CASE_NAMES, shape=SHAPES, args_where_type=args_with_one_non_array())(
    args_not_arrays)

@pytest.mark.parametrize("name, method", [
    ("discrete.arm", "init"), ("discrete.arm", "loss"), ("discrete.disarm", "init"), ("discrete.disarm", "loss"),
    *[(name, "estimate") for name in CASES]])
def integer_params(name, method, shape, dtype):
    """Integer params raise a TypeError that names the estimator and ``params``."""
    est, params, args = problem(name, shape, "float32", 0)
    state, integers = est.init(params), jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
    call = {"init": lambda: est.init(integers),
            "loss": lambda: jax.eval_shape(est.loss, integers, state, jax.random.key(0), *args),
            "estimate": lambda: trace(est, integers, *args, state=state)}[method]
    with pytest.raises(TypeError, match=rf"^{re.escape(CASES[name][2])}: `params`"):
        call()


test_integer_params, test_integer_params_many = properties(
    shape=SHAPES, dtype=st.sampled_from(["int32", "uint8", "bool"]))(integer_params)

@pytest.mark.parametrize("caller, est", [
    ("delta_method", lt.delta_method(f, num_samples=4)),
    ("score_function", SF(NORMAL)),
    ("pathwise", lt.pathwise(f, NORMAL.sample, num_samples=4))],
    ids=["delta_method", "score_function", "pathwise"])
def mismatched_normal_params(caller, est, shapes):
    """'loc' and 'log_scale' of different, unbroadcastable shapes raise a ValueError naming ``params``."""
    params = {"loc": jnp.zeros(shapes[0]), "log_scale": jnp.zeros(shapes[1])}
    with pytest.raises(ValueError, match=rf"^{caller}: `params`"):
        trace(est, params, W, NO_BAD)


test_mismatched_normal_params, test_mismatched_normal_params_many = properties(
    shapes=st.sampled_from([((3,), (2,)), ((2,), (3,)), ((2, 2), (3,)), ((2,), (2, 3))]))(mismatched_normal_params)


def mismatched_estimates(names, dropped):
    """`assert_unbiased` on estimates whose pytree is not that of the expected value raises its ValueError."""
    expected = {name: jnp.zeros(2) for name in names}
    estimates = {name: jnp.zeros((30, 2)) for name in names if name != names[dropped % len(names)]}
    with pytest.raises(ValueError, match="`estimates` and `expected` have different pytree structures"):
        lt.testing.assert_unbiased(estimates, expected)


test_mismatched_estimates, test_mismatched_estimates_many = properties(
    names=st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True), dropped=st.integers(0, 3))(
    mismatched_estimates)


# --- Unbiasedness across shapes ------------------------------------------------------------------------------------

NUM_ESTIMATES = 20_000


def squared_error(b, target):
    return jnp.sum((b - target) ** 2)


LEAVE_ONE_OUT = lt.score_function(squared_error, BERNOULLI, num_samples=2, baseline=LOO)
# b_i from all the samples, its own included: with 2 samples, half the leave-one-out estimate of the logits gradient,
# a bias of at least σ'(1.5)(1 - 2·0.2)/2 ≈ 0.045 per coordinate, more than 20 standard errors at 20,000 estimates.
OWN_MEAN = lt.Baseline(init=lambda params: (), apply=lambda values, state: (jnp.full_like(values, jnp.mean(values)),
                                                                            state), min_samples=2)
WITH_OWN_SAMPLE = lt.score_function(squared_error, BERNOULLI, num_samples=2, baseline=OWN_MEAN)


@jit
def gradients(logits, target, key):
    """Estimates of both estimators on the same keys, and the exact gradient, in logits and target."""
    exact = lt.exact.estimator(squared_error, BERNOULLI, lt.exact.bernoulli_support(logits.shape[0]))

    def grad(est, k):
        return jax.grad(lambda p, t: est.loss(p, (), k, t)[0], argnums=(0, 1))(logits, target)

    keys = jax.random.split(key, NUM_ESTIMATES)
    return (jax.vmap(lambda k: grad(LEAVE_ONE_OUT, k))(keys), jax.vmap(lambda k: grad(WITH_OWN_SAMPLE, k))(keys),
            grad(exact, key))


@st.composite
def bernoulli_problems(draw):
    """(logits, target) of 1 to 3 variables, the logits in [-1.5, 1.5] and the target in [0, 0.2]."""
    size = draw(st.integers(1, 3))

    def floats(lo, hi):
        return jnp.asarray(draw(st.lists(st.floats(lo, hi), min_size=size, max_size=size)), jnp.float32)

    return floats(-1.5, 1.5), floats(0.0, 0.2)


def unbiased(logits_and_target, seed):
    """Statistical: leave-one-out is unbiased against enumeration; a baseline using its own sample is rejected."""
    unbiased_draws, biased_draws, expected = gradients(*logits_and_target, jax.random.key(seed))
    lt.testing.assert_unbiased(unbiased_draws, expected, significance=1e-5)
    with pytest.raises(AssertionError, match="^estimates are biased"):
        lt.testing.assert_unbiased(biased_draws, expected, significance=1e-5)


test_unbiased, test_unbiased_many = properties(logits_and_target=bernoulli_problems(), seed=SEEDS)(unbiased)
