"""train_and_evaluate(config, workdir): the whole run as a library function notebooks import.

Steps are `jax.jit` with shardings on a mesh (data, fsdp, tensor, expert); parameters and
optimizer state are created already sharded; each host reads only its rows of each batch.
A restarted run resumes from the newest readable checkpoint in `workdir`, data iterator
included, and continues exactly as if it had never stopped.
"""

import dataclasses
import json
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import numpy as np
from etils import epath
from flax import nnx

from attention_jax import data, layers, models
from attention_jax.train import checkpoint, hosts, metrics, optim, resume, sharding, step
from attention_jax.train import config as config_lib
from attention_jax.train.evaluation import evaluate


class Preemption:
    """Turns SIGTERM (a TPU preemption, a cluster's kill) into a final checkpoint and exit."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some notebook runners): no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint and stopping.")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Diverged(FloatingPointError):
    """The loss or gradient norm became NaN or Inf: the run stops without saving that state."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def check_finite(step: int, values: dict, workdir) -> None:
    """Raises Diverged if the step's loss or gradient norm is not finite."""
    bad = {k: float(values[k]) for k in ("train/loss", "train/grad_norm") if k in values}
    bad = {k: v for k, v in bad.items() if not np.isfinite(v)}
    if bad:
        raise Diverged(
            f"{workdir} diverged by step {step} ({bad}); its checkpoints stop before that. "
            "Lower optimizer.learning_rate, lengthen optimizer.warmup_steps or set "
            "optimizer.clip_norm, and train in a new workdir.",
            step,
        )


def _check_resumable(start: int, num_steps: int, checkpointer, results_path) -> None:
    """A checkpoint past num_steps is refused; a finished run extended is unfinished again."""
    if start > num_steps:
        raise ValueError(
            f"{checkpointer.directory} holds step {start}, past num_steps={num_steps}; a run "
            "cannot be shortened after the fact. Set num_steps >= "
            f"{start}, or train in a new workdir."
        )
    if start < num_steps and results_path.exists() and jax.process_index() == 0:
        # Its results are those of the shorter run: the run is finished again at num_steps.
        results_path.unlink()


def _check_batch(config: config_lib.TrainConfig, mesh) -> int:
    """This host's batch size, after checking the global batch splits evenly everywhere."""
    if mesh.shape["expert"] > 1 and not config.model.get("moe"):
        raise ValueError(
            "mesh.expert > 1 shards mixture-of-experts layers, which this model does not have; "
            "set mesh.expert=1 and give the devices to data or fsdp."
        )
    if mesh.shape["tensor"] > jax.local_device_count():
        raise ValueError(
            f"mesh.tensor={mesh.shape['tensor']} spans hosts (each has "
            f"{jax.local_device_count()} devices); keep tensor parallelism within a host."
        )
    dp = sharding.data_parallel_size(mesh)
    microbatch = config.batch_size // config.optimizer.grad_accum_steps
    if microbatch % dp:
        raise ValueError(
            f"batch_size {config.batch_size} / grad_accum_steps "
            f"{config.optimizer.grad_accum_steps} = {microbatch} rows per microbatch is not "
            f"divisible by the {dp} data-parallel devices (mesh data x fsdp x expert); change "
            f"batch_size."
        )
    if config.batch_size % jax.process_count():
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {jax.process_count()} hosts."
        )
    return config.batch_size // jax.process_count()


def train_and_evaluate(
    config,
    workdir: str,
    *,
    devices=None,
    stop_after_steps: int | None = None,
    task: data.Task | None = None,
    allow_changes=(),
) -> dict[str, float]:
    """Trains `config` (a ConfigDict or TrainConfig) in `workdir`; returns the final metrics.

    Writes `config.json`, `metrics.jsonl`, `tensorboard/`, `checkpoints/` and `results.json`
    (the last only when the run reaches num_steps, after its final checkpoint is on disk).
    Rerunning a finished run returns its results; a workdir holding a run of another config
    is refused before anything is written (`resume.check_config`).

    Args:
      config: the run; see attention_jax/configs/common.py for every field.
      workdir: a local or gs:// path; a run restarted on the same workdir resumes.
      devices: the devices of the mesh (default all; a subset for experiments and tests).
      stop_after_steps: stop with a checkpoint after this many steps of this call, as a
        preemption would (for time-boxed jobs); rerunning continues the run.
      task: the config's task, already loaded (`data.get_task` with the config's task, data_dir,
        seq_len and task_params); a suite passes one to all its runs, so splits are read once.
      allow_changes: settings (from `resume.CHANGEABLE`, e.g. ("num_steps",) to extend a run)
        that may differ from the workdir's stored config.json when resuming.

    Raises:
      Diverged: the loss or gradient norm became NaN or Inf; no checkpoint holds that state.
    """
    # Installed first: a SIGTERM while the run loads or compiles stops it at its first step.
    with Preemption() as preemption:
        run = _set_up(config, workdir, devices, task, allow_changes)
        try:
            done = _train_loop(run, preemption, stop_after_steps)
            return _finish(run, done)
        finally:  # saves of finite states complete even when the run stops with an error
            run.checkpointer.close()
            run.writer.close()


@dataclasses.dataclass
class _Run:
    """A run set up to train: what its loop and its finish share."""

    config: config_lib.TrainConfig
    workdir: epath.Path
    task: data.Task
    mesh: jax.sharding.Mesh
    local_batch: int
    train_step: Callable
    eval_step: Callable
    checkpointer: checkpoint.Checkpointer
    writer: metrics.MetricWriter
    train_iter: Any
    state: Any
    start: int

    @property
    def eval_splits(self) -> tuple[str, ...]:
        # Validation during training (real datasets without one use test), then both.
        return tuple(s for s in ("validation", "test") if s in self.task.splits)

    @property
    def results_path(self) -> epath.Path:
        return self.workdir / "results.json"

    def evaluate(self, split: str, limit: int | None) -> dict[str, float]:
        return evaluate(
            self.eval_step, self.state, self.task, split, self.mesh, self.local_batch, limit
        )


def _set_up(config, workdir, devices, task, allow_changes) -> _Run:
    """Checks the config against the workdir, compiles the steps, restores the newest state."""
    if not isinstance(config, config_lib.TrainConfig):
        config = config_lib.from_config_dict(config)
    workdir_path = epath.Path(workdir)
    changed = resume.check_config(workdir_path, config, allow_changes)
    if config.distributed:
        jax.distributed.initialize()
    task = task or config_lib.load_task(config)
    mesh = sharding.make_mesh(config.mesh, devices)
    local_batch = _check_batch(config, mesh)
    workdir_path.mkdir(parents=True, exist_ok=True)
    for key, (old, new) in changed.items():
        note = resume.CHANGE_NOTES.get(key.split(".")[0], "as allowed")
        logging.warning(
            "Resuming %s with %s changed from %r to %r: %s.", workdir, key, old, new, note
        )
    if jax.process_index() == 0:
        (workdir_path / "config.json").write_text(json.dumps(config_lib.to_json(config), indent=2))
    init, abstract_placed, train_step, eval_step = _compiled_steps(config, task, mesh)

    def batches():
        # Batches become global device arrays in the prefetch thread, off the step's path.
        return iter(
            grain.experimental.ThreadPrefetchIterDataset(
                task.pipeline("train", batch_size=local_batch, seed=config.seed, prefetch=0).map(
                    lambda batch: sharding.global_batch(batch, mesh)
                ),
                prefetch_buffer_size=2,
            )
        )

    train_iter = batches()
    checkpointer = checkpoint.Checkpointer(
        workdir_path.absolute() / "checkpoints", keep=config.checkpoint.keep
    )
    had_checkpoints = bool(checkpointer.manager.all_steps())
    restored = checkpointer.restore_latest(abstract_placed, train_iter)
    if restored is None:
        start, state = 0, init()
        if had_checkpoints:  # a failed restore may have moved the iterator: start it afresh
            train_iter = batches()
    else:
        start, state = restored
        logging.info("Resumed from step %d.", start)
    try:
        _check_resumable(start, config.num_steps, checkpointer, workdir_path / "results.json")
    except ValueError:
        checkpointer.close()
        raise
    writer = metrics.MetricWriter(workdir, start_step=start, num_steps=config.num_steps)
    return _Run(
        config=config,
        workdir=workdir_path,
        task=task,
        mesh=mesh,
        local_batch=local_batch,
        train_step=train_step,
        eval_step=eval_step,
        checkpointer=checkpointer,
        writer=writer,
        train_iter=train_iter,
        state=state,
        start=start,
    )


def _compiled_steps(config, task, mesh):
    """(init, the placed abstract state, train_step, eval_step), jitted with the shardings."""
    model_config = config_lib.model_config_for(config, task)
    tx = optim.make_optimizer(config.optimizer, config.num_steps)
    schedule = optim.learning_rate_schedule(config.optimizer, config.num_steps)

    def build():
        return _with_expert_mesh(models.build(model_config, rngs=nnx.Rngs(config.seed)), mesh)

    def init():
        return step.initial_state(build(), tx)

    abstract = jax.eval_shape(init)
    state_shardings = sharding.state_shardings(abstract, mesh)
    graphdef = nnx.graphdef(nnx.eval_shape(build))
    batch_sharding = sharding.batch_sharding(mesh)
    train_step = jax.jit(
        step.make_train_step(
            graphdef,
            tx,
            schedule,
            task.kind,
            config.optimizer.grad_accum_steps,
            moe_weights=model_config.moe_loss_weights(),
        ),
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        step.make_eval_step(graphdef, task.kind), in_shardings=(state_shardings, batch_sharding)
    )
    abstract_placed = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_shardings
    )
    return jax.jit(init, out_shardings=state_shardings), abstract_placed, train_step, eval_step


def _train_loop(run: _Run, preemption: Preemption, stop_after_steps: int | None) -> int:
    """Trains from run.start until num_steps, a preemption or stop_after_steps; the last step."""
    config, writer = run.config, run.writer
    tokens_per_step = config.batch_size * run.task.seq_len
    done = run.start
    timer, timed_steps = time.perf_counter(), 0
    for current in range(run.start, config.num_steps):
        run.state, step_metrics = run.train_step(run.state, next(run.train_iter))
        done = current + 1
        timed_steps += 1
        if done % config.log_every == 0 or done == config.num_steps:
            values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
            seconds = (time.perf_counter() - timer) / timed_steps
            values |= {
                "train/step_time_s": seconds,
                "train/tokens_per_s": tokens_per_step / seconds,
            }
            writer.write(done, values)
            check_finite(done, values, run.workdir)
            writer.progress(done, loss=values["train/loss"], tok_s=values["train/tokens_per_s"])
            timer, timed_steps = time.perf_counter(), 0
        if done % config.eval_every == 0 and done < config.num_steps:
            evaluated = run.evaluate(run.eval_splits[0], config.eval_batches)
            writer.write(done, evaluated)
            writer.say(f"step {done}: {metrics.formatted(evaluated)}")
            timer = time.perf_counter()  # evaluation is not training time
        # Hosts get SIGTERM at different moments; all must stop at the same step. Agreeing
        # is a collective that waits for the device, so several hosts agree only on log
        # steps (which wait for the metrics anyway); one host checks every step.
        preempted = preemption.requested
        if jax.process_count() > 1:
            preempted = done % config.log_every == 0 and hosts.any_host(preempted)
        stop = preempted or (stop_after_steps is not None and done - run.start >= stop_after_steps)
        if stop or done % config.checkpoint.every_steps == 0:
            # A checkpoint never holds a diverged state (one scalar read, at saves only).
            check_finite(done, jax.device_get(step_metrics), run.workdir)
            run.checkpointer.save(done, run.state, run.train_iter)
            timer = time.perf_counter()
        if stop and done < config.num_steps:
            break
    return done


def _finish(run: _Run, done: int) -> dict[str, float]:
    """The final metrics of a run that reached num_steps, after its final checkpoint; else {}."""
    num_steps = run.config.num_steps
    if run.start == num_steps and run.results_path.exists():  # finished before: nothing to redo
        return json.loads(run.results_path.read_text())
    if done != num_steps:
        return {}
    if run.checkpointer.manager.latest_step() != num_steps:
        run.checkpointer.save(num_steps, run.state, run.train_iter)
    # results.json marks the run finished, so the final checkpoint is on disk before it.
    run.checkpointer.manager.wait_until_finished()
    results = {}
    for split in run.eval_splits:
        results |= run.evaluate(split, run.config.final_eval_batches)
    results["train/steps"] = num_steps
    run.writer.write(num_steps, results)
    if jax.process_index() == 0:
        # Written whole or not at all: a finished run is one with a readable results.json.
        partial = run.workdir / "results.json.tmp"
        partial.write_text(json.dumps(results, indent=2))
        partial.replace(run.results_path)
    run.writer.say(f"Finished {run.workdir} at step {num_steps}: {metrics.formatted(results)}")
    return results


def _with_expert_mesh(model, mesh):
    """Hands the mesh to the MoE layers, which shard experts over its expert axis."""
    if mesh.shape["expert"] > 1:
        for _, layer in nnx.iter_graph(model):
            if isinstance(layer, layers.MoEFeedForward):
                layer.mesh = mesh
    return model
