"""ops.flax_attention_fn: any kind runs inside flax.nnx.MultiHeadAttention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import ops


def _layer(attention_fn, **kwargs):
    return nnx.MultiHeadAttention(
        num_heads=4,
        in_features=32,
        num_kv_heads=2,
        decode=False,
        attention_fn=attention_fn,
        rngs=nnx.Rngs(0),
        **kwargs,
    )


@pytest.mark.parametrize("kind", ["dense", "flash"])
def test_matches_flax_default_attention(kind):
    x = jax.random.normal(jax.random.key(1), (2, 24, 32))
    padding = jnp.arange(24)[None, :] < jnp.array([24, 10])[:, None]
    mask = nnx.make_attention_mask(padding, padding)  # [B, 1, T, S]
    reference = _layer(nnx.dot_product_attention)
    ours = _layer(
        ops.flax_attention_fn(kind, **({"block_q": 8, "block_kv": 8} if kind == "flash" else {}))
    )
    want = reference(x, mask=mask)
    got = ours(x, mask=mask)
    # Padded query rows: flax averages all values, the contract returns zeros; compare real rows.
    valid = np.asarray(padding)
    np.testing.assert_allclose(
        np.asarray(got)[valid], np.asarray(want)[valid], atol=2e-5, rtol=2e-5
    )


@pytest.mark.parametrize("kind", ["dense", "flash"])
def test_trains_inside_an_nnx_model(kind):
    model = _layer(ops.flax_attention_fn(kind))
    x = jax.random.normal(jax.random.key(2), (2, 16, 32))

    @nnx.jit
    def loss_and_grad(model, x):
        return nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)

    loss, grads = loss_and_grad(model, x)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(loss))
    assert leaves and all(np.all(np.isfinite(g)) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_attention_dropout_is_refused():
    layer = _layer(ops.flax_attention_fn("flash"), dropout_rate=0.1)
    x = jnp.ones((1, 8, 32))
    with pytest.raises(ValueError, match="dropout"):
        layer(x, deterministic=False, rngs=nnx.Rngs(dropout=0))


def test_unknown_kind_lists_choices():
    with pytest.raises(ValueError, match="dense"):
        ops.flax_attention_fn("nope")


def test_kind_bound_causal_combines_with_flax_is_causal():
    x = jax.random.normal(jax.random.key(3), (1, 12, 32))
    causal = _layer(ops.flax_attention_fn("flash", is_causal=True, block_q=4, block_kv=4))
    reference = _layer(nnx.dot_product_attention)
    mask = nnx.make_causal_mask(jnp.ones((1, 12)))
    np.testing.assert_allclose(causal(x), reference(x, mask=mask), atol=2e-5, rtol=2e-5)


def test_matmul_precision_is_refused():
    layer = _layer(ops.flax_attention_fn("dense"), precision="highest")
    with pytest.raises(ValueError, match="precision"):
        layer(jnp.ones((1, 8, 32)))
