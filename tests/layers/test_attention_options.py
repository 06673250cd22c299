"""MultiHeadAttention options: soft cap, feature redraws, LoRA, attention maps, the Linen bridge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers, ops

D, N, T = 32, 4, 12
X = jax.random.normal(jax.random.key(1), (2, T, D))


def _qkv(layer, x):
    return layer.query(x), layer.key(x), layer.value(x)


@pytest.mark.parametrize("kind", ["dense", "flash", "local"])
def test_soft_cap_equals_dense_with_the_cap_and_decodes(kind):
    layer = layers.MultiHeadAttention(
        D, N, kind=kind, logits_soft_cap=0.5, max_len=T, rngs=nnx.Rngs(0)
    )
    q, k, v = _qkv(layer, X)
    window = layer.kind_params.get("local_window_size")
    want = layer.out(
        ops.dense(q, k, v, is_causal=True, local_window_size=window, logits_soft_cap=0.5)
    )
    full = layer(X, is_causal=True)
    np.testing.assert_allclose(full, want, atol=1e-5)
    assert np.abs(full - layer.out(ops.dense(q, k, v, is_causal=True))).max() > 1e-3
    layer.init_cache(2, T)
    steps = jnp.concatenate([layer(X[:, t : t + 1], decode=True) for t in range(T)], 1)
    np.testing.assert_allclose(steps, full, atol=1e-5)


def test_soft_cap_on_a_kind_without_logits_lists_the_kinds_that_take_it():
    with pytest.raises(ValueError, match=r"'performer' has no logits.*'flash'"):
        layers.MultiHeadAttention(D, N, kind="performer", logits_soft_cap=5.0, rngs=nnx.Rngs(0))


def test_features_are_redrawn_every_n_training_calls_only():
    layer = layers.MultiHeadAttention(D, N, kind="performer", redraw_every=3, rngs=nnx.Rngs(0))
    step = nnx.jit(lambda m, x: m(x))
    seen = []
    for _ in range(7):
        step(layer, X)
        seen.append(np.asarray(layer.features.projection[...]))
    changed = [not np.array_equal(a, b) for a, b in zip(seen, seen[1:])]
    # Calls 3 and 6 redraw: the projection after call 3 differs from after call 2, and so on.
    assert changed == [False, True, False, False, True, False]
    layer(X, deterministic=True)  # evaluation calls do not count
    layer.eval()
    layer(X)
    np.testing.assert_array_equal(layer.features.projection[...], seen[-1])
    with pytest.raises(ValueError, match="redraw_every"):
        layers.MultiHeadAttention(D, N, kind="linear", redraw_every=3, rngs=nnx.Rngs(0))


def test_lora_adds_a_low_rank_update_to_each_projection():
    layer = layers.MultiHeadAttention(D, N, num_kv_heads=2, lora_rank=3, rngs=nnx.Rngs(0))
    lora_state = nnx.state(layer, nnx.LoRAParam)
    assert len(jax.tree.leaves(lora_state)) == 8
    # B starts at zero: the layer starts as the plain attention.
    q, k, v = _qkv(layer, X)
    np.testing.assert_allclose(layer(X), layer.out(ops.dense(q, k, v)), atol=1e-6)
    for name in ("query", "key", "value", "out"):
        b = layer.lora[name].lora_b
        b[...] = jax.random.normal(jax.random.key(len(name)), b.shape)
    a_q, b_q = layer.lora["query"].lora_a[...], layer.lora["query"].lora_b[...]
    q_lora = layer.query(X) + (X @ a_q @ b_q).reshape(2, T, N, D // N)
    np.testing.assert_allclose(layer._project("query", X), q_lora, atol=1e-5)
    grads = nnx.grad(lambda m: jnp.sum(m(X) ** 2), argnums=nnx.DiffState(0, nnx.LoRAParam))(layer)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.abs(np.asarray(g)).max() > 0, f"no gradient reaches {path}"
    full = layer(X, is_causal=True)
    layer.init_cache(2, T)
    np.testing.assert_allclose(layer(X, decode=True), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "local", "performer", "linformer"])
def test_recorded_maps_reproduce_the_output(kind):
    layer = layers.MultiHeadAttention(
        D, N, kind=kind, record_maps=True, max_len=T, rngs=nnx.Rngs(0)
    )
    run = nnx.capture(lambda m, x: m(x, is_causal=kind != "linformer"), nnx.Intermediate)
    out, captured = run(layer, X)
    (weights,) = captured["attention_weights"]
    assert weights.shape == (2, N, T, T)
    # The output is the map applied to the values, then the output projection.
    v = layer.value(X)
    np.testing.assert_allclose(layer.out(jnp.einsum("bnts,bsnh->btnh", weights, v)), out, atol=1e-5)
    if kind != "linformer":  # Linformer's map over positions need not be causal
        assert np.abs(np.triu(np.asarray(weights), k=1)).max() == 0


def test_maps_are_not_recorded_by_default():
    layer = layers.MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    _, captured = nnx.capture(lambda m, x: m(x), nnx.Intermediate)(layer, X)
    assert "attention_weights" not in captured


def test_linen_wrapper_equals_the_nnx_layer_with_its_weights():
    attn = layers.linen_attention(D, N, kind="flash", positions="rope")
    variables = attn.init(jax.random.key(0), X)
    got = attn.apply(variables, X, is_causal=True)
    layer = layers.MultiHeadAttention(D, N, kind="flash", positions="rope", rngs=nnx.Rngs(5))
    for name in ("query", "key", "value", "out"):
        for p in ("kernel", "bias"):
            getattr(getattr(layer, name), p)[...] = variables["params"][name][p]
    np.testing.assert_allclose(got, layer(X, is_causal=True), atol=1e-6)


@pytest.mark.parametrize("kind", ["dense", "performer"])
def test_qk_norm_in_bfloat16_with_float32_params(kind):
    layer = layers.MultiHeadAttention(
        D, N, kind=kind, qk_norm=True, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)
    )
    out = layer(X.astype(jnp.bfloat16), is_causal=True)
    assert out.dtype == jnp.bfloat16 and jnp.isfinite(out.astype(jnp.float32)).all()
    assert layer.q_norm.scale[...].dtype == jnp.float32


def test_array_kind_params_are_accepted_and_used():
    projection = ops.favor_projection(jax.random.key(3), 16, D // N)
    performer = layers.MultiHeadAttention(
        D, N, kind="performer", kind_params={"projection": projection}, rngs=nnx.Rngs(0)
    )
    q, k, v = _qkv(performer, X)
    want = performer.out(ops.performer(q, k, v, projection=projection))
    np.testing.assert_allclose(performer(X), want, atol=1e-5)
    layout = np.eye(3, dtype=bool)  # a numpy layout, stored as nested tuples
    sparse = layers.MultiHeadAttention(
        D, N, kind="block_sparse", kind_params={"layout": layout, "block_size": 4}, rngs=nnx.Rngs(0)
    )
    q, k, v = _qkv(sparse, X)
    want = sparse.out(ops.block_sparse(q, k, v, layout=layout, block_size=4))
    np.testing.assert_allclose(sparse(X), want, atol=1e-5)


def test_bigbird_needs_an_explicit_seed_under_abstract_init():
    with pytest.raises(ValueError, match="seed"):
        nnx.eval_shape(lambda: layers.MultiHeadAttention(D, N, kind="bigbird", rngs=nnx.Rngs(0)))
    abstract = nnx.eval_shape(
        lambda: layers.MultiHeadAttention(
            D, N, kind="bigbird", kind_params={"seed": 1}, rngs=nnx.Rngs(0)
        )
    )
    assert abstract.kind_params["seed"] == 1


def test_head_count_that_does_not_divide_the_features_is_refused():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        layers.MultiHeadAttention(30, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="lora_rank"):
        layers.MultiHeadAttention(D, N, lora_rank=0, rngs=nnx.Rngs(0))
