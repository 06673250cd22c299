"""The kind registry: dispatch by name and unknown-kind errors, against calling the op itself."""

import numpy as np
import pytest

from attention_jax import ops

from .cases import _call
from .reference import random_masking, random_qkv


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: ops.get("no_such_kind"), id="get"),
        pytest.param(lambda: _call(ops.attention, kind="no_such_kind"), id="attention"),
    ],
)
def test_unknown_kind_lists_valid_names(call):
    """An unknown kind names itself and the valid kinds."""
    with pytest.raises(ValueError, match="no_such_kind") as error:
        call()
    assert "dense" in str(error.value) and "flash" in str(error.value)


@pytest.mark.parametrize("kind", ["dense", "flash"])
def test_registry_dispatch(kind):
    """ops.names lists the exact kinds and ops.attention(kind=...) runs the registered op."""
    assert {"dense", "flash"} <= set(ops.names())
    q, k, v = random_qkv(0, 2, 9, 11, 4, 2, 8)
    kwargs = random_masking(1, ("causal", "bias"), 2, 9, 11, 4)
    np.testing.assert_array_equal(
        ops.attention(q, k, v, kind=kind, **kwargs), ops.get(kind)(q, k, v, **kwargs)
    )
