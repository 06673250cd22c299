"""The op contract (ops/contract.py): bad input raises a ValueError that names what was wrong,
every op takes the whole contract, and sizes are checked one way."""

import inspect

import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.ops import contract

from .cases import B, H, K, N, S, T, _call


def _zeros(shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


# (id, overrides of the valid call, regex the message must match)
BAD_INPUTS = [
    ("query_rank_3", dict(query=_zeros((B, T, N * H))), r"query"),
    ("key_rank_5", dict(key=_zeros((B, S, K, H, 1))), r"key"),
    ("value_rank_3", dict(value=_zeros((B, S, K * H))), r"value"),
    (
        "batch_mismatch",
        dict(key=_zeros((B + 1, S, K, H)), value=_zeros((B + 1, S, K, H))),
        r"batch",
    ),
    (
        "head_dim_mismatch",
        dict(key=_zeros((B, S, K, H + 2)), value=_zeros((B, S, K, H + 2))),
        r"head_dim|head dim",
    ),
    ("value_length_mismatch", dict(value=_zeros((B, S + 1, K, H))), r"value"),
    ("value_heads_mismatch", dict(value=_zeros((B, S, K * 2, H))), r"value"),
    (
        "heads_not_multiple_of_kv_heads",
        dict(key=_zeros((B, S, 3, H)), value=_zeros((B, S, 3, H))),
        r"num_kv_heads|heads",
    ),
    (
        "integer_inputs",
        dict(
            query=_zeros((B, T, N, H), jnp.int32),
            key=_zeros((B, S, K, H), jnp.int32),
            value=_zeros((B, S, K, H), jnp.int32),
        ),
        r"dtype|float",
    ),
    (
        "query_key_dtype_mismatch",
        dict(key=_zeros((B, S, K, H), jnp.bfloat16), value=_zeros((B, S, K, H), jnp.bfloat16)),
        r"dtype",
    ),
    (
        "query_lengths_shape",
        dict(query_seq_lengths=jnp.ones((B + 1,), jnp.int32)),
        r"query_seq_lengths",
    ),
    (
        "kv_lengths_shape",
        dict(key_value_seq_lengths=jnp.ones((B, 1), jnp.int32)),
        r"key_value_seq_lengths",
    ),
    (
        "query_segment_ids_shape",
        dict(
            query_segment_ids=jnp.zeros((B, T + 1), jnp.int32),
            key_value_segment_ids=jnp.zeros((B, S), jnp.int32),
        ),
        r"query_segment_ids",
    ),
    (
        "kv_segment_ids_shape",
        dict(
            query_segment_ids=jnp.zeros((B, T), jnp.int32),
            key_value_segment_ids=jnp.zeros((B,), jnp.int32),
        ),
        r"key_value_segment_ids",
    ),
    (
        "only_query_segment_ids",
        dict(query_segment_ids=jnp.zeros((B, T), jnp.int32)),
        r"segment_ids",
    ),
    (
        "only_kv_segment_ids",
        dict(key_value_segment_ids=jnp.zeros((B, S), jnp.int32)),
        r"segment_ids",
    ),
    ("mask_not_bool", dict(mask=jnp.ones((B, N, T, S), jnp.float32)), r"mask"),
    ("mask_wrong_length", dict(mask=jnp.ones((B, N, T, S + 1), bool)), r"mask"),
    ("mask_wrong_heads", dict(mask=jnp.ones((B, 3, T, S), bool)), r"mask"),
    ("bias_wrong_length", dict(bias=_zeros((B, N, T + 1, S))), r"bias"),
    ("bias_wrong_heads", dict(bias=_zeros((B, 3, T, S))), r"bias"),
    ("window_negative", dict(local_window_size=-1), r"local_window_size"),
    ("window_negative_right", dict(local_window_size=(2, -1)), r"local_window_size"),
    ("window_tuple_of_3", dict(local_window_size=(1, 2, 3)), r"local_window_size"),
    ("window_bool", dict(local_window_size=True), r"local_window_size"),
    ("is_causal_string", dict(is_causal="false"), r"is_causal"),
    ("scale_vector", dict(scale=jnp.array([0.1, 1.0])), r"scale"),
    ("scale_string", dict(scale="0.5"), r"scale"),
    (
        "empty_kv",
        dict(key=_zeros((B, 0, K, H)), value=_zeros((B, 0, K, H))),
        r"kv_len",
    ),
    ("empty_query", dict(query=_zeros((B, 0, N, H))), r"q_len"),
]


@pytest.mark.parametrize("kind", ["dense", "flash"])
@pytest.mark.parametrize(
    "overrides, match", [pytest.param(o, m, id=name) for name, o, m in BAD_INPUTS]
)
def test_bad_input_raises(kind, overrides, match):
    """Each bad argument raises ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        _call(ops.get(kind), **overrides)


@pytest.mark.parametrize("kind", ["dense", "flash"])
def test_base_call_is_valid(kind):
    """The base call is valid, so each error above comes from its override."""
    out = _call(ops.get(kind))
    assert out.shape == (B, T, N, H) and np.isfinite(np.asarray(out)).all()


def test_every_registered_op_takes_the_whole_contract():
    # Ops built on another pass the contract on with contract.forwarded(locals()), which picks
    # these names: an op missing one would silently drop that argument. The soft cap is the
    # one optional argument: a kind takes it or not (the layer reads which from the signature).
    for name in ops.names():
        parameters = inspect.signature(ops.get(name)).parameters
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            continue
        required = [a for a in contract.CONTRACT_ARGUMENTS if a != "logits_soft_cap"]
        missing = [a for a in required if a not in parameters]
        assert not missing, (name, missing)


@pytest.mark.parametrize(
    "value, minimum, ok",
    [(3, 1, True), (np.int64(2), 1, True), (0, 0, True), (0, 1, False), (True, 1, False)]
    + [(2.0, 1, False), ("2", 1, False), (np.bool_(True), 0, False), (-1, 0, False)],
)
def test_static_int_takes_only_integers_at_or_above_the_minimum(value, minimum, ok):
    if ok:
        assert contract.static_int("k", "n", value, minimum) == int(value)
    else:
        with pytest.raises(ValueError, match=r"k: n must be (a positive integer|an integer >=)"):
            contract.static_int("k", "n", value, minimum)
