"""Two processes joined by jax.distributed (2 CPU devices each) train like one 4-device process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from attention_jax import train
from tests.train.test_trainer import tiny, train_losses

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_hosts_agree_with_one(tmp_path):
    data_dir, port = str(tmp_path / "tfds"), _free_port()
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.train.multihost_worker",
                str(port),
                str(i),
                data_dir,
                str(tmp_path / "two_hosts"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output[-3000:]
    config = tiny(data_dir, num_steps=5, log_every=1, eval_every=100)
    one = train.train_and_evaluate(config, str(tmp_path / "one_host"), devices=jax.devices()[:4])
    want, got = train_losses(tmp_path / "one_host"), train_losses(tmp_path / "two_hosts")
    assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([got[s] for s in want], list(want.values()), rtol=2e-5)
    results = json.loads((tmp_path / "two_hosts" / "results.json").read_text())
    assert results["test/loss"] == pytest.approx(one["test/loss"], rel=2e-5)
