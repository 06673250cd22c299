"""Multi-head attention whose attention is any registered kind, chosen by one string.

The module owns what the pure ops take as explicit arguments: projections, Performer features
(redrawable), Linformer projections (learned) and the BigBird seed (fixed at init). Decoding
caches (`init_cache`, then `decode=True`) are in `decoding.py`.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_jax import ops
from attention_jax.layers import arguments, decoding, positional
from attention_jax.layers.random_features import RandomFeatures
from attention_jax.ops import contract
from attention_jax.ops.linear import DEFAULT_FAVOR_FEATURES
from attention_jax.ops.linformer import DEFAULT_PROJECTED_LEN

NAME = "MultiHeadAttention"
POSITIONS = (None, "rope", "alibi")
DEFAULT_MAX_LEN = 512
# Sparse kinds decode from a full KV cache through their [max_len, max_len] pattern, a static
# bool array: 64 MiB at this length. Longer decoding is for the kinds with no pattern.
MAX_PATTERN_DECODE_LEN = 8192


def _kinds_with(owned_state) -> list[str]:
    return [name for name in ops.names() if ops.kind(name).owned_state is owned_state]


def _long_decoders() -> list[str]:
    """Kinds whose decoding state needs no [max_len, max_len] pattern."""
    records = [ops.kind(name) for name in ops.names()]
    return [
        r.name for r in records if r.decoding is not ops.Decoding.NONE and not r.pattern_in_decoding
    ]


def _static(value):
    """Arrays (a block layout, say) as nested tuples, which a static attribute may hold."""
    if isinstance(value, (np.ndarray, jax.Array)):
        return _nested_tuple(np.asarray(value).tolist())
    return value


def _nested_tuple(value):
    return tuple(map(_nested_tuple, value)) if isinstance(value, list) else value


def _linformer_projections(given: dict, projected_len, max_len: int, param_dtype, rngs):
    """Linformer's learned E and F, each nnx.Param [projected_len, max_len].

    They start from `given` (key_projection, value_projection), or are drawn. Shapes are checked
    here: a mismatch would otherwise surface at the first call, inside the op's dense step.
    """
    owner = f"{NAME}(linformer)"
    rows = {}
    for name, projection in given.items():
        shape = jnp.shape(projection)
        if len(shape) != 2 or shape[0] < 1 or shape[1] != max_len:
            raise ValueError(
                f"{owner}: {name} must be [projected_len >= 1, max_len = {max_len}] (shorter "
                f"inputs use a prefix); got shape {shape}."
            )
        rows[name] = shape[0]
    if projected_len is not None:
        rows["projected_len"] = arguments.positive_int(owner, "projected_len", projected_len)
    if len(set(rows.values())) > 1:
        raise ValueError(
            f"{owner}: key_projection and value_projection must both have projected_len rows; "
            f"got {rows}."
        )
    projected_len = next(iter(rows.values()), DEFAULT_PROJECTED_LEN)
    init = nnx.initializers.normal(1.0 / math.sqrt(projected_len))

    def initial(name):
        if name in given:
            return jnp.asarray(given[name], param_dtype)
        return init(rngs.params(), (projected_len, max_len), param_dtype)

    return nnx.Param(initial("key_projection")), nnx.Param(initial("value_projection"))


class MultiHeadAttention(nnx.Module):
    """Multi-head attention over [B, T, D] inputs with `kind` from the ops registry.

    Args:
      in_features: D of the inputs (and of the context for cross attention).
      num_heads: query heads N.
      num_kv_heads: K; N % K == 0 (GQA/MQA). Default N.
      head_dim: H; default in_features // num_heads.
      kind: a name from `ops.names()`.
      kind_params: keyword arguments of the kind (e.g. {'block_size': 64} for bigbird).
        Arrays the layer owns start from the ones given here: performer's `projection`,
        linformer's `key_projection` and `value_projection` ([projected_len, max_len]).
      positions: None, 'rope' (rotates q and k) or 'alibi' (a bias; only for kinds taking one).
      max_len: longest sequence for linformer's learned projections (shorter inputs use a
        prefix) and cosformer's re-weighting horizon M (fixed, so decoding matches training).
      dropout_rate: dropout on the output projection's input, in [0, 1).
      qk_norm: RMS-normalise queries and keys per head before attention.
      logits_soft_cap: c squashes logits to c * tanh(logits / c) (Gemma 2); softmax kinds only.
      redraw_every: performer only: redraw the random features every N training calls (calls
        with dropout on); `redraw(key)` redraws on request.
      lora_rank: add a trainable low-rank update (`nnx.LoRA`, params of type nnx.LoRAParam) to
        each of the four projections; None for none.
      record_maps: sow each call's attention map [B, N, T, S] (`ops.attention_map`) as
        nnx.Intermediate 'attention_weights'; collect with `nnx.capture`. Costs an extra
        S-wide call, so it is off by default and the default path never computes it.
      use_bias: biases in the projections.
      dtype: computation dtype (e.g. bfloat16); parameters stay `param_dtype`.
      rngs: parameter (and dropout) randomness.
    """

    def __init__(
        self,
        in_features: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        kind: str = ops.DEFAULT_KIND,
        kind_params: dict | None = None,
        positions: str | None = None,
        max_len: int = DEFAULT_MAX_LEN,
        dropout_rate: float = 0.0,
        qk_norm: bool = False,
        logits_soft_cap: float | None = None,
        redraw_every: int | None = None,
        lora_rank: int | None = None,
        record_maps: bool = False,
        use_bias: bool = True,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        # What the layer knows of its kind, it reads here (ValueError for an unknown name).
        self.record = record = ops.kind(kind)
        self.op = record.op
        in_features = arguments.positive_int(NAME, "in_features", in_features)
        num_heads = arguments.positive_int(NAME, "num_heads", num_heads)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        num_kv_heads = arguments.positive_int(NAME, "num_kv_heads", num_kv_heads)
        max_len = arguments.positive_int(NAME, "max_len", max_len)
        dropout_rate = arguments.dropout_rate(NAME, dropout_rate)
        if num_heads % num_kv_heads:
            raise ValueError(
                f"MultiHeadAttention: num_heads ({num_heads}) must be a positive multiple of "
                f"num_kv_heads ({num_kv_heads})."
            )
        if head_dim is None and in_features % num_heads:
            raise ValueError(
                f"MultiHeadAttention: in_features ({in_features}) is not divisible by num_heads "
                f"({num_heads}); pick num_heads dividing it or set head_dim."
            )
        head_dim = in_features // num_heads if head_dim is None else head_dim
        head_dim = arguments.positive_int(NAME, "head_dim", head_dim)
        if lora_rank is not None:
            lora_rank = arguments.positive_int(NAME, "lora_rank", lora_rank)
        if positions not in POSITIONS:
            raise ValueError(f"MultiHeadAttention: positions must be one of {POSITIONS}.")
        if logits_soft_cap is not None and not record.soft_cap:
            capped = [name for name in ops.names() if ops.kind(name).soft_cap]
            raise ValueError(
                f"MultiHeadAttention: kind {kind!r} has no logits to cap; logits_soft_cap works "
                f"with {capped}."
            )
        random_features = record.owned_state is ops.OwnedState.RANDOM_FEATURES
        learned_projections = record.owned_state is ops.OwnedState.LEARNED_PROJECTIONS
        if redraw_every is not None and not random_features:
            raise ValueError(
                f"MultiHeadAttention: redraw_every is for kinds with random features "
                f"({_kinds_with(ops.OwnedState.RANDOM_FEATURES)}), not {kind!r}."
            )
        self.kind, self.positions, self.record_maps = kind, positions, record_maps
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        given = dict(kind_params or {})
        # Arrays the layer owns as state start from these; they are not static op parameters.
        projection = given.pop("projection", None) if random_features else None
        linformer_init = {}
        if learned_projections:
            names = ("key_projection", "value_projection")
            linformer_init = {name: given.pop(name) for name in names if name in given}
        # Static attributes hold no arrays: layouts and the like become nested tuples.
        given = {name: _static(value) for name, value in given.items()}
        self.kind_params = {**record.defaults, **given}
        if record.takes_horizon:
            self.kind_params.setdefault("max_len", max_len)
        if logits_soft_cap is not None:
            self.kind_params["logits_soft_cap"] = logits_soft_cap
        self.dtype = dtype
        self.cache = nnx.data(None)  # set by init_cache
        self.cache_max_len = 0
        linear = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = nnx.LinearGeneral(in_features, (num_heads, head_dim), **linear)
        self.key = nnx.LinearGeneral(in_features, (num_kv_heads, head_dim), **linear)
        self.value = nnx.LinearGeneral(in_features, (num_kv_heads, head_dim), **linear)
        self.out = nnx.LinearGeneral((num_heads, head_dim), in_features, axis=(-2, -1), **linear)
        lora_adapters = None
        if lora_rank is not None:
            lora = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            lora_adapters = nnx.Dict(
                query=nnx.LoRA(in_features, lora_rank, num_heads * head_dim, **lora),
                key=nnx.LoRA(in_features, lora_rank, num_kv_heads * head_dim, **lora),
                value=nnx.LoRA(in_features, lora_rank, num_kv_heads * head_dim, **lora),
                out=nnx.LoRA(num_heads * head_dim, lora_rank, in_features, **lora),
            )
        self.lora = lora_adapters
        norm = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_norm = nnx.RMSNorm(head_dim, **norm) if qk_norm else None
        self.k_norm = nnx.RMSNorm(head_dim, **norm) if qk_norm else None
        # Without dropout no 'dropout' stream is needed (Linen's init passes only 'params').
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs if dropout_rate else None)
        # Each is assigned once: a Variable makes it state, None keeps it a static attribute.
        features = None
        if random_features:
            num_features = self.kind_params.pop("num_features", None)
            if num_features is not None:
                num_features = arguments.positive_int(
                    f"{NAME}(performer)", "num_features", num_features
                )
            if projection is not None and num_features not in (None, len(projection)):
                raise ValueError(
                    f"MultiHeadAttention(performer): num_features={num_features} but the given "
                    f"projection has {len(projection)} rows; pass one or the other."
                )
            if projection is not None:
                num_features = len(projection)
            features = RandomFeatures(
                DEFAULT_FAVOR_FEATURES if num_features is None else num_features,
                head_dim,
                projection=projection,
                redraw_every=redraw_every,
                rngs=rngs,
            )
        self.features = features
        linformer_e = linformer_f = None
        if learned_projections:
            projected_len = self.kind_params.pop("projected_len", None)
            linformer_e, linformer_f = _linformer_projections(
                linformer_init, projected_len, max_len, param_dtype, rngs
            )
        self.linformer_e, self.linformer_f = linformer_e, linformer_f
        if record.owned_state is ops.OwnedState.LAYOUT_SEED and "seed" not in self.kind_params:
            # Drawn once, concretely: the layout picks the computed blocks at trace time.
            key = rngs.params()
            if isinstance(key, jax.core.Tracer):
                raise ValueError(
                    "MultiHeadAttention(bigbird): under an abstract or jitted init the random "
                    "layout cannot be drawn from rngs; pass kind_params={'seed': <int>}."
                )
            self.kind_params["seed"] = int(jax.random.randint(key, (), 0, 2**31 - 1))

    def redraw(self, key: jax.Array) -> None:
        """Draws fresh Performer features (the caller decides when, e.g. every N steps)."""
        if self.features is None:
            raise ValueError(f"redraw: kind {self.kind!r} has no random features to redraw.")
        self.features.redraw(key)

    def _project(self, name: str, x: jax.Array) -> jax.Array:
        """One of the four projections, plus its LoRA update when the layer has them."""
        y = getattr(self, name)(x)
        if self.lora is None:
            return y
        flat_x = x.reshape(*x.shape[:2], -1)  # [B, T, D] or [B, T, N * H] for `out`
        return y + self.lora[name](flat_x).reshape(y.shape).astype(y.dtype)

    def _variant_params(self, q_len: int, kv_len: int, training: bool = False) -> dict:
        params = dict(self.kind_params)
        if self.features is not None:
            params["projection"] = self.features(training)
        if self.linformer_e is not None:
            if kv_len > self.linformer_e.shape[1]:
                raise ValueError(
                    f"MultiHeadAttention(linformer): kv length {kv_len} exceeds max_len "
                    f"{self.linformer_e.shape[1]}; build the layer with a larger max_len."
                )
            params["key_projection"] = self.linformer_e[:, :kv_len]
            params["value_projection"] = self.linformer_f[:, :kv_len]
        return self.record.params_for(q_len, kv_len, params)

    def init_cache(self, batch: int, max_len: int, dtype=None) -> None:
        """Empties (or creates) the decoding state for `batch` sequences of up to max_len tokens.

        max_len bounds decoding for every kind (see `decode` in `__call__`), though only a full
        KV cache takes memory in proportion to it.

        Length-dependent defaults (strided's stride, block_sparse's band, bigbird's random
        blocks) follow max_len while decoding; set them in kind_params to pin them.
        """
        how = decoding.strategy(self.kind)  # ValueError for a kind that cannot decode
        if batch < 1 or max_len < 1:
            raise ValueError(
                f"init_cache: batch and max_len must be positive; got {batch}, {max_len}."
            )
        if decoding.uses_pattern(self.kind) and max_len > MAX_PATTERN_DECODE_LEN:
            raise ValueError(
                f"init_cache: {self.kind!r} decodes through its [max_len, max_len] pattern, "
                f"which is limited to max_len <= {MAX_PATTERN_DECODE_LEN}; got {max_len}. For "
                f"longer generation use a kind with a bounded or unpatterned cache: "
                f"{_long_decoders()}."
            )
        dtype = dtype or self.dtype or self.query.kernel.dtype
        if how == "recurrent":
            if self.record.takes_horizon and max_len > self.kind_params["max_len"]:
                raise ValueError(
                    f"init_cache: {self.kind}'s horizon max_len={self.kind_params['max_len']} "
                    f"is shorter than {max_len}; build the layer with max_len >= {max_len}."
                )
            state = ops.linear_state_init(
                batch, self.num_kv_heads, self.head_dim, feature_map=self._feature_map()
            )
        else:
            size = max_len if how == "kv" else max(self._window()[0], 1)
            heads = (batch, size, self.num_kv_heads, self.head_dim)
            state = decoding.kv_cache_init(*heads, self.head_dim, dtype)
        self.cache = nnx.Cache(state)
        self.cache_max_len = max_len

    def _window(self) -> tuple[int, int] | None:
        window = self.kind_params.get("local_window_size")
        return contract.check_window(self.kind, window) if window is not None else None

    def _feature_map(self):
        """The feature map the kernelized kind applies, for its recurrent form."""
        name = self.record.feature_map
        if self.features is not None:  # the map of the layer's drawn projection
            return ops.feature_map(name, projection=self.features.projection[...])
        if self.record.takes_horizon:
            return ops.feature_map(name, max_len=self.kind_params["max_len"])
        return name or self.kind_params.get("feature_map", "elu")

    def _pattern(self, size: int) -> np.ndarray | None:
        """The causal pattern at full length for sparse kinds that decode from a full cache."""
        if not decoding.uses_pattern(self.kind):
            return None
        # The pattern depends only on the structural parameters.
        params = self._variant_params(size, size)
        for numeric in ("scale", "logits_soft_cap"):
            params.pop(numeric, None)
        # Patterns that differ per head or with causality (bigbird's random blocks) say so.
        takes = inspect.signature(self.record.pattern).parameters
        if "is_causal" in takes:
            params["is_causal"] = True
        if "num_heads" in takes:
            params["num_heads"] = self.num_heads
        return ops.pattern_mask(self.kind, size, size, **params)

    def _decode(self, q, k, v):
        """Attends new tokens q/k/v [B, T, ., H] to the decoding state and advances it."""
        if self.cache is None:
            raise ValueError("decode=True needs a decoding state: call init_cache(batch, max_len).")
        state = self.cache.get_value()
        T = q.shape[1]
        how = decoding.strategy(self.kind)
        index = state.position[0] if how == "recurrent" else state.index
        if not isinstance(index, jax.core.Tracer) and int(index) + T > self.cache_max_len:
            raise ValueError(
                f"decode: {int(index)} tokens cached + {T} new exceeds init_cache's max_len "
                f"{self.cache_max_len}; call init_cache with a larger max_len."
            )
        if self.positions == "rope":
            positions = index + jnp.arange(T)
            q, k = positional.apply_rope(q, positions), positional.apply_rope(k, positions)
        scale = self.kind_params.get("scale")
        if how == "recurrent":
            out, state = decoding.recurrent_attend(
                state, q, k, v, feature_map=self._feature_map(), scale=scale
            )
        else:
            # Sparse kinds carry their window in the pattern (global tokens see past it).
            window = self._window() if self.record.window_in_decoding else None
            out, state = decoding.kv_cache_attend(
                state,
                q,
                k,
                v,
                ring=how == "window",
                window_left=None if window is None else window[0],
                pattern=self._pattern(self.cache_max_len),
                alibi=self.positions == "alibi",
                scale=scale,
                logits_soft_cap=self.kind_params.get("logits_soft_cap"),
            )
        self.cache.set_value(state)
        fits = index + T <= self.cache_max_len
        # Under jit the index is traced and the check above cannot raise, while a full KV cache
        # clamps the overflowing write onto earlier slots and returns finite, wrong outputs.
        # NaN for every token of such a call (and of every later one: the index only grows)
        # keeps it from passing for a result, for every kind, so jit refuses what eager does.
        return jnp.where(fits, out, jnp.nan)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        is_causal: bool = False,
        query_seq_lengths: jax.Array | None = None,
        key_value_seq_lengths: jax.Array | None = None,
        query_positions: jax.Array | None = None,
        key_positions: jax.Array | None = None,
        deterministic: bool | None = None,
        decode: bool = False,
    ) -> jax.Array:
        """Attends x [B, T, D] to itself, or to `context` [B, S, D]; returns [B, T, D].

        Args:
          mask: optional bool broadcastable to [B, N, T, S], for kinds that take one.
          is_causal, query_seq_lengths, key_value_seq_lengths: as in the op contract.
          query_positions, key_positions: int [B, T] / [B, S] for RoPE; default 0..T-1, 0..S-1.
          deterministic: disables dropout; default: the module's dropout setting.
          decode: x holds the next T tokens of sequences in the decoding state (`init_cache`);
            attention is causal over everything decoded so far. Self-attention only. A call
            that would pass init_cache's max_len raises a ValueError, or under jit (where the
            position is traced) returns NaN for all its tokens, as do all later calls.
        """
        if decode:
            given = dict(
                context=context,
                mask=mask,
                query_seq_lengths=query_seq_lengths,
                key_value_seq_lengths=key_value_seq_lengths,
                query_positions=query_positions,
                key_positions=key_positions,
            )
            extra = sorted(name for name, value in given.items() if value is not None)
            if extra:
                raise ValueError(
                    f"decode=True takes the next tokens only; got {extra}. Decode self-attention "
                    "and call cross attention without decode."
                )
        context = x if context is None else context
        q = self._project("query", x)
        k, v = self._project("key", context), self._project("value", context)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if decode:
            out = self._decode(q, k, v)
            return self._project("out", self.dropout(out, deterministic=deterministic))
        training = not (self.dropout.deterministic if deterministic is None else deterministic)
        T, S = q.shape[1], k.shape[1]
        bias = None
        if self.positions == "rope":
            q_pos = jnp.arange(T) if query_positions is None else query_positions
            k_pos = jnp.arange(S) if key_positions is None else key_positions
            q, k = positional.apply_rope(q, q_pos), positional.apply_rope(k, k_pos)
        elif self.positions == "alibi":
            bias = positional.alibi_bias(self.num_heads, T, S).astype(q.dtype)
        masking = dict(
            is_causal=is_causal,
            query_seq_lengths=query_seq_lengths,
            key_value_seq_lengths=key_value_seq_lengths,
            **self._variant_params(T, S, training),
        )
        out = self.op(q, k, v, bias, mask, **masking)
        if self.record_maps:
            weights = ops.attention_map(self.kind, q, k, bias, mask, **masking)
            self.sow(nnx.Intermediate, "attention_weights", weights)
        return self._project("out", self.dropout(out, deterministic=deterministic))
