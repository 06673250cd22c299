"""train_and_evaluate(config, workdir): the whole run as a library function notebooks import.

Steps are `jax.jit` with shardings on a mesh (data, fsdp, tensor, expert); parameters and
optimizer state are created already sharded; each host reads only its rows of each batch.
A restarted run resumes from the newest readable checkpoint in `workdir`, data iterator
included, and continues exactly as if it had never stopped.
"""

import json
import logging
import signal
import time

import grain
import jax
import numpy as np
from etils import epath
from flax import nnx

from attention_jax import data, layers, models
from attention_jax.train import checkpoint, hosts, metrics, optim, resume, sharding, step
from attention_jax.train import config as config_lib


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


def _eval_pipeline(task, split: str, batch_size: int, **shard):
    return task.pipeline(
        split,
        batch_size=batch_size,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        prefetch=0,
        **shard,
    )


def eval_batches(task, split, local_batch: int, limit: int | None):
    """This host's batches of one pass over `split` (rows or examples, packed or not).

    Hosts can hold one example more or less, and packed text a row more or less: a host that
    runs out while another has data gets an all-padding batch, so every host runs the same
    steps. Padding rows carry no loss (loss_mask or example_mask False), so sums stay exact.
    """
    iterator = iter(_eval_pipeline(task, split, local_batch))
    produced = 0
    while limit is None or produced < limit:
        batch = next(iterator, None)
        if not hosts.any_host(batch is not None):
            return
        if batch is None:  # shaped like the split's rows, with none of them
            whole = _eval_pipeline(task, split, 1, shard_index=0, shard_count=1)
            batch = jax.tree.map(lambda x: x[:0], next(iter(whole)))
        yield _pad_rows(batch, local_batch)
        produced += 1


def _pad_rows(batch, size: int):
    """A batch padded with empty rows to `size`."""
    rows = len(next(iter(batch.values())))
    batch = dict(batch)
    if "label" in batch:
        batch["example_mask"] = np.arange(size) < rows
    padded = {
        k: np.concatenate([v, np.zeros((size - rows, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    if "lengths" in padded:
        padded["lengths"] = np.maximum(padded["lengths"], 1)  # an empty row still needs a length
    return padded


def evaluate(eval_step, state, task, split, mesh, local_batch, limit=None):
    """Mean loss and accuracy over a split (or its first `limit` batches)."""
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for batch in eval_batches(task, split, local_batch, limit):
        sums = eval_step(state, sharding.global_batch(batch, mesh))
        for name, value in jax.device_get(sums).items():
            totals[name] += float(value)
    count = max(totals["count"], 1.0)
    return {
        f"{split}/loss": totals["loss_sum"] / count,
        f"{split}/accuracy": totals["correct"] / count,
    }


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
      config: the run; see experiments/configs/common.py for every field.
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
        return _train(config, workdir, preemption, devices, stop_after_steps, task, allow_changes)


def _train(config, workdir, preemption, devices, stop_after_steps, task, allow_changes):
    if not isinstance(config, config_lib.TrainConfig):
        config = config_lib.from_config_dict(config)
    workdir_path = epath.Path(workdir)
    changed = resume.check_config(workdir_path, config, allow_changes)
    if config.distributed:
        jax.distributed.initialize()
    task = task or config_lib.load_task(config)
    model_config = config_lib.model_config_for(config, task)
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
        workdir_path.absolute() / "checkpoints",
        keep=config.checkpoint.keep,
    )
    abstract_placed = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_shardings
    )
    had_checkpoints = bool(checkpointer.manager.all_steps())
    restored = checkpointer.restore_latest(abstract_placed, train_iter)
    if restored is None:
        start, state = 0, jax.jit(init, out_shardings=state_shardings)()
        if had_checkpoints:  # a failed restore may have moved the iterator: start it afresh
            train_iter = batches()
    else:
        start, state = restored
        logging.info("Resumed from step %d.", start)
    results_path = workdir_path / "results.json"
    _check_resumable(start, config.num_steps, checkpointer, results_path)
    writer = metrics.MetricWriter(workdir, start_step=start, num_steps=config.num_steps)

    def evaluate_split(split, limit=config.eval_batches):
        return evaluate(eval_step, state, task, split, mesh, local_batch, limit)

    try:
        tokens_per_step = config.batch_size * task.seq_len
        # Held out: validation during training (real datasets without one use test), then both.
        eval_splits = tuple(s for s in ("validation", "test") if s in task.splits)
        done = start
        timer, timed_steps = time.perf_counter(), 0
        for current in range(start, config.num_steps):
            state, step_metrics = train_step(state, next(train_iter))
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
                check_finite(done, values, workdir)
                writer.progress(done, loss=values["train/loss"], tok_s=values["train/tokens_per_s"])
                timer, timed_steps = time.perf_counter(), 0
            if done % config.eval_every == 0 and done < config.num_steps:
                evaluated = evaluate_split(eval_splits[0])
                writer.write(done, evaluated)
                writer.say(f"step {done}: {metrics.formatted(evaluated)}")
                timer = time.perf_counter()  # evaluation is not training time
            # Hosts get SIGTERM at different moments; all must stop at the same step. Agreeing
            # is a collective that waits for the device, so several hosts agree only on log
            # steps (which wait for the metrics anyway); one host checks every step.
            preempted = preemption.requested
            if jax.process_count() > 1:
                preempted = done % config.log_every == 0 and hosts.any_host(preempted)
            stop = preempted or (stop_after_steps is not None and done - start >= stop_after_steps)
            if stop or done % config.checkpoint.every_steps == 0:
                # A checkpoint never holds a diverged state (one scalar read, at saves only).
                check_finite(done, jax.device_get(step_metrics), workdir)
                checkpointer.save(done, state, train_iter)
                timer = time.perf_counter()
            if stop and done < config.num_steps:
                break
        finished = done == config.num_steps
        results = {}
        if start == config.num_steps and results_path.exists():  # already finished: nothing to redo
            results = json.loads(results_path.read_text())
        elif finished:
            if checkpointer.manager.latest_step() != config.num_steps:
                checkpointer.save(config.num_steps, state, train_iter)
            # results.json marks the run finished, so the final checkpoint is on disk before it.
            checkpointer.manager.wait_until_finished()
            for split in eval_splits:
                results |= evaluate_split(split, config.final_eval_batches)
            results["train/steps"] = config.num_steps
            writer.write(config.num_steps, results)
            if jax.process_index() == 0:
                # Written whole or not at all: a finished run is one with a readable results.json.
                partial = workdir_path / "results.json.tmp"
                partial.write_text(json.dumps(results, indent=2))
                partial.replace(results_path)
            writer.say(
                f"Finished {workdir} at step {config.num_steps}: {metrics.formatted(results)}"
            )
    finally:  # saves of finite states finish even when the run stops with an error
        checkpointer.close()
        writer.close()
    return results


def _with_expert_mesh(model, mesh):
    """Hands the mesh to the MoE layers, which shard experts over its expert axis."""
    if mesh.shape["expert"] > 1:
        for _, layer in nnx.iter_graph(model):
            if isinstance(layer, layers.MoEFeedForward):
                layer.mesh = mesh
    return model
