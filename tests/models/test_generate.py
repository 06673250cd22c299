"""LanguageModel.generate: greedy equals re-running the full model; sampling obeys top_k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from . import tiny

PROMPT_LEN, STEPS = 5, 6


def _reference_continuations(model, prompt, steps):
    """Logits [B, steps, V] of the full causal forward re-run on the growing greedy sequence."""
    tokens, logits = prompt, []
    for _ in range(steps):
        last = tiny.apply(model, "lm", {"tokens": tokens})[:, -1]
        logits.append(last)
        tokens = jnp.concatenate([tokens, jnp.argmax(last, -1)[:, None]], axis=1)
    return tokens, jnp.stack(logits, 1)


@pytest.mark.parametrize(
    "attention,positions",
    [
        (("dense", "local"), "rope"),
        (("performer", "bigbird"), "sinusoidal"),
        (("flash", "local"), "alibi"),
        ("linear", "learned"),
    ],
)
def test_greedy_generation_equals_rerunning_the_full_model(attention, positions):
    model = tiny.model("lm", attention=attention, positions=positions)
    prompt = tiny.inputs("lm")["tokens"][:, :PROMPT_LEN]
    want, _ = _reference_continuations(model, prompt, STEPS)
    got = model.generate(prompt, STEPS, temperature=0.0)
    np.testing.assert_array_equal(got, want)


def test_greedy_generation_of_a_hybrid_with_a_short_convolution():
    # Gated DeltaNet's state, the dense layer's KV cache and both convolutions' last inputs
    # carry the model from token to token.
    model = tiny.model("lm", attention=("gated_deltanet", "dense"), short_conv=4)
    prompt = tiny.inputs("lm")["tokens"][:, :PROMPT_LEN]
    want, _ = _reference_continuations(model, prompt, STEPS)
    got = model.generate(prompt, STEPS, temperature=0.0)
    np.testing.assert_array_equal(got, want)


def test_sampling_is_reproducible_and_stays_within_top_k():
    model = tiny.model("lm")
    prompt = tiny.inputs("lm")["tokens"][:, :PROMPT_LEN]
    first = model.generate(prompt, STEPS, temperature=2.0, top_k=3, rng=jax.random.key(0))
    again = model.generate(prompt, STEPS, temperature=2.0, top_k=3, rng=jax.random.key(0))
    np.testing.assert_array_equal(first, again)
    other = model.generate(prompt, STEPS, temperature=2.0, top_k=3, rng=jax.random.key(1))
    assert (np.asarray(first) != np.asarray(other)).any()
    # Each sampled token is among the 3 most likely under the full model given its prefix.
    for t in range(PROMPT_LEN, PROMPT_LEN + STEPS):
        logits = tiny.apply(model, "lm", {"tokens": first[:, :t]})[:, -1]
        top3 = jax.lax.top_k(logits, 3)[1]
        assert (top3 == first[:, t : t + 1]).any(-1).all()
    # top_k = 1 is greedy whatever the temperature.
    greedy = model.generate(prompt, STEPS, temperature=0.0)
    np.testing.assert_array_equal(
        model.generate(prompt, STEPS, temperature=5.0, top_k=1, rng=jax.random.key(2)), greedy
    )


def test_generation_errors():
    model = tiny.model("lm")
    prompt = tiny.inputs("lm")["tokens"][:, :PROMPT_LEN]
    with pytest.raises(ValueError, match="exceeds the model's max_len"):
        model.generate(prompt, tiny.T)
    with pytest.raises(ValueError, match="needs rng"):
        model.generate(prompt, 2)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 2, top_k=0, rng=jax.random.key(0))
    with pytest.raises(ValueError, match="steps"):
        model.generate(prompt, 0, temperature=0.0)
    with pytest.raises(ValueError, match="prompt"):
        model.generate(prompt[0], 2, temperature=0.0)
    with pytest.raises(ValueError, match=r"decoder attends causally, which \['linformer'\]"):
        tiny.model("lm", attention="linformer")


@pytest.mark.parametrize("bad_id", [-1, 50])
def test_token_ids_outside_the_vocabulary_raise_eagerly_and_give_nan_under_jit(bad_id):
    model = tiny.model("lm")
    tokens = tiny.inputs("lm")["tokens"].at[:, 3].set(bad_id)
    with pytest.raises(ValueError, match=rf"\[0, vocab_size = 50\); got \[{bad_id}\]"):
        model(tokens)
    # Under jit the ids cannot be checked: -1 used to embed as the last row, 50 as NaN.
    assert np.isnan(tiny.apply(model, "lm", {"tokens": tokens})[:, 3]).all()
    # generate's prefill is jitted, where argmax would turn the NaN logits into a token.
    with pytest.raises(ValueError, match="prompt token ids"):
        model.generate(tokens[:, :PROMPT_LEN], 2, temperature=0.0)
