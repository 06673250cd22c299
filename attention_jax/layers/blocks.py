"""Pre-norm transformer blocks: x + Attention(Norm(x)), then x + FFN(Norm(x)).

Pre-norm (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture") keeps the
residual stream unnormalised, so deep stacks train without warm-up tricks; a model built from
these blocks applies one final norm. Dropout is on each residual branch before the sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax import ops
from attention_jax.layers import arguments, attention_config
from attention_jax.layers.additive import AdditiveAttention
from attention_jax.layers.attention import MultiHeadAttention
from attention_jax.layers.attention_config import AttentionConfig
from attention_jax.layers.feedforward import FeedForward
from attention_jax.layers.moe import MoEFeedForward
from attention_jax.layers.moe_attention import MoEAttention

NORMS = {"layernorm": nnx.LayerNorm, "rmsnorm": nnx.RMSNorm}
CROSS_ATTENTION = (None, "multihead", "additive")


def make_norm(norm: str, d_model: int, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    """A LayerNorm or RMSNorm over the last axis, by name."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(sorted(NORMS))}.")
    return NORMS[norm](d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def make_attention(d_model: int, config: AttentionConfig, **typed) -> nnx.Module:
    """The attention layer of `config`: `MoEAttention` when it routes, else multi-head."""
    if not config.moe_attention:
        return MultiHeadAttention(d_model, attention=config, **typed)
    return MoEAttention(
        d_model,
        config.num_heads,
        **config.moe_attention,
        head_dim=config.head_dim,
        kind=config.kind,
        kind_params=config.kind_params,
        positions=config.positions,
        **typed,
    )


class EncoderBlock(nnx.Module):
    """Bidirectional self-attention and feed-forward over [B, T, D], each pre-normed.

    Args:
      d_model: D.
      num_heads: N query heads (or give them in `attention`).
      mlp_dim: F, hidden features of the feed-forward network.
      attention: the self-attention's `AttentionConfig` (kind, kind_params, heads, positions,
        max_len, qk_norm, logits_soft_cap, lora_rank, moe_attention, ...); or None and its
        fields as keywords (`kind='local'`, ...). Its lora_rank applies to the feed-forward
        network too.
      activation: 'gelu', 'relu' or 'swiglu'.
      norm: 'layernorm' or 'rmsnorm'.
      dropout_rate: dropout on each residual branch, in [0, 1).
      moe: MoEFeedForward options (num_experts, top_k, ...) to replace the feed-forward
        network with a mixture of experts; None for a dense one.
      dtype: computation dtype (e.g. bfloat16); parameters stay `param_dtype`.
      rngs: parameter (and dropout) randomness.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int | None = None,
        mlp_dim: int | None = None,
        *,
        attention: AttentionConfig | None = None,
        activation: str = "gelu",
        norm: str = "layernorm",
        dropout_rate: float = 0.0,
        moe: dict | None = None,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **attention_options,
    ):
        owner = type(self).__name__
        # Checked here so the error names the block's own arguments (mlp_dim, not hidden).
        d_model = arguments.positive_int(owner, "d_model", d_model)
        mlp_dim = arguments.positive_int(owner, "mlp_dim", mlp_dim)
        dropout_rate = arguments.dropout_rate(owner, dropout_rate)
        config = attention_config.resolve(owner, attention, num_heads, attention_options)
        typed = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attention_norm = make_norm(norm, d_model, **typed)
        self.attention = make_attention(d_model, config, **typed)
        self.ffn_norm = make_norm(norm, d_model, **typed)
        if moe:
            self.ffn = MoEFeedForward(d_model, mlp_dim, activation=activation, **moe, **typed)
        else:
            self.ffn = FeedForward(
                d_model, mlp_dim, activation=activation, lora_rank=config.lora_rank, **typed
            )
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

    def _feed_forward(self, x, deterministic):
        h = self.ffn(self.ffn_norm(x), deterministic=deterministic)
        return x + self.dropout(h, deterministic=deterministic)

    def __call__(
        self,
        x: jax.Array,
        *,
        seq_lengths: jax.Array | None = None,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """x [B, T, D] -> [B, T, D].

        Args:
          seq_lengths: optional int [B]; keys at or past the length are padding, hidden from
            every query (outputs at padded positions are computed but meaningless).
          deterministic: disables dropout; default: the module's dropout setting.
        """
        h = self.attention(
            self.attention_norm(x), key_value_seq_lengths=seq_lengths, deterministic=deterministic
        )
        x = x + self.dropout(h, deterministic=deterministic)
        return self._feed_forward(x, deterministic)


class DecoderBlock(EncoderBlock):
    """Causal self-attention, optional cross-attention to a context, feed-forward; pre-normed.

    Args:
      cross_attention: None (decoder-only), 'multihead' (`MultiHeadAttention` of kind
        `cross_kind`, without positions or routing) or 'additive' (`AdditiveAttention`,
        Bahdanau).
      cross_kind, cross_kind_params: the kind of multihead cross-attention and its parameters;
        its other options (heads, max_len, the longest context, ...) are the self-attention's.
      The rest: as in `EncoderBlock`; `attention` (or its keywords) is the self-attention's.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int | None = None,
        mlp_dim: int | None = None,
        *,
        cross_attention: str | None = None,
        cross_kind: str = ops.DEFAULT_KIND,
        cross_kind_params: dict | None = None,
        attention: AttentionConfig | None = None,
        activation: str = "gelu",
        norm: str = "layernorm",
        dropout_rate: float = 0.0,
        moe: dict | None = None,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **attention_options,
    ):
        if cross_attention not in CROSS_ATTENTION:
            raise ValueError(
                f"DecoderBlock: cross_attention must be one of {CROSS_ATTENTION}; got "
                f"{cross_attention!r}."
            )
        owner = type(self).__name__
        config = attention_config.resolve(owner, attention, num_heads, attention_options)
        typed = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        super().__init__(
            d_model,
            mlp_dim=mlp_dim,
            attention=config,
            activation=activation,
            norm=norm,
            dropout_rate=dropout_rate,
            moe=moe,
            **typed,
        )
        self.cross_attention_type = cross_attention
        cross_norm = cross = None
        if cross_attention is not None:
            cross_norm = make_norm(norm, d_model, **typed)
        if cross_attention == "multihead":
            drawn = ops.kind(cross_kind).owned_state is ops.OwnedState.RANDOM_FEATURES
            cross_config = config.replace(
                kind=cross_kind,
                kind_params=cross_kind_params or {},
                positions=None,
                redraw_every=config.redraw_every if drawn else None,
                moe_attention={},
                # Cross attention reads the whole encoder output and is never decoded.
                short_conv=None,
                # Its shapes (T != S) suit other kernels than self-attention's: automatic.
                implementation=None,
                owner=owner,
            )
            cross = make_attention(d_model, cross_config, **typed)
        elif cross_attention == "additive":
            cross = AdditiveAttention(d_model, d_model, **typed)
        self.cross_norm, self.cross_attention = cross_norm, cross

    def init_cache(self, batch: int, max_len: int, dtype=None) -> None:
        """Empties the self-attention's decoding state for `batch` sequences of max_len tokens."""
        self.attention.init_cache(batch, max_len, dtype=dtype)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        context_lengths: jax.Array | None = None,
        decode: bool = False,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """x [B, T, D] (attending to context [B, S, D] if the block has cross-attention).

        Args:
          context: [B, S, D] encoder outputs; required with cross-attention, refused without.
          context_lengths: optional int [B]; context positions at or past it are hidden.
          decode: x holds the next tokens after those in the decoding state (`init_cache`).
          deterministic: disables dropout; default: the module's dropout setting.

        Returns:
          [B, T, D].
        """
        if (context is None) != (self.cross_attention is None):
            raise ValueError(
                f"DecoderBlock: cross_attention={self.cross_attention_type!r} "
                + ("needs a context." if context is None else "takes no context.")
            )
        h = self.attention(
            self.attention_norm(x), is_causal=True, decode=decode, deterministic=deterministic
        )
        x = x + self.dropout(h, deterministic=deterministic)
        if self.cross_attention is not None:
            query = self.cross_norm(x)
            if self.cross_attention_type == "additive":
                h = self.cross_attention(query, context, key_value_seq_lengths=context_lengths)
            else:
                h = self.cross_attention(
                    query,
                    context,
                    key_value_seq_lengths=context_lengths,
                    deterministic=deterministic,
                )
            x = x + self.dropout(h.astype(x.dtype), deterministic=deterministic)
        return self._feed_forward(x, deterministic)
