"""Vendor implementations of the exact kinds, against `dense` with the kind's pattern.

The Pallas kernels run in interpret mode (`ops.interpret_kernels()`): the kernel code itself,
executed by Pallas's interpreter on the CPU. cuDNN cannot run here; its argument mapping is a
pure function, checked against jax.nn's XLA path. The dispatch rules are checked directly with
injected platforms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.ops.vendor import cudnn, rules, splash
from attention_jax.ops.vendor.platform import CPU, Platform

from .reference import random_qkv

# Seen: interpret-mode kernels differ from dense by <= 1e-6 in value and 3e-6 in gradients.
TOL = dict(atol=2e-5, rtol=2e-5)

BANDED = np.eye(4, dtype=bool) | np.eye(4, k=-1, dtype=bool) | np.eye(4, k=1, dtype=bool)
# kind, (B, T, S, N, K, H), op params, extra contract arguments.
SPLASH_CASES = [
    pytest.param("flash", (2, 200, 200, 4, 2, 32), {}, {"is_causal": True}, id="flash-causal-gqa"),
    pytest.param("flash", (1, 130, 300, 2, 2, 32), {}, {}, id="flash-T<S"),
    pytest.param(
        "dense",
        (1, 300, 200, 2, 1, 32),
        {},
        {"is_causal": True, "logits_soft_cap": 5.0},
        id="dense-causal-T>S-mqa-softcap",
    ),
    pytest.param(
        "local",
        (1, 256, 256, 2, 1, 32),
        {"local_window_size": (100, 0)},
        {"is_causal": True},
        id="local-causal",
    ),
    pytest.param("local", (1, 256, 256, 4, 2, 16), {"local_window_size": (50, 20)}, {}, id="local"),
    pytest.param(
        "longformer",
        (1, 200, 200, 2, 2, 32),
        {"local_window_size": (30, 30), "global_positions": (0, 77)},
        {},
        id="longformer",
    ),
    pytest.param(
        "longformer",
        (1, 200, 200, 2, 2, 32),
        {"local_window_size": (30, 30), "global_positions": (5,)},
        {"is_causal": True},
        id="longformer-causal",
    ),
    pytest.param(
        "block_sparse",
        (1, 256, 256, 2, 2, 32),
        {"block_size": 64, "layout": BANDED},
        {"is_causal": True},
        id="block_sparse-causal",
    ),
    pytest.param(
        "block_sparse",
        (1, 200, 200, 2, 1, 32),
        {"block_size": 64, "layout": np.stack([BANDED, np.ones((4, 4), bool)])},
        {},
        id="block_sparse-per-head",
    ),
    pytest.param(
        "bigbird",
        (1, 256, 256, 2, 2, 32),
        {"block_size": 32, "num_random_blocks": 2},
        {"is_causal": True},
        id="bigbird-causal",
    ),
    pytest.param(
        "bigbird",
        (1, 192, 192, 2, 2, 32),
        {"block_size": 32, "per_head": True},
        {},
        id="bigbird-per-head",
    ),
]


def _pattern(kind, T, S, N, params, arguments):
    pattern_params = dict(params)
    if kind == "bigbird":
        pattern_params.update(is_causal=arguments.get("is_causal", False), num_heads=N)
    pattern = ops.pattern_mask(kind, T, S, **pattern_params)
    return jnp.asarray(pattern[None] if pattern.ndim == 3 else pattern[None, None])


def _value_and_grads(fn, q, k, v, seed=1):
    """fn's output and the gradients of <output, random cotangent>, as one jitted program."""
    out_shape = jax.eval_shape(fn, q, k, v)
    cotangent = jax.random.normal(jax.random.key(seed), out_shape.shape, out_shape.dtype)

    def run(q, k, v):
        out, pullback = jax.vjp(fn, q, k, v)
        return out, pullback(cotangent)

    return jax.jit(run)(q, k, v)


def _assert_same(got, want):
    (out, grads), (ref_out, ref_grads) = got, want
    np.testing.assert_allclose(out, ref_out, **TOL)
    for name, g, r in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(g, r, **TOL, err_msg=f"d{name}")


def _check(kind, implementation, shape, params, arguments, reference_arguments=None):
    B, T, S, N, K, H = shape
    q, k, v = random_qkv(0, B, T, S, N, K, H)
    mask = _pattern(kind, T, S, N, params, arguments)
    reference_arguments = arguments if reference_arguments is None else reference_arguments
    with ops.interpret_kernels():
        got = _value_and_grads(
            lambda q, k, v: ops.get(kind)(
                q, k, v, implementation=implementation, **params, **arguments
            ),
            q,
            k,
            v,
        )
        assert (
            ops.explain(
                kind, q, k, v, implementation=implementation, **params, **arguments
            ).implementation
            == implementation
        )
    want = _value_and_grads(
        lambda q, k, v: ops.dense(q, k, v, mask=mask, **reference_arguments), q, k, v
    )
    _assert_same(got, want)


@pytest.mark.parametrize("kind, shape, params, arguments", SPLASH_CASES)
def test_pallas_tpu_equals_dense_with_the_pattern(kind, shape, params, arguments):
    _check(kind, "pallas_tpu", shape, params, arguments)


def test_pallas_tpu_segment_ids_and_lengths():
    B, T, N, K, H = 2, 200, 2, 2, 32
    segments = jnp.asarray(np.repeat([[0, 1, 2, 3], [0, 0, 1, 1]], 50, axis=1), jnp.int32)
    lengths = {
        "query_seq_lengths": jnp.array([200, 150]),
        "key_value_seq_lengths": jnp.array([170, 200]),
    }
    _check("flash", "pallas_tpu", (B, T, T, N, K, H), {}, {"is_causal": True, **lengths})
    ids = {"query_segment_ids": segments, "key_value_segment_ids": segments}
    _check("flash", "pallas_tpu", (B, T, T, N, K, H), {}, ids)


def test_pallas_tpu_example_with_no_keys_gives_zeros():
    q, k, v = random_qkv(0, 2, 128, 128, 2, 2, 32)
    lengths = jnp.array([0, 128])
    with ops.interpret_kernels():
        out = ops.flash(q, k, v, key_value_seq_lengths=lengths, implementation="pallas_tpu")
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_allclose(out[1], ops.flash(q[1:], k[1:], v[1:])[0], **TOL)


GPU_CASES = [
    pytest.param((2, 200, 200, 4, 2, 32), {"is_causal": True}, id="causal-gqa-padded"),
    pytest.param((1, 256, 256, 2, 2, 16), {}, id="tiles"),
    pytest.param((1, 100, 100, 2, 1, 64), {"is_causal": True, "scale": 0.3}, id="causal-mqa-short"),
]


@pytest.mark.parametrize("shape, arguments", GPU_CASES)
def test_pallas_gpu_equals_dense(shape, arguments):
    _check("flash", "pallas_gpu", shape, {}, arguments)


def test_pallas_bfloat16_close_to_dense():
    q, k, v = random_qkv(0, 1, 256, 256, 2, 2, 64, jnp.bfloat16)
    want = ops.dense(q, k, v, is_causal=True).astype(jnp.float32)
    with ops.interpret_kernels():
        for implementation in ("pallas_tpu", "pallas_gpu"):
            got = ops.flash(q, k, v, is_causal=True, implementation=implementation)
            assert got.dtype == jnp.bfloat16
            np.testing.assert_allclose(got.astype(jnp.float32), want, atol=3e-2, rtol=3e-2)


# --- The splash mask: the same pairs as the kind's pattern, and empty rows found in O(T) ---


@pytest.mark.parametrize(
    "kind, T, S, params, is_causal",
    [
        ("local", 70, 90, {"local_window_size": (9, 4)}, True),
        ("longformer", 90, 90, {"local_window_size": (5, 7), "global_positions": (0, 33)}, False),
        ("longformer", 90, 90, {"local_window_size": (5, 7), "global_positions": (40,)}, True),
        ("block_sparse", 70, 50, {"block_size": 16, "layout": np.tri(5, 4, 1, bool)}, True),
    ],
)
def test_splash_rule_equals_the_pattern(kind, T, S, params, is_causal):
    pattern = ops.pattern_mask(kind, T, S, **params)
    if is_causal:
        pattern = pattern & np.tri(T, S, dtype=bool)
    padded_t, padded_s = splash.padded(T), splash.padded(S)
    rule = splash.TokenRule(
        (padded_t, padded_s),
        T,
        S,
        is_causal,
        params.get("local_window_size"),
        params.get("global_positions", ()),
        params.get("layout"),
        params.get("block_size"),
    )
    grid = rule[0:padded_t, 0:padded_s]
    np.testing.assert_array_equal(grid[:T, :S], pattern)
    assert not grid[:T, S:].any()
    pad_rows = np.broadcast_to(np.arange(padded_s) == 0, (padded_t - T, padded_s))
    np.testing.assert_array_equal(grid[T:], pad_rows)
    np.testing.assert_array_equal(rule[8:40, 16:48], grid[8:40, 16:48])
    assert rules.rows_see_keys(
        T,
        S,
        is_causal,
        params.get("local_window_size"),
        params.get("global_positions", ()),
        params.get("layout"),
        params.get("block_size"),
    ) == bool(pattern.any(axis=1).all())


def test_rows_see_keys_against_brute_force():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        T, S, block = int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(1, 9))
        is_causal = bool(rng.integers(2))
        window = tuple(int(w) for w in rng.integers(0, 12, 2)) if rng.integers(2) else None
        layout = rng.random((-(-T // block), -(-S // block))) < 0.4 if rng.integers(2) else None
        rows, cols = np.arange(T)[:, None], np.arange(S)[None, :]
        allowed = splash.allowed(
            rows,
            cols,
            q_len=T,
            kv_len=S,
            is_causal=is_causal,
            window=window,
            global_positions=(),
            layout=layout,
            block=block,
        )
        want = bool(allowed.any(axis=1).all())
        seen.add(want)
        got = rules.rows_see_keys(T, S, is_causal, window, (), layout, block)
        assert got == want, (T, S, block, is_causal, window, layout)
    assert seen == {True, False}  # the draw covers both answers


# --- cuDNN's argument mapping, checked through jax.nn's XLA path ---


@pytest.mark.parametrize(
    "is_causal, window, want",
    [
        (False, None, {"is_causal": False, "local_window_size": None}),
        (True, None, {"is_causal": True, "local_window_size": None}),
        (False, (10, 0), {"is_causal": True, "local_window_size": (10, 0)}),
        (True, (10, 5), {"is_causal": True, "local_window_size": (10, 0)}),
    ],
)
def test_cudnn_arguments(is_causal, window, want):
    assert cudnn.cudnn_arguments(is_causal=is_causal, window=window) == want


@pytest.mark.parametrize(
    "kind, T, S, params, is_causal",
    [
        ("local", 40, 40, {"local_window_size": (7, 0)}, False),
        ("local", 30, 40, {"local_window_size": (7, 3)}, True),
        ("flash", 30, 40, {}, True),
        ("dense", 40, 40, {"local_window_size": (5, 0)}, True),
    ],
)
def test_cudnn_arguments_mean_the_same_attention(kind, T, S, params, is_causal):
    """jax.nn's XLA path, called with what cuDNN would get, equals our kind on the original call."""
    q, k, v = random_qkv(0, 2, T, S, 4, 2, 16)
    window = params.get("local_window_size")
    mapped = cudnn.cudnn_arguments(is_causal=is_causal, window=window)
    got = jax.nn.dot_product_attention(q, k, v, implementation="xla", **mapped)
    want = ops.get(kind)(q, k, v, is_causal=is_causal, **params)
    np.testing.assert_allclose(got, want, **TOL)


def test_cudnn_arguments_refuse_a_right_window_without_causal():
    with pytest.raises(ValueError, match="right window"):
        cudnn.cudnn_arguments(is_causal=False, window=(4, 4))


# --- The dispatch rules, platform by platform ---

H100 = Platform("gpu", "nvidia", (9, 0))
T4 = Platform("gpu", "nvidia", (7, 5))
TPU = Platform("tpu")


def _request(**overrides):
    base = dict(
        kind="flash",
        dtype="bfloat16",
        q_len=1024,
        kv_len=1024,
        num_heads=8,
        num_kv_heads=8,
        head_dim=64,
        value_dim=64,
        is_causal=True,
    )
    return rules.Request(**(base | overrides))


@pytest.mark.parametrize(
    "platform, overrides, want",
    [
        (CPU, {}, "xla"),
        (CPU, {"kind": "bigbird", "layout": True}, "xla"),
        (H100, {}, "cudnn"),
        (H100, {"dtype": "float32"}, "pallas_gpu"),
        (H100, {"dtype": "float32", "window": (255, 0)}, "xla"),
        (H100, {"kind": "local", "window": (511, 0)}, "cudnn"),
        (H100, {"kind": "local", "window": (128, 128), "is_causal": False}, "xla"),
        (H100, {"kind": "bigbird", "layout": True}, "xla"),
        (H100, {"kind": "local", "window": (7, 0), "kv_len": 64, "rows_see_keys": False}, "xla"),
        (H100, {"head_dim": 192, "value_dim": 192}, "cudnn"),
        (T4, {"head_dim": 192, "value_dim": 192}, "xla"),
        (T4, {}, "pallas_gpu"),
        (H100, {"q_len": 511, "kv_len": 511}, "pallas_gpu"),
        (H100, {"segment_ids": True}, "xla"),
        (H100, {"kind": "dense", "weights": True}, "xla"),
        (H100, {"mask": True}, "xla"),
        (H100, {"bias": True}, "cudnn"),
        (H100, {"static_scale": False}, "xla"),
        (TPU, {}, "pallas_tpu"),
        (TPU, {"kind": "longformer", "window": (128, 128), "global_positions": (0,)}, "pallas_tpu"),
        (TPU, {"bias": True}, "xla"),
        (TPU, {"kind": "local", "window": (64, 0), "lengths": True}, "xla"),
        (TPU, {"lengths": True}, "pallas_tpu"),
        (TPU, {"kind": "block_sparse", "layout": True, "rows_see_keys": False}, "xla"),
        (TPU, {"segment_ids": True, "kv_len": 512}, "xla"),
    ],
)
def test_automatic_choice(platform, overrides, want):
    choice = rules.choose(_request(**overrides), None, platform)
    assert choice.implementation == want, str(choice)
    # What came before the choice in the platform's order is listed with its reasons.
    order = rules.PREFERENCE[platform.name]
    assert [name for name, _ in choice.refused] == list(order[: order.index(want)])
    assert all(reasons for _, reasons in choice.refused)


@pytest.mark.parametrize(
    "platform, implementation, overrides, message",
    [
        (CPU, "cudnn", {}, "cuDNN needs an NVIDIA GPU"),
        (H100, "cudnn", {"dtype": "float32"}, "float16 or bfloat16"),
        (H100, "cudnn", {"kind": "bigbird", "layout": True}, "does not serve kind 'bigbird'"),
        (H100, "cudnn", {"window": (8, 8), "is_causal": False}, "looks back only"),
        (H100, "pallas_gpu", {"window": (8, 0)}, "no sliding window"),
        (H100, "pallas_gpu", {"head_dim": 80}, "power of two"),
        (H100, "pallas_gpu", {"kv_len": 2048}, "q_len == kv_len"),
        (TPU, "pallas_tpu", {"bias": True}, "no additive bias"),
        (CPU, "pallas_tpu", {}, "needs a TPU"),
        (H100, "tokamax", {}, "not installed"),
        (H100, "tokamax", {"dtype": "float16", "q_len": 1000, "kv_len": 1000}, "NaN gradients"),
    ],
)
def test_named_implementation_that_cannot_run_raises(platform, implementation, overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        rules.choose(_request(**overrides), implementation, platform)
    assert "'xla'" in str(info.value)  # says which implementation can


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="unknown implementation 'triton'"):
        rules.choose(_request(), "triton", CPU)


def test_ops_refuse_an_impossible_implementation_and_explain_the_choice():
    q, k, v = random_qkv(0, 1, 16, 16, 2, 2, 8)
    with pytest.raises(ValueError, match="cuDNN needs an NVIDIA GPU"):
        ops.flash(q, k, v, implementation="cudnn")
    with pytest.raises(ValueError, match="does not serve kind 'local'"):
        ops.local(q, k, v, local_window_size=(4, 0), implementation="pallas_gpu")
    choice = ops.explain("flash", q, k, v, is_causal=True)
    assert choice.implementation == "xla" and "runs 'xla'" in str(choice)
    with pytest.raises(ValueError, match="has one implementation"):
        ops.explain("strided", q, k, v)


def test_kind_records_list_their_implementations():
    assert ops.kind("flash").implementations == ops.IMPLEMENTATIONS
    assert ops.kind("bigbird").implementations == ("xla", "pallas_tpu")
    assert ops.kind("local").implementations == ("xla", "cudnn", "pallas_tpu", "tokamax")
    assert ops.kind("strided").implementations == ("xla",)
    with pytest.raises(ValueError, match="must include 'xla'"):
        ops.Kind("x", ops.dense, ops.kind("dense").pattern, 2.0, implementations=("cudnn",))
    with pytest.raises(ValueError, match="must take implementation="):
        ops.Kind("x", ops.strided, ops.kind("dense").pattern, 2.0, implementations=("xla", "cudnn"))


def test_a_kernel_refusing_a_call_falls_back_to_xla_when_automatic(monkeypatch, caplog):
    """A kernel's own NotImplementedError: None runs 'xla' and says so; a named one raises."""
    from attention_jax.ops.vendor import platform as platform_lib

    def refuse(*args, **kwargs):
        raise NotImplementedError("a shape this kernel does not take")

    monkeypatch.setattr(platform_lib, "detect", lambda: Platform("tpu", interpret=True))
    monkeypatch.setattr(splash, "splash_attention", refuse)
    q, k, v = random_qkv(0, 1, 32, 32, 2, 2, 8)
    assert ops.explain("flash", q, k, v, is_causal=True).implementation == "pallas_tpu"
    with caplog.at_level("WARNING", logger="attention_jax"):
        out = ops.flash(q, k, v, is_causal=True)
    assert "refused the call" in caplog.text and "running 'xla'" in caplog.text
    np.testing.assert_allclose(out, ops.dense(q, k, v, is_causal=True), **TOL)
    with pytest.raises(ValueError, match="cannot run this call: a shape this kernel"):
        ops.flash(q, k, v, is_causal=True, implementation="pallas_tpu")
