"""SequenceClassifier: padding changes nothing, flash equals dense, the dual encoder's head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from . import tiny


def _with_new_padding(tokens, lengths, seed):
    padded = jnp.arange(tokens.shape[1])[None, :] >= lengths[:, None]
    return jnp.where(padded, jax.random.randint(jax.random.key(seed), tokens.shape, 0, 50), tokens)


@pytest.mark.parametrize("pooling, kind", [("cls", "dense"), ("mean", "bigbird")])
def test_padded_tokens_change_nothing(pooling, kind):
    model = tiny.model("classifier", pooling=pooling, attention=kind)
    inputs = tiny.inputs("classifier")
    repadded = dict(inputs, tokens=_with_new_padding(inputs["tokens"], inputs["lengths"], 3))
    assert not np.array_equal(repadded["tokens"], inputs["tokens"])
    want = tiny.apply(model, "classifier", inputs)
    np.testing.assert_allclose(tiny.apply(model, "classifier", repadded), want, atol=1e-5)
    # As content (full lengths) the same tokens matter.
    unpadded = dict(repadded, lengths=jnp.full((tiny.B,), tiny.T))
    assert np.abs(tiny.apply(model, "classifier", unpadded) - want).max() > 1e-4


def test_flash_gives_the_loss_of_dense():
    inputs = tiny.inputs("classifier")
    dense = tiny.loss(tiny.model("classifier", attention="dense"), "classifier", inputs)
    flash = tiny.loss(tiny.model("classifier", attention="flash"), "classifier", inputs)
    np.testing.assert_allclose(flash, dense, rtol=1e-5)


def test_dual_encoder_shares_the_encoder_and_combines_both_encodings():
    model = tiny.model("classifier", dual_encoder=True, pooling="mean")
    inputs = tiny.inputs("classifier")
    pair = jax.random.randint(jax.random.key(5), (tiny.B, 12), 0, 50)
    pair_lengths = jnp.array([12, 7])

    @nnx.jit
    def logits_and_reference(model, inputs):
        logits = model(**inputs, pair=pair, pair_lengths=pair_lengths)
        u = model.encode(inputs["tokens"], lengths=inputs["lengths"])
        v = model.encode(pair, lengths=pair_lengths)
        features = jnp.concatenate([u, v, u * v, u - v], axis=-1)
        return logits, model.head_out(jax.nn.gelu(model.head_hidden(features), approximate=False))

    logits, want = logits_and_reference(model, inputs)
    assert logits.shape == (tiny.B, 3)
    np.testing.assert_allclose(logits, want, atol=1e-5)
    assert model.head_hidden.kernel.shape[0] == 4 * tiny.D


def test_pair_must_match_the_dual_encoder_setting():
    inputs = tiny.inputs("classifier")
    with pytest.raises(ValueError, match="needs a second sequence"):
        tiny.model("classifier", dual_encoder=True)(**inputs)
    with pytest.raises(ValueError, match="takes no `pair`"):
        tiny.model("classifier")(**inputs, pair=inputs["tokens"])
