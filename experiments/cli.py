"""What the entry points that train share: their --log_level, and config overrides checked.

--log_level keeps the progress bar and the metrics readable.

Orbax writes several INFO lines per checkpoint, and jax and TFDS a few per run: at the default
(warning) a run prints its progress bar, its evaluations and its summary, and problems stand
out as single WARNING or ERROR lines. --log_level=info brings every library's log back.
"""

import logging as std_logging
import sys

from absl import flags, logging

LOG_LEVEL = flags.DEFINE_enum(
    "log_level",
    "warning",
    ["debug", "info", "warning", "error"],
    "Level of this program's and its libraries' logs (orbax, jax, tfds); info shows each "
    "checkpoint write.",
)
# Loggers that are given the level themselves: a library that resets the root logger's level
# while it runs (as happens during a run) still does not bring their INFO lines back.
LIBRARY_LOGGERS = ("absl", "jax", "orbax", "tensorflow_datasets", "grain")


def _not_a_custom_config_notice(record: std_logging.LogRecord) -> bool:
    # TFDS warns "Using custom data configuration" on every load of a generated task, whose
    # configs are always custom (they carry its sizes): a warning that says nothing here.
    return not str(record.msg).startswith("Using custom data configuration")


def apply_log_level() -> None:
    """Sets the flag's level on absl (and the root logger) and on each library's logger."""
    logging.set_verbosity(LOG_LEVEL.value)
    level = getattr(std_logging, LOG_LEVEL.value.upper())
    for name in LIBRARY_LOGGERS:
        std_logging.getLogger(name).setLevel(level)
    if level > std_logging.INFO:
        std_logging.getLogger("absl").addFilter(_not_a_custom_config_notice)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with an override of a config key that does not exist as one line.

    ml_collections raises AttributeError for `--config.foo=1` while the flags are parsed, which
    absl would print as a traceback into its internals.
    """
    try:
        return flags.FLAGS(argv)
    except AttributeError as e:
        # ml_collections wraps a KeyError whose text is the quoted key, then any suggestion.
        cause = e.args[0].args[0] if e.args and isinstance(e.args[0], KeyError) else str(e)
        key, *suggestion = str(cause).splitlines()
        sys.exit(" ".join([f"--config: no setting {key} in this config.", *suggestion]))
