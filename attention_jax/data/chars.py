"""A character-level language-modelling corpus that needs no download: Python's own library source.

Every Python installation ships the source of its standard library, so the corpus is the same on
every machine with the same Python version; the config pins the minor version and the dataset
description records the exact version and a digest of the corpus, to compare across machines. Each
top-level `*.py` module of the standard library is one document; about a tenth of the modules (by
a hash of the file name) are held out, so no file contributes to two splits. Documents are cut
into chunks of at most `chunk_len` bytes. Tokens are bytes + 1 (0 stays free for padding).
"""

import dataclasses
import hashlib
import pathlib
import sys
import sysconfig
import zlib

import numpy as np
import tensorflow_datasets as tfds

from attention_jax.data import builder

PAD = 0
VOCAB_SIZE = 257  # 256 byte values shifted by one, plus padding
RUNNING_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def encode_bytes(data: bytes) -> np.ndarray:
    """Bytes to tokens (byte value + 1), int32."""
    return np.frombuffer(data, np.uint8).astype(np.int32) + 1


def decode_tokens(tokens: np.ndarray) -> str:
    """Tokens back to text; padding dropped."""
    tokens = np.asarray(tokens)
    return (tokens[tokens != PAD] - 1).astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def held_out_split(file_name: str, validation_percent: int, test_percent: int) -> str:
    """The split a module belongs to, decided by a hash of its name alone."""
    bucket = zlib.crc32(file_name.encode()) % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + validation_percent:
        return "validation"
    return "train"


def stdlib_modules(python_version: str) -> list[pathlib.Path]:
    """The top-level modules of the running Python's standard library, sorted by name."""
    if python_version != RUNNING_PYTHON:
        raise ValueError(
            f"chars: the corpus is pinned to Python {python_version}'s standard library, but this "
            f"is Python {RUNNING_PYTHON}; use the config 'py{RUNNING_PYTHON}' (a different corpus) "
            f"or run Python {python_version}."
        )
    return sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def corpus_digest(python_version: str) -> str:
    """sha256 over module names and contents: patch releases can differ within a minor version."""
    digest = hashlib.sha256()
    for path in stdlib_modules(python_version):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class CharsConfig(tfds.core.BuilderConfig):
    python_version: str = RUNNING_PYTHON
    chunk_len: int = 2048
    validation_percent: int = 5
    test_percent: int = 5


class Chars(tfds.core.GeneratorBasedBuilder):
    """Byte-level text of Python's standard library, split by module."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        CharsConfig(name=f"py{version}", python_version=version)
        for version in sorted({"3.10", "3.11", "3.12", "3.13", "3.14", RUNNING_PYTHON})
    ]
    DEFAULT_BUILDER_CONFIG_NAME = f"py{RUNNING_PYTHON}"

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{__doc__}\nBuilt from Python {sys.version.split()[0]}'s standard "
            f"library, corpus sha256 {corpus_digest(self.builder_config.python_version)}.",
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Tensor(shape=(None,), dtype=np.int32)}
            ),
            disable_shuffling=True,
        )

    @classmethod
    def validate(cls, config: CharsConfig) -> None:
        """Raises ValueError for a config that cannot be built on this Python."""
        if config.chunk_len < 2:
            raise ValueError(f"chars: chunk_len must be >= 2, got {config.chunk_len}.")
        held_out = config.validation_percent + config.test_percent
        if min(config.validation_percent, config.test_percent) < 0 or held_out >= 100:
            raise ValueError(
                f"chars: need validation_percent, test_percent >= 0 with a sum below 100; got "
                f"{config.validation_percent} and {config.test_percent}."
            )
        stdlib_modules(config.python_version)

    def _split_generators(self, dl_manager):
        config = self.builder_config
        self.validate(config)
        files = {split: [] for split in builder.SPLITS}
        for path in stdlib_modules(config.python_version):
            split = held_out_split(path.name, config.validation_percent, config.test_percent)
            files[split].append(path)
        return {split: self._generate_examples(paths) for split, paths in files.items()}

    def _generate_examples(self, paths):
        chunk_len = self.builder_config.chunk_len
        for path in paths:
            data = path.read_bytes()
            for start in range(0, len(data), chunk_len):
                yield (
                    f"{path.name}:{start}",
                    {"text": encode_bytes(data[start : start + chunk_len])},
                )
