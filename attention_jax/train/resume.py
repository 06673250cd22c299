"""Whether a workdir may be resumed by a config: its stored config.json against the new one.

A workdir holds one run. Rerunning it continues that run, so the config must be the one that
started it: another learning rate or attention kind would continue the old trajectory under the
new name, and the tables would report it as the new setting. Settings that change no step's
computation may differ when named in `allow_changes`; any other difference stops the run before
anything in the workdir is written.
"""

import json

from etils import epath

from attention_jax.train import config as config_lib

# What a resumed run may change when asked to: how long it goes on, how often it logs,
# evaluates and saves, where its data lives and which devices run it. None of these changes
# what a step computes, except that num_steps re-derives a decaying schedule for the new
# length (a cosine rate jumps at the resumed step); CHANGE_NOTES says so in the log.
CHANGEABLE = (
    "num_steps",
    "log_every",
    "eval_every",
    "eval_batches",
    "final_eval_batches",
    "checkpoint",
    "data_dir",
    "mesh",
    "distributed",
)
CHANGE_NOTES = {
    "num_steps": "the learning-rate schedule is re-derived for the new length from here on",
}


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(stored: dict, new: dict) -> dict[str, tuple]:
    """Dotted key -> (stored value, new value) for every setting that differs (missing: None)."""
    old, now = _flatten(stored), _flatten(new)
    return {
        k: (old.get(k), now.get(k))
        for k in sorted(old.keys() | now.keys())
        if old.get(k) != now.get(k)
    }


def _covered(key: str, names) -> bool:
    return any(key == name or key.startswith(name + ".") for name in names)


def check_allow_changes(allow_changes) -> tuple[str, ...]:
    """The names, each checked to be a setting a resumed run may change."""
    names = tuple(allow_changes or ())
    refused = [n for n in names if not _covered(n, CHANGEABLE)]
    if refused:
        raise ValueError(
            f"allow_changes: {refused} change what the run computes, so a resumed run cannot "
            f"take them; train in a new workdir. Changeable on resume: {list(CHANGEABLE)}."
        )
    return names


def check_config(workdir, config: config_lib.TrainConfig, allow_changes=()) -> dict:
    """The differences to the stored config that `allow_changes` permits ({} for a new run).

    Raises:
      ValueError: the workdir's config.json differs in a setting not in `allow_changes`; the
        message lists each with both values and says how to proceed.
    """
    names = check_allow_changes(allow_changes)
    stored_file = epath.Path(workdir) / "config.json"
    if not stored_file.exists():
        return {}
    changed = differences(json.loads(stored_file.read_text()), config_lib.to_json(config))
    refused = {k: v for k, v in changed.items() if not _covered(k, names)}
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        changeable = [k for k in refused if _covered(k, CHANGEABLE)]
        hint = (
            f" To resume with {changeable} changed, allow it (--allow_changes="
            f"{','.join(changeable)}, or train_and_evaluate(..., allow_changes=...))."
            if changeable
            else ""
        )
        raise ValueError(
            f"{workdir} holds a run of another config ({listed}). A resumed run must keep its "
            f"config: train in a new workdir, or rerun with the stored config.{hint}"
        )
    return changed
