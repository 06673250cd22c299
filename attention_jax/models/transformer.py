"""Parts every model family shares: embeddings with absolute positions, block stacks, pooling."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_jax import ops
from attention_jax.layers.blocks import DecoderBlock, EncoderBlock, make_norm
from attention_jax.layers.positional import (
    LearnedPositions,
    sinusoidal_at,
    sinusoidal_positions,
)
from attention_jax.models.config import ADDED_POSITIONS, TransformerConfig


def block_options(config: TransformerConfig, kind: str, max_len: int, layer: int) -> dict:
    """Keyword arguments of block number `layer`, of `kind`, in a model of `config`."""
    return dict(
        attention=config.attention_config(kind, layer=layer, max_len=max_len),
        activation=config.activation,
        norm=config.norm,
        dropout_rate=config.dropout_rate,
        moe=config.moe_options(layer),
        dtype=config.compute_dtype,
        param_dtype=config.params_dtype,
    )


class AbsolutePositions(nnx.Module):
    """Adds sinusoidal or learned positions to [B, T, D]; a no-op for rope, alibi or None.

    While decoding it counts the tokens seen, so the next ones get the following positions.
    """

    def __init__(self, positions: str | None, max_len: int, d_model: int, *, rngs: nnx.Rngs):
        self.max_len = max_len
        self.learned = (
            LearnedPositions(max_len, d_model, rngs=rngs) if positions == "learned" else None
        )
        added = positions in ADDED_POSITIONS
        self.index = nnx.Cache(jnp.zeros((), jnp.int32)) if added else None

    def init_cache(self, max_len: int) -> None:
        """Restarts the position count for decoding up to max_len tokens."""
        if self.learned is not None and max_len > self.max_len:
            raise ValueError(
                f"init_cache: max_len {max_len} exceeds the {self.max_len} learned positions; "
                f"decode at most {self.max_len} tokens or build the model with a larger max_len."
            )
        if self.index is not None:
            self.index[...] = jnp.zeros((), jnp.int32)

    def __call__(self, x: jax.Array, *, decode: bool = False) -> jax.Array:
        if self.index is None:
            return x
        T, D = x.shape[1], x.shape[2]
        positions = None
        if decode:
            positions = self.index[...] + jnp.arange(T)
            self.index[...] = self.index[...] + T
        if self.learned is not None:
            return self.learned(x, positions)
        if positions is None:
            return x + sinusoidal_positions(T, D).astype(x.dtype)
        return x + sinusoidal_at(positions, D).astype(x.dtype)


class Embedder(nnx.Module):
    """Token embeddings scaled by sqrt(D), optional prefix vector, absolute positions, dropout.

    Token ids must lie in [0, vocab_size): eagerly, others raise a ValueError; under jit, where
    they cannot be checked, their embeddings are NaN, and so is everything computed from them.
    """

    def __init__(self, vocab_size: int, config: TransformerConfig, max_len: int, *, rngs):
        self.d_model = config.d_model
        self.embed = nnx.Embed(
            vocab_size,
            config.d_model,
            dtype=config.compute_dtype,
            param_dtype=config.params_dtype,
            rngs=rngs,
        )
        self.positions = AbsolutePositions(config.positions, max_len, config.d_model, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)

    def __call__(
        self,
        tokens: jax.Array,
        *,
        prefix: jax.Array | None = None,
        decode: bool = False,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """int tokens [B, T] -> [B, T, D], or [B, 1 + T, D] with a prefix vector [D] first."""
        vocab_size = self.embed.num_embeddings
        if not isinstance(tokens, jax.core.Tracer):
            ids = np.asarray(tokens)
            unknown = np.unique(ids[(ids < 0) | (ids >= vocab_size)]).tolist()
            if unknown:
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                raise ValueError(
                    f"token ids must lie in [0, vocab_size = {vocab_size}); got {unknown[:5]}"
                    f"{more}. Build the model with the tokenizer's vocabulary size."
                )
        known_BT = (tokens >= 0) & (tokens < vocab_size)
        # Scaled so embeddings start at unit size next to the positions (Vaswani et al. 3.4).
        x_BTD = self.embed(tokens) * math.sqrt(self.d_model)
        # jnp.take fills ids past the table with NaN but wraps negative ids round to valid rows;
        # NaN for both, so an id out of range under jit never yields plausible logits.
        x_BTD = jnp.where(known_BT[..., None], x_BTD, jnp.nan)
        if prefix is not None:
            first = jnp.broadcast_to(prefix.astype(x_BTD.dtype), (x_BTD.shape[0], 1, self.d_model))
            x_BTD = jnp.concatenate([first, x_BTD], axis=1)
        x_BTD = self.positions(x_BTD, decode=decode)
        return self.dropout(x_BTD, deterministic=deterministic)

    def attend(self, x: jax.Array) -> jax.Array:
        """Float32 logits [B, T, V] of x [B, T, D] against the embedding table (tied output)."""
        # In float32 whatever the compute dtype: bfloat16 logits lose ~0.04 of log-probability.
        table_VD = self.embed.embedding[...].astype(jnp.float32)
        return jnp.einsum("btd,vd->btv", x.astype(jnp.float32), table_VD)


def untied_head(config: TransformerConfig, vocab_size: int, rngs: nnx.Rngs) -> nnx.Linear:
    """The output projection [D -> V] of a model whose embeddings are not tied."""
    return nnx.Linear(
        config.d_model,
        vocab_size,
        use_bias=False,
        dtype=config.compute_dtype,
        param_dtype=config.params_dtype,
        rngs=rngs,
    )


class EncoderStack(nnx.Module):
    """Encoder blocks, one per kind, then a final norm (the blocks are pre-norm)."""

    def __init__(self, config: TransformerConfig, kinds, max_len: int, *, rngs: nnx.Rngs):
        D = config.d_model
        self.blocks = nnx.List(
            EncoderBlock(
                D,
                mlp_dim=config.mlp_dim,
                **block_options(config, kind, max_len, layer),
                rngs=rngs,
            )
            for layer, kind in enumerate(kinds)
        )
        self.norm = make_norm(
            config.norm, D, dtype=config.compute_dtype, param_dtype=config.params_dtype, rngs=rngs
        )

    def __call__(self, x, *, seq_lengths=None, deterministic=None) -> jax.Array:
        """x [B, T, D] -> [B, T, D]; keys at or past `seq_lengths` [B] are hidden."""
        for block in self.blocks:
            x = block(x, seq_lengths=seq_lengths, deterministic=deterministic)
        return self.norm(x)


class DecoderStack(nnx.Module):
    """Causal decoder blocks, one per kind, optionally cross-attending, then a final norm."""

    def __init__(
        self,
        config: TransformerConfig,
        kinds,
        max_len: int,
        *,
        cross_attention: str | None = None,
        cross_kind: str = ops.DEFAULT_KIND,
        rngs: nnx.Rngs,
    ):
        D = config.d_model
        self.blocks = nnx.List(
            DecoderBlock(
                D,
                mlp_dim=config.mlp_dim,
                cross_attention=cross_attention,
                cross_kind=cross_kind,
                cross_kind_params=config.params_for(cross_kind, shared=False),
                **block_options(config, kind, max_len, layer),
                rngs=rngs,
            )
            for layer, kind in enumerate(kinds)
        )
        self.norm = make_norm(
            config.norm, D, dtype=config.compute_dtype, param_dtype=config.params_dtype, rngs=rngs
        )

    def init_cache(self, batch: int, max_len: int, dtype=None) -> None:
        for block in self.blocks:
            block.init_cache(batch, max_len, dtype=dtype)

    def __call__(
        self, x, context=None, *, context_lengths=None, decode=False, deterministic=None
    ) -> jax.Array:
        """x [B, T, D] (attending to context [B, S, D] with cross-attention) -> [B, T, D]."""
        for block in self.blocks:
            x = block(
                x,
                context,
                context_lengths=context_lengths,
                decode=decode,
                deterministic=deterministic,
            )
        return self.norm(x)


def pool(x: jax.Array, pooling: str, lengths: jax.Array | None = None) -> jax.Array:
    """[B, T, D] -> [B, D]: the first position ('cls'), or the mean of the first `lengths`."""
    if pooling == "cls":
        return x[:, 0]
    valid_BT = jnp.ones(x.shape[:2], bool)
    if lengths is not None:
        valid_BT = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
    # Summed in float32: a bfloat16 sum over long sequences loses the small terms.
    total = jnp.einsum("btd,bt->bd", x.astype(jnp.float32), valid_BT.astype(jnp.float32))
    count = jnp.maximum(valid_BT.sum(axis=1, keepdims=True), 1)
    return (total / count).astype(x.dtype)
