"""Cost of attention kinds as sequence length grows, against jax.nn.dot_product_attention.

  python -m experiments.cost --config=experiments/configs/cost.py:small --workdir=/tmp/cost

The argument after the colon is a comma-separated list of options:
  small   n = 256..2048, 5 repeats: a minute or two on a 2-core CPU (the default).
  full    n = 1024..32768, 3 repeats: the README numbers; cases over the memory budget are
          reported with their compiled size, not run.
  causal  causal attention (flash skips the hidden blocks).
  window  sliding window of 512 keys: the query and the 511 before it (flash and local skip the
          rest); window=W sets W keys. Adds the `local` kind.
  sparse  the sparse kinds at their usual settings, each on its own pattern (bidirectional):
          local (128 keys each side), longformer (the same plus global token 0), strided
          (stride 128), bigbird (block 64, 3 window + 2 global + 3 random blocks), beside
          jax.nn and flash on full attention.
  linear  the kernelized kinds (linear with elu features, performer with 256 features,
          cosformer) beside jax.nn, up to n = 65536 with `full`; combine with `causal` for the
          chunkwise form.
  state   the state-carrying kinds (retnet, gla, mamba2, deltanet, gated_deltanet), gates
          derived from the keys, beside jax.nn; always causal (they have no other form), up to
          n = 65536 with `full`.
  gpu     the exact kinds by implementation on an NVIDIA GPU, against jax.nn with cuDNN (the
          baseline): jax.nn (XLA), flash with None (the automatic choice), and flash with
          'xla', 'cudnn' and 'pallas_gpu'; local (a causal window of 512 keys) with None, 'xla'
          and 'cudnn'. Combine with causal; with sparse it adds flash@cudnn beside the sparse
          kinds. 20 repeats. experiments/scripts/accelerator_check.sh runs it.
  tpu     the same on a TPU with 'pallas_tpu' (splash attention), against jax.nn; with sparse,
          each sparse kind also as kind@pallas_tpu.
  moba    MoBA (block 512, top-3: each query reads its own block and 2 chosen earlier ones)
          beside flash and jax.nn, causal, n = 4096..65536 with `full` (2048..8192 without).
  bf16    bfloat16 inputs.
  fwd     forward only.
  torch   add PyTorch's CPU scaled_dot_product_attention as a peer (pip install -e ".[torch]").
"""

import ml_collections

_OPTIONS = (
    "small",
    "full",
    "causal",
    "window",
    "sparse",
    "linear",
    "state",
    "moba",
    "bf16",
    "gpu",
    "tpu",
    "fwd",
    "torch",
)
STATE_KINDS = ("retnet", "gla", "mamba2", "deltanet", "gated_deltanet")
LINEAR_KIND_PARAMS = {
    "linear": {"feature_map": "elu"},
    "performer": {"num_features": 256},
    "cosformer": {},
}
# Each sparse kind at the setting its paper or the cost targets use, for n up to 32K.
SPARSE_KIND_PARAMS = {
    "local": {"local_window_size": (128, 128)},
    "longformer": {"local_window_size": (128, 128), "global_positions": (0,)},
    "strided": {"stride": 128},
    "bigbird": {
        "block_size": 64,
        "num_window_blocks": 3,
        "num_global_blocks": 2,
        "num_random_blocks": 3,
        "seed": 0,
    },
}


# MoBA at the setting of its paper and of the routed-cost targets.
MOBA_PARAMS = {"block_size": 512, "top_k": 3}
# The window of the accelerator comparison's `local` (the target: 8x faster than full
# causal attention at n = 32K).
ACCELERATOR_WINDOW = 512


def _accelerator_kinds(vendor: str | None, pallas: str, sparse: bool) -> tuple[str, ...]:
    """Peers and kinds by implementation ('kind@implementation'; a bare kind: automatic)."""
    named = tuple(f"flash@{i}" for i in ("xla", vendor, pallas) if i)
    if sparse:
        kinds = ("jax.nn", "flash", *named[1:], *SPARSE_KIND_PARAMS)
        if pallas == "pallas_tpu":
            kinds += tuple(f"{k}@pallas_tpu" for k in SPARSE_KIND_PARAMS if k != "strided")
        return ("jax.nn@cudnn", *kinds) if vendor else kinds
    local = ("local", "local@xla") + ((f"local@{vendor}",) if vendor else (f"local@{pallas}",))
    peers = ("jax.nn", "jax.nn@cudnn") if vendor else ("jax.nn",)
    return (*peers, "flash", *named, *local)


def parse_arg(arg: str) -> tuple[set[str], int]:
    """Splits 'full,causal,window=256' into options and a window size, rejecting unknown ones."""
    options, window = set(), 512
    for token in (a.strip() for a in arg.split(",") if a.strip()):
        name, _, value = token.partition("=")
        if name == "window" and value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"window={value!r}: give a positive number of keys.")
            window = int(value)
        options.add(name)
    unknown = options - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown cost config option(s) {sorted(unknown)}; use {_OPTIONS}.")
    if {"small", "full"} <= options:
        raise ValueError("choose one of 'small' and 'full'.")
    if {"gpu", "tpu"} <= options:
        raise ValueError("choose one of 'gpu' and 'tpu'.")
    if options & {"gpu", "tpu"} and options & {"window", "linear", "state", "moba", "torch"}:
        raise ValueError(
            "'gpu' and 'tpu' compare the exact and sparse kinds; combine them with "
            "causal, sparse, bf16, fwd and small/full only."
        )
    if {"window", "torch"} <= options:
        raise ValueError("torch's SDPA has no sliding window; drop 'torch' or 'window'.")
    for pattern_option in ("sparse", "linear", "state", "moba"):
        if {"window", pattern_option} <= options:
            raise ValueError(f"'{pattern_option}' kinds have their own pattern; drop 'window'.")
    return options, window


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
    options, window = parse_arg(arg)
    full = "full" in options
    config = ml_collections.ConfigDict()
    # `dense` is the readable reference; the sparse and linear comparisons leave it out (and
    # flash too, for linear's n = 64K) to save time.
    if "linear" in options:
        config.kinds = ("jax.nn", *LINEAR_KIND_PARAMS)
    elif "state" in options:
        config.kinds = ("jax.nn", *STATE_KINDS)
    elif "sparse" in options:
        config.kinds = ("jax.nn", "flash")
    elif "moba" in options:
        config.kinds = ("jax.nn", "flash", "moba")
    else:
        config.kinds = ("jax.nn", "dense", "flash")
    config.kinds += ("torch.sdpa",) if "torch" in options else ()
    config.kinds += ("local",) if "window" in options else ()
    config.kinds += tuple(SPARSE_KIND_PARAMS) if "sparse" in options else ()
    if "gpu" in options:
        config.kinds = _accelerator_kinds("cudnn", "pallas_gpu", "sparse" in options)
    if "tpu" in options:
        config.kinds = _accelerator_kinds(None, "pallas_tpu", "sparse" in options)
    config.baseline = "jax.nn@cudnn" if "gpu" in options else "jax.nn"
    config.seq_lens = (1024, 2048, 4096, 8192, 16384, 32768) if full else (256, 512, 1024, 2048)
    if full and options & {"linear", "state", "moba"}:
        config.seq_lens += (65536,)
    if "moba" in options:
        # At least top_k blocks of 512 at every n: 4K..64K (the targets' range), or 2K..8K.
        config.seq_lens = (
            tuple(n for n in config.seq_lens if n >= 4096) if full else (2048, 4096, 8192)
        )
    config.batch = 1
    config.num_heads = 8
    config.num_kv_heads = 8
    config.head_dim = 64
    config.dtype = "bfloat16" if "bf16" in options else "float32"
    config.is_causal = bool(options & {"causal", "state", "moba"})
    config.local_window_size = (window - 1, 0) if "window" in options else ()
    config.backward = "fwd" not in options
    config.warmup = 1
    # Accelerator steps take milliseconds: more repeats steady their medians.
    config.repeats = 20 if options & {"gpu", "tpu"} else 3 if full else 5
    # Cases whose compiled buffers exceed this are reported with their size and not run.
    config.memory_budget_gb = 20.0
    kind_params = {"flash": {"block_q": 512, "block_kv": 512}}
    kind_params |= SPARSE_KIND_PARAMS if "sparse" in options else {}
    if options & {"gpu", "tpu"} and "sparse" not in options:
        kind_params["local"] = {"local_window_size": (ACCELERATOR_WINDOW - 1, 0)}
    kind_params |= LINEAR_KIND_PARAMS if "linear" in options else {}
    kind_params |= {"moba": MOBA_PARAMS} if "moba" in options else {}
    config.kind_params = ml_collections.ConfigDict(kind_params)
    return config
