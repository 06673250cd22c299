"""Runs an exact kind's call on the implementation the rules choose (`rules.py`), and explains it.

A named implementation that cannot honour a call raises a ValueError that says why and which
implementations can; `ops.explain(...)` reports the choice for a real call, and `recording()`
collects the choices of every call traced inside it (the comparison suite records them).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging

import jax
import numpy as np

from attention_jax.ops import contract
from attention_jax.ops.vendor import platform as platform_lib
from attention_jax.ops.vendor.rules import (
    IMPLEMENTATIONS,
    SERVES,
    Choice,
    Request,
    choose,
    rows_see_keys,
)

__all__ = ["IMPLEMENTATIONS", "SERVES", "Choice", "attend", "explain", "recording"]

logger = logging.getLogger("attention_jax")


def _check_layout(kind: str, layout, block: int, dims: contract.Dims) -> None:
    want = (-(-dims.q_len // block), -(-dims.kv_len // block))
    if np.shape(layout)[-2:] != want or (
        np.ndim(layout) == 3 and np.shape(layout)[0] != dims.num_heads
    ):
        raise ValueError(
            f"{kind}: layout must have shape [ceil(q_len / block), ceil(kv_len / block)] = "
            f"{list(want)}, or [num_heads = {dims.num_heads}, *{list(want)}]; got "
            f"{np.shape(layout)}."
        )


# Collects the choices of the calls traced inside `recording()`.
_RECORDED = contextvars.ContextVar("attention_jax_recorded_choices", default=None)
_LOGGED: set = set()


@contextlib.contextmanager
def recording():
    """Yields a list that collects the `Choice` of every exact-kind call traced inside it.

    with dispatch.recording() as choices:
        jax.jit(model_step).lower(state, batch)   # tracing is enough
    {c.implementation for c in choices}           # e.g. {'cudnn'}
    """
    recorded: list[Choice] = []
    token = _RECORDED.set(recorded)
    try:
        yield recorded
    finally:
        _RECORDED.reset(token)


def _static(x) -> bool:
    return not isinstance(x, jax.core.Tracer) and np.ndim(x) == 0


def attend(
    kind: str,
    implementation: str | None,
    query,
    key,
    value,
    bias,
    mask,
    arguments: dict,
    *,
    global_positions=(),
    layout=None,
    block: int | None = None,
    weights: bool = False,
):
    """The output of a vendor implementation for this call, or None when 'xla' runs it.

    Called first by each exact op with its contract arguments and its structure (global
    positions, static block layout and its block size).
    """
    recording = _RECORDED.get()
    where = platform_lib.detect()
    if implementation is None and recording is None and where.name == "cpu":
        return None  # the common CPU case: nothing to decide
    dims = contract.check_qkv(kind, query, key, value)
    if layout is not None:
        _check_layout(kind, layout, block, dims)
    window = contract.check_window(kind, arguments.get("local_window_size"))
    soft_cap = contract.check_soft_cap(kind, arguments.get("logits_soft_cap"))
    scale = contract.check_scale(kind, arguments.get("scale"), dims.head_dim)
    is_causal = arguments.get("is_causal", False)
    if not isinstance(is_causal, (bool, np.bool_)):
        raise ValueError(f"{kind}: is_causal must be a Python bool (static); got {is_causal!r}.")
    q_lengths = contract.check_lengths(
        kind, "query_seq_lengths", arguments.get("query_seq_lengths"), dims.batch
    )
    kv_lengths = contract.check_lengths(
        kind, "key_value_seq_lengths", arguments.get("key_value_seq_lengths"), dims.batch
    )
    q_segments, kv_segments = contract.check_segment_ids(
        kind, arguments.get("query_segment_ids"), arguments.get("key_value_segment_ids"), dims
    )
    if bias is not None:
        contract.split_heads_4d(kind, "bias", bias, dims, "float")
    if mask is not None:
        contract.split_heads_4d(kind, "mask", mask, dims, "bool")
    request = Request(
        kind=kind,
        dtype=str(query.dtype),
        q_len=dims.q_len,
        kv_len=dims.kv_len,
        num_heads=dims.num_heads,
        num_kv_heads=dims.num_kv_heads,
        head_dim=dims.head_dim,
        value_dim=value.shape[-1],
        is_causal=bool(is_causal),
        window=window,
        global_positions=tuple(global_positions or ()),
        layout=layout is not None,
        bias=bias is not None,
        mask=mask is not None,
        lengths=q_lengths is not None or kv_lengths is not None,
        segment_ids=q_segments is not None,
        soft_cap=soft_cap is not None,
        static_scale=_static(scale),
        weights=weights,
        rows_see_keys=rows_see_keys(
            dims.q_len, dims.kv_len, is_causal, window, global_positions, layout, block
        ),
    )
    choice = choose(request, implementation, where)
    if recording is not None:
        recording.append(choice)
    if where.name != "cpu" and (request, implementation) not in _LOGGED:
        _LOGGED.add((request, implementation))
        logger.info("%s", choice)
    if choice.implementation == "xla":
        return None
    checked = dict(
        scale=scale,
        is_causal=is_causal,
        window=window,
        q_lengths=q_lengths,
        kv_lengths=kv_lengths,
        q_segments=q_segments,
        kv_segments=kv_segments,
        soft_cap=soft_cap,
    )
    try:
        return _run(
            choice.implementation,
            where,
            query,
            key,
            value,
            bias,
            mask,
            checked,
            global_positions=global_positions,
            layout=layout,
            block=block,
        )
    except NotImplementedError as error:
        # A kernel's own shape check that the rules do not know yet: the automatic choice falls
        # back to XLA (and says so once); a named implementation reports it as a ValueError.
        if implementation is not None:
            raise ValueError(
                f"{kind}: implementation={implementation!r} cannot run this call: {error}"
            ) from error
        if (request, "fallback") not in _LOGGED:
            _LOGGED.add((request, "fallback"))
            logger.warning(
                "%s: %r refused the call (%s); running 'xla'", kind, choice.implementation, error
            )
        return None


def _run(name, where, query, key, value, bias, mask, checked, **structure):
    """Calls vendor implementation `name` with the checked contract arguments it takes."""
    c = checked
    if name == "cudnn":
        from attention_jax.ops.vendor.cudnn import cudnn_attention

        return cudnn_attention(
            query,
            key,
            value,
            bias,
            scale=c["scale"],
            is_causal=c["is_causal"],
            window=c["window"],
            q_lengths=c["q_lengths"],
            kv_lengths=c["kv_lengths"],
        )
    if name == "pallas_gpu":
        from attention_jax.ops.vendor.pallas_gpu import pallas_gpu_attention

        return pallas_gpu_attention(
            query, key, value, scale=c["scale"], is_causal=c["is_causal"], interpret=where.interpret
        )
    if name == "pallas_tpu":
        from attention_jax.ops.vendor.splash import splash_attention

        return splash_attention(query, key, value, **c, **structure, interpret=where.interpret)
    from attention_jax.ops.vendor.tokamax import tokamax_attention

    return tokamax_attention(
        query,
        key,
        value,
        bias,
        mask,
        scale=c["scale"],
        is_causal=c["is_causal"],
        window=c["window"],
        q_lengths=c["q_lengths"],
        kv_lengths=c["kv_lengths"],
        soft_cap=c["soft_cap"],
    )


def explain(kind: str, query, key, value, bias=None, mask=None, **params) -> Choice:
    """Which implementation `ops.get(kind)(query, key, value, bias, mask, **params)` runs here,
    and why the ones before it could not (traced abstractly: nothing is computed).

        print(ops.explain("flash", q, k, v, is_causal=True))
        # flash on nvidia gpu sm90, implementation=None (automatic): runs 'cudnn'
    """
    from attention_jax.ops import registry

    record = registry.kind(kind)
    if not record.takes("implementation"):
        raise ValueError(
            f"explain: kind {kind!r} has one implementation ('xla'); the exact kinds "
            f"({', '.join(SERVES['xla'])}) have more."
        )
    with recording() as recorded:
        jax.eval_shape(lambda q, k, v: record.op(q, k, v, bias, mask, **params), query, key, value)
    return recorded[-1]
