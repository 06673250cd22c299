"""Training: the loop, optimizer, mesh and sharding, checkpoints, metrics, losses."""

from attention_jax.train.config import TrainConfig, from_config_dict
from attention_jax.train.evaluation import evaluate
from attention_jax.train.loading import load_trained
from attention_jax.train.losses import next_token_loss
from attention_jax.train.trainer import Diverged, train_and_evaluate

__all__ = [
    "Diverged",
    "TrainConfig",
    "evaluate",
    "from_config_dict",
    "load_trained",
    "next_token_loss",
    "train_and_evaluate",
]
