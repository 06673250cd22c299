"""experiments.data writes its tables at the small size."""

import sys

from absl import flags

from experiments import data as data_experiment


def test_small_run_writes_both_tables(tmp_path, monkeypatch):
    argv = [
        "data",
        "--config=experiments/configs/data.py:small",
        f"--config.data_dir={tmp_path / 'tfds'}",
        f"--workdir={tmp_path / 'out'}",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    data_experiment.main([])
    table = (tmp_path / "out" / "data.md").read_text()
    assert "| listops/small" in table and "Wait for data" in table
    # Three headers, three generated tasks, three pipelines, five tasks x two splits.
    assert sum(line.startswith("| ") for line in table.splitlines()) == 19
    assert "Majority rate" in table
