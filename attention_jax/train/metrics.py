"""Metrics out: JSONL and TensorBoard event files in the workdir, a progress bar on the console."""

import json
import os

import jax
import tensorboardX
import tqdm


class MetricWriter:
    """Writes scalars on the first host only; resuming drops records past the restored step."""

    def __init__(self, workdir: str, *, start_step: int, num_steps: int):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        if not self.enabled:
            return
        self._drop_records_after(start_step)
        self.jsonl = open(self.path, "a")  # noqa: SIM115 - closed in close()
        self.tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
        self.bar = tqdm.tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def _drop_records_after(self, step: int) -> None:
        # A run killed after its last checkpoint logged steps that the resumed run repeats.
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if json.loads(line)["step"] <= step]
        with open(self.path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(self.path + ".tmp", self.path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)

    def progress(self, step: int, **shown: float) -> None:
        if not self.enabled:
            return
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        self.jsonl.close()
        self.tensorboard.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of `metrics.jsonl`, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
