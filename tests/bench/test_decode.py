"""The decoding-cost harness: the states it times are real, and its table reads right."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import bench, layers, ops
from attention_jax.bench import decode, layer_decode
from attention_jax.configs import decode as decode_config

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


def test_layer_decode_states_grow_only_for_full_caches():
    """Sizes are exact: a full cache grows with its length, a window or a kernel state does not."""
    rows = layer_decode.measure_layer_decode(
        ["dense", "local", "linear", "bigbird"],
        [32, 64, 9000],
        d_model=16,
        num_heads=2,
        kind_params={"local": {"local_window_size": (8, 0)}, "bigbird": {"block_size": 8}},
        warmup=1,
        repeats=1,
    )
    size = {(r.kind, r.cache_len): r.state_bytes for r in rows}
    # keys and values [1, L, 2, 8] float32, slot positions [L] int32, the index.
    assert size["dense", 64] == 2 * 64 * 16 * 4 + 64 * 4 + 4
    assert size["local", 32] == size["local", 9000] == 2 * 8 * 16 * 4 + 8 * 4 + 4
    assert size["linear", 32] == size["linear", 9000]
    assert ("bigbird", 9000) not in size  # its decoding pattern is capped at 8192 tokens
    assert all(r.step_s > 0 for r in rows)
    table = layer_decode.markdown(rows)
    assert "| `bigbird` |" in table and "—" in table


def test_a_filled_ring_holds_the_last_positions_in_their_slots():
    ring = layer_decode._filled(
        layers.decoding.kv_cache_init(1, 4, 1, 2, 2, jnp.float32), position=10
    )
    assert ring.slot_positions.tolist() == [8, 9, 6, 7] and int(ring.index) == 10
