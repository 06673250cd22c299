"""Agreement across hosts: every host must take the same branch, or collectives hang."""

import jax
import numpy as np
from jax.experimental import multihost_utils


def every_host(flag: bool) -> bool:
    """True only if `flag` holds on every host."""
    if jax.process_count() == 1:
        return flag
    return bool(np.all(multihost_utils.process_allgather(np.asarray(flag))))


def any_host(flag: bool) -> bool:
    """True if `flag` holds on at least one host."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
