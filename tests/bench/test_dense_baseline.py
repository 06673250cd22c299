"""The dense-vs-jax.nn benchmark times both ops on the same inputs and tabulates their ratio."""

from attention_jax.bench import dense_baseline


def test_one_small_case_gives_positive_times_and_a_table_row():
    case = dense_baseline.Case(2, 16, 2, 8, is_causal=True, kv_lengths=True, num_kv_heads=1)
    row = dense_baseline.compare_case(case, "dense", repeats=1, min_sample_s=0.0, min_total_s=0.0)
    assert min(row.fwd_ms, row.jax_fwd_ms, row.fwd_bwd_ms, row.jax_fwd_bwd_ms) > 0
    table = dense_baseline.format_table([row], "dense").splitlines()
    assert table[0].startswith("| case | fwd dense ms | fwd jax.nn ms | fwd ratio |")
    assert table[2].startswith("| B2 T16 N2 K1 H8 causal kv_len |")
    assert len(dense_baseline.GRID) >= 12  # n = 128..4096, head_dim 16..128
