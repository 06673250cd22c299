"""The decoding-cost harness: the states it times are real, and its table reads right."""

import jax
import numpy as np
import pytest

from attention_jax import bench, ops
from attention_jax.bench import decode
from experiments.configs import decode as decode_config

SHAPE = bench.Shape(batch=1, num_heads=4, num_kv_heads=2, head_dim=8)


def test_state_after_p_tokens_counts_them_and_matches_a_python_loop():
    state = decode._state_after(5, SHAPE, "elu", jax.random.key(3))
    assert state.position.tolist() == [5]
    keys = jax.random.split(jax.random.key(3), 5)
    looped = ops.linear_state_init(1, 2, 8)
    for key in keys:
        kq, kk, kv = jax.random.split(key, 3)
        q = jax.random.normal(kq, (1, 4, 8))
        k, v = (jax.random.normal(x, (1, 2, 8)) for x in (kk, kv))
        looped = ops.linear_step(looped, q, k, v)[1]
    np.testing.assert_allclose(state.kv, looped.kv, rtol=1e-5, atol=1e-5)


def test_measure_decode_times_both_forms_and_writes_a_table():
    rows = decode.measure_decode([4, 32], SHAPE, repeats=2, warmup=1)
    assert [r.position for r in rows] == [4, 32]
    assert all(r.linear_step_s > 0 and r.kv_cache_step_s > 0 for r in rows)
    table = decode.markdown(rows)
    assert table.count("\n") == 4 and "| 32 |" in table


def test_decode_config_small_and_bad_arg():
    assert max(decode_config.get_config("small").positions) <= 100
    assert max(decode_config.get_config().positions) == 100000
    with pytest.raises(ValueError, match="small"):
        decode_config.get_config("huge")


def test_kv_cache_step_is_softmax_attention_over_the_cache():
    """The timed baseline is one query attending to the whole cache, GQA included."""
    q = jax.random.normal(jax.random.key(0), (1, 4, 8))
    cache = jax.random.normal(jax.random.key(1), (1, 9, 2, 8))
    np.testing.assert_allclose(
        decode.kv_cache_step(q, cache, cache), ops.dense(q[:, None], cache, cache)[:, 0], atol=1e-6
    )
