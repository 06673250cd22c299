"""Checkpoints with orbax: model, optimizer and data-iterator state saved together.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-write leaves no step that looks finished. A step that is there but cannot be read (files
lost or truncated) is renamed `<step>.unreadable` (kept for inspection, out of the way of the
step's next save) with a warning, and the one before it is used.
"""

import logging

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils


class Checkpointer:
    """Keeps the last `keep` checkpoints and restores the newest readable one."""

    def __init__(self, directory: str, *, keep: int):
        self.manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def save(self, step: int, state, data_iterator) -> None:
        """Saves in the background (the next step overlaps the write)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
        )
        self.manager.save(step, args=args, force=True)

    def restore_latest(self, abstract_state, data_iterator):
        """(step, state) of the newest readable checkpoint, the iterator moved to match; else None.

        Args:
          abstract_state: the state's structure as ShapeDtypeStructs with shardings, so arrays
            come back already placed on the mesh.
          data_iterator: a grain iterator whose state is overwritten by the saved one.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            args = ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(data_iterator),
            )
            try:
                restored = self.manager.restore(step, args=args)
            except Exception as error:  # noqa: BLE001 - any unreadable step is skipped alike
                logging.warning(
                    "Checkpoint at step %d in %s cannot be read (%s: %s); it is renamed "
                    "%d.unreadable and an earlier one is tried.",
                    step,
                    self.manager.directory,
                    type(error).__name__,
                    error,
                    step,
                )
                self._set_aside(step)
                continue
            return step, restored["state"]
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            path = epath.Path(self.manager.directory) / str(step)
            path.rename(path.parent / f"{step}.unreadable")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
