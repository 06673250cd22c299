"""Model configurations: frozen dataclasses, checked when made, converted from a ConfigDict.

`attention` names a kind from `ops.names()` for every layer, or gives one kind per layer as a
tuple, so a hybrid is configuration: `attention=('local', 'dense') * 3` for six layers.
`kind_params` is either one dict of parameters for every layer, or a dict keyed by kind names
giving each kind its own (`{'local': {'local_window_size': (64, 0)}, 'bigbird': {...}}`). Every
key must reach a layer: a kind the model uses, or a parameter its kinds' ops take; `build` then
traces a first call, so values an op refuses fail there too, not at the first training step.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import ml_collections

from attention_jax import ops
from attention_jax.layers.attention_config import AttentionConfig
from attention_jax.layers.blocks import CROSS_ATTENTION, NORMS
from attention_jax.layers.feedforward import ACTIVATIONS
from attention_jax.models.ranges import POSITIVE_INT, POSITIVE_INT_OR_NONE, Range, check_ranges

POSITIONS = (None, "rope", "alibi", "sinusoidal", "learned")
# 'rope' and 'alibi' act inside attention; the others are added to the embeddings.
ADDED_POSITIONS = ("sinusoidal", "learned")
POOLINGS = ("cls", "mean")


def _frozen(value):
    """Lists become tuples and mappings plain dicts, so a config holds no ConfigDict or list."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _frozen(v) for k, v in value.items()}
    return value


# Switch Transformer's auxiliary-loss weight and ST-MoE's z-loss weight.
MOE_DEFAULTS = {
    "every_n_layers": 2,
    "top_k": 2,
    "capacity_factor": 1.25,
    "router": "top_k",
    "dispatch": "einsum",
    "router_jitter": 0.0,
    "batch_prioritized": False,
    "group_size": 1024,
    "load_balancing_weight": 0.01,
    "z_loss_weight": 0.001,
}
MOE_LAYER_KEYS = (
    "num_experts",
    "top_k",
    "capacity_factor",
    "router",
    "dispatch",
    "router_jitter",
    "batch_prioritized",
    "group_size",
)


def _check_moe(cls_name: str, moe: Mapping) -> None:
    if not moe:
        return
    causal = cls_name in ("LanguageModelConfig", "EncoderDecoderConfig")
    if causal and (moe.get("router") == "expert_choice" or moe.get("batch_prioritized")):
        raise ValueError(
            f"{cls_name}: expert-choice and batch-prioritised routing let later tokens decide "
            f"an earlier token's experts, which a causal model must not see; use router "
            f"'top_k' without batch_prioritized."
        )
    unknown = sorted(set(moe) - set(MOE_DEFAULTS) - {"num_experts"})
    if unknown or "num_experts" not in moe:
        raise ValueError(
            f"{cls_name}: moe needs num_experts and takes {sorted(MOE_DEFAULTS)}; got unknown "
            f"{unknown} in {dict(moe)}."
        )
    if int(moe.get("every_n_layers", 1)) < 1:
        raise ValueError(f"{cls_name}: moe.every_n_layers must be >= 1; got {moe}.")


def _op_parameters(kind: str) -> tuple[str, ...] | None:
    """The keyword parameters of the op of `kind`; None when it passes **kwargs on unseen."""
    parameters = inspect.signature(ops.get(kind)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return tuple(sorted(p.name for p in parameters if p.kind is p.KEYWORD_ONLY))


def _not_taken(kind: str, names) -> list[str]:
    """The names among `names` that the op of `kind` has no parameter for."""
    taken = _op_parameters(kind)
    return [] if taken is None else sorted(set(names) - set(taken))


def check_direction(cls_name: str, role: str, kinds, *, causal: bool) -> None:
    """Raises unless every kind in `kinds` supports causal (decoder) or bidirectional
    (encoder, cross attention) calls, naming the kinds that do."""
    capable = "causal" if causal else "bidirectional"
    wrong = [kind for kind in kinds if not getattr(ops.kind(kind), capable)]
    if wrong:
        able = [name for name in ops.names() if getattr(ops.kind(name), capable)]
        raise ValueError(
            f"{cls_name}: the {role} attends {'causally' if causal else 'both ways'}, which "
            f"{wrong} cannot; use one of {able}."
        )


def _one_of(cls_name: str, field: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{cls_name}: {field} must be one of {tuple(valid)}; got {value!r}.")


# The numeric fields every family shares.
SHARED_RANGES = {
    "d_model": POSITIVE_INT,
    "num_heads": POSITIVE_INT,
    "num_kv_heads": POSITIVE_INT_OR_NONE,
    "head_dim": POSITIVE_INT_OR_NONE,
    "mlp_dim": POSITIVE_INT,
    "dropout_rate": Range(0, 1),
    "logits_soft_cap": Range(0, open_low=True, optional=True),
    "lora_rank": POSITIVE_INT_OR_NONE,
    "short_conv": POSITIVE_INT_OR_NONE,
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Fields shared by every family: the shape of the blocks and how they attend."""

    name: ClassVar[str] = ""
    d_model: int = 128
    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    mlp_dim: int = 512
    attention: str | tuple[str, ...] = ops.DEFAULT_KIND
    kind_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    activation: str = "gelu"
    norm: str = "layernorm"
    dropout_rate: float = 0.0
    positions: str | None = "rope"
    qk_norm: bool = False
    logits_soft_cap: float | None = None
    lora_rank: int | None = None
    # A causal depthwise convolution of this width on q, k and v of every self-attention layer
    # (`AttentionConfig.short_conv`); None for none.
    short_conv: int | None = None
    # Which engine runs the exact kinds' self-attention (`AttentionConfig.implementation`):
    # 'xla', 'cudnn', 'pallas_tpu', 'pallas_gpu', 'tokamax', or None for the fastest here.
    # Cross attention and decoding steps always choose automatically.
    implementation: str | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    # Mixture-of-experts feed-forward layers; empty for none. Keys: num_experts (required),
    # every_n_layers (1: every layer; 2: every second, ...), the MoEFeedForward options
    # (top_k, capacity_factor, router, dispatch, router_jitter, batch_prioritized) and the
    # training-loss weights load_balancing_weight and z_loss_weight.
    moe: dict[str, Any] = dataclasses.field(default_factory=dict)
    # SwitchHead routed attention (`layers.MoEAttention`) for every self-attention layer; empty
    # for multi-head attention. Keys: num_experts (value and output experts per head, required)
    # and top_k (experts each token uses, default 2).
    moe_attention: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for field in ("attention", "kind_params", "moe", "moe_attention"):
            object.__setattr__(self, field, _frozen(getattr(self, field)))
        cls = type(self).__name__
        check_ranges(f"{cls}: ", self, SHARED_RANGES)
        if self.head_dim is None and self.d_model % self.num_heads:
            raise ValueError(
                f"{cls}: d_model ({self.d_model}) is not divisible by num_heads "
                f"({self.num_heads}); pick num_heads dividing d_model or set head_dim."
            )
        kinds = (self.attention,) if isinstance(self.attention, str) else self.attention
        for kind in kinds:
            ops.get(kind)  # ValueError listing the registered kinds
        _check_moe(cls, self.moe)
        _one_of(cls, "activation", self.activation, sorted(ACTIVATIONS))
        _one_of(cls, "norm", self.norm, sorted(NORMS))
        _one_of(cls, "positions", self.positions, POSITIONS)
        for kind in kinds:
            self.attention_config(kind)  # the layer's own checks, named after this config
        for field in ("dtype", "param_dtype"):
            value = getattr(self, field)
            try:
                floating = jnp.issubdtype(jnp.dtype(value), jnp.floating)
            except TypeError:
                floating = False
            if not floating:
                raise ValueError(
                    f"{cls}: {field} must name a floating dtype such as 'float32' or "
                    f"'bfloat16'; got {value!r}."
                )
        self._check_kind_params()

    def _check_kind_params(self) -> None:
        """Raises unless every key of kind_params reaches a layer that takes it.

        Keyed by kind, each key must be a kind in use and each of its entries a parameter of
        that kind's op; one dict for every layer must hold parameters of every self-attention
        kind in use. (Ops taking **kwargs are checked when `build` traces a first call.)
        """
        cls = type(self).__name__
        own = self.self_attention_kinds()
        in_use = tuple(dict.fromkeys(own + self.cross_attention_kinds()))
        if not self._keyed_by_kind():
            for kind in own:
                if unknown := _not_taken(kind, self.kind_params):
                    raise ValueError(
                        f"{cls}: kind_params {unknown} reach every layer, but kind {kind!r} "
                        f"has no such parameter (it takes {_op_parameters(kind)}); the kinds "
                        f"in use are {in_use}. Give each kind its own: {{kind: {{...}}}}."
                    )
            return
        for key, params in self.kind_params.items():
            if key not in in_use:
                raise ValueError(
                    f"{cls}: kind_params key {key!r} applies to no layer; the kinds in use are "
                    f"{in_use}."
                )
            if not isinstance(params, Mapping):
                raise ValueError(
                    f"{cls}: kind_params[{key!r}] must be a dict of {key}'s parameters; got "
                    f"{params!r}."
                )
            if unknown := _not_taken(key, params):
                raise ValueError(
                    f"{cls}: kind_params[{key!r}] sets {unknown}, which kind {key!r} has no "
                    f"parameter for; it takes {_op_parameters(key)}."
                )

    def self_attention_kinds(self) -> tuple[str, ...]:
        """The distinct kinds of the model's self-attention layers."""
        kinds = (self.attention,) if isinstance(self.attention, str) else self.attention
        return tuple(dict.fromkeys(kinds))

    def cross_attention_kinds(self) -> tuple[str, ...]:
        """The kinds of its multihead cross-attention layers (only encoder-decoders have any)."""
        return ()

    def _keyed_by_kind(self) -> bool:
        """Whether kind_params gives kinds their own dicts, rather than one dict for all."""
        return any(key in ops.names() for key in self.kind_params)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def layer_kinds(self, num_layers: int, field: str = "attention") -> tuple[str, ...]:
        """One kind per layer from the `field` setting (a name, or a tuple of num_layers).

        A `field` left at None takes the `attention` setting.
        """
        kinds = getattr(self, field)
        if kinds is None:
            field, kinds = f"attention (for {field})", self.attention
        if isinstance(kinds, str):
            return (kinds,) * num_layers
        if len(kinds) != num_layers:
            raise ValueError(
                f"{type(self).__name__}: {field} gives {len(kinds)} kinds {kinds} for "
                f"{num_layers} layers; give one kind per layer or a single name."
            )
        return kinds

    def moe_options(self, layer: int) -> dict | None:
        """MoEFeedForward options for block `layer`, or None for a dense feed-forward."""
        if not self.moe:
            return None
        options = {**MOE_DEFAULTS, **self.moe}
        if (layer + 1) % options["every_n_layers"]:
            return None
        return {k: v for k, v in options.items() if k in MOE_LAYER_KEYS}

    def moe_loss_weights(self) -> tuple[float, float]:
        """(load_balancing_weight, z_loss_weight) of the auxiliary losses."""
        options = {**MOE_DEFAULTS, **self.moe}
        return options["load_balancing_weight"], options["z_loss_weight"]

    def attention_config(
        self, kind: str, *, layer: int = 0, max_len: int | None = None
    ) -> AttentionConfig:
        """The AttentionConfig of self-attention layer number `layer`, of `kind`, attending over
        at most `max_len` tokens (None: the layer's default)."""
        kind_params = self.params_for(kind)
        if ops.kind(kind).owned_state is ops.OwnedState.LAYOUT_SEED:
            # The random blocks follow from the config alone, so a restored checkpoint (or an
            # abstract init) rebuilds the same pattern; layers differ by their index.
            kind_params.setdefault("seed", layer)
        return AttentionConfig(
            num_heads=self.num_heads,
            kind=kind,
            kind_params=kind_params,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            # Absolute positions are added to the embeddings; attention sees only rope/alibi.
            positions=None if self.positions in ADDED_POSITIONS else self.positions,
            max_len=max_len,
            qk_norm=self.qk_norm,
            logits_soft_cap=self.logits_soft_cap,
            lora_rank=self.lora_rank,
            short_conv=self.short_conv,
            implementation=self.implementation,
            moe_attention=self.moe_attention,
            owner=type(self).__name__,
        )

    def params_for(self, kind: str, *, shared: bool = True) -> dict:
        """kind_params for a layer of `kind`: its own entry when keyed by kind, else all
        (or nothing, when not `shared`: cross attention takes only its own entry)."""
        if self._keyed_by_kind():
            return dict(self.kind_params.get(kind, {}))
        return dict(self.kind_params) if shared else {}


def _check_family(config, sizes: tuple[str, ...], choices: dict[str, tuple]) -> None:
    """Raises unless every size is a positive int and every choice one of its valid values."""
    cls = type(config).__name__
    check_ranges(f"{cls}: ", config, dict.fromkeys(sizes, POSITIVE_INT))
    for field, valid in choices.items():
        _one_of(cls, field, getattr(config, field), valid)


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(TransformerConfig):
    """Encoder classifier over token sequences; `dual_encoder` for pair tasks (LRA retrieval)."""

    name: ClassVar[str] = "classifier"
    vocab_size: int = 256
    num_layers: int = 4
    max_len: int = 1024
    positions: str | None = "learned"
    num_classes: int = 2
    pooling: str = "cls"
    dual_encoder: bool = False

    def __post_init__(self):
        super().__post_init__()
        self.layer_kinds(self.num_layers)
        check_direction("ClassifierConfig", "encoder", self.self_attention_kinds(), causal=False)
        sizes = ("vocab_size", "num_layers", "max_len", "num_classes")
        _check_family(self, sizes, {"pooling": POOLINGS})


@dataclasses.dataclass(frozen=True)
class LanguageModelConfig(TransformerConfig):
    """Decoder-only causal language model."""

    name: ClassVar[str] = "lm"
    vocab_size: int = 256
    num_layers: int = 4
    max_len: int = 1024
    tie_embeddings: bool = True

    def __post_init__(self):
        super().__post_init__()
        self.layer_kinds(self.num_layers)
        check_direction("LanguageModelConfig", "decoder", self.self_attention_kinds(), causal=True)
        _check_family(self, ("vocab_size", "num_layers", "max_len"), {})


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig(TransformerConfig):
    """Encoder over source tokens, causal decoder over targets with cross-attention.

    `attention` is the encoder's; `decoder_attention` the decoder self-attention's (None: the
    same as `attention`); `cross_attention_kind` the kind of multihead cross-attention.
    """

    name: ClassVar[str] = "encoder_decoder"
    source_vocab_size: int = 256
    target_vocab_size: int = 256
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    max_len: int = 1024
    positions: str | None = "sinusoidal"
    decoder_attention: str | tuple[str, ...] | None = None
    cross_attention: str = "multihead"
    cross_attention_kind: str = ops.DEFAULT_KIND
    tie_embeddings: bool = True

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "decoder_attention", _frozen(self.decoder_attention))
        cls = "EncoderDecoderConfig"
        check_direction(cls, "encoder", self.layer_kinds(self.num_encoder_layers), causal=False)
        decoder = self.layer_kinds(self.num_decoder_layers, "decoder_attention")
        check_direction(cls, "decoder", decoder, causal=True)
        ops.get(self.cross_attention_kind)  # ValueError naming the kinds, even when unused
        check_direction(cls, "cross attention", self.cross_attention_kinds(), causal=False)
        sizes = (
            "source_vocab_size",
            "target_vocab_size",
            "num_encoder_layers",
            "num_decoder_layers",
            "max_len",
        )
        choices = {"cross_attention": tuple(c for c in CROSS_ATTENTION if c is not None)}
        _check_family(self, sizes, choices)

    def self_attention_kinds(self) -> tuple[str, ...]:
        decoder = self.attention if self.decoder_attention is None else self.decoder_attention
        decoder = (decoder,) if isinstance(decoder, str) else tuple(decoder)
        return tuple(dict.fromkeys(super().self_attention_kinds() + decoder))

    def cross_attention_kinds(self) -> tuple[str, ...]:
        return (self.cross_attention_kind,) if self.cross_attention == "multihead" else ()


@dataclasses.dataclass(frozen=True)
class ViTConfig(TransformerConfig):
    """Vision Transformer over [B, image_size, image_size, channels] images."""

    name: ClassVar[str] = "vit"
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    num_layers: int = 6
    positions: str | None = "learned"
    num_classes: int = 10
    pooling: str = "cls"

    def __post_init__(self):
        super().__post_init__()
        self.layer_kinds(self.num_layers)
        check_direction("ViTConfig", "encoder", self.self_attention_kinds(), causal=False)
        sizes = ("image_size", "patch_size", "channels", "num_layers", "num_classes")
        _check_family(self, sizes, {"pooling": POOLINGS})
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: patch_size ({self.patch_size}) must divide image_size "
                f"({self.image_size})."
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def field_names(config_class: type[TransformerConfig]) -> tuple[str, ...]:
    """The settable fields of a config class, sorted."""
    return tuple(sorted(f.name for f in dataclasses.fields(config_class)))


def from_config_dict(config_class: type[TransformerConfig], config) -> TransformerConfig:
    """`config_class` from a ConfigDict (or mapping); `name` is checked, unknown keys refused."""
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    name = values.pop("name", config_class.name)
    if name != config_class.name:
        raise ValueError(
            f"{config_class.__name__} is for name={config_class.name!r}; got name={name!r}."
        )
    valid = field_names(config_class)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(
            f"{config_class.__name__}: unknown config keys {unknown}; valid keys are "
            f"{', '.join(valid)} (and name)."
        )
    return config_class(**values)


def default_config_dict(config_class: type[TransformerConfig]) -> ml_collections.ConfigDict:
    """A ConfigDict of `name` and every field's default.

    Not type-safe, so `attention` can go from a name to a tuple of per-layer kinds; None
    defaults of int/float fields become placeholders of that type, for command-line overrides
    such as --config.lora_rank=8. Unknown keys are still refused by `from_config_dict`.
    """
    values = {"name": config_class.name}
    for field in dataclasses.fields(config_class):
        if field.default_factory is not dataclasses.MISSING:
            values[field.name] = field.default_factory()
        elif field.name in _ANY_TYPE:
            # Typed object so `--config.attention="('local', 'dense')"` parses as a tuple.
            values[field.name] = ml_collections.FieldReference(field.default, field_type=object)
        elif field.default is None and field.type in _PLACEHOLDERS:
            values[field.name] = ml_collections.config_dict.placeholder(_PLACEHOLDERS[field.type])
        else:
            values[field.name] = field.default
    return ml_collections.ConfigDict(values, type_safe=False)


_PLACEHOLDERS = {"int | None": int, "float | None": float}
# Fields that take a name, a tuple of names or None.
_ANY_TYPE = ("attention", "decoder_attention", "positions")
