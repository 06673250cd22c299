"""AttentionConfig: how one attention layer attends, as one frozen object.

The options are declared here once. A model config builds one per layer
(`TransformerConfig.attention_config`), the blocks pass it on, and `MultiHeadAttention` (or
`MoEAttention`, when `moe_attention` routes it) reads it, as nanodo passes one config down.
The layers still take the options as keywords, so `MultiHeadAttention(512, 8, kind='local')`
works; the keywords are this dataclass's fields.

  config = AttentionConfig(num_heads=8, kind="performer", positions="rope", qk_norm=True)
  layer = MultiHeadAttention(512, attention=config, rngs=nnx.Rngs(0))
  wider = config.replace(num_heads=16)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from attention_jax import ops
from attention_jax.layers import arguments
from attention_jax.layers.moe_attention import routable

POSITIONS = (None, "rope", "alibi")
DEFAULT_MAX_LEN = 512
# Routing options of SwitchHead (`MoEAttention`).
ROUTING_KEYS = ("num_experts", "top_k")


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """Every option of one attention layer but its width D, dtypes and randomness.

    Attributes:
      num_heads: query heads N.
      kind: a name from `ops.names()`.
      kind_params: keyword arguments of the kind (e.g. {'block_size': 64} for bigbird).
        Arrays the layer owns start from the ones given here: performer's `projection`,
        linformer's `key_projection` and `value_projection` ([projected_len, max_len]).
      num_kv_heads: K; N % K == 0 (GQA/MQA). None: N.
      head_dim: H; None: D // N.
      positions: None, 'rope' (rotates q and k) or 'alibi' (a bias; only for kinds taking one).
      max_len: longest sequence for linformer's learned projections (shorter inputs use a
        prefix) and cosformer's re-weighting horizon M (fixed, so decoding matches training).
        None: 512.
      dropout_rate: dropout on the output projection's input, in [0, 1).
      qk_norm: RMS-normalise queries and keys per head before attention.
      logits_soft_cap: c squashes logits to c * tanh(logits / c) (Gemma 2); softmax kinds only.
      redraw_every: kinds with random features only: redraw them every N training calls
        (calls with dropout on); `MultiHeadAttention.redraw(key)` redraws on request.
      lora_rank: a trainable low-rank update (`nnx.LoRA`) on each of the four projections (and,
        in a block, on its feed-forward network); None for none.
      record_maps: sow each call's attention map [B, N, T, S] as nnx.Intermediate
        'attention_weights' (an extra S-wide call, so off by default).
      use_bias: biases in the projections.
      short_conv: a causal depthwise convolution of this width (then a SiLU) on q, k and v
        after their projections, as Mamba, Based and Gated DeltaNet use (4); None for none.
      implementation: which engine runs an exact kind ('xla', 'cudnn', 'pallas_tpu',
        'pallas_gpu', 'tokamax'; `ops.kind(kind).implementations` lists a kind's), or None for
        the fastest that can run each call here. Decoding steps always choose automatically:
        their shapes (one query against a cache) differ from training's.
      moe_attention: SwitchHead routing of the value and output projections
        ({'num_experts': E, 'top_k': k}, `MoEAttention`); empty for multi-head attention.
      owner: the name errors start with: the layer or config that builds this one.
    """

    num_heads: int
    kind: str = ops.DEFAULT_KIND
    kind_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    num_kv_heads: int | None = None
    head_dim: int | None = None
    positions: str | None = None
    max_len: int | None = None
    dropout_rate: float = 0.0
    qk_norm: bool = False
    logits_soft_cap: float | None = None
    redraw_every: int | None = None
    lora_rank: int | None = None
    record_maps: bool = False
    use_bias: bool = True
    short_conv: int | None = None
    implementation: str | None = None
    moe_attention: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    owner: dataclasses.InitVar[str] = "AttentionConfig"

    def __post_init__(self, owner: str):
        record = ops.kind(self.kind)  # ValueError listing the registered kinds
        ints = {"num_heads": self.num_heads, "max_len": self.max_len}
        ints |= {"num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim}
        ints |= {"lora_rank": self.lora_rank, "redraw_every": self.redraw_every}
        ints |= {"short_conv": self.short_conv}
        for name, value in ints.items():
            if value is not None:
                object.__setattr__(self, name, arguments.positive_int(owner, name, value))
        rate = arguments.dropout_rate(owner, self.dropout_rate)
        object.__setattr__(self, "dropout_rate", rate)
        # None is accepted for either, as the layers always did: no parameters, no routing.
        object.__setattr__(self, "kind_params", dict(self.kind_params or {}))
        object.__setattr__(self, "moe_attention", dict(self.moe_attention or {}))
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"{owner}: num_heads ({self.num_heads}) must be a positive multiple of "
                f"num_kv_heads ({self.num_kv_heads})."
            )
        if self.positions not in POSITIONS:
            raise ValueError(f"{owner}: positions must be one of {POSITIONS}.")
        if self.logits_soft_cap is not None and not record.soft_cap:
            capped = [name for name in ops.names() if ops.kind(name).soft_cap]
            raise ValueError(
                f"{owner}: kind {self.kind!r} has no logits to cap; logits_soft_cap works "
                f"with {capped}."
            )
        if self.redraw_every is not None and record.owned_state is not (
            ops.OwnedState.RANDOM_FEATURES
        ):
            drawn = [
                name
                for name in ops.names()
                if ops.kind(name).owned_state is ops.OwnedState.RANDOM_FEATURES
            ]
            raise ValueError(
                f"{owner}: redraw_every is for kinds with random features ({drawn}), not "
                f"{self.kind!r}."
            )
        self._check_implementation(owner, record)
        if self.moe_attention:
            self._check_routing(owner)

    def _check_implementation(self, owner: str, record: ops.Kind) -> None:
        if "implementation" in self.kind_params:
            raise ValueError(
                f"{owner}: give the implementation as its own option (implementation=...), "
                "not in kind_params."
            )
        if self.implementation is not None and self.implementation not in record.implementations:
            served = [n for n in ops.names() if len(ops.kind(n).implementations) > 1]
            raise ValueError(
                f"{owner}: kind {self.kind!r} runs on {record.implementations}, not "
                f"implementation={self.implementation!r}; the kinds with vendor kernels are "
                f"{served}. Use None to choose automatically."
            )

    def _check_routing(self, owner: str) -> None:
        """Raises unless `moe_attention` is valid and the routed layer has every option set."""
        routed = self.moe_attention
        if set(routed) - set(ROUTING_KEYS) or "num_experts" not in routed:
            raise ValueError(
                f"{owner}: moe_attention needs num_experts and takes top_k; got {routed}."
            )
        if not 1 <= routed.get("top_k", 2) <= routed["num_experts"]:
            raise ValueError(
                f"{owner}: moe_attention needs 1 <= top_k <= num_experts; got {routed}."
            )
        unsupported = {
            "num_kv_heads": self.kv_heads != self.num_heads,
            "qk_norm": self.qk_norm,
            "logits_soft_cap": self.logits_soft_cap is not None,
            "lora_rank": self.lora_rank is not None,
            "positions='alibi'": self.positions == "alibi",
            "redraw_every": self.redraw_every is not None,
            "dropout_rate": self.dropout_rate > 0,
            "record_maps": self.record_maps,
            "short_conv": self.short_conv is not None,
            "implementation": self.implementation is not None,
            f"attention {[self.kind]}": not routable(self.kind),
        }
        chosen = [name for name, used in unsupported.items() if used]
        if chosen:
            raise ValueError(
                f"{owner}: routed attention (moe_attention) does not support {chosen}; drop "
                "them or set moe_attention={}."
            )

    @property
    def kv_heads(self) -> int:
        """K, the key and value heads (N when num_kv_heads is None)."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def layer_max_len(self) -> int:
        """max_len, or the layer's default when it is None."""
        return DEFAULT_MAX_LEN if self.max_len is None else self.max_len

    def replace(self, **changes) -> AttentionConfig:
        """A copy with `changes` applied (and checked)."""
        return dataclasses.replace(self, **changes)


def resolve(
    owner: str, attention: AttentionConfig | None, num_heads, options: Mapping
) -> AttentionConfig:
    """The AttentionConfig a layer was given: `attention`, or one made of its keywords.

    A layer takes either an AttentionConfig or the options as keywords (num_heads among them);
    an unknown keyword is a ValueError naming the options there are.
    """
    if attention is not None:
        if num_heads is not None or options:
            given = sorted(options) + (["num_heads"] if num_heads is not None else [])
            raise ValueError(
                f"{owner}: pass attention options in the AttentionConfig or as keywords, not "
                f"both; got attention= and {given}."
            )
        return attention
    fields = [f.name for f in dataclasses.fields(AttentionConfig)]
    if unknown := sorted(set(options) - set(fields)):
        raise ValueError(f"{owner}: unknown option(s) {unknown}; the options are {fields}.")
    if num_heads is None:
        raise ValueError(f"{owner}: give num_heads, or an AttentionConfig as attention=.")
    return AttentionConfig(num_heads=num_heads, **options, owner=owner)
