"""Generation time and input waits of the task data; see attention_jax/configs/data.py."""

import os

from absl import app, flags
from ml_collections import config_flags

from attention_jax import data
from attention_jax.bench import input_pipeline

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/data.py")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/data", "Where data.md goes.")


def main(argv):
    del argv
    c = _CONFIG.value
    overrides = c.generate_overrides.to_dict()
    lines = ["| Task | Train examples | Generate + write (s) |", "|---|---:|---:|"]
    for name in c.generate:
        seconds, count = input_pipeline.time_generation(name, **overrides)
        lines.append(f"| {name} | {count} | {seconds:.1f} |")
    lines += [
        "",
        "| Task | Batch | Step (ms) | Wait for data (ms) | Waiting | Pipeline alone (batches/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in c.wait_tasks:
        task_overrides = {} if name.startswith("chars") else overrides
        task = data.get_task(name, data_dir=c.data_dir or None, **task_overrides)
        w = input_pipeline.measure_input_wait(task, batch_size=c.batch_size, steps=c.steps)
        lines.append(
            f"| {w.task} | {w.batch_size} | {w.step_ms:.1f} | {w.wait_ms:.2f} | "
            f"{100 * w.wait_fraction:.1f}% | {w.pipeline_batches_per_s:.0f} |"
        )
    lines += ["", "| Task | Split | Examples | Majority rate |", "|---|---|---:|---:|"]
    for name in c.balance_tasks:
        task = data.get_task(name, data_dir=c.data_dir or None, **overrides)
        for split in ("validation", "test"):
            rate = task.majority_rate(split)
            lines.append(f"| {task.name} | {split} | {len(task.source(split))} | {rate:.3f} |")
    table = "\n".join(lines) + "\n"
    os.makedirs(_WORKDIR.value, exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "data.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
