"""EncoderDecoder: source padding is hidden from cross-attention, additive cross-attention,
decoding with the encoder outputs reused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax.layers.additive import AdditiveAttention
from attention_jax.layers.attention import MultiHeadAttention

from . import tiny


@pytest.mark.parametrize("cross", ["multihead", "additive"])
def test_padded_source_tokens_change_nothing(cross):
    model = tiny.model("encoder_decoder", cross_attention=cross)
    inputs = tiny.inputs("encoder_decoder")
    source, lengths = inputs["source"], inputs["source_lengths"]
    padded = jnp.arange(tiny.T)[None, :] >= lengths[:, None]
    noise = jax.random.randint(jax.random.key(3), source.shape, 0, 50)
    repadded = dict(inputs, source=jnp.where(padded, noise, source))
    want = tiny.apply(model, "encoder_decoder", inputs)
    np.testing.assert_allclose(tiny.apply(model, "encoder_decoder", repadded), want, atol=1e-5)
    unpadded = dict(repadded, source_lengths=jnp.full((tiny.B,), tiny.T))
    assert np.abs(tiny.apply(model, "encoder_decoder", unpadded) - want).max() > 1e-4


def test_cross_attention_setting_picks_the_layer():
    kinds = {
        cross: {
            type(block.cross_attention)
            for block in tiny.model("encoder_decoder", cross_attention=cross).decoder.blocks
        }
        for cross in ("multihead", "additive")
    }
    assert kinds == {"multihead": {MultiHeadAttention}, "additive": {AdditiveAttention}}


def test_decoding_with_the_encoder_outputs_equals_one_pass():
    model, inputs = tiny.model("encoder_decoder"), tiny.inputs("encoder_decoder")
    source, lengths, targets = inputs["source"], inputs["source_lengths"], inputs["targets"]
    want = tiny.apply(model, "encoder_decoder", inputs)

    @nnx.jit
    def step(model, encoded, target):
        return model(None, target, encoded=encoded, source_lengths=lengths, decode=True)

    encoded = nnx.jit(lambda model: model.encode(source, source_lengths=lengths))(model)
    model.init_cache(tiny.B, tiny.T)
    steps = [step(model, encoded, targets[:, t : t + 1]) for t in range(tiny.T)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), want, atol=1e-4, rtol=1e-4)


def test_source_or_encoded_is_required():
    model = tiny.model("encoder_decoder")
    with pytest.raises(ValueError, match="source tokens or their `encoded`"):
        model(None, tiny.inputs("encoder_decoder")["targets"])
