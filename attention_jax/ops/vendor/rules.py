"""The rules that choose an exact kind's implementation: a pure function of the call and platform.

Each exact-softmax kind takes `implementation=`:
  'xla'         our blocked engine in plain XLA: every platform, every argument; the reference.
  'cudnn'       NVIDIA cuDNN flash attention (jax.nn.dot_product_attention): dense, flash and
                causal-window local; float16/bfloat16.
  'pallas_tpu'  splash attention with the kind's pattern as its block mask: dense, flash, local,
                longformer, block_sparse, bigbird.
  'pallas_gpu'  JAX's Pallas flash attention kernel for GPUs: dense and flash, full or causal.
  'tokamax'     openxla/tokamax (optional extra): dense, flash, local.
  None          the first of `PREFERENCE[platform]` that can honour the call, else 'xla'.

`rules(request, platform)` depends only on the call's shapes and static arguments (`Request`)
and the platform (`platform.Platform`), so every combination is tested on a CPU. `dispatch.py`
applies the choice to a real call.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attention_jax.ops.vendor import platform as platform_lib
from attention_jax.ops.vendor import tokamax as tokamax_lib

IMPLEMENTATIONS = ("xla", "cudnn", "pallas_tpu", "pallas_gpu", "tokamax")
# What None tries, in order, on each platform; 'xla' always can.
PREFERENCE = {
    "cpu": ("xla",),
    "gpu": ("cudnn", "pallas_gpu", "xla"),
    "tpu": ("pallas_tpu", "xla"),
}
# The kinds each implementation serves: what the kind record's `implementations` lists.
SERVES = {
    "xla": ("dense", "flash", "local", "longformer", "block_sparse", "bigbird"),
    "cudnn": ("dense", "flash", "local"),
    "pallas_tpu": ("dense", "flash", "local", "longformer", "block_sparse", "bigbird"),
    "pallas_gpu": ("dense", "flash"),
    "tokamax": ("dense", "flash", "local"),
}


@dataclasses.dataclass(frozen=True)
class Request:
    """One call, as far as choosing its implementation goes (shapes and static arguments).

    Attributes:
      kind: the kind's name (`SERVES` lists what each implementation serves).
      dtype: the query dtype's name.
      q_len, kv_len, num_heads, num_kv_heads, head_dim, value_dim: sizes.
      is_causal: static.
      window: (left, right) or None.
      global_positions: Longformer's global tokens.
      layout: whether a block layout (block_sparse, BigBird) is given.
      bias, mask, lengths, segment_ids: whether these arguments are given.
      soft_cap: whether logits_soft_cap is given.
      static_scale: whether scale is a Python number (not traced).
      weights: whether the attention weights are asked for (dense's return_weights).
      rows_see_keys: whether every query row sees at least one key through the kind's structure
        (causal, window, layout); kernels with a finite mask value average over nothing
        otherwise, where the contract gives 0.
    """

    kind: str
    dtype: str
    q_len: int
    kv_len: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    value_dim: int
    is_causal: bool = False
    window: tuple[int, int] | None = None
    global_positions: tuple[int, ...] = ()
    layout: bool = False
    bias: bool = False
    mask: bool = False
    lengths: bool = False
    segment_ids: bool = False
    soft_cap: bool = False
    static_scale: bool = True
    weights: bool = False
    rows_see_keys: bool = True


def _cudnn(r: Request, p: platform_lib.Platform) -> list[str]:
    why = []
    if not p.nvidia:
        why.append(f"cuDNN needs an NVIDIA GPU; this is {p}")
    elif p.compute_capability is not None and p.compute_capability < (8, 0):
        why.append(f"cuDNN flash attention needs compute capability >= 8.0; this is {p}")
    if r.dtype not in ("float16", "bfloat16"):
        why.append(f"cuDNN takes float16 or bfloat16, not {r.dtype}")
    widest = 256 if p.compute_capability is not None and p.compute_capability >= (9, 0) else 128
    if r.head_dim % 8 or r.head_dim > widest:
        why.append(f"cuDNN needs head_dim a multiple of 8 and <= {widest}; got {r.head_dim}")
    if r.value_dim != r.head_dim:
        why.append("cuDNN needs the value head_dim equal to the query's")
    if r.window is not None and r.window[1] and not r.is_causal:
        why.append("cuDNN's sliding window looks back only: a right window needs is_causal=True")
    if not r.rows_see_keys:
        why.append(
            "some query row sees no key through the window; the contract gives 0 there and "
            "jax.nn's masking does not"
        )
    if r.mask:
        why.append(
            "cuDNN turns a mask into a bias, so a row the mask hides entirely would average every "
            "key instead of giving 0"
        )
    if r.q_len % 2 or r.kv_len % 2:
        # jax's cuDNN call adds a bias of its own in training, and cuDNN's training kernels
        # take a bias only at even lengths (seen at q_len 511 on an H200, jax 0.11.2).
        why.append("cuDNN's training kernels need even q_len and kv_len")
    if r.segment_ids:
        why.append("jax.nn's cuDNN call takes no segment ids")
    if r.soft_cap:
        why.append("cuDNN has no logits soft cap")
    if not r.static_scale:
        why.append("cuDNN needs scale as a Python number, not a traced one")
    return why


def _pallas_tpu(r: Request, p: platform_lib.Platform) -> list[str]:
    why = []
    if p.name != "tpu" and not p.interpret:
        why.append(f"splash attention needs a TPU (or ops.interpret_kernels()); this is {p}")
    if r.bias:
        why.append("splash attention takes no additive bias")
    if r.mask:
        why.append(
            "splash attention takes its mask statically; an array mask would make every tile "
            "partial (use the kind's structure: window, layout, segment ids)"
        )
    if r.lengths and (r.window is not None or r.layout or r.global_positions):
        why.append(
            "with a window or a layout, rows past a sequence length could see no key, which "
            "splash does not define; lengths are served for full and causal attention"
        )
    if r.segment_ids and r.q_len != r.kv_len:
        why.append("segment ids are served for self-attention (q_len == kv_len) only")
    if not r.rows_see_keys:
        why.append(
            "some query row sees no key through the kind's structure; the contract gives 0 there "
            "and splash does not"
        )
    return why


def _pallas_gpu(r: Request, p: platform_lib.Platform) -> list[str]:
    why = []
    if p.name != "gpu" and not p.interpret:
        why.append(f"the Pallas GPU kernel needs a GPU (or ops.interpret_kernels()); this is {p}")
    if r.window is not None:
        why.append("the Pallas GPU kernel has no sliding window")
    for given, what in ((r.bias, "bias"), (r.mask, "mask"), (r.lengths, "sequence lengths")):
        if given:
            why.append(f"the Pallas GPU kernel takes no {what}")
    if r.segment_ids:
        why.append("the Pallas GPU kernel takes one segment id array for queries and keys")
    if r.soft_cap:
        why.append("the Pallas GPU kernel has no logits soft cap")
    if r.value_dim != r.head_dim:
        why.append("the Pallas GPU kernel needs the value head_dim equal to the query's")
    if r.head_dim < 16 or r.head_dim & (r.head_dim - 1):
        why.append(f"the Pallas GPU kernel needs head_dim a power of two >= 16; got {r.head_dim}")
    if r.q_len != r.kv_len:
        why.append("the Pallas GPU kernel's backward pass needs q_len == kv_len (self-attention)")
    if not r.static_scale:
        why.append("the Pallas GPU kernel needs scale as a Python number, not a traced one")
    return why


def _tokamax(r: Request, p: platform_lib.Platform) -> list[str]:
    why = []
    if not tokamax_lib.installed():
        why.append(f"tokamax is not installed: {tokamax_lib.INSTALL}")
    if p.name not in ("gpu", "tpu"):
        why.append(f"tokamax's kernels need a GPU or TPU; this is {p}")
    if r.segment_ids:
        why.append("tokamax's dot_product_attention takes no segment ids")
    if r.soft_cap and r.bias:
        why.append("tokamax caps the logits after the bias; the contract caps them before it")
    if r.dtype == "float16" and (r.q_len % 128 or r.kv_len % 128):
        # Seen with tokamax 0.0.17 on an H200: NaN value gradients, float16, q_len 1000.
        why.append("tokamax gave NaN gradients in float16 at lengths not a multiple of 128")
    return why


_RULES = {
    "xla": lambda r, p: [],
    "cudnn": _cudnn,
    "pallas_tpu": _pallas_tpu,
    "pallas_gpu": _pallas_gpu,
    "tokamax": _tokamax,
}


def rules(request: Request, platform: platform_lib.Platform) -> dict[str, list[str]]:
    """For each implementation, why it cannot run this call on this platform (empty: it can)."""
    out = {}
    for name in IMPLEMENTATIONS:
        if request.kind not in SERVES[name]:
            out[name] = [f"{name} does not serve kind {request.kind!r}"]
        elif request.weights and name != "xla":
            out[name] = ["only 'xla' returns the attention weights (return_weights=True)"]
        else:
            out[name] = _RULES[name](request, platform)
    return out


@dataclasses.dataclass(frozen=True)
class Choice:
    """The implementation that runs a call, and why the ones before it did not."""

    implementation: str
    requested: str | None
    platform: platform_lib.Platform
    request: Request
    refused: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __str__(self) -> str:
        asked = "None (automatic)" if self.requested is None else repr(self.requested)
        text = (
            f"{self.request.kind} on {self.platform}, implementation={asked}: runs "
            f"{self.implementation!r}"
        )
        for name, reasons in self.refused:
            text += f"\n  not {name!r}: " + "; ".join(reasons)
        return text


def choose(request: Request, implementation: str | None, platform: platform_lib.Platform) -> Choice:
    """The implementation for this call: the named one if it can run it, else a ValueError;
    for None, the first of PREFERENCE[platform] that can."""
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"{request.kind}: unknown implementation {implementation!r}; choose one of "
            f"{', '.join(IMPLEMENTATIONS)}, or None to pick the fastest available."
        )
    reasons = rules(request, platform)
    if implementation is not None:
        if reasons[implementation]:
            able = [name for name in IMPLEMENTATIONS if not reasons[name]]
            raise ValueError(
                f"{request.kind}: implementation={implementation!r} cannot run this call: "
                f"{'; '.join(reasons[implementation])}. On {platform} it can run with "
                f"implementation={' or '.join(repr(n) for n in able)}, or None to choose."
            )
        return Choice(implementation, implementation, platform, request)
    refused = []
    for name in PREFERENCE.get(platform.name, ("xla",)):
        if not reasons[name]:
            return Choice(name, None, platform, request, tuple(refused))
        refused.append((name, tuple(reasons[name])))
    return Choice("xla", None, platform, request, tuple(refused))


def rows_see_keys(q_len, kv_len, is_causal, window, global_positions, layout, block) -> bool:
    """Whether every query row sees a key through causal, window and layout structure, in O(T)."""
    rows = np.arange(q_len)
    first, last = np.zeros(q_len, np.int64), np.full(q_len, kv_len - 1)
    if is_causal:
        last = np.minimum(last, rows)
    if window is not None:
        first, last = np.maximum(first, rows - window[0]), np.minimum(last, rows + window[1])
    if global_positions:
        positions = np.asarray(global_positions)
        is_global = np.isin(rows, positions)
        limit = rows if is_causal else np.full(q_len, kv_len - 1)
        first = np.where(is_global, 0, first)
        last = np.where(is_global, limit, last)
        sees_global = positions.min() <= limit
        return bool(np.all((first <= last) | sees_global))
    if layout is None:
        return bool(np.all(first <= last))
    layout = np.asarray(layout, bool).reshape(-1, *np.shape(layout)[-2:])
    counts = np.concatenate(
        [np.zeros((*layout.shape[:2], 1), np.int64), np.cumsum(layout, axis=-1)], axis=-1
    )
    block_rows = rows // block
    # Rows with first > last are empty whatever the layout; clipping keeps their indices valid.
    lo, hi = (np.clip(x // block, 0, layout.shape[-1] - 1) for x in (first, last))
    seen = counts[:, block_rows, hi + 1] - counts[:, block_rows, lo]
    return bool(np.all((first <= last) & (seen > 0)))
