"""Kernelized ("linear") attention kinds against float64 quadratic-form references: outputs,
gradients, errors, transforms and memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from attention_jax import ops

from .linear_cases import F32_TOL, FAVOR_FEATURES, KINDS, _lengths_as_arrays, _q, make_case
from .linear_reference import (
    favor_np,
    linear_attention_jnp,
    linear_attention_np,
    random_inputs,
    taylor_np,
)
from .reference import random_qkv

BF16_TOL = dict(atol=3e-2, rtol=3e-2)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)
# Every new shape compiles afresh, so keep the example count modest.
SETTINGS = settings(max_examples=10, deadline=None)
# For the random-shape properties, where each example is a new program and compiling dominates:
# no LLVM optimisation of the machine code (XLA's passes on the program still run; what it
# computes is the same up to rounding), which about halves the compile. The fixed-shape tests
# below compile at the default level.
FAST_COMPILE = dict(compiler_options={"xla_backend_optimization_level": 0})
CHUNKS = [1, 3, 7, 16, 64]


@st.composite
def problems(draw):
    """A random shape, causal flag, chunk size and optional lengths (zero lengths included)."""
    B = draw(st.integers(1, 2))
    is_causal = draw(st.booleans())
    T = draw(st.integers(1, 40))
    S = T if is_causal else draw(st.integers(1, 40))
    N, K = draw(st.sampled_from([(4, 4), (4, 2), (4, 1)]))
    H = draw(st.integers(4, 8))
    Hv = draw(st.sampled_from([H, 3]))
    kw = dict(is_causal=is_causal)
    if is_causal:
        kw["chunk_size"] = draw(st.sampled_from(CHUNKS))
    if draw(st.booleans()):
        kw["key_value_seq_lengths"] = draw(st.lists(st.integers(0, S), min_size=B, max_size=B))
    if draw(st.booleans()):
        kw["query_seq_lengths"] = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    extra_len = draw(st.sampled_from([0, 5]))
    return (B, T, S, N, K, H, Hv), kw, extra_len, draw(st.integers(0, 2**31 - 1))


def _check_forward(kind, problem, dtype, tol):
    shape, kw, extra_len, seed = problem
    B, T, S, N, K, H, Hv = shape
    q, k, v = (jnp.asarray(x, dtype) for x in random_inputs(seed % 1000, *shape))
    # iid favor rows: any projection defines the kernel the reference is computed with, and the
    # orthogonal draw (a QR) would compile afresh for every head_dim.
    op, ref_phi, _, _ = make_case(kind, H, max(T, S), seed % 1000, extra_len, orthogonal=False)
    static = {name: x for name, x in kw.items() if not name.endswith("lengths")}
    lengths = {name: x for name, x in _lengths_as_arrays(kw).items() if name not in static}
    # One jit per example: compiling the whole call is faster than op-by-op dispatch.
    run = jax.jit(lambda q, k, v, lengths: op(q, k, v, **static, **lengths), **FAST_COMPILE)
    out = run(q, k, v, lengths)
    assert out.shape == (B, T, N, Hv) and out.dtype == dtype
    out = np.asarray(out, np.float64)
    assert np.isfinite(out).all()
    masking = {name: x for name, x in kw.items() if name != "chunk_size"}
    want = linear_attention_np(q, k, v, ref_phi, **masking)
    np.testing.assert_allclose(out, want, **tol)
    # A batch row with no keys gives exactly zero, not NaN.
    for b, length in enumerate(kw.get("key_value_seq_lengths", [S] * B)):
        if length == 0:
            np.testing.assert_array_equal(out[b], 0.0)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(problem=problems())
def test_equals_quadratic_reference_float32(kind, problem):
    """Output equals the float64 quadratic form for random shapes, chunks, causal and lengths."""
    _check_forward(kind, problem, jnp.float32, F32_TOL)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=3, deadline=None)
@given(problem=problems())
def test_equals_quadratic_reference_bfloat16(kind, problem):
    """bfloat16 inputs (float32 features and state) match the reference to bfloat16 precision."""
    _check_forward(kind, problem, jnp.bfloat16, BF16_TOL)


def test_defaults_and_registry():
    """ops.linear's default map is elu; feature_map='taylor' is ops.based; the registry has
    every kernelized kind, with an all-True pattern, and dispatches to it."""
    q, k, v = random_qkv(1, 2, 9, 9, 4, 2, 8)

    def run(f, **kw):
        return jax.jit(lambda q, k, v: f(q, k, v, **kw))(q, k, v)

    np.testing.assert_allclose(run(ops.linear), run(ops.linear, feature_map="elu"), **F32_TOL)
    np.testing.assert_allclose(
        run(ops.linear, feature_map="taylor", is_causal=True),
        run(ops.based, is_causal=True),
        **F32_TOL,
    )
    for kind in ("linear", "performer", "based", "cosformer", "linformer"):
        assert kind in ops.names()
        assert ops.pattern_mask(kind, 3, 5).all()
    np.testing.assert_allclose(
        run(ops.attention, kind="cosformer", is_causal=True),
        run(ops.cosformer, is_causal=True),
        **F32_TOL,
    )


@pytest.mark.parametrize("is_causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("kind", ["taylor", "favor"])
def test_explicit_scale_of_taylor_and_favor(kind, is_causal):
    """A given scale is the logit scale of both phi(q) and phi(k) (taylor via based, favor);
    the decoding step with the same scale agrees.
    """
    q, k, v = random_inputs(2, 2, 11, 11, 4, 2, 8)
    if kind == "taylor":
        op, phi = ops.based, functools.partial(taylor_np, scale=0.3)
        step_map = "taylor"
    else:
        P = ops.favor_projection(jax.random.key(2), FAVOR_FEATURES, 8)
        op = functools.partial(ops.performer, projection=P)
        phi = functools.partial(favor_np, projection=np.asarray(P), scale=0.3)
        step_map = ops.feature_map("favor", projection=P)
    q, k, v = (jnp.asarray(x, jnp.float32) for x in (q, k, v))
    want = linear_attention_np(q, k, v, phi, is_causal=is_causal)
    if is_causal:
        state = ops.linear_state_init(2, 2, 8, feature_map=step_map)
        step = jax.jit(functools.partial(ops.linear_step, feature_map=step_map, scale=0.3))
        outs = []
        for t in range(q.shape[1]):
            out_t, state = step(state, q[:, t], k[:, t], v[:, t])
            outs.append(out_t)
        np.testing.assert_allclose(jnp.stack(outs, axis=1), want, **F32_TOL)
    out = op(q, k, v, scale=0.3, is_causal=is_causal, chunk_size=4)
    np.testing.assert_allclose(out, want, **F32_TOL)


# --- gradients ---------------------------------------------------------------------------------

GRAD_SHAPE = (3, 9, 9, 4, 2, 4, 3)  # B, T, S, N, K, H, Hv
# Batch row 2 has no keys at all: zero output, and zero (not NaN) gradients.
GRAD_MASKING = dict(query_seq_lengths=[9, 6, 9], key_value_seq_lengths=[9, 4, 0])


def _grad_inputs(seed):
    """random_inputs for GRAD_SHAPE with |q|, |k| >= 0.05, away from relu's kink at 0 (a finite
    difference across the kink is not a derivative)."""
    q, k, v = random_inputs(seed, *GRAD_SHAPE)
    q, k = (np.sign(x) * (np.abs(x) + 0.05) for x in (q, k))
    return q, k, v


@pytest.mark.parametrize("is_causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_float64(kind, is_causal):
    """Reverse-mode gradients equal finite differences in float64 (with lengths, chunk 4)."""
    with jax.enable_x64(True):
        q, k, v = (jnp.asarray(x) for x in _grad_inputs(5))
        op, _, _, _ = make_case(kind, 4, 9, 5)
        masking = _lengths_as_arrays(GRAD_MASKING)
        chunk = dict(chunk_size=4) if is_causal else {}

        @jax.jit
        def f(q, k, v):
            return op(q, k, v, is_causal=is_causal, **chunk, **masking)

        assert f(q, k, v).dtype == jnp.float64
        check_grads(f, (q, k, v), order=1, modes=["rev"])


@pytest.mark.parametrize("is_causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("kind", KINDS)
def test_grads_float32_equal_quadratic_form(kind, is_causal):
    """float32 gradients equal jax.grad of the JAX quadratic-form transcription; a batch row
    without keys gets zero, finite gradients (normalise()'s floor makes d out / d num = 1 / tiny
    there, which must not turn into inf * 0 = NaN)."""
    q, k, v = (jnp.asarray(x, jnp.float32) for x in _grad_inputs(6))
    op, _, jnp_phi, _ = make_case(kind, 4, 9, 6)
    ct = jnp.asarray(np.random.default_rng(7).standard_normal(GRAD_SHAPE[:2] + (4, 3)))
    ct = ct.astype(jnp.float32)
    masking = _lengths_as_arrays(GRAD_MASKING)

    def grads(f):
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) * ct), (0, 1, 2)))(q, k, v)

    got = grads(lambda q, k, v: op(q, k, v, is_causal=is_causal, chunk_size=4, **masking))
    want = grads(
        lambda q, k, v: linear_attention_jnp(q, k, v, jnp_phi, is_causal=is_causal, **GRAD_MASKING)
    )
    for g, w in zip(got, want, strict=True):
        assert np.isfinite(np.asarray(g)).all()
        np.testing.assert_array_equal(np.asarray(g)[2], 0.0)
        np.testing.assert_allclose(g, w, **GRAD_TOL)


# --- errors ------------------------------------------------------------------------------------

_LINEAR_KINDS = ["linear", "performer", "based", "cosformer", "linformer"]


@pytest.mark.parametrize("kind", _LINEAR_KINDS)
@pytest.mark.parametrize("argument", ["mask", "bias"])
def test_mask_and_bias_are_refused(kind, argument):
    """No score matrix exists to mask or bias: a ValueError naming the argument."""
    q = _q()
    value = jnp.ones((1, 2, 8, 8), bool if argument == "mask" else jnp.float32)
    with pytest.raises(ValueError, match=argument):
        ops.attention(q, q, q, kind=kind, **{argument: value})


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda q: ops.linear(q, q, q, is_causal=True, chunk_size=0),
            "chunk_size",
            id="chunk-size-0",
        ),
        pytest.param(
            lambda q: ops.linear(q, q, q, feature_map="softmax"),
            "unknown feature map",
            id="unknown-feature-map",
        ),
        pytest.param(
            lambda q: ops.feature_map("gelu"), "unknown feature map", id="unknown-feature-map-fn"
        ),
        pytest.param(
            lambda q: ops.linear(q, q, q, feature_map="favor"),
            "needs a projection",
            id="favor-without-projection",
        ),
        pytest.param(
            lambda q: ops.feature_map("favor"), "projection", id="favor-map-without-projection"
        ),
        pytest.param(
            lambda q: ops.performer(q, q, q, projection=jnp.ones((16, 4))),
            "head_dim",
            id="projection-wrong-head-dim",
        ),
        pytest.param(
            lambda q: ops.cosformer(q, q, q, max_len=5),
            "max_len",
            id="cosformer-max-len-too-small",
        ),
        pytest.param(
            lambda q: ops.linear(q, q, q, feature_map="elu", scale=0.5),
            "no logit scale",
            id="scale-on-elu",
        ),
        pytest.param(
            lambda q: ops.linear(q, q[:, :5], q[:, :5], is_causal=True),
            "q_len == kv_len",
            id="causal-t-neq-s",
        ),
        pytest.param(
            lambda q: ops.linear_step(
                ops.linear_state_init(1, 2, 8), q[:, 0], q[:, 0, :1], q[:, 0]
            ),
            "linear_step",
            id="step-wrong-key-heads",
        ),
        pytest.param(
            lambda q: ops.linear_step(
                ops.linear_state_init(1, 2, 8, value_dim=3), q[:, 0], q[:, 0], q[:, 0]
            ),
            "linear_step",
            id="step-wrong-value-dim",
        ),
        pytest.param(
            lambda q: ops.linear_step(
                ops.linear_state_init(1, 2, 8), q[:, 0], q[:, 0], q[:, 0], feature_map="taylor"
            ),
            "same feature map",
            id="step-feature-map-mismatch",
        ),
        pytest.param(
            lambda q: ops.linear_state_init(1, 2, 8, feature_map="cosformer"),
            "max_len",
            id="cosformer-state-without-max-len",
        ),
        pytest.param(
            lambda q: ops.linear_step(
                ops.linear_state_init(1, 2, 8, feature_map=ops.feature_map("cosformer", max_len=8)),
                q[:, 0],
                q[:, 0],
                q[:, 0],
                feature_map="cosformer",
            ),
            "max_len",
            id="cosformer-step-without-max-len",
        ),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(_q())


# --- transforms --------------------------------------------------------------------------------

TRANSFORM_SHAPE = (4, 12, 12, 4, 2, 8)  # B, T, S, N, K, H


def _transform_ops():
    P = ops.favor_projection(jax.random.key(5), FAVOR_FEATURES, 8)
    return {
        "linear-causal": lambda q, k, v, lengths: ops.linear(
            q, k, v, is_causal=True, chunk_size=5, key_value_seq_lengths=lengths
        ),
        "performer": lambda q, k, v, lengths: ops.performer(
            q, k, v, projection=P, key_value_seq_lengths=lengths
        ),
    }


def _transform_args():
    q, k, v = random_qkv(14, *TRANSFORM_SHAPE)
    return q, k, v, jnp.asarray([12, 7, 0, 10], jnp.int32)


@pytest.mark.parametrize("name", ["linear-causal", "performer"])
def test_jit_vmap_pmap_equal_plain_call(name):
    """jit, vmap over an extra axis and pmap over 4 devices (batch split) equal the plain call."""
    f = _transform_ops()[name]
    args = _transform_args()
    plain = f(*args)
    # Batch row 2 has key length 0: zeros, not NaN.
    np.testing.assert_array_equal(plain[2], 0.0)
    np.testing.assert_allclose(jax.jit(f)(*args), plain, **F32_TOL)
    stacked = [jnp.stack([x, x[::-1]]) for x in args]
    np.testing.assert_allclose(
        jax.jit(jax.vmap(f))(*stacked), jnp.stack([plain, plain[::-1]]), **F32_TOL
    )
    split = [x.reshape(4, 1, *x.shape[1:]) for x in args]
    out = jax.pmap(f, devices=jax.devices()[:4])(*split)
    np.testing.assert_allclose(out.reshape(plain.shape), plain, **F32_TOL)


# --- memory ------------------------------------------------------------------------------------


def _temp_bytes(n):
    x = jax.ShapeDtypeStruct((1, n, 2, 16), jnp.float32)

    def f(q, k, v):
        return ops.linear(q, k, v, is_causal=True)

    return jax.jit(f).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes


def test_causal_memory_is_linear_in_length():
    """Compiled temp memory grows ~4x (not 16x) from n = 2048 to 8192; no n x n array fits."""
    small, large = _temp_bytes(2048), _temp_bytes(8192)
    assert large <= 4.5 * small, (small, large)
    # A single float32 [n, n] score matrix (one head) would be 268 MB; stay far below it.
    assert large < 8192 * 8192 * 4 / 8, large


def test_default_projections_are_fixed_constants_not_redrawn_per_call():
    """performer's and linformer's defaults are drawn once: no RNG or QR runs inside the step."""
    x = jnp.ones((1, 12, 2, 8))
    for op in (lambda q: ops.performer(q, q, q), lambda q: ops.linformer(q, q, q)):
        program = str(jax.make_jaxpr(op)(x))  # printed with every nested sub-program
        assert not any(name in program for name in ("random_bits", "threefry2x32", "qr["))
        # jit and eager are different programs: equal within float tolerance, not bitwise.
        np.testing.assert_allclose(jax.jit(op)(x), op(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        ops.performer(x, x, x),
        ops.performer(x, x, x, projection=ops.favor_projection(jax.random.key(0), 256, 8)),
        rtol=1e-6,
    )


def test_performer_refuses_num_features_that_contradict_the_projection():
    x = jnp.ones((1, 4, 2, 8))
    with pytest.raises(ValueError, match="num_features"):
        ops.performer(
            x, x, x, projection=ops.favor_projection(jax.random.key(0), 16, 8), num_features=32
        )
