"""Autoregressive generation for the language model: prefill the cache, then one token a step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


def sample(logits: jax.Array, key, *, temperature: float, top_k: int | None) -> jax.Array:
    """Next tokens int32 [B] from logits [B, V]: greedy at temperature 0, else softmax sampling.

    Args:
      logits: [B, V] float.
      key: PRNG key (unused when greedy).
      temperature: divides the logits; 0 picks the argmax.
      top_k: sample among the k most likely tokens only; None for all.
    """
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(nnx.jit, static_argnames=("temperature", "top_k"))
def _decode_and_sample(model, tokens, key, *, temperature, top_k):
    """Feeds tokens [B, T] through the decoding state; samples the token after the last."""
    logits = model(tokens, decode=True, deterministic=True)[:, -1]
    return sample(logits, key, temperature=temperature, top_k=top_k)


def generate(model, prompt, steps: int, *, temperature=1.0, top_k=None, rng=None) -> jax.Array:
    """The prompt [B, P] followed by `steps` sampled tokens: int32 [B, P + steps].

    The prompt goes through the model in one call (prefill), then each new token in its own
    call; both are compiled once per shape. All prompts in the batch have length P.
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(f"generate: prompt must be int [batch, length >= 1]; got {prompt.shape}.")
    vocab = model.config.vocab_size
    # The model's own check cannot run inside the jitted prefill, where a bad id gives NaN
    # logits and argmax turns them into a plausible token.
    if not ((prompt >= 0) & (prompt < vocab)).all():
        raise ValueError(
            f"generate: prompt token ids must lie in [0, vocab_size = {vocab}); got ids from "
            f"{int(prompt.min())} to {int(prompt.max())}."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"generate: steps must be a positive int; got {steps!r}.")
    total, max_len = prompt.shape[1] + steps, model.config.max_len
    if total > max_len:
        raise ValueError(
            f"generate: prompt ({prompt.shape[1]}) + steps ({steps}) = {total} exceeds the "
            f"model's max_len {max_len}; generate fewer tokens or build a longer model."
        )
    if not temperature >= 0:
        raise ValueError(f"generate: temperature must be >= 0; got {temperature}.")
    if top_k is not None and (isinstance(top_k, bool) or not 1 <= top_k <= vocab):
        raise ValueError(f"generate: top_k must be None or in 1..{vocab}; got {top_k!r}.")
    if temperature > 0 and rng is None:
        raise ValueError("generate: sampling (temperature > 0) needs rng=jax.random.key(...).")
    keys = jax.random.split(jax.random.key(0) if rng is None else rng, steps)
    model.init_cache(prompt.shape[0], total)
    options = dict(temperature=float(temperature), top_k=top_k)
    tokens = [_decode_and_sample(model, prompt, keys[0], **options)]
    for key in keys[1:]:
        tokens.append(_decode_and_sample(model, tokens[-1][:, None], key, **options))
    return jnp.concatenate([prompt.astype(jnp.int32), jnp.stack(tokens, axis=1)], axis=1)
