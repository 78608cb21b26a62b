"""Data-flow provenance of a jaxpr: which elements of which inputs each output element can depend on.

The provenance of an array v of shape S over a space of U *units* is a boolean
numpy array broadcastable to ``S + (U,)``: entry ``[i..., u]`` is True when
element i of v may depend on unit u. ``None`` means no dependence at all.
Primitives with a rule below are followed element by element; any other
primitive is treated as mixing every input element into every output element.
Over-approximating is safe for the estimators built on it (a score weighted by
a cost it does not reach adds zero-mean noise); missing a dependence would not
be, so every rule errs on the side of more.

A jaxpr's own units (one per element of each site it draws, repeated per step
inside a ``lax.scan``) are numbered in the order of :func:`units`, the order
in which :mod:`logtrick.graph` lays out the sites' log-probabilities.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np
from jax.extend import core

Prov = np.ndarray | None

ELEMENTWISE = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp complex conj convert_element_type copy
    copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma igammac imag integer_pow
    is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or polygamma population_count pow
    real reduce_precision rem round rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh xor
    shift_left shift_right_arithmetic shift_right_logical
""".split())
REDUCTIONS = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax argmin".split())
INLINED = frozenset({"jit", "pjit", "closed_call", "core_call", "checkpoint", "remat"})
CUSTOM = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})


def sub_jaxpr(eqn: core.JaxprEqn, *, custom: bool = True) -> tuple[Any, list] | None:
    """The (jaxpr, consts) a call-like equation runs on its operands, else None.

    With ``custom``, also the primal function of a ``custom_jvp``/``custom_vjp``
    call (its value, hence its data flow, is that function's).
    """
    names = INLINED | CUSTOM if custom else INLINED
    if eqn.primitive.name not in names:
        return None
    inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr")))
    if isinstance(inner, core.ClosedJaxpr):
        return inner.jaxpr, list(inner.consts)
    return inner, []


def full(p: Prov, shape: tuple[int, ...], num_units: int) -> np.ndarray:
    """``p`` broadcast to ``shape + (U,)`` (all False for None)."""
    if p is None:
        return np.zeros(shape + (num_units,), bool)
    return np.broadcast_to(p, shape + (num_units,))


def whole(p: Prov, num_units: int) -> np.ndarray:
    """The units any element of ``p`` depends on, shape (U,)."""
    if p is None:
        return np.zeros(num_units, bool)
    return np.asarray(p.reshape(math.prod(p.shape[:-1]), p.shape[-1]).any(axis=0))


def union(ps: list[Prov]) -> Prov:
    present = [p for p in ps if p is not None]
    if not present:
        return None
    return functools.reduce(np.logical_or, present)


class Analysis:
    """The provenance interpreter, given how to treat the site markers.

    Args:
      is_site: ``is_site(eqn) -> bool``, whether an equation is a site marker.
      site_rule: ``site_rule(eqn, in_provs, own, num_units) -> out_provs``, the
        outputs' provenance of a marker whose own units are ``own`` (a range).
      site_units: ``site_units(eqn) -> int``, the number of units of a marker.
    """

    def __init__(self, is_site: Callable, site_rule: Callable, site_units: Callable):
        self.is_site, self.site_rule, self.site_units = is_site, site_rule, site_units
        self._units: dict[int, int] = {}

    def units(self, jaxpr: core.Jaxpr) -> int:
        """The number of units a jaxpr draws (sites, and per step inside scans)."""
        key = id(jaxpr)
        if key not in self._units:
            total = 0
            for eqn in jaxpr.eqns:
                if self.is_site(eqn):
                    total += self.site_units(eqn)
                elif eqn.primitive.name == "scan":
                    total += eqn.params["length"] * self.units(eqn.params["jaxpr"].jaxpr)
                elif (inner := sub_jaxpr(eqn)) is not None:
                    total += self.units(inner[0])
            self._units[key] = total
        return self._units[key]

    def run(self, jaxpr: core.Jaxpr, in_provs: list[Prov], num_units: int, base: int) -> list[Prov]:
        """Output provenance of ``jaxpr`` given its inputs', its own units numbered from ``base``."""
        env: dict[Any, Prov] = {v: None for v in jaxpr.constvars}
        env.update(zip(jaxpr.invars, in_provs))
        read = lambda v: None if isinstance(v, core.Literal) else env[v]
        cursor = base
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            if self.is_site(eqn):
                n = self.site_units(eqn)
                outs = self.site_rule(eqn, ins, range(cursor, cursor + n), num_units)
                cursor += n
            elif eqn.primitive.name == "scan":
                outs = self._scan(eqn, ins, num_units, cursor)
                cursor += eqn.params["length"] * self.units(eqn.params["jaxpr"].jaxpr)
            elif (inner := sub_jaxpr(eqn)) is not None:
                outs = self.run(inner[0], ins, num_units, cursor)
                cursor += self.units(inner[0])
            elif eqn.primitive.name == "cond":
                outs = self._cond(eqn, ins, num_units)
            else:
                outs = _rule(eqn, ins, num_units)
            for v, p in zip(eqn.outvars, outs):
                env[v] = p
        return [read(v) for v in jaxpr.outvars]

    def _cond(self, eqn, ins, num_units):
        index, operands = ins[0], ins[1:]
        selector = whole(index, num_units) if index is not None else None
        branches = [self.run(b.jaxpr, operands, num_units, 0) for b in eqn.params["branches"]]
        return [union([*outs, selector]) for outs in zip(*branches)]

    def _scan(self, eqn, ins, num_units, base):
        """Per-step provenance: the body analysed once over local units, then composed step by step."""
        params = eqn.params
        body, length = params["jaxpr"].jaxpr, params["length"]
        num_consts, num_carry = params["num_consts"], params["num_carry"]
        avals = [v.aval for v in body.invars]
        # Local units: one per element of every body input that can carry provenance, then the body's own units.
        local, offsets, size = [], [], 0
        for i, (aval, p) in enumerate(zip(avals, ins)):
            if p is None and not num_consts <= i < num_consts + num_carry:
                local.append(None)
                offsets.append(None)
                continue
            n = math.prod(aval.shape)
            offsets.append(size)
            local.append(np.eye(size + n, dtype=bool)[size:].reshape(aval.shape + (size + n,)))
            size += n
        own = self.units(body)
        width = size + own
        local = [None if p is None else np.pad(p, [(0, 0)] * (p.ndim - 1) + [(0, width - p.shape[-1])])
                 for p in local]
        outs = self.run(body, local, width, size)
        out_avals = [v.aval for v in body.outvars]
        matrix = np.concatenate([full(p, a.shape, width).reshape(math.prod(a.shape), width)
                                 for p, a in zip(outs, out_avals)]
                                ).astype(np.float32)

        carry = [ins[num_consts + j] for j in range(num_carry)]
        xs_in = ins[num_consts + num_carry:]
        ys = [np.zeros((length,) + a.shape + (num_units,), bool) for a in out_avals[num_carry:]]
        steps = range(length - 1, -1, -1) if params["reverse"] else range(length)
        for t in steps:
            rows = np.zeros((width, num_units), np.float32)
            step_ins = ins[:num_consts] + carry + [None if p is None else _index(p, t) for p in xs_in]
            for p, offset, aval in zip(step_ins, offsets, avals):
                if offset is not None:
                    n = math.prod(aval.shape)
                    rows[offset:offset + n] = full(p, aval.shape, num_units).reshape(n, num_units)
            start = base + t * own
            rows[size + np.arange(own), start + np.arange(own)] = 1.0
            flat = (matrix @ rows) > 0
            pieces, at = [], 0
            for a in out_avals:
                n = math.prod(a.shape)
                pieces.append(flat[at:at + n].reshape(a.shape + (num_units,)))
                at += n
            carry = pieces[:num_carry]
            for y, piece in zip(ys, pieces[num_carry:]):
                y[t] = piece
        return [*carry, *ys]


def _index(p: np.ndarray, t: int) -> np.ndarray:
    return p[t] if p.shape[0] > 1 else p[0]


def _rule(eqn: core.JaxprEqn, ins: list[Prov], num_units: int) -> list[Prov]:
    """Output provenance of one primitive without sites inside."""
    name, params = eqn.primitive.name, eqn.params
    outs: list[Any] = [v.aval for v in eqn.outvars]
    if all(p is None for p in ins):
        return [None] * len(outs)
    shapes = [getattr(v.aval, "shape", ()) for v in eqn.invars]
    if name in ELEMENTWISE and len(outs) == 1:
        shape = outs[0].shape
        return [union([None if p is None else _align(p, s, shape, num_units) for p, s in zip(ins, shapes)])]
    (p,), shape = ins[:1], shapes[0] if shapes else ()
    if name == "broadcast_in_dim" and all(q is None for q in ins[1:]):
        p = full(p, shape, num_units)
        out_shape = params["shape"]
        target = [1] * len(out_shape)
        for i, d in enumerate(params["broadcast_dimensions"]):
            target[d] = shape[i]
        return [p.reshape(target + [num_units])]
    if name in ("reshape", "squeeze", "expand_dims") and all(q is None for q in ins[1:]):
        return [full(p, shape, num_units).reshape(outs[0].shape + (num_units,))]
    if name == "transpose":
        return [np.transpose(full(p, shape, num_units), tuple(params["permutation"]) + (len(shape),))]
    if name == "rev":
        return [np.flip(full(p, shape, num_units), axis=tuple(params["dimensions"]))]
    if name == "slice":
        strides = params["strides"] or (1,) * len(shape)
        index = tuple(slice(a, b, s) for a, b, s in zip(params["start_indices"], params["limit_indices"], strides))
        return [full(p, shape, num_units)[index]]
    if name == "stack":
        return [np.stack([full(q, s, num_units) for q, s in zip(ins, shapes)], axis=params["axis"])]
    if name == "split":
        bounds = np.cumsum(params["sizes"])[:-1]
        return list(np.split(full(p, shape, num_units), bounds, axis=params["axis"]))
    if name == "concatenate":
        return [np.concatenate([full(q, s, num_units) for q, s in zip(ins, shapes)], axis=params["dimension"])]
    if name in REDUCTIONS:
        return [np.asarray(full(p, shape, num_units).any(axis=tuple(params["axes"])))]
    if name in ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"):
        return [np.broadcast_to(full(p, shape, num_units).any(axis=params["axis"], keepdims=True),
                                shape + (num_units,))]
    if name == "dot_general":
        return [_dot_general(ins, shapes, params, outs[0].shape, num_units)]
    mixed = functools.reduce(np.logical_or, [whole(q, num_units) for q in ins])
    return [np.broadcast_to(mixed, getattr(a, "shape", ()) + (num_units,)) for a in outs]


def _align(p: np.ndarray, shape: tuple, out_shape: tuple, num_units: int) -> np.ndarray:
    """An elementwise operand's provenance on the output: size-1 axes broadcast, a lower-rank operand mixes."""
    if len(shape) == len(out_shape):
        return np.broadcast_to(full(p, shape, num_units), out_shape + (num_units,))
    return np.broadcast_to(whole(p, num_units), out_shape + (num_units,))


def _dot_general(ins, shapes, params, out_shape, num_units):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = params["dimension_numbers"]
    parts = []
    for p, shape, contract, batch, side in ((ins[0], shapes[0], lhs_contract, lhs_batch, 0),
                                            (ins[1], shapes[1], rhs_contract, rhs_batch, 1)):
        if p is None:
            continue
        reduced = full(p, shape, num_units).any(axis=tuple(contract), keepdims=True)
        free = [d for d in range(len(shape)) if d not in contract and d not in batch]
        moved = np.transpose(reduced, tuple(batch) + tuple(free) + tuple(contract) + (len(shape),))
        moved = moved.reshape(moved.shape[:len(batch) + len(free)] + (num_units,))
        other_free = len(out_shape) - len(batch) - len(free)
        if side == 0:
            moved = moved.reshape(moved.shape[:-1] + (1,) * other_free + (num_units,))
        else:
            moved = moved.reshape(moved.shape[:len(batch)] + (1,) * other_free + moved.shape[len(batch):])
        parts.append(np.broadcast_to(moved, out_shape + (num_units,)))
    return union(parts)
