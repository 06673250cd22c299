"""FLOPs of a JAX function counted from its jaxpr, with loop bodies multiplied by trip count.

XLA's `cost_analysis()` counts a loop body once whatever its trip count, so it under-reports any
blocked kind (flash, sparse, chunked linear). Counting the jaxpr instead sees every `lax.scan`
step: matmuls as 2 * M * N * K, elementwise arithmetic and reductions as one FLOP per element,
data movement as free. For loop-free programs the two counts agree (see tests/bench).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
from jax.extend import core

_ELEMENTWISE = frozenset(
    "add add_any sub mul div rem neg max min exp exp2 expm1 log log1p tanh logistic sqrt rsqrt "
    "erfc cbrt pow integer_pow abs sign select_n square erf erf_inv cos sin tan atan2 floor ceil "
    "round clamp is_finite eq ne lt le gt ge and or not xor nextafter".split()
)
_REDUCTIONS = frozenset(
    "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax argmin "
    "cumsum cumprod cummax cummin cumlogsumexp top_k".split()
)
# Data movement, type changes and randomness: no arithmetic to count.
_FREE = frozenset(
    "reshape transpose broadcast_in_dim squeeze expand_dims slice dynamic_slice "
    "dynamic_update_slice gather scatter concatenate pad convert_element_type iota copy copy_p "
    "rev split bitcast_convert_type reduce_precision stop_gradient sharding_constraint pvary "
    "pcast device_put random_bits random_seed random_wrap random_unwrap random_fold_in "
    "random_split threefry2x32 shift_left shift_right_logical shift_right_arithmetic "
    "optimization_barrier stack unstack".split()
)
# Primitives that only wrap a sub-program, counted by recursing into it.
_CALLS = frozenset(
    "jit pjit closed_call core_call remat remat2 checkpoint custom_jvp_call custom_vjp_call "
    "custom_vjp_call_jaxpr custom_lin shard_map".split()
)


def _size(aval) -> int:
    return math.prod(aval.shape)


def _dot_general_flops(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    contracted = math.prod(lhs_shape[d] for d in lhs_contract)
    return 2 * _size(eqn.outvars[0].aval) * contracted


def _qr_flops(shape) -> int:
    """Householder QR of [..., m, n]: 2 m n^2 - 2 n^3 / 3 per matrix (m >= n), Q formed too."""
    *batch, m, n = shape
    k = min(m, n)
    return 2 * math.prod(batch) * (2 * m * n * k - 2 * k**3 // 3)


def _sub_jaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, core.Jaxpr):
                yield item


def jaxpr_flops(jaxpr: core.Jaxpr) -> int:
    """FLOPs of one evaluation of `jaxpr`."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_general_flops(eqn)
        elif name in _ELEMENTWISE:
            total += sum(_size(v.aval) for v in eqn.outvars)
        elif name in _REDUCTIONS:
            total += _size(eqn.invars[0].aval)
        elif name in ("scatter-add", "scatter_add"):
            total += _size(eqn.invars[2].aval)  # one addition per update element
        elif name == "sort":
            # Comparisons, not arithmetic, but they are the work: n log2 n per sorted row.
            length = eqn.invars[0].aval.shape[eqn.params["dimension"]]
            total += _size(eqn.invars[0].aval) * max(1, math.ceil(math.log2(max(length, 2))))
        elif name == "qr":
            total += _qr_flops(eqn.invars[0].aval.shape)
        elif name == "triangular_solve":
            # Substitution with an m x m triangle: m^2 multiply-adds per right-hand side.
            total += _size(eqn.invars[1].aval) * eqn.invars[0].aval.shape[-1]
        elif name == "scan":
            total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"].jaxpr)
        elif name == "cond":
            total += max(jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
        elif name == "while":
            raise ValueError(
                "count_flops: a while loop has a data-dependent trip count; express the loop "
                "as lax.scan (or fori_loop with static bounds) to count it."
            )
        elif name in _CALLS:
            total += sum(jaxpr_flops(sub) for sub in _sub_jaxprs(eqn.params))
        elif name not in _FREE:
            # Counting an unknown primitive as free would silently flatter a kind.
            raise ValueError(
                f"count_flops: no FLOP rule for primitive {name!r}; add it to "
                "attention_jax/bench/flops.py."
            )
    return total


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of `fn(*args, **kwargs)` with every loop step counted."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)
