"""Bad input to the exact-softmax ops raises a ValueError that names what was wrong."""

import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .reference import random_qkv

B, T, S, N, K, H = 2, 5, 7, 4, 2, 8


def _call(op, **overrides):
    """Calls op on valid inputs with some arguments replaced or added."""
    q, k, v = random_qkv(0, B, T, S, N, K, H)
    kwargs = dict(query=q, key=k, value=v) | overrides
    return op(kwargs.pop("query"), kwargs.pop("key"), kwargs.pop("value"), **kwargs)


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


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(dict(block_q=0), id="block_q_0"),
        pytest.param(dict(block_kv=-8), id="block_kv_negative"),
        pytest.param(dict(block_q=True), id="block_q_bool"),
    ],
)
def test_flash_bad_block_sizes(block):
    """Flash block sizes must be positive."""
    with pytest.raises(ValueError, match=next(iter(block))):
        _call(ops.flash, **block)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: ops.get("no_such_kind"), id="get"),
        pytest.param(lambda: _call(ops.attention, kind="no_such_kind"), id="attention"),
    ],
)
def test_unknown_kind_lists_valid_names(call):
    """An unknown kind names itself and the valid kinds."""
    with pytest.raises(ValueError, match="no_such_kind") as error:
        call()
    assert "dense" in str(error.value) and "flash" in str(error.value)


@pytest.mark.parametrize("kind", ["dense", "flash"])
def test_base_call_is_valid(kind):
    """The base call is valid, so each error above comes from its override."""
    out = _call(ops.get(kind))
    assert out.shape == (B, T, N, H) and np.isfinite(np.asarray(out)).all()
