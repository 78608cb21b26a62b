"""Stochastic computation graphs: several sample sites in one program, credit assigned by data flow.

A program draws named sites and returns costs::

    def model(params, key, sample, *args):
        k1, k2 = jax.random.split(key)
        z1 = sample("z1", lt.families.bernoulli(), params["logits"], k1)
        z2 = sample("z2", lt.families.bernoulli(), params["W"] @ z1 + params["c"], k2)
        return {"recon": log_likelihood(z2, params), "prior": log_prior(z1)}

:func:`graph` turns it into an estimator of E[Σ costs]. The program is traced
once to a jaxpr; the provenance of every cost element (which site elements
it can depend on, through any chain of operations and other sites, step by
step inside ``lax.scan``) is read off that jaxpr, and each site element's
score is weighted by the costs it reaches only (Schulman et al. 2015). The
loss, for N particles (the program vmapped over N keys), is::

    (1/N) Σ_i [ Σ_c cost_ic ⊡(Σ_{u → c} log p_iu) + Σ_u b_iu (1 - ⊡(log p_iu)) ],

⊡ = :func:`logtrick.magic_box`, u the score-function site elements and b_iu
their baselines (functions of the other particles): DiCE with Loaded DiCE's
baseline term, so its derivatives of every order are unbiased, and its
gradient in the costs' own parameters is the pathwise one from the same
particles. Pathwise, enumerated and DisARM sites change the terms as
:mod:`logtrick.sites` describes.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core
from jax.interpreters import batching

from logtrick import _checks, _provenance
from logtrick import sites as sites_lib
from logtrick.base import Estimator, from_loss
from logtrick.dice import magic_box
from logtrick.discrete import disarm_weight
from logtrick.families import Family

sg = jax.lax.stop_gradient
DEFAULT = sites_lib.score_function()
CALLER = "graph"


class _Record:
    """What a site marker knows of its site (hashable by identity, as a primitive parameter must be)."""

    def __init__(self, name, family, site, x_tree, dist_tree, batch_shape):
        self.name, self.family, self.site = name, family, site
        self.x_tree, self.dist_tree, self.batch_shape = x_tree, dist_tree, batch_shape

    @property
    def num_units(self) -> int:
        if self.site.kind in ("pathwise", "enumerate"):
            return 0
        return 1 if self.batch_shape is None else math.prod(self.batch_shape)


_site_p = core.Primitive("logtrick_site")
_site_p.multiple_results = True
_site_p.def_abstract_eval(lambda *avals, record: avals[:record.x_tree.num_leaves])
_site_p.def_impl(lambda *values, record: values[:record.x_tree.num_leaves])


def _no_batching(args, dims, *, record):
    raise ValueError(f"{CALLER}: site {record.name!r} is drawn inside jax.vmap, which hides its elements from the "
                     "credit analysis. Draw a plate instead: one `sample` call with batched distribution params "
                     "(its elements are independent and credited one by one).")


batching.primitive_batchers[_site_p] = _no_batching


def _is_site(eqn) -> bool:
    return eqn.primitive is _site_p


def _record(eqn) -> _Record:
    return eqn.params["record"]


def _draw(name: str, family: Family, kind: str, dist_params, key, enum_values, bits):
    """One value of a site, as its estimator draws it."""
    if kind == "enumerate":
        return enum_values[name]
    if kind == "disarm":
        logits = dist_params
        u = jax.random.uniform(key, jnp.shape(logits), jnp.result_type(logits))
        u = jnp.where(bits[name], 1.0 - u, u)
        return sg((u < jax.nn.sigmoid(logits)).astype(u.dtype))
    x = jax.tree_util.tree_map(lambda leaf: leaf[0], family.sample(dist_params, key, 1))
    return x if kind == "pathwise" else sg(x)


def _batch_shape(name: str, family: Family, dist_params, x) -> tuple[int, ...] | None:
    """The shape of the site's independent elements, or None (whole-site credit)."""
    shape = jax.eval_shape(family.log_prob, dist_params, x).shape
    if shape != ():
        raise ValueError(f"{CALLER}: site {name!r}: `family.log_prob` must return a scalar per draw, got shape "
                         f"{shape}; sum the log-probabilities of the draw's elements.")
    if family.log_prob_elements is None:
        return None
    batch = jax.eval_shape(family.log_prob_elements, dist_params, x).shape
    if any(jnp.shape(leaf)[:len(batch)] != batch for leaf in jax.tree_util.tree_leaves(x)):
        raise ValueError(f"{CALLER}: site {name!r}: `family.log_prob_elements` has shape {batch}, which is not a "
                         f"leading part of every leaf of the drawn value "
                         f"{[jnp.shape(leaf) for leaf in jax.tree_util.tree_leaves(x)]}")
    return batch


def _make_sample(sites: dict, enum_values: dict, bits: dict) -> Callable:
    def sample(name, family, dist_params, key):
        if not isinstance(name, str):
            raise TypeError(f"{CALLER}: a site's name must be a string, got {name!r}")
        if not isinstance(family, Family):
            raise TypeError(f"{CALLER}: site {name!r}: `family` must be a lt.Family, got {type(family).__name__}")
        site = sites.get(name, DEFAULT)
        if site.kind == "disarm" and (family.sample.__qualname__.split(".")[0] != "bernoulli"
                                      or not isinstance(dist_params, jax.Array)):
            raise ValueError(f"{CALLER}: site {name!r} is lt.sites.disarm(), which serves a "
                             "lt.families.bernoulli() site with a logits array as its params")
        x = _draw(name, family, site.kind, dist_params, key, enum_values, bits)
        if site.kind == "pathwise" and not all(jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
                                               for leaf in jax.tree_util.tree_leaves(x)):
            raise ValueError(f"{CALLER}: site {name!r} is lt.sites.pathwise(), but its family draws integers, which "
                             "carry no gradient; use lt.sites.score_function() or lt.sites.enumerate()")
        x_leaves, x_tree = jax.tree_util.tree_flatten(x)
        dist_leaves, dist_tree = jax.tree_util.tree_flatten(dist_params)
        record = _Record(name, family, site, x_tree, dist_tree, _batch_shape(name, family, dist_params, x))
        return x_tree.unflatten(_site_p.bind(*x_leaves, *dist_leaves, record=record))

    return sample


class _Site(NamedTuple):
    """A site found in the program: its record, and where it is drawn ("top", "scan" or a primitive's name)."""

    record: _Record
    context: str


def _found_sites(jaxpr: core.Jaxpr, context: str = "top") -> list[_Site]:
    found = []
    for eqn in jaxpr.eqns:
        if _is_site(eqn):
            found.append(_Site(_record(eqn), context))
        elif eqn.primitive.name == "scan":
            found += _found_sites(eqn.params["jaxpr"].jaxpr, "scan" if context == "top" else context)
        elif (inner := _provenance.sub_jaxpr(eqn, custom=False)) is not None:
            found += _found_sites(inner[0], context)
        else:
            for sub in core.jaxprs_in_params(eqn.params):
                found += _found_sites(getattr(sub, "jaxpr", sub), eqn.primitive.name)
    return found


def _check_sites(found: list[_Site], sites: dict) -> None:
    names = [s.record.name for s in found]
    for name in sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"{CALLER}: site {name!r} is drawn more than once; every `sample` call needs its own "
                         "name (inside a lax.scan, one call draws the site once per step).")
    for name in sites:
        if name not in names:
            raise ValueError(f"{CALLER}: `sites` names {name!r}, which the program never draws; it draws "
                             f"{sorted(names)}")
    for s in found:
        kind = s.record.site.kind
        if s.context not in ("top", "scan"):
            raise ValueError(f"{CALLER}: site {s.record.name!r} is drawn inside `{s.context}`, whose data flow the "
                             "credit analysis does not follow; draw it outside (lax.scan and jax.jit are followed).")
        if s.context == "scan" and kind in ("enumerate", "disarm"):
            raise ValueError(f"{CALLER}: site {s.record.name!r} is lt.sites.{kind}() inside a lax.scan, which is not "
                             "supported; use lt.sites.score_function() or lt.sites.pathwise() there.")
    if any(s.record.site.kind == "disarm" for s in found) and any(s.record.site.kind == "enumerate" for s in found):
        raise ValueError(f"{CALLER}: a program with both lt.sites.disarm() and lt.sites.enumerate() sites is not "
                         "supported")


def _unit_names(jaxpr: core.Jaxpr) -> list[str]:
    """The site of every unit, in unit order (as :class:`logtrick._provenance.Analysis` numbers them)."""
    names = []
    for eqn in jaxpr.eqns:
        if _is_site(eqn):
            names += [_record(eqn).name] * _record(eqn).num_units
        elif eqn.primitive.name == "scan":
            names += _unit_names(eqn.params["jaxpr"].jaxpr) * eqn.params["length"]
        elif (inner := _provenance.sub_jaxpr(eqn)) is not None:
            names += _unit_names(inner[0])
    return names


class _Credit(NamedTuple):
    """The static result of the analysis.

    Attributes:
      matrix: (C, U) float, 1 where cost element c depends on unit u.
      unit_names: the site of each unit.
      upstream_of_enumerated: (U,) bool, units an enumerated site's params depend on.
    """

    matrix: np.ndarray
    unit_names: list[str]
    upstream_of_enumerated: np.ndarray


def _credit(jaxpr: core.Jaxpr, num_inputs: int) -> _Credit:
    upstream = []

    def site_rule(eqn, ins, own, num_units):
        record = _record(eqn)
        num_x = record.x_tree.num_leaves
        xs, dists = ins[:num_x], ins[num_x:]
        outs = []
        for v, p in zip(eqn.outvars, xs):
            shape = v.aval.shape
            p = _provenance.full(p, shape, num_units).copy()
            if record.site.kind == "enumerate":
                parents = _provenance.whole(_provenance.union([_provenance.whole(d, num_units) for d in dists]),
                                            num_units)
                upstream.append(parents)
                p |= parents
            if len(own):
                units = np.arange(len(own)).reshape(record.batch_shape or ())
                units = np.broadcast_to(units.reshape(units.shape + (1,) * (len(shape) - units.ndim)), shape)
                p[..., own.start:own.stop] |= units[..., None] == np.arange(len(own))
            outs.append(p)
        return outs

    analysis = _provenance.Analysis(_is_site, site_rule, lambda eqn: _record(eqn).num_units)
    num_units = analysis.units(jaxpr)
    outs = analysis.run(jaxpr, [None] * num_inputs, num_units, 0)
    shapes = [getattr(v.aval, "shape") for v in jaxpr.outvars]
    matrix = np.concatenate([_provenance.full(p, s, num_units).reshape(math.prod(s), num_units)
                             for p, s in zip(outs, shapes)]).astype(np.float32)
    upstream_mask = _provenance.union(upstream) if upstream else None
    return _Credit(matrix, _unit_names(jaxpr),
                   np.zeros(num_units, bool) if upstream_mask is None else upstream_mask)


class _Run(NamedTuple):
    """One run of the program: its outputs, its units' log-probabilities (U,), and per-site extras."""

    outs: list
    log_probs: jax.Array
    extras: dict


def _site_values(record: _Record, values: list) -> tuple[Any, Any]:
    num_x = record.x_tree.num_leaves
    return record.x_tree.unflatten(values[:num_x]), record.dist_tree.unflatten(values[num_x:])


def _run(jaxpr: core.Jaxpr, consts: list, args: list) -> _Run:
    """Evaluates ``jaxpr`` as JAX would, collecting the log-probability of every unit in unit order."""
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, core.Literal) else env[v]
    chunks, extras = [], {}
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        if _is_site(eqn):
            record = _record(eqn)
            x, dist = _site_values(record, values)
            outs = values[:record.x_tree.num_leaves]
            if record.site.kind == "enumerate":
                extras[record.name] = record.family.log_prob(dist, x)
            elif record.site.kind != "pathwise":
                elements = (record.family.log_prob(dist, x) if record.batch_shape is None
                            else record.family.log_prob_elements(dist, x))
                chunks.append(jnp.reshape(elements, -1))
                if record.site.kind == "disarm":
                    extras[record.name] = (dist, x)
        elif eqn.primitive.name == "scan" and _found_sites(eqn.params["jaxpr"].jaxpr):
            outs, units = _run_scan(eqn, values)
            chunks.append(units)
        elif (inner := _provenance.sub_jaxpr(eqn, custom=False)) is not None and _found_sites(inner[0]):
            run = _run(inner[0], inner[1], values)
            outs = run.outs
            chunks.append(run.log_probs)
            extras.update(run.extras)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    log_probs = jnp.concatenate(chunks) if chunks else jnp.zeros((0,))
    return _Run([read(v) for v in jaxpr.outvars], log_probs, extras)


def _run_scan(eqn, values):
    """A scan whose body draws sites: the same scan, with the body's unit log-probabilities as extra outputs."""
    params = eqn.params
    body, num_consts, num_carry = params["jaxpr"], params["num_consts"], params["num_carry"]
    consts, init, xs = values[:num_consts], values[num_consts:num_consts + num_carry], values[num_consts + num_carry:]

    def step(carry, x):
        run = _run(body.jaxpr, body.consts, [*consts, *carry, *x])
        return run.outs[:num_carry], (run.outs[num_carry:], run.log_probs)

    carry, (ys, units) = jax.lax.scan(step, init, xs, length=params["length"], reverse=params["reverse"],
                                      unroll=params["unroll"])
    return [*carry, *ys], units.reshape(-1)


def _check_costs(costs: Any) -> None:
    leaves = jax.tree_util.tree_leaves_with_path(costs)
    if not leaves:
        raise ValueError(f"{CALLER}: the program returned no costs")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{CALLER}: every cost must be a real floating-point array; cost"
                            f"{jax.tree_util.keystr(path)} has dtype {dtype}"
                            + (" (cast it to float)" if dtype is not None and jnp.issubdtype(dtype, jnp.integer)
                               else ""))


def _check_site_specs(sites: Any) -> dict[str, sites_lib.Site]:
    if not isinstance(sites, dict):
        raise TypeError(f"{CALLER}: `sites` must be a dict from site names to lt.sites estimators, "
                        f"got {type(sites).__name__}")
    for name, site in sites.items():
        if not isinstance(site, sites_lib.Site):
            raise TypeError(f"{CALLER}: sites[{name!r}] must be an lt.sites estimator (e.g. "
                            f"lt.sites.score_function()), got {type(site).__name__}")
    return dict(sites)


def _combinations(sites: dict, names: list[str]) -> tuple[dict, int]:
    """Every joint value of the enumerated sites, stacked: ({name: values (E, ...)}, E)."""
    sizes = [jax.tree_util.tree_leaves(sites[name].support)[0].shape[0] for name in names]
    index = np.array(list(itertools.product(*[range(k) for k in sizes])), np.int32).reshape(math.prod(sizes),
                                                                                           len(names))
    values = {name: jax.tree_util.tree_map(lambda leaf, i=i: leaf[index[:, i]], sites[name].support)
              for i, name in enumerate(names)}
    return values, index.shape[0]


def _mean_state(state: Any) -> Any:
    """A per-element batch of baseline states reduced to one: the mean of floating leaves, else the first."""
    return jax.tree_util.tree_map(
        lambda s: jnp.mean(s, axis=0).astype(s.dtype) if jnp.issubdtype(s.dtype, jnp.inexact) else s[0], state)


def graph(model: Callable[..., Any], *, num_samples: int, sites: dict[str, sites_lib.Site] | None = None) -> Estimator:
    """An estimator of E[Σ costs] of a program with several sample sites, each credited by data flow.

    The program ``model(params, key, sample, *args) -> costs`` draws sites with
    ``sample(name, family, dist_params, key)`` (one draw of a
    :class:`logtrick.Family`) and returns its costs: a scalar or a pytree of
    real arrays, every element a cost. It runs for N particles (vmapped over
    N keys). Site element u's score is weighted by the cost elements whose
    values depend on u, found from the traced program through any chain of
    operations and sites:

    - a site with array params (a plate) is credited element by element when
      its family has ``log_prob_elements`` (the built-in families do), else
      as a whole;
    - inside ``jax.lax.scan``, per step: a per-step cost at step t is
      credited to the draws at steps ≤ t that reach it, through the carry or
      directly (reward-to-go, found automatically);
    - ``jax.jit`` calls are followed; a site inside ``lax.cond``,
      ``lax.while_loop`` or a custom-derivative function is an error.

    The loss (see :mod:`logtrick.graph`) is DiCE with Loaded DiCE's per-site
    baselines, so ``jax.grad``, ``jax.hessian`` and any order of derivative
    of it are unbiased for score-function and pathwise sites; DisARM sites
    are first-order only. Primitives the analysis has no rule for are taken
    to mix all their inputs: credit is then coarser, never wrong.

    Args:
      model: the program, for one particle. ``params`` are differentiated
        (through the sites' scores, and pathwise through the costs);
        ``args`` are the extra arguments of ``loss`` (pathwise).
      num_samples: N, particles per estimate; a multiple of 2^(number of
        DisARM sites), and enough for the baselines (2 for leave-one-out).
      sites: ``{name: lt.sites.<estimator>}``; sites not named get
        ``lt.sites.score_function()`` (no baseline).

    Returns:
      An :class:`logtrick.Estimator`. The state is ``{name: baseline
      state}`` of the sites with a baseline. ``aux``: ``"f"``, the sum
      of the costs per particle, shape (N,); ``"costs"``, the costs per
      particle (leading axis N; enumerated sites summed out).

    Example::

        def model(params, key, sample):
            k1, k2 = jax.random.split(key)
            z1 = sample("z1", lt.families.bernoulli(), params["a"], k1)
            z2 = sample("z2", lt.families.bernoulli(), params["b"] * z1, k2)
            return {"first": jnp.sum(z1), "second": jnp.sum((z2 - 0.5) ** 2)}

        est = lt.graph(model, num_samples=8,
                       sites={"z1": lt.sites.score_function(baseline=lt.baselines.leave_one_out())})
        params = {"a": jnp.zeros(3), "b": jnp.ones(3)}
        grads, state, aux = jax.jit(est.estimate)(params, est.init(params), jax.random.key(0))

    References:
      Schulman, Heess, Weber and Abbeel, "Gradient Estimation Using
      Stochastic Computation Graphs", 2015. Foerster et al., "DiCE: The
      Infinitely Differentiable Monte Carlo Estimator", 2018. Farquhar et
      al., "Loaded DiCE: Trading off Bias and Variance in Any-Order Score
      Function Estimators for Reinforcement Learning", 2019.
    """
    sites = _check_site_specs({} if sites is None else sites)
    n = _checks.num_samples(num_samples, minimum=1, caller=CALLER)
    disarm_names = sorted(name for name, s in sites.items() if s.kind == "disarm")
    enum_names = sorted(name for name, s in sites.items() if s.kind == "enumerate")
    group = 2 ** len(disarm_names)
    if n % group:
        raise ValueError(f"{CALLER}: `num_samples` must be a multiple of {group} (2 per DisARM site "
                         f"{disarm_names}), got {n}")
    groups = n // group
    with_baseline = {name: s.baseline for name, s in sorted(sites.items()) if s.baseline is not None}
    needed = max([b.min_samples for b in with_baseline.values()], default=1)
    if groups < needed:
        raise ValueError(f"{CALLER}: `num_samples` = {n} gives {groups} independent particle groups; the "
                         f"baselines need at least {needed}")
    enum_values, num_combos = _combinations(sites, enum_names)
    member = np.arange(n) % group
    bits = {name: jnp.asarray((member >> k) & 1, bool) for k, name in enumerate(disarm_names)}

    def program(params, key, args, enum_one, bits_one):
        return model(params, key, _make_sample(sites, enum_one, bits_one), *args)

    def init(params):
        return {name: baseline.init(params) for name, baseline in with_baseline.items()}

    def loss(params, state, key, *args):
        enum_one = {name: jax.tree_util.tree_map(lambda leaf: leaf[0], v) for name, v in enum_values.items()}
        bits_one = {name: b[0] for name, b in bits.items()}
        closed, out_shape = jax.make_jaxpr(program, return_shape=True)(params, key, args, enum_one, bits_one)
        _check_costs(out_shape)
        found = _found_sites(closed.jaxpr)
        _check_sites(found, sites)
        credit = _credit(closed.jaxpr, len(closed.jaxpr.invars))
        kind = {s.record.name: s.record.site.kind for s in found}

        def one(particle_key, particle_bits, combo):
            flat = jax.tree_util.tree_leaves((params, particle_key, args, combo, particle_bits))
            return _run(closed.jaxpr, closed.consts, flat)

        keys = jax.random.split(key, groups)[np.arange(n) // group]
        runs = jax.vmap(jax.vmap(one, in_axes=(None, None, 0), axis_size=num_combos),
                        in_axes=(0, 0, None), axis_size=n)(keys, bits, enum_values)
        dtype = jnp.result_type(*runs.outs)
        costs = jnp.concatenate([o.reshape(n, num_combos, -1).astype(dtype) for o in runs.outs], axis=-1)
        log_w = sum((runs.extras[name] for name in enum_names), jnp.zeros((n, num_combos), dtype))
        weights = jnp.exp(log_w)
        value, new_state = _score_terms(costs, runs.log_probs, weights, credit, kind, with_baseline, state, groups)
        for k, name in enumerate(disarm_names):
            value = value + _disarm_term(costs, runs.extras[name], credit, name, member, k)
        totals = jnp.sum(sg(weights)[..., None] * sg(costs), axis=1)
        per_particle = jax.tree_util.tree_map(
            lambda o: jnp.sum(sg(weights).reshape(weights.shape + (1,) * (o.ndim - 2)) * sg(o), axis=1), runs.outs)
        aux = {"f": jnp.sum(totals, axis=-1), "costs": jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(out_shape), per_particle)}
        return value, (new_state, aux)

    return from_loss(init, loss, caller=CALLER)


def _score_terms(costs, log_probs, weights, credit, kind, baselines, state, groups):
    """(1/N) Σ_i [Σ_e w_ie (Σ_c cost_iec ⊡(Λ_iec) + Σ_u b_ieu (1 - ⊡(l_ieu)))], and the baselines' new state.

    ``baselines``: ``{site: Baseline}`` of the sites that have one; b = 0 for the others.
    """
    n, num_combos, _ = costs.shape
    names = np.array(credit.unit_names, dtype=object)
    score = np.array([kind[name] == "score_function" for name in credit.unit_names], bool)
    matrix = jnp.asarray(credit.matrix[:, score])
    score_log_probs = log_probs[..., score]
    dice = jnp.sum(costs * magic_box(score_log_probs @ matrix.T.astype(log_probs.dtype)), axis=-1)
    value = jnp.sum(weights * dice, axis=-1)
    if not baselines:
        return jnp.mean(value), state
    downstream = sg(costs) @ matrix.astype(costs.dtype)
    upstream = credit.upstream_of_enumerated[score]
    if upstream.any():
        summed = jnp.sum(sg(weights)[..., None] * downstream, axis=1, keepdims=True)
        downstream = jnp.where(upstream, summed, downstream)
    means = jnp.mean(downstream.reshape(groups, n // groups, num_combos, -1), axis=1)
    b = jnp.zeros_like(means)
    new_state = dict(state)
    for name, baseline in baselines.items():
        columns = np.flatnonzero(names[score] == name)
        per_column, column_states = jax.vmap(baseline.apply, in_axes=(1, None), out_axes=(1, 0))(
            means[..., columns].reshape(groups, -1), state[name])
        b = b.at[..., columns].set(per_column.reshape(groups, num_combos, columns.size))
        new_state[name] = _mean_state(column_states)
    b = jnp.repeat(b, n // groups, axis=0)
    baseline = jnp.sum(sg(weights)[..., None] * sg(b) * (1.0 - magic_box(score_log_probs)), axis=(1, 2))
    return jnp.mean(value + baseline), new_state


def _disarm_term(costs, extras, credit, name, member, k):
    """Σ_pairs <sg(g), θ - sg(θ)> / pairs: DisARM's gradient for site ``name``, each element with its own costs."""
    logits, x = extras
    columns = np.flatnonzero(np.array(credit.unit_names, dtype=object) == name)
    downstream = (sg(costs[:, 0]) @ jnp.asarray(credit.matrix[:, columns]).astype(costs.dtype))
    first = np.flatnonzero(((member >> k) & 1) == 0)
    partner = first + 2 ** k
    theta = logits[first, 0].reshape(first.size, -1)
    b, b_partner = x[first, 0].reshape(first.size, -1), x[partner, 0].reshape(first.size, -1)
    g = 0.5 * (downstream[first] - downstream[partner]) * disarm_weight(sg(theta), b, b_partner)
    return jnp.sum(sg(g) * (theta - sg(theta))) / first.size
