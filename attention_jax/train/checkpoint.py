"""Checkpoints with orbax: model, optimizer and data-iterator state saved together.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-write leaves no step that looks finished. A step that is there but cannot be read (files
lost or truncated) is renamed `<step>.unreadable` (kept for inspection, out of the way of the
step's next save) with a warning, and the one before it is used. A readable step whose arrays do
not match the run's state (the config changed) stops the run instead: nothing is set aside.
"""

import logging

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from attention_jax.train import hosts


def _key_name(key) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _stored_shape(x) -> tuple[int, ...]:
    # Typed PRNG keys are stored as their raw key data, which has trailing dimensions.
    if jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
        return tuple(jax.eval_shape(jax.random.key_data, x).shape)
    return tuple(x.shape)


def state_shapes(abstract_state) -> dict[str, tuple[int, ...]]:
    """Array name (orbax's dotted path) -> stored shape, for a state or its abstract structure."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    return {".".join(_key_name(k) for k in path): _stored_shape(x) for path, x in flat}


def _check_writable(directory: epath.Path) -> None:
    """Fails at once on a directory the run cannot write (orbax would wait minutes first)."""
    probe = directory / ".writable"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"Checkpoints cannot be written to {directory} ({e}); make it writable or train "
            "in another workdir."
        ) from e


class Checkpointer:
    """Keeps the last `keep` checkpoints and restores the newest readable one."""

    def __init__(self, directory, *, keep: int, read_only: bool = False):
        self.directory = epath.Path(directory)
        if not read_only and jax.process_index() == 0:
            _check_writable(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, data_iterator) -> None:
        """Saves in the background (the next step overlaps the write)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
        )
        self.manager.save(step, args=args, force=True)

    def _saved_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
        with ocp.StandardCheckpointer() as reader:
            metadata = reader.metadata(self.directory / str(step) / "state").item_metadata
        shapes = {leaf.name: tuple(leaf.shape) for leaf in jax.tree.leaves(metadata)}
        if not shapes:  # orbax reports missing files as empty metadata, with a warning
            raise FileNotFoundError(f"no readable state metadata in step {step}")
        return shapes

    def restore_latest(self, abstract_state, data_iterator):
        """(step, state) of the newest readable checkpoint, the iterator moved to match; else None.

        Args:
          abstract_state: the state's structure as ShapeDtypeStructs with shardings, so arrays
            come back already placed on the mesh.
          data_iterator: a grain iterator whose state is overwritten by the saved one.

        Raises:
          ValueError: the newest readable checkpoint holds differently shaped state.
        """
        expected = state_shapes(abstract_state)
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                saved, error = self._saved_shapes(step), None
            except Exception as e:  # noqa: BLE001 - unreadable metadata, whatever the cause
                saved, error = None, e
            if hosts.every_host(error is None) and saved != expected:
                differ = sorted(set(saved.items()) ^ set(expected.items()))[:4]
                raise ValueError(
                    f"The checkpoint at step {step} in {self.directory} holds different arrays "
                    f"than this config's model and optimizer (first differences: {differ}). "
                    f"Train in a new workdir, or restore the config that wrote it."
                )
            if error is None:
                args = ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=grain.checkpoint.CheckpointRestore(data_iterator),
                )
                try:
                    restored = self.manager.restore(step, args=args)
                except Exception as e:  # noqa: BLE001 - any unreadable step is skipped alike
                    error = e
            if hosts.every_host(error is None):
                return step, restored["state"]
            logging.warning(
                "Checkpoint at step %d in %s cannot be read (%s); it is renamed %d.unreadable "
                "and an earlier one is tried.",
                step,
                self.directory,
                error or "unreadable on another host",
                step,
            )
            self._set_aside(step)
        return None

    def restore_state(self, abstract_state, step: int | None = None):
        """The training state saved at `step` (default: the newest), without the data iterator."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}; train the run first.")
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint of step {step} in {self.directory} (it has "
                f"{sorted(self.manager.all_steps())}); rerun the training command to rebuild it."
            )
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        return self.manager.restore(step, args=args)["state"]

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            path = self.directory / str(step)
            path.rename(path.parent / f"{step}.unreadable")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
