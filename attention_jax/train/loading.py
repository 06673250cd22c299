"""load_trained(workdir): the model a training run left behind, for analysis and notebooks."""

import json

import jax
from etils import epath
from flax import nnx

from attention_jax import models
from attention_jax.train import checkpoint, optim, step
from attention_jax.train import config as config_lib


def load_trained(workdir: str, *, step_number: int | None = None):
    """(model, task, config) of the run in `workdir`, at its final (or a given) checkpoint.

    The model is rebuilt from the run's config.json and its parameters restored on the default
    device; call `model.eval()` or pass deterministic=True for evaluation. A finished run loads
    the step its results.json reports, never an older one; an unfinished run its newest.
    """
    path = epath.Path(workdir)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{workdir} has no config.json; is it a training workdir?")
    config = config_lib.from_config_dict(json.loads(config_file.read_text()))
    task = config_lib.load_task(config)
    model_config = config_lib.model_config_for(config, task)
    tx = optim.make_optimizer(config.optimizer, config.num_steps)

    def build():
        return models.build(model_config, rngs=nnx.Rngs(config.seed))

    abstract = jax.eval_shape(lambda: step.initial_state(build(), tx))
    results_file = path / "results.json"
    if step_number is None and results_file.exists():
        step_number = int(json.loads(results_file.read_text())["train/steps"])
    checkpointer = checkpoint.Checkpointer(
        path / "checkpoints", keep=config.checkpoint.keep, read_only=True
    )
    try:
        state = checkpointer.restore_state(abstract, step_number)
    finally:
        checkpointer.close()
    model = build()
    nnx.update(model, state["params"], state["rest"])
    return model, task, config
