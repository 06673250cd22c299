"""The TFDS builder shared by the generated tasks: parameters in the config, splits from a seed."""

import dataclasses
import numbers
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from attention_jax.data import generation

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class TaskConfig(tfds.core.BuilderConfig):
    """A size of a generated task: split sizes and seed; subclasses add the task's parameters."""

    seed: int = 0
    num_train: int = 20_000
    num_validation: int = 1_000
    num_test: int = 1_000

    def task_params(self) -> dict:
        """The task's own parameters (the fields a subclass adds), as keyword arguments."""
        base = {f.name for f in dataclasses.fields(TaskConfig)}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in base
        }

    def split_sizes(self) -> dict[str, int]:
        # Drawn in this order, so the held-out splits do not change with num_train.
        return {"test": self.num_test, "validation": self.num_validation, "train": self.num_train}


class TaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Generates every split of a task locally (nothing is downloaded) from its config's seed.

    Subclasses set BUILDER_CONFIGS, `check_params`, `features()` and `example_fn()`. `validate`
    runs before anything is generated or written, so bad parameters fail at once.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    DESCRIPTION = ""
    CITATION = ""

    @staticmethod
    def check_params(**params) -> None:
        """Raises ValueError for task parameters no example can satisfy."""
        raise NotImplementedError

    @classmethod
    def validate(cls, config: TaskConfig) -> None:
        """Raises ValueError for a config that cannot be generated."""
        # TFDS cannot write an empty split, and NumPy takes no negative seed.
        lowest = {"num_train": 1, "num_validation": 1, "num_test": 1, "seed": 0}
        for name, low in lowest.items():
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(
                    f"{cls.name}: {name} must be >= {low} (an integer); got {value!r}."
                )
        cls.check_params(**config.task_params())

    def features(self) -> tfds.features.FeaturesDict:
        raise NotImplementedError

    def example_fn(self) -> Callable[[np.random.Generator], generation.Example]:
        """A function drawing one example of this config from a NumPy generator."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        params = ", ".join(f"{k}={v}" for k, v in config.task_params().items())
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DESCRIPTION}\nParameters: {params}, seed={config.seed}.",
            features=self.features(),
            citation=self.CITATION,
            # Stored in the order drawn; pipelines shuffle with their own seed.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        self.validate(config)
        splits = generation.unique_splits(
            self.example_fn(),
            config.seed,
            config.split_sizes(),
            description=f"{self.name}/{config.name}",
        )
        return {split: self._generate_examples(examples) for split, examples in splits.items()}

    def _generate_examples(self, examples):
        yield from enumerate(examples)


def lm_features(seq_len: int) -> tfds.features.FeaturesDict:
    """Fixed-length next-token tasks: inputs, the target at each position, where loss counts."""
    return tfds.features.FeaturesDict(
        {
            "inputs": tfds.features.Tensor(shape=(seq_len,), dtype=np.int32),
            "targets": tfds.features.Tensor(shape=(seq_len,), dtype=np.int32),
            "loss_mask": tfds.features.Tensor(shape=(seq_len,), dtype=np.bool_),
        }
    )


def with_overrides(config: TaskConfig, **overrides) -> TaskConfig:
    """`config` with some parameters changed, named after them (`small_s128_kv8-seed1`)."""
    base_fields = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    fields = {f.name for f in dataclasses.fields(config)} - base_fields
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"{type(config).__name__}: unknown parameters {unknown}; known: {sorted(fields)}."
        )
    changed = {k: v for k, v in sorted(overrides.items()) if getattr(config, k) != v}
    if not changed:
        return config
    name = "-".join([config.name, *(f"{k}{v}" for k, v in changed.items())])
    return dataclasses.replace(config, name=name, **changed)
