"""Every family: shapes and determinism over kinds, gradients to every parameter, bfloat16."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from . import tiny

# Two kinds per model (one per layer), so each family's cases cover kinds at little cost.
PAIRS = (("dense", "flash"), ("local", "performer"), ("linear", "bigbird"))
CASES = [(name, pair) for name in ("classifier", "lm") for pair in PAIRS] + [
    ("encoder_decoder", ("bigbird", "linear")),
    ("vit", ("local", "performer")),
]


@pytest.mark.parametrize("name, attention", CASES, ids=lambda v: "-".join(np.atleast_1d(v)))
def test_shapes_and_determinism(name, attention):
    inputs = tiny.inputs(name)
    first = tiny.apply(tiny.model(name, attention=attention), name, inputs)
    assert first.shape == tiny.OUTPUT_SHAPES[name] and first.dtype == jnp.float32
    assert jnp.isfinite(first).all()
    again = tiny.model(name, attention=attention)
    np.testing.assert_array_equal(tiny.apply(again, name, inputs), first)


@pytest.mark.parametrize("name", tiny.FAMILIES)
def test_bfloat16_training_reaches_every_float32_parameter(name):
    """bfloat16 compute, float32 params: each gets a non-zero float32 gradient (none is dead)."""
    model, inputs = tiny.model(name, dtype="bfloat16", param_dtype="float32"), tiny.inputs(name)
    modules = [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)]
    assert {m.dtype for m in modules if hasattr(m, "dtype")} == {jnp.dtype("bfloat16")}
    loss, grads = nnx.jit(nnx.value_and_grad(lambda m: tiny.loss(m, name, inputs)))(model)
    assert jnp.isfinite(loss)
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert {p[...].dtype for _, p in params} == {jnp.dtype("float32")}
    flat = nnx.to_flat_state(nnx.state(grads, nnx.Param))
    assert len(flat) == len(params) > 10
    assert {g[...].dtype for _, g in flat} == {jnp.dtype("float32")}
    dead = [
        "/".join(map(str, path)) for path, g in flat if not np.abs(np.asarray(g[...])).max() > 0
    ]
    assert not dead, f"{name}: no gradient reaches {dead}"
