"""train_group(configs, workdirs): runs that differ only in seed and learning rate, as one program.

A comparison trains several seeds and learning rates of the same (task, kind): model, data and
steps agree, so the runs share one compiled step, `jax.vmap`ped over a leading member axis,
instead of compiling one each. Each member writes what `train_and_evaluate` writes for a run
(config.json, metrics.jsonl, results.json in its own workdir); the stacked state and every
member's data-iterator state are checkpointed together in the group's directory, so a restarted
group resumes exactly. A group trains on one device (its member axis is not sharded).
"""

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_jax import data, models
from attention_jax.train import checkpoint, evaluation, metrics, optim, resume, step, trainer
from attention_jax.train import config as config_lib


def _shared(config: config_lib.TrainConfig) -> dict:
    """The config without what members may differ in (seed, learning rate)."""
    values = config_lib.to_json(config)
    del values["seed"], values["optimizer"]["learning_rate"]
    return values


def check_group(configs) -> list[config_lib.TrainConfig]:
    """The typed configs, after checking they differ only in seed and learning rate."""
    typed = [
        c if isinstance(c, config_lib.TrainConfig) else config_lib.from_config_dict(c)
        for c in configs
    ]
    if not typed:
        raise ValueError("train_group needs at least one config.")
    first = _shared(typed[0])
    for i, config in enumerate(typed[1:], 1):
        other = _shared(config)
        differ = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if differ:
            raise ValueError(
                f"train_group: config {i} differs from config 0 in {differ}; a group's runs may "
                "differ only in seed and optimizer.learning_rate. Train the others separately."
            )
    mesh = typed[0].mesh
    sharded = mesh.data not in (1, -1) or max(mesh.fsdp, mesh.tensor, mesh.expert) > 1
    if sharded or typed[0].distributed or jax.process_count() > 1:
        raise ValueError(
            f"train_group runs on one device, got mesh {mesh} (distributed="
            f"{typed[0].distributed}); use train_and_evaluate to shard a run."
        )
    return typed


class StackedIterator:
    """The members' data iterators as one: batches stacked on a leading member axis.

    Saved by grain's checkpoint handler as JSON bytes holding every member's state.
    """

    def __init__(self, iterators):
        self.iterators = iterators

    def __next__(self):
        return jax.tree.map(lambda *rows: np.stack(rows), *[next(it) for it in self.iterators])

    def get_state(self) -> bytes:
        return json.dumps([it.get_state() for it in self.iterators]).encode()

    def set_state(self, state: bytes) -> None:
        for it, member in zip(self.iterators, json.loads(state), strict=True):
            it.set_state(member)

    def start_prefetch(self) -> None:
        """Nothing to start: members read without prefetch threads."""


def _write_json(path: str, values: dict) -> None:
    """Written whole or not at all (a finished run is one with a readable results.json)."""
    with open(path + ".tmp", "w") as f:
        json.dump(values, f, indent=2)
    os.replace(path + ".tmp", path)


def _check_membership(group_dir: str, workdirs, configs) -> None:
    """Refuses to resume a group's checkpoint for other members or configs."""
    path = os.path.join(group_dir, "members.json")
    members = [
        # Relative, so a moved or copied directory of runs still resumes.
        {"workdir": os.path.relpath(w, group_dir), "config": config_lib.to_json(c)}
        for w, c in zip(workdirs, configs, strict=True)
    ]
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != members:
                raise ValueError(
                    f"{group_dir} holds a group of other runs or configs; use a new directory "
                    "or delete it."
                )
    else:
        os.makedirs(group_dir, exist_ok=True)
        _write_json(path, members)


def _first_non_finite_step(records) -> int | None:
    """The first logged step whose loss or gradient norm is NaN or Inf (None: none)."""
    for record in records:
        watched = [record.get(k, 0.0) for k in ("train/loss", "train/grad_norm")]
        if not np.all(np.isfinite(watched)):
            return record["step"]
    return None


def _warn_of_divergence(done, values, workdirs, diverged: set) -> None:
    """One warning per member whose loss or gradient norm went NaN or Inf.

    A vmapped member cannot stop alone: it trains on as NaN, its checkpoints (shared with the
    group) hold that state, and its results.json records `train/diverged_at_step`, so the
    suite counts it as diverged. Train it alone to stop at the divergence.
    """
    finite = np.isfinite(values["train/loss"]) & np.isfinite(values["train/grad_norm"])
    for i in np.flatnonzero(~finite):
        if i not in diverged:
            diverged.add(i)
            logging.warning("%s diverged by step %d; it trains on as NaN.", workdirs[i], done)


def train_group(
    configs,
    workdirs,
    group_dir: str,
    *,
    task: data.Task | None = None,
    stop_after_steps: int | None = None,
) -> list[dict[str, float]]:
    """Trains runs that differ only in seed and learning rate as one vmapped program.

    Returns each member's final metrics ({} for all if stopped by SIGTERM; rerun to continue).

    Args:
      configs: ConfigDicts or TrainConfigs, equal but for `seed` and `optimizer.learning_rate`.
      workdirs: one per config: its config.json, metrics.jsonl and results.json go there.
      group_dir: the group's checkpoints (the stacked state and the data iterators).
      task: the configs' task, already loaded (as for train_and_evaluate).
      stop_after_steps: stop with a checkpoint after this many steps of this call, as a
        preemption would; rerunning continues the group.
    """
    with trainer.Preemption() as preemption:
        return _train_group(configs, workdirs, group_dir, preemption, task, stop_after_steps)


def _train_group(configs, workdirs, group_dir, preemption, task, stop_after_steps):
    if len(configs) != len(workdirs):
        raise ValueError(
            f"train_group: {len(configs)} configs but {len(workdirs)} workdirs; give one each."
        )
    configs = check_group(configs)
    config = configs[0]
    task = task or config_lib.load_task(config)
    model_config = config_lib.model_config_for(config, task)
    for workdir, member in zip(workdirs, configs, strict=True):
        resume.check_config(workdir, member)
    _check_membership(group_dir, workdirs, configs)
    for workdir, member in zip(workdirs, configs, strict=True):
        os.makedirs(workdir, exist_ok=True)
        _write_json(os.path.join(workdir, "config.json"), config_lib.to_json(member))
    seeds = jnp.array([c.seed for c in configs], jnp.int32)
    peaks = jnp.array([c.optimizer.learning_rate for c in configs], jnp.float32)
    num_steps, opt_config = config.num_steps, config.optimizer

    def build(seed):
        # nnx.Rngs(int) seeds with jax.random.key(int): a member equals its run alone.
        return models.build(model_config, rngs=nnx.Rngs(jax.random.key(seed)))

    def init(seed, peak):
        return step.initial_state(build(seed), optim.make_optimizer(opt_config, num_steps, peak))

    graphdef = nnx.graphdef(nnx.eval_shape(lambda: build(0)))

    def member_step(state, batch, peak):
        train_step = step.make_train_step(
            graphdef,
            optim.make_optimizer(opt_config, num_steps, peak),
            optim.learning_rate_schedule(opt_config, num_steps, peak),
            task.kind,
            opt_config.grad_accum_steps,
            moe_weights=model_config.moe_loss_weights(),
        )
        return train_step(state, batch)

    train_step = jax.jit(jax.vmap(member_step), donate_argnums=0)
    # Every member is evaluated on the same batch.
    eval_step = jax.jit(jax.vmap(step.make_eval_step(graphdef, task.kind), in_axes=(0, None)))

    def member_batches():
        return StackedIterator(
            [
                iter(task.pipeline("train", batch_size=config.batch_size, seed=c.seed, prefetch=0))
                for c in configs
            ]
        )

    batches = member_batches()
    checkpointer = checkpoint.Checkpointer(
        os.path.abspath(os.path.join(group_dir, "checkpoints")), keep=config.checkpoint.keep
    )
    had_checkpoints = bool(checkpointer.manager.all_steps())
    restored = checkpointer.restore_latest(jax.eval_shape(jax.vmap(init), seeds, peaks), batches)
    if restored is None:
        start, state = 0, jax.jit(jax.vmap(init))(seeds, peaks)
        if had_checkpoints:  # a failed restore may have moved the iterators: start afresh
            batches = member_batches()
    else:
        start, state = restored
        logging.info("Group %s resumed from step %d.", group_dir, start)
    writers = [
        metrics.MetricWriter(w, start_step=start, num_steps=num_steps, show_progress=i == 0)
        for i, w in enumerate(workdirs)
    ]

    def evaluate(split, limit):
        totals = None
        for batch in evaluation.eval_batches(task, split, config.batch_size, limit):
            sums = jax.device_get(eval_step(state, batch))
            totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
        count = np.maximum(totals["count"], 1.0)
        return [
            {f"{split}/loss": float(loss), f"{split}/accuracy": float(correct)}
            for loss, correct in zip(totals["loss_sum"] / count, totals["correct"] / count)
        ]

    def write(done, per_member):
        for writer, values in zip(writers, per_member, strict=True):
            writer.write(done, values)

    tokens_per_step = config.batch_size * task.seq_len
    eval_splits = tuple(s for s in ("validation", "test") if s in task.splits)
    done, diverged = start, set()
    timer, timed_steps = time.perf_counter(), 0
    for current in range(start, num_steps):
        state, step_metrics = train_step(state, next(batches), peaks)
        done, timed_steps = current + 1, timed_steps + 1
        if done % config.log_every == 0 or done == num_steps:
            values = jax.device_get(step_metrics)
            seconds = (time.perf_counter() - timer) / timed_steps
            shared = {
                "train/step_time_s": seconds,
                "train/tokens_per_s": tokens_per_step / seconds,
            }
            write(
                done,
                [{k: float(v[i]) for k, v in values.items()} | shared for i in range(len(configs))],
            )
            writers[0].progress(done, loss=float(values["train/loss"][0]))
            _warn_of_divergence(done, values, workdirs, diverged)
            timer, timed_steps = time.perf_counter(), 0
        if done % config.eval_every == 0 and done < num_steps:
            evaluated = evaluate(eval_splits[0], config.eval_batches)
            write(done, evaluated)
            writers[0].say(f"step {done}: " + " | ".join(map(metrics.formatted, evaluated)))
            timer = time.perf_counter()
        stop = preemption.requested or (
            stop_after_steps is not None and done - start >= stop_after_steps
        )
        if stop or done % config.checkpoint.every_steps == 0:
            checkpointer.save(done, state, batches)
            timer = time.perf_counter()
        if stop and done < num_steps:
            break
    results = [{} for _ in configs]
    if done == num_steps:
        if checkpointer.manager.latest_step() != num_steps:
            checkpointer.save(num_steps, state, batches)
        checkpointer.manager.wait_until_finished()
        for split in eval_splits:
            for member, values in zip(results, evaluate(split, config.final_eval_batches)):
                member |= values
        for member, writer in zip(results, writers, strict=True):
            member["train/steps"] = num_steps
            diverged_at = _first_non_finite_step(writer.records)
            if diverged_at is not None:
                member["train/diverged_at_step"] = diverged_at
        write(num_steps, results)
        for workdir, member in zip(workdirs, results, strict=True):
            _write_json(os.path.join(workdir, "results.json"), member)
    checkpointer.close()
    for writer in writers:
        writer.close()
    return results
