"""Multi-head attention whose attention is any registered kind, chosen by one string.

The module owns what the pure ops take as explicit arguments: projections, Performer features
(redrawable), Linformer projections (learned), the BigBird seed (fixed at init) and the gates
of the state-carrying kinds (computed from the input, `state_gates.py`). Decoding caches
(`init_cache`, then `decode=True`) are in `decoding.py`.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_jax import ops
from attention_jax.layers import arguments, attention_config, decoding, positional
from attention_jax.layers.attention_config import AttentionConfig
from attention_jax.layers.random_features import RandomFeatures
from attention_jax.layers.short_conv import ShortConvolution
from attention_jax.layers.state_gates import StateGates
from attention_jax.ops import contract
from attention_jax.ops.linear import DEFAULT_FAVOR_FEATURES
from attention_jax.ops.linformer import DEFAULT_PROJECTED_LEN

NAME = "MultiHeadAttention"
# Sparse kinds decode from a full KV cache through their [max_len, max_len] pattern, a static
# bool array: 64 MiB at this length. Longer decoding is for the kinds with no pattern.
MAX_PATTERN_DECODE_LEN = 8192


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


# The kind_params entries that give the initial value of the arrays a layer owns.
_OWNED_ARRAYS = {
    ops.OwnedState.RANDOM_FEATURES: ("projection",),
    ops.OwnedState.LEARNED_PROJECTIONS: ("key_projection", "value_projection"),
}


def _random_features(kind_params: dict, given: dict, head_dim: int, redraw_every, rngs):
    """Performer's features: `num_features` rows (popped from kind_params), or the rows of a
    given `projection`, which they start from."""
    owner = f"{NAME}(performer)"
    num_features = kind_params.pop("num_features", None)
    if num_features is not None:
        num_features = arguments.positive_int(owner, "num_features", num_features)
    projection = given.get("projection")
    if projection is not None and num_features not in (None, len(projection)):
        raise ValueError(
            f"{owner}: num_features={num_features} but the given projection has "
            f"{len(projection)} rows; pass one or the other."
        )
    if projection is not None:
        num_features = len(projection)
    return RandomFeatures(
        DEFAULT_FAVOR_FEATURES if num_features is None else num_features,
        head_dim,
        projection=projection,
        redraw_every=redraw_every,
        rngs=rngs,
    )


def _layout_seed(rngs: nnx.Rngs) -> int:
    """BigBird's layout seed, drawn once and concretely: the layout picks the computed blocks
    at trace time."""
    key = rngs.params()
    if isinstance(key, jax.core.Tracer):
        raise ValueError(
            f"{NAME}(bigbird): under an abstract or jitted init the random layout cannot be "
            "drawn from rngs; pass kind_params={'seed': <int>}."
        )
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


class MultiHeadAttention(nnx.Module):
    """Multi-head attention over [B, T, D] inputs with `kind` from the ops registry.

    Args:
      in_features: D of the inputs (and of the context for cross attention).
      num_heads: query heads N (or give them in `attention`).
      attention: an `AttentionConfig` holding every attention option; or leave it None and
        give its fields as keywords (`kind='local'`, `positions='rope'`, ...).
      dtype: computation dtype (e.g. bfloat16); parameters stay `param_dtype`.
      rngs: parameter (and dropout) randomness.
      options: `AttentionConfig` fields (kind, kind_params, num_kv_heads, head_dim, positions,
        max_len, dropout_rate, qk_norm, logits_soft_cap, redraw_every, lora_rank, record_maps,
        use_bias, short_conv), when `attention` is None.
    """

    def __init__(
        self,
        in_features: int,
        num_heads: int | None = None,
        *,
        attention: AttentionConfig | None = None,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **options,
    ):
        config = attention_config.resolve(NAME, attention, num_heads, options)
        if config.moe_attention:
            raise ValueError(
                f"{NAME}: moe_attention routes the layer; build it with layers.MoEAttention or "
                "a block, which choose the routed layer."
            )
        # What the layer knows of its kind, it reads here.
        self.record = record = ops.kind(config.kind)
        self.op = record.op
        in_features = arguments.positive_int(NAME, "in_features", in_features)
        if config.head_dim is None and in_features % config.num_heads:
            raise ValueError(
                f"{NAME}: in_features ({in_features}) is not divisible by num_heads "
                f"({config.num_heads}); pick num_heads dividing it or set head_dim."
            )
        num_heads, num_kv_heads = config.num_heads, config.kv_heads
        head_dim = config.head_dim or in_features // num_heads
        max_len = config.layer_max_len
        self.kind, self.positions = config.kind, config.positions
        self.record_maps = config.record_maps
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        given = dict(config.kind_params)
        # Arrays the layer owns as state start from these; they are not static op parameters.
        owned = _OWNED_ARRAYS.get(record.owned_state, ())
        owned_init = {name: given.pop(name) for name in owned if name in given}
        # Static attributes hold no arrays: layouts and the like become nested tuples.
        given = {name: _static(value) for name, value in given.items()}
        self.kind_params = {**record.defaults, **given}
        if record.takes_horizon:
            self.kind_params.setdefault("max_len", max_len)
        if config.logits_soft_cap is not None:
            self.kind_params["logits_soft_cap"] = config.logits_soft_cap
        # Passed to full-sequence calls only: decoding steps choose automatically.
        self.implementation = (
            {} if config.implementation is None else {"implementation": config.implementation}
        )
        self.dtype = dtype
        self.cache = nnx.data(None)  # set by init_cache
        self.cache_max_len = 0
        typed = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        linear = dict(use_bias=config.use_bias, **typed)
        self.query = nnx.LinearGeneral(in_features, (num_heads, head_dim), **linear)
        self.key = nnx.LinearGeneral(in_features, (num_kv_heads, head_dim), **linear)
        self.value = nnx.LinearGeneral(in_features, (num_kv_heads, head_dim), **linear)
        self.out = nnx.LinearGeneral((num_heads, head_dim), in_features, axis=(-2, -1), **linear)
        lora_adapters = None
        if config.lora_rank is not None:
            rank = config.lora_rank
            lora_adapters = nnx.Dict(
                query=nnx.LoRA(in_features, rank, num_heads * head_dim, **typed),
                key=nnx.LoRA(in_features, rank, num_kv_heads * head_dim, **typed),
                value=nnx.LoRA(in_features, rank, num_kv_heads * head_dim, **typed),
                out=nnx.LoRA(num_heads * head_dim, rank, in_features, **typed),
            )
        self.lora = lora_adapters
        self.q_norm = nnx.RMSNorm(head_dim, **typed) if config.qk_norm else None
        self.k_norm = nnx.RMSNorm(head_dim, **typed) if config.qk_norm else None
        convolutions = None
        if config.short_conv is not None:
            widths = dict(query=num_heads, key=num_kv_heads, value=num_kv_heads)
            convolutions = nnx.Dict(
                {
                    name: ShortConvolution(heads * head_dim, config.short_conv, **typed)
                    for name, heads in widths.items()
                }
            )
        self.short_conv = convolutions
        gates = None
        if record.gates is not None:
            gates = StateGates(record.gates, in_features, num_kv_heads, head_dim, **typed)
        self.gates = gates
        # Without dropout no 'dropout' stream is needed (Linen's init passes only 'params').
        self.dropout = nnx.Dropout(config.dropout_rate, rngs=rngs if config.dropout_rate else None)
        # Each is assigned once: a Variable makes it state, None keeps it a static attribute.
        features = linformer_e = linformer_f = None
        if record.owned_state is ops.OwnedState.RANDOM_FEATURES:
            features = _random_features(
                self.kind_params, owned_init, head_dim, config.redraw_every, rngs
            )
        elif record.owned_state is ops.OwnedState.LEARNED_PROJECTIONS:
            projected_len = self.kind_params.pop("projected_len", None)
            linformer_e, linformer_f = _linformer_projections(
                owned_init, projected_len, max_len, param_dtype, rngs
            )
        elif record.owned_state is ops.OwnedState.LAYOUT_SEED and "seed" not in self.kind_params:
            self.kind_params["seed"] = _layout_seed(rngs)
        self.features = features
        self.linformer_e, self.linformer_f = linformer_e, linformer_f

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
        if self.short_conv is not None:
            for convolution in self.short_conv.values():
                convolution.init_cache(batch, dtype)
        if how in ("state", "blocks"):
            # A block-reading kind's cache holds every token: it is sized by max_len and its
            # block parameters.
            sized = {"max_len": max_len, **self._params_of(self.record.state_init)}
            state = self.record.state_init(
                batch,
                self.num_heads,
                self.num_kv_heads,
                self.head_dim,
                self.head_dim,
                **(sized if how == "blocks" else {}),
            )
        elif how == "recurrent":
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

    def _params_of(self, fn) -> dict:
        """The layer's kind parameters that `fn` (a record's state_init or state_step) names."""
        takes = inspect.signature(fn).parameters
        return {name: value for name, value in self.kind_params.items() if name in takes}

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

    def _decode(self, q, k, v, gates):
        """Attends new tokens q/k/v [B, T, ., H] to the decoding state and advances it;
        `gates` are the state-carrying kinds' gates for those tokens."""
        if self.cache is None:
            raise ValueError("decode=True needs a decoding state: call init_cache(batch, max_len).")
        state = self.cache.get_value()
        T = q.shape[1]
        how = decoding.strategy(self.kind)
        index = state.index if how in ("kv", "window") else state.position[0]
        if not isinstance(index, jax.core.Tracer) and int(index) + T > self.cache_max_len:
            raise ValueError(
                f"decode: {int(index)} tokens cached + {T} new exceeds init_cache's max_len "
                f"{self.cache_max_len}; call init_cache with a larger max_len."
            )
        if self.positions == "rope":
            positions = index + jnp.arange(T)
            q, k = positional.apply_rope(q, positions), positional.apply_rope(k, positions)
        scale = self.kind_params.get("scale")
        if how in ("state", "blocks"):
            fixed = self._params_of(self.record.state_step)
            out, state = self.record.state_step(state, q, k, v, **{**fixed, **gates})
        elif how == "recurrent":
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
        if self.short_conv is not None:
            q, k, v = (
                self.short_conv[name](y.reshape(*y.shape[:2], -1), decode=decode).reshape(y.shape)
                for name, y in (("query", q), ("key", k), ("value", v))
            )
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        gates = {}
        if self.gates is not None:
            q, k, gates = self.gates(x, q, k)
        if decode:
            out = self._decode(q, k, v, gates)
            if self.gates is not None:
                out = self.gates.normalize_output(out)
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
            **gates,
        )
        out = self.op(q, k, v, bias, mask, **masking, **self.implementation)
        if self.gates is not None:
            out = self.gates.normalize_output(out)
        if self.record_maps:
            weights = ops.attention_map(self.kind, q, k, bias, mask, **masking)
            self.sow(nnx.Intermediate, "attention_weights", weights)
        return self._project("out", self.dropout(out, deterministic=deterministic))
