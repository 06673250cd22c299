"""One of two processes standing in for two hosts: joins the job, trains the tiny config.

Usage: python -m tests.train.multihost_worker PORT PROCESS_ID DATA_DIR WORKDIR
"""

import sys

import jax


def main(port: str, process_id: str, data_dir: str, workdir: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
    from attention_jax import train
    from tests.train.test_trainer import tiny

    config = tiny(data_dir, num_steps=5, log_every=1, eval_every=100)
    train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main(*sys.argv[1:])
