"""The suite's cost measurements show each kind's real scaling: FLOPs and memory of one layer
grow as n^2 for dense attention and as n for the linear-cost kinds."""

import pytest

from attention_jax.suite import cost, plan

SEQ_LENS = (1024, 2048, 4096)


def _kind(label, attention, kind_params=None, moe_attention=None):
    return plan.KindSpec(label, attention, kind_params or {}, moe_attention or {})


@pytest.mark.parametrize(
    "kind, flops_range, memory_range",
    [
        # Dense keeps one to three n x n arrays for its backward, as XLA's buffer assignment
        # decides per n: memory fits n^1.6..2, far from the linear kinds' n^1.
        (_kind("dense", "dense"), (1.8, 2.05), (1.6, 2.2)),
        (
            _kind("switchhead", "dense", moe_attention={"num_experts": 2, "top_k": 1}),
            (1.8, 2.05),
            (1.6, 2.2),
        ),
        (_kind("local", "local", {"local_window_size": (32, 32)}), (0.95, 1.1), (0.5, 1.1)),
        (_kind("linear", "linear", {"feature_map": "elu"}), (0.95, 1.05), (0.5, 1.1)),
        # Its projections are sized for the longest n, a constant part of memory.
        (_kind("linformer", "linformer", {"projected_len": 32}), (0.95, 1.05), (0.2, 1.1)),
        # Causal only: the sweep runs it causally, chunk by chunk.
        (_kind("gated_deltanet", "gated_deltanet"), (0.95, 1.05), (0.5, 1.1)),
    ],
    ids=lambda x: getattr(x, "label", ""),
)
def test_length_sweep_flops_and_memory_scale_as_the_algorithm_says(kind, flops_range, memory_range):
    points = cost.length_sweep(kind, SEQ_LENS, d_model=16, num_heads=1, repeats=1)
    assert [p["n"] for p in points] == list(SEQ_LENS)
    fitted = cost.exponents(points)
    assert flops_range[0] <= fitted["exponent_fwd_flops"] <= flops_range[1]
    # Dense keeps the n x n probabilities for the backward pass; the others do not.
    assert memory_range[0] <= fitted["exponent_fwd_bwd_bytes"] <= memory_range[1]
    assert all(p["fwd_s"] > 0 and p["fwd_bwd_s"] > 0 for p in points)


def test_a_hybrids_layers_take_their_own_kind_params_when_keyed_by_kind():
    keyed = _kind("hybrid", ("local", "dense"), {"local": {"local_window_size": (4, 4)}})
    local, dense = cost._layers(keyed, 16, 2, 64)
    assert local.kind_params["local_window_size"] == (4, 4)
    assert "local_window_size" not in dense.kind_params
    shared = _kind("hybrid", ("gla", "mamba2"), {"chunk_size": 8})
    assert [layer.kind_params["chunk_size"] for layer in cost._layers(shared, 16, 2, 64)] == [8, 8]
