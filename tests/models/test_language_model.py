"""LanguageModel: causal, flash equals dense, tied or untied output, decoding equals one pass."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_jax.models import count_params

from . import tiny


def test_logits_at_t_ignore_tokens_after_t():
    model, tokens = tiny.model("lm"), tiny.inputs("lm")["tokens"]
    changed = tokens.at[:, 10:].set((tokens[:, 10:] + 1) % 50)
    want, got = (
        tiny.apply(model, "lm", {"tokens": tokens}),
        tiny.apply(model, "lm", {"tokens": changed}),
    )
    np.testing.assert_allclose(got[:, :10], want[:, :10], atol=1e-5)
    assert np.abs(got[:, 10:] - want[:, 10:]).max() > 1e-4


def test_flash_gives_the_loss_of_dense():
    inputs = tiny.inputs("lm")
    dense = tiny.loss(tiny.model("lm", attention="dense"), "lm", inputs)
    flash = tiny.loss(tiny.model("lm", attention="flash"), "lm", inputs)
    np.testing.assert_allclose(flash, dense, rtol=1e-5)


def test_untied_embeddings_add_an_output_projection():
    tied, untied = tiny.model("lm"), tiny.model("lm", tie_embeddings=False)
    assert tied.head is None
    assert count_params(untied) - count_params(tied) == tiny.D * 50


def test_prefill_then_token_by_token_decoding_equals_one_pass():
    """A KV-cached layer, a recurrent one, and absolute positions that continue from the cache."""
    model = tiny.model("lm", attention=("dense", "linear"), positions="sinusoidal")
    tokens = tiny.inputs("lm")["tokens"][:, :8]
    want = tiny.apply(model, "lm", {"tokens": tokens})
    step = nnx.jit(lambda model, tokens: model(tokens, decode=True))
    model.init_cache(tiny.B, 8)
    step(model, tokens[:, 3:6])  # then init_cache must start over
    model.init_cache(tiny.B, 8)
    steps = [step(model, tokens[:, :3])] + [step(model, tokens[:, t : t + 1]) for t in range(3, 8)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), want, atol=1e-4, rtol=1e-4)
