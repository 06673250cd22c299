"""The training command's own messages: a mistyped config key is one line, not a traceback."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_an_unknown_config_key_is_one_line_naming_it(tmp_path):
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=experiments/configs/mqar.py:size=tiny",
        "--config.num_step=5",  # num_steps, mistyped
        f"--workdir={tmp_path / 'run'}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "--config: no setting 'num_step' in this config. "
        'Did you mean "num_steps" instead of "num_step"?'
    ]
    assert not (tmp_path / "run").exists()
