"""The overhead benchmark runs both loops on the tiny config (numbers are for the README)."""

from attention_jax.bench import train_overhead
from attention_jax.configs import mqar


def test_both_loops_report_a_step_time(tmp_path):
    config = mqar.get_config("size=tiny")
    config.data_dir = str(tmp_path)
    bare = train_overhead.bare_step_seconds(config, window=2, windows=1)
    full = train_overhead.trainer_step_seconds(config, window=2, windows=1)
    assert 0 < bare < 10 and 0 < full < 10
