"""Generation timing and the input-wait measurement run end to end on a tiny task."""

import math

from attention_jax import data
from attention_jax.bench import input_pipeline

TINY = dict(num_train=64, num_validation=8, num_test=8)


def test_time_generation_reports_the_train_size():
    seconds, count = input_pipeline.time_generation("mqar/small_s64_kv4", **TINY)
    assert count == 64 and seconds > 0


def test_input_wait_splits_step_time_into_wait_and_compute(tmp_path):
    for name in ("mqar/small_s64_kv4", "listops"):
        task = data.get_task(name, data_dir=str(tmp_path), **TINY)
        wait = input_pipeline.measure_input_wait(task, batch_size=4, steps=3, warmup=1)
        assert wait.step_ms > 0 and wait.wait_ms >= 0 and wait.pipeline_batches_per_s > 0
        assert 0 <= wait.wait_fraction < 1 and not math.isnan(wait.wait_fraction)
