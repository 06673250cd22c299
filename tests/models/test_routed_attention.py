"""Models with SwitchHead routed attention (`moe_attention`): built from configs, causal where
they must be, blind to padding, rotary positions applied, unsupported options refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers
from attention_jax.train import sharding
from tests.layers.test_moe_attention import switchhead_np
from tests.models import tiny

ROUTED = {"num_experts": 3, "top_k": 2}


def _routed(name, **overrides):
    return tiny.model(name, num_kv_heads=None, moe_attention=ROUTED, **overrides)


@pytest.mark.parametrize("name", ["classifier", "lm", "encoder_decoder", "vit"])
def test_every_family_routes_its_self_attention(name):
    model = _routed(name)
    routed = [m for _, m in nnx.iter_graph(model) if isinstance(m, layers.MoEAttention)]
    assert len(routed) == {"encoder_decoder": 4}.get(name, 2)
    logits = tiny.apply(model, name, tiny.inputs(name))
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_language_model_is_causal():
    model = _routed("lm", positions="rope")
    tokens = tiny.inputs("lm")["tokens"]
    changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % 50)
    before, after = (
        tiny.apply(model, "lm", {"tokens": tokens}),
        tiny.apply(model, "lm", {"tokens": changed}),
    )
    np.testing.assert_array_equal(before[:, :9], after[:, :9])
    assert not np.allclose(before[:, 9:], after[:, 9:])


def test_classifier_ignores_padding():
    model = _routed("classifier", pooling="mean")
    inputs = tiny.inputs("classifier")  # the first row has 5 padding tokens
    noisy = dict(inputs, tokens=inputs["tokens"].at[0, -5:].set(7))
    np.testing.assert_allclose(
        tiny.apply(model, "classifier", inputs), tiny.apply(model, "classifier", noisy), atol=1e-6
    )


def _rope_np(x, positions):
    """RoPE of [B, T, N, H] in float64: pairs (i, i + H/2) turned by pos * 1e4^(-2i/H)."""
    half = x.shape[-1] // 2
    angles = positions[:, None] * 10000.0 ** (-np.arange(half) / half)
    cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, first * sin + second * cos], -1)


def test_rotary_positions_match_float64():
    layer = layers.MoEAttention(16, 2, num_experts=3, top_k=2, positions="rope", rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).standard_normal((2, 7, 16)).astype(np.float32)
    got = layer(jnp.asarray(x), is_causal=True)
    # The reference with q and k rotated: rotate the projections, as the layer does.
    p = {name: np.asarray(getattr(layer, name)[...], np.float64) for name in ("query", "key")}
    x64 = np.asarray(x, np.float64)
    positions = np.arange(7, dtype=np.float64)
    q = _rope_np(np.einsum("btd,dnh->btnh", x64, p["query"]), positions)
    k = _rope_np(np.einsum("btd,dnh->btnh", x64, p["key"]), positions)
    want = switchhead_np(layer, x, k=2, causal=True, rotated=(q, k))
    np.testing.assert_allclose(got, want, atol=3e-5, rtol=3e-5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(moe_attention={"top_k": 2}), "needs num_experts"),
        (dict(moe_attention={"num_experts": 2, "top_k": 3}), "1 <= top_k <= num_experts"),
        (dict(moe_attention={"num_experts": 2, "experts": 3}), "needs num_experts"),
        (dict(moe_attention=ROUTED, lora_rank=2), "lora_rank"),
        (dict(moe_attention=ROUTED, num_kv_heads=2), "num_kv_heads"),
        (dict(moe_attention=ROUTED, positions="alibi"), "alibi"),
        (dict(moe_attention=ROUTED, attention="performer"), "performer"),
    ],
)
def test_unsupported_options_are_refused_in_the_config(overrides, match):
    overrides.setdefault("num_kv_heads", None)
    with pytest.raises(ValueError, match=match):
        tiny.config("lm", **overrides)


def test_decoding_is_refused_with_a_clear_error():
    model = _routed("lm")
    with pytest.raises(ValueError, match="no decoding cache"):
        model.init_cache(2, 16)


def test_routed_parameters_shard_their_heads_and_embed_axes():
    model = _routed("lm")
    axes = {
        "/".join(sharding.path_names(path)): sharding.logical_axes(path, leaf.ndim)
        for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    }
    prefix = "decoder/blocks/attention/"
    assert axes[prefix + "query"] == ("embed", "heads", None)
    assert axes[prefix + "value_experts"] == ("embed", "heads", None, None)
    assert axes[prefix + "out_experts"] == ("heads", None, None, "embed")
    assert axes[prefix + "value_router"] == ("embed", "heads", None)
