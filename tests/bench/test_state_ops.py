"""The state-ops cost script runs every op and the baseline and fits an exponent (no timing
assertions: benchmarks are for numbers)."""

from attention_jax.bench import state_ops


def test_every_op_and_the_baseline_are_timed_and_fitted():
    kinds = (state_ops.BASELINE, *state_ops.KINDS)
    rows = state_ops.measure(kinds, [16, 32], num_heads=2, head_dim=4, repeats=1)
    assert [(r.kind, r.n) for r in rows] == [(k, n) for k in kinds for n in (16, 32)]
    assert all(r.fwd_ms > 0 and r.fwd_bwd_ms > 0 for r in rows)
    assert set(state_ops.exponents(rows)) == set(kinds)
    assert "| gla | 32 |" in state_ops.markdown(rows)
