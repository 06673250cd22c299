"""Attention kinds by name, so configs can say `kind='flash'` and swap variants with one string."""

from __future__ import annotations

from collections.abc import Callable

from attention_jax.ops.dense import dense
from attention_jax.ops.flash import flash

_KINDS: dict[str, Callable] = {}


def register(name: str, op: Callable) -> Callable:
    """Adds an op under `name`; the op must follow the contract of `dense`."""
    if name in _KINDS and _KINDS[name] is not op:
        raise ValueError(f"attention kind {name!r} is already registered to {_KINDS[name]}.")
    _KINDS[name] = op
    return op


def names() -> tuple[str, ...]:
    """All registered kind names, sorted."""
    return tuple(sorted(_KINDS))


def get(kind: str) -> Callable:
    """The op registered as `kind`."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown attention kind {kind!r}; choose one of {', '.join(names())}."
        ) from None


def attention(query, key, value, bias=None, mask=None, *, kind: str = "dense", **kwargs):
    """Runs the op registered as `kind` with the shared calling convention."""
    return get(kind)(query, key, value, bias, mask, **kwargs)


register("dense", dense)
register("flash", flash)
