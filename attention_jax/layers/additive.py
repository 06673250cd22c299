"""Additive attention (Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly
Learning to Align and Translate"): score(q_i, k_j) = v^T tanh(W q_i + U k_j).

A is the alignment model's hidden size. W q is computed once per query and U k once per key, but
the tanh of their sum is per (query, key) pair: time and memory are O(B * T * S * A), A times
the score matrix of dot-product attention, and no rearrangement avoids it (tanh does not factor).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_jax.layers import arguments
from attention_jax.ops import contract
from attention_jax.ops.dense import masked_softmax

NAME = "AdditiveAttention"


class AdditiveAttention(nnx.Module):
    """Bahdanau attention of [B, T, Dq] queries over [B, S, Dk] keys, returning [B, T, Dv].

    Args:
      query_features: Dq, features of each query.
      key_features: Dk, features of each key (the `context`).
      hidden_features: A, hidden units of the alignment model; default key_features.
      use_bias: a bias inside the tanh (one suffices: W q + b + U k, not two summed biases).
      dtype: computation dtype (e.g. bfloat16); parameters stay `param_dtype`, softmax is float32.
      param_dtype: dtype of the parameters.
      record_weights: sow the attention weights [B, T, S] as `nnx.Intermediate`
        'attention_weights' on every call; collect them with `nnx.capture`.
      rngs: parameter randomness.
    """

    def __init__(
        self,
        query_features: int,
        key_features: int,
        *,
        hidden_features: int | None = None,
        use_bias: bool = True,
        dtype=None,
        param_dtype=jnp.float32,
        record_weights: bool = False,
        rngs: nnx.Rngs,
    ):
        hidden_features = key_features if hidden_features is None else hidden_features
        for name, value in (
            ("query_features", query_features),
            ("key_features", key_features),
            ("hidden_features", hidden_features),
        ):
            arguments.positive_int(NAME, name, value)
        self.query_features, self.key_features = query_features, key_features
        self.hidden_features = hidden_features
        self.dtype, self.record_weights = dtype, record_weights
        linear = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = nnx.Linear(query_features, hidden_features, use_bias=use_bias, **linear)
        self.key = nnx.Linear(key_features, hidden_features, use_bias=False, **linear)
        # A non-zero start: with v = 0 (the paper's init) every score is equal and W, U get no
        # gradient until v moves.
        init = nnx.initializers.normal(1.0 / math.sqrt(hidden_features))
        self.v = nnx.Param(init(rngs.params(), (hidden_features,), param_dtype))

    def _check(self, query, context, values, mask) -> None:
        """Raises a ValueError naming the first input whose shape or dtype cannot work."""
        for name, x, setting, features in (
            ("query", query, "query_features", self.query_features),
            ("context", context, "key_features", self.key_features),
        ):
            if x.ndim != 3 or x.shape[-1] != features:
                raise ValueError(
                    f"{NAME}: {name} must have shape [batch, length, {setting}] = [B, L, "
                    f"{features}]; got {x.shape}. Build the layer with {setting} equal to the "
                    f"input's last axis."
                )
        B, S = context.shape[0], context.shape[1]
        if query.shape[0] != B:
            raise ValueError(
                f"{NAME}: query and context must have the same batch size; got {query.shape[0]} "
                f"and {B}."
            )
        if values.ndim != 3 or values.shape[:2] != (B, S):
            raise ValueError(
                f"{NAME}: values must have shape [batch, kv_len, Dv] = [{B}, {S}, Dv], one value "
                f"per context position; got {values.shape}."
            )
        if mask is not None:
            want = (B, query.shape[1], S)
            try:
                fits = mask.ndim <= 3 and np.broadcast_shapes(mask.shape, want) == want
            except ValueError:
                fits = False
            if mask.dtype != jnp.bool_ or not fits:
                raise ValueError(
                    f"{NAME}: mask must be bool and broadcastable to [B, T, S] = {list(want)} "
                    f"(True = may attend); got shape {mask.shape} and dtype {mask.dtype}."
                )

    def __call__(
        self,
        query: jax.Array,
        context: jax.Array,
        *,
        mask: jax.Array | None = None,
        key_value_seq_lengths: jax.Array | None = None,
        values: jax.Array | None = None,
    ) -> jax.Array:
        """Attends each query to the context; returns [B, T, Dv] (Dv = Dk without `values`).

        Args:
          query: [B, T, Dq].
          context: [B, S, Dk], the keys scored against each query.
          mask: optional bool broadcastable to [B, T, S]; True = may attend.
          key_value_seq_lengths: optional int [B]; keys at or past the length are hidden.
          values: optional [B, S, Dv] averaged by the weights; default `context`, as in the paper.

        A query that may attend to no key gets zeros, with zero gradient.
        """
        query, context = jnp.asarray(query), jnp.asarray(context)
        values = context if values is None else jnp.asarray(values)
        mask = None if mask is None else jnp.asarray(mask)
        self._check(query, context, values, mask)
        B, S = context.shape[0], context.shape[1]
        lengths = contract.check_lengths(NAME, "key_value_seq_lengths", key_value_seq_lengths, B)

        q_BTA = self.query(query)
        k_BSA = self.key(context)
        hidden_BTSA = jnp.tanh(q_BTA[:, :, None, :] + k_BSA[:, None, :, :])
        # The projections computed in `dtype` (or promoted inputs and params); v follows them.
        v_A = self.v[...].astype(hidden_BTSA.dtype)
        scores_BTS = jnp.einsum("btsa,a->bts", hidden_BTSA, v_A, preferred_element_type=jnp.float32)

        ok_BTS = mask
        if lengths is not None:
            valid_B1S = (jnp.arange(S)[None, :] < lengths[:, None])[:, None, :]
            ok_BTS = valid_B1S if ok_BTS is None else ok_BTS & valid_B1S
        # Float32 softmax; masked_softmax gives all-zero rows (and gradients) where nothing is ok.
        weights_BTS = masked_softmax(scores_BTS, ok_BTS)
        if self.record_weights:
            self.sow(nnx.Intermediate, "attention_weights", weights_BTS)

        dtype = self.dtype or jnp.result_type(hidden_BTSA.dtype, values.dtype)
        out_BTD = jnp.einsum(
            "bts,bsd->btd",
            weights_BTS.astype(dtype),
            values.astype(dtype),
            preferred_element_type=jnp.float32,
        )
        return out_BTD.astype(dtype)
