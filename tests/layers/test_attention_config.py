"""AttentionConfig: one object from the model config to the layer, equal to the keywords."""

import jax
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers, models
from attention_jax.layers import AttentionConfig

D, N, F, T = 16, 4, 32, 8
X = jax.random.normal(jax.random.key(0), (2, T, D))


def _same_layer(a, b):
    """Equal parameters, and equal outputs on X (causal, so every kind here can run)."""
    for x, y in zip(
        jax.tree.leaves(nnx.state(a, nnx.Param)),
        jax.tree.leaves(nnx.state(b, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(a(X, is_causal=True), b(X, is_causal=True), atol=1e-6)


OPTIONS = [
    dict(kind="local", kind_params={"local_window_size": (3, 0)}, positions="rope"),
    dict(kind="performer", num_kv_heads=2, qk_norm=True, redraw_every=10),
    dict(kind="flash", head_dim=8, logits_soft_cap=20.0, lora_rank=2, use_bias=False),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: o["kind"])
def test_a_layer_from_a_config_equals_one_from_keywords(options):
    config = AttentionConfig(num_heads=N, **options)
    _same_layer(
        layers.MultiHeadAttention(D, attention=config, rngs=nnx.Rngs(0)),
        layers.MultiHeadAttention(D, N, **options, rngs=nnx.Rngs(0)),
    )


def test_a_block_from_a_config_equals_one_from_keywords():
    options = dict(kind="local", kind_params={"local_window_size": (2, 0)}, lora_rank=2)
    from_config = layers.DecoderBlock(
        D, mlp_dim=F, attention=AttentionConfig(num_heads=N, **options), rngs=nnx.Rngs(0)
    )
    from_keywords = layers.DecoderBlock(D, N, F, **options, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(from_config(X), from_keywords(X), atol=1e-6)
    # lora_rank reaches the feed-forward network too, as the block's own option did.
    assert jax.tree.leaves(nnx.state(from_config.ffn, nnx.LoRAParam))


def test_the_model_config_gives_each_layer_its_attention_config():
    config = models.LanguageModelConfig(
        vocab_size=32,
        d_model=D,
        num_heads=N,
        num_layers=2,
        attention=("local", "bigbird"),
        kind_params={"local": {"local_window_size": (2, 0)}, "bigbird": {"block_size": 4}},
        qk_norm=True,
        positions="learned",
    )
    local = config.attention_config("local", layer=0, max_len=T)
    assert (local.kind, local.kind_params, local.qk_norm) == (
        "local",
        {"local_window_size": (2, 0)},
        True,
    )
    # Added positions are the embedder's; BigBird's layout seed is the layer's index.
    assert local.positions is None and local.max_len == T
    assert config.attention_config("bigbird", layer=1).kind_params == {"block_size": 4, "seed": 1}
    model = models.build(config, rngs=nnx.Rngs(0))
    assert [b.attention.kind for b in model.decoder.blocks] == ["local", "bigbird"]


def test_cross_attention_keeps_the_heads_but_not_positions_or_routing():
    block = layers.DecoderBlock(
        D,
        mlp_dim=F,
        attention=AttentionConfig(num_heads=N, num_kv_heads=2, positions="rope", max_len=T),
        cross_attention="multihead",
        cross_kind="flash",
        rngs=nnx.Rngs(0),
    )
    cross = block.cross_attention
    assert (cross.kind, cross.num_kv_heads, cross.positions) == ("flash", 2, None)


def test_replace_gives_a_checked_copy():
    config = AttentionConfig(num_heads=N, kind="local", kind_params={"local_window_size": 2})
    wider = config.replace(num_heads=8)
    assert (wider.num_heads, wider.kind_params, config.num_heads) == (8, config.kind_params, N)
    with pytest.raises(ValueError, match="AttentionConfig: num_heads must be a positive integer"):
        config.replace(num_heads=0)


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: layers.MultiHeadAttention(
                D, N, attention=AttentionConfig(num_heads=N), rngs=nnx.Rngs(0)
            ),
            "in the AttentionConfig or as keywords, not both",
        ),
        (
            lambda: layers.MultiHeadAttention(D, N, windw=3, rngs=nnx.Rngs(0)),
            r"MultiHeadAttention: unknown option\(s\) \['windw'\]; the options are",
        ),
        (
            lambda: layers.EncoderBlock(D, mlp_dim=F, rngs=nnx.Rngs(0)),
            "EncoderBlock: give num_heads, or an AttentionConfig",
        ),
        (
            lambda: AttentionConfig(num_heads=N, kind="nope"),
            "nope",
        ),
        (
            lambda: AttentionConfig(num_heads=N, qk_norm=True, moe_attention={"num_experts": 2}),
            r"routed attention \(moe_attention\) does not support \['qk_norm'\]",
        ),
        (
            lambda: AttentionConfig(num_heads=N, moe_attention={"top_k": 2}),
            "moe_attention needs num_experts",
        ),
        (
            lambda: layers.MultiHeadAttention(
                D, N, moe_attention={"num_experts": 2}, rngs=nnx.Rngs(0)
            ),
            "build it with layers.MoEAttention or a block",
        ),
    ],
)
def test_bad_options_are_one_line_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_a_routed_config_builds_switchhead():
    config = AttentionConfig(num_heads=N, moe_attention={"num_experts": 2, "top_k": 1})
    assert isinstance(layers.make_attention(D, config, rngs=nnx.Rngs(0)), layers.MoEAttention)
