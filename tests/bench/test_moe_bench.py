"""The MoE cost benchmark runs end to end at a small size and writes its table."""

from attention_jax.bench import moe


def test_small_measurement_reports_every_layer():
    rows = moe.measure_moe(tokens=64, d_model=16, hidden=32, num_experts=4, repeats=1)
    assert [r.layer.split()[0] for r in rows] == ["dense", "MoE", "MoE", "MoE"]
    assert rows[0].ratio_to_dense == 1.0 and all(r.milliseconds > 0 for r in rows)
    assert moe.markdown(rows).count("\n") == len(rows) + 2
