"""Metrics out: JSONL and TensorBoard event files in the workdir, a progress bar on the console."""

import json
import tempfile

import jax
import tensorboardX
import tqdm
from etils import epath


class MetricWriter:
    """Writes scalars on the first host only; resuming drops records past the restored step.

    `metrics.jsonl` is rewritten whole at each write (it is small), which works on object
    stores such as gs:// that cannot append. TensorBoard event files go to `tensorboard/`; for a
    remote workdir they are written locally and copied there when the writer closes.
    """

    def __init__(
        self, workdir: str, *, start_step: int, num_steps: int, show_progress: bool = True
    ):
        self.enabled = jax.process_index() == 0
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.remote = "://" in str(workdir)
        if not self.enabled:
            return
        # A run killed after its last checkpoint logged steps that the resumed run repeats.
        self.records = [r for r in read_metrics(workdir) if r["step"] <= start_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        self.events = self.path.parent / "tensorboard"
        local_events = self.events
        if self.remote:
            local_events = tempfile.mkdtemp(prefix="attention_jax_tensorboard_")
        self.tensorboard = tensorboardX.SummaryWriter(str(local_events))
        # Runs trained together as one program share the first run's bar.
        self.bar = tqdm.tqdm(
            total=num_steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            disable=not show_progress,
        )

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.records.append({"step": step, **metrics})
        if self.remote:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        else:
            with self.path.open("a") as f:
                f.write(json.dumps(self.records[-1]) + "\n")
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)

    def progress(self, step: int, **shown: float) -> None:
        if not self.enabled:
            return
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def say(self, text: str) -> None:
        """One line above the progress bar (evaluations, the summary), if this writer shows one."""
        if self.enabled and not self.bar.disable:
            self.bar.write(text)

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        self.tensorboard.close()
        if self.remote:
            local = epath.Path(self.tensorboard.logdir)
            self.events.mkdir(parents=True, exist_ok=True)
            for event_file in local.iterdir():
                (self.events / event_file.name).write_bytes(event_file.read_bytes())


def formatted(values: dict[str, float]) -> str:
    """'validation/loss 1.234, validation/accuracy 0.567' for a log line."""
    return ", ".join(f"{name} {value:.4g}" for name, value in values.items())


def read_metrics(workdir: str) -> list[dict]:
    """The records of `metrics.jsonl` in order (none if it does not exist)."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
