"""Which implementation runs an exact kind's call: the rules, the choice, and its explanation.

Each exact-softmax kind takes `implementation=`:
  'xla'         our blocked engine in plain XLA: every platform, every argument; the reference.
  'cudnn'       NVIDIA cuDNN flash attention (jax.nn.dot_product_attention): dense, flash and
                causal-window local; float16/bfloat16.
  'pallas_tpu'  splash attention with the kind's pattern as its block mask: dense, flash, local,
                longformer, block_sparse, bigbird.
  'pallas_gpu'  JAX's Pallas flash attention kernel for GPUs: dense and flash, full or causal.
  'tokamax'     openxla/tokamax (optional extra): dense, flash, local.
  None          the first of `PREFERENCE[platform]` that can honour the call, else 'xla'.

A named implementation that cannot honour a call raises a ValueError that says why and which
implementations can. `rules(request, platform)` is a pure function of the call's shapes and
static arguments (`Request`) and the platform (`platform.Platform`), so every combination is
tested on a CPU; `ops.explain(...)` reports the choice for a real call.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging

import jax
import numpy as np

from attention_jax.ops import contract
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

logger = logging.getLogger("attention_jax")


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


def _check_layout(kind: str, layout, block: int, dims: contract.Dims) -> None:
    want = (-(-dims.q_len // block), -(-dims.kv_len // block))
    if np.shape(layout)[-2:] != want or (
        np.ndim(layout) == 3 and np.shape(layout)[0] != dims.num_heads
    ):
        raise ValueError(
            f"{kind}: layout must have shape [ceil(q_len / block), ceil(kv_len / block)] = "
            f"{list(want)}, or [num_heads = {dims.num_heads}, *{list(want)}]; got "
            f"{np.shape(layout)}."
        )


# Collects the choices of the calls traced inside `recording()`.
_RECORDED = contextvars.ContextVar("attention_jax_recorded_choices", default=None)
_LOGGED: set = set()


@contextlib.contextmanager
def recording():
    """Yields a list that collects the `Choice` of every exact-kind call traced inside it.

    with dispatch.recording() as choices:
        jax.jit(model_step).lower(state, batch)   # tracing is enough
    {c.implementation for c in choices}           # e.g. {'cudnn'}
    """
    recorded: list[Choice] = []
    token = _RECORDED.set(recorded)
    try:
        yield recorded
    finally:
        _RECORDED.reset(token)


def _static(x) -> bool:
    return not isinstance(x, jax.core.Tracer) and np.ndim(x) == 0


def attend(
    kind: str,
    implementation: str | None,
    query,
    key,
    value,
    bias,
    mask,
    arguments: dict,
    *,
    global_positions=(),
    layout=None,
    block: int | None = None,
    weights: bool = False,
):
    """The output of a vendor implementation for this call, or None when 'xla' runs it.

    Called first by each exact op with its contract arguments and its structure (global
    positions, static block layout and its block size).
    """
    recording = _RECORDED.get()
    where = platform_lib.detect()
    if implementation is None and recording is None and where.name == "cpu":
        return None  # the common CPU case: nothing to decide
    dims = contract.check_qkv(kind, query, key, value)
    if layout is not None:
        _check_layout(kind, layout, block, dims)
    window = contract.check_window(kind, arguments.get("local_window_size"))
    soft_cap = contract.check_soft_cap(kind, arguments.get("logits_soft_cap"))
    scale = contract.check_scale(kind, arguments.get("scale"), dims.head_dim)
    is_causal = arguments.get("is_causal", False)
    if not isinstance(is_causal, (bool, np.bool_)):
        raise ValueError(f"{kind}: is_causal must be a Python bool (static); got {is_causal!r}.")
    q_lengths = contract.check_lengths(
        kind, "query_seq_lengths", arguments.get("query_seq_lengths"), dims.batch
    )
    kv_lengths = contract.check_lengths(
        kind, "key_value_seq_lengths", arguments.get("key_value_seq_lengths"), dims.batch
    )
    q_segments, kv_segments = contract.check_segment_ids(
        kind, arguments.get("query_segment_ids"), arguments.get("key_value_segment_ids"), dims
    )
    if bias is not None:
        contract.split_heads_4d(kind, "bias", bias, dims, "float")
    if mask is not None:
        contract.split_heads_4d(kind, "mask", mask, dims, "bool")
    request = Request(
        kind=kind,
        dtype=str(query.dtype),
        q_len=dims.q_len,
        kv_len=dims.kv_len,
        num_heads=dims.num_heads,
        num_kv_heads=dims.num_kv_heads,
        head_dim=dims.head_dim,
        value_dim=value.shape[-1],
        is_causal=bool(is_causal),
        window=window,
        global_positions=tuple(global_positions or ()),
        layout=layout is not None,
        bias=bias is not None,
        mask=mask is not None,
        lengths=q_lengths is not None or kv_lengths is not None,
        segment_ids=q_segments is not None,
        soft_cap=soft_cap is not None,
        static_scale=_static(scale),
        weights=weights,
        rows_see_keys=rows_see_keys(
            dims.q_len, dims.kv_len, is_causal, window, global_positions, layout, block
        ),
    )
    choice = choose(request, implementation, where)
    if recording is not None:
        recording.append(choice)
    if where.name != "cpu" and (request, implementation) not in _LOGGED:
        _LOGGED.add((request, implementation))
        logger.info("%s", choice)
    if choice.implementation == "xla":
        return None
    checked = dict(
        scale=scale,
        is_causal=is_causal,
        window=window,
        q_lengths=q_lengths,
        kv_lengths=kv_lengths,
        q_segments=q_segments,
        kv_segments=kv_segments,
        soft_cap=soft_cap,
    )
    try:
        return _run(
            choice.implementation,
            where,
            query,
            key,
            value,
            bias,
            mask,
            checked,
            global_positions=global_positions,
            layout=layout,
            block=block,
        )
    except NotImplementedError as error:
        # A kernel's own shape check that the rules do not know yet: the automatic choice falls
        # back to XLA (and says so once); a named implementation reports it as a ValueError.
        if implementation is not None:
            raise ValueError(
                f"{kind}: implementation={implementation!r} cannot run this call: {error}"
            ) from error
        if (request, "fallback") not in _LOGGED:
            _LOGGED.add((request, "fallback"))
            logger.warning(
                "%s: %r refused the call (%s); running 'xla'", kind, choice.implementation, error
            )
        return None


def _run(name, where, query, key, value, bias, mask, checked, **structure):
    """Calls vendor implementation `name` with the checked contract arguments it takes."""
    c = checked
    if name == "cudnn":
        from attention_jax.ops.vendor.cudnn import cudnn_attention

        return cudnn_attention(
            query,
            key,
            value,
            bias,
            scale=c["scale"],
            is_causal=c["is_causal"],
            window=c["window"],
            q_lengths=c["q_lengths"],
            kv_lengths=c["kv_lengths"],
        )
    if name == "pallas_gpu":
        from attention_jax.ops.vendor.pallas_gpu import pallas_gpu_attention

        return pallas_gpu_attention(
            query, key, value, scale=c["scale"], is_causal=c["is_causal"], interpret=where.interpret
        )
    if name == "pallas_tpu":
        from attention_jax.ops.vendor.splash import splash_attention

        return splash_attention(query, key, value, **c, **structure, interpret=where.interpret)
    from attention_jax.ops.vendor.tokamax import tokamax_attention

    return tokamax_attention(
        query,
        key,
        value,
        bias,
        mask,
        scale=c["scale"],
        is_causal=c["is_causal"],
        window=c["window"],
        q_lengths=c["q_lengths"],
        kv_lengths=c["kv_lengths"],
        soft_cap=c["soft_cap"],
    )


def explain(kind: str, query, key, value, bias=None, mask=None, **params) -> Choice:
    """Which implementation `ops.get(kind)(query, key, value, bias, mask, **params)` runs here,
    and why the ones before it could not (traced abstractly: nothing is computed).

        print(ops.explain("flash", q, k, v, is_causal=True))
        # flash on nvidia gpu sm90, implementation=None (automatic): runs 'cudnn'
    """
    from attention_jax.ops import registry

    record = registry.kind(kind)
    if not record.takes("implementation"):
        raise ValueError(
            f"explain: kind {kind!r} has one implementation ('xla'); the exact kinds "
            f"({', '.join(SERVES['xla'])}) have more."
        )
    with recording() as recorded:
        jax.eval_shape(lambda q, k, v: record.op(q, k, v, bias, mask, **params), query, key, value)
    return recorded[-1]
