"""Which accelerator a call runs on, as a value the dispatch rules take (so tests can pass any).

`detect()` reads the default backend. The rules in `dispatch.py` never call it themselves: they
take a `Platform`, so every platform x argument combination is testable on a CPU.
`interpret_kernels()` runs the Pallas kernels in Pallas's interpreter on any platform: slow, but
the same kernel code, which is how the CPU tests check them against `dense`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class Platform:
    """An accelerator, as far as choosing an attention implementation goes.

    Attributes:
      name: 'cpu', 'gpu' or 'tpu' (jax.default_backend()).
      vendor: 'nvidia' or 'amd' for GPUs, else ''.
      compute_capability: (major, minor) of an NVIDIA GPU, e.g. (9, 0) on H100/H200; else None.
      interpret: run Pallas kernels in interpret mode (`interpret_kernels()`), which lets the
        Pallas implementations run on any platform.
    """

    name: str
    vendor: str = ""
    compute_capability: tuple[int, int] | None = None
    interpret: bool = False

    @property
    def nvidia(self) -> bool:
        return self.name == "gpu" and self.vendor == "nvidia"

    def __str__(self) -> str:
        text = self.name if not self.vendor else f"{self.vendor} {self.name}"
        if self.compute_capability is not None:
            text += " sm{}{}".format(*self.compute_capability)
        return text + (" (Pallas interpret mode)" if self.interpret else "")


CPU = Platform("cpu")
_INTERPRET = contextvars.ContextVar("attention_jax_interpret_kernels", default=False)


@contextlib.contextmanager
def interpret_kernels():
    """Within it, Pallas implementations run in interpret mode, on any platform (tests, debugging).

    with ops.interpret_kernels():
        out = ops.flash(q, k, v, is_causal=True, implementation="pallas_tpu")
    """
    token = _INTERPRET.set(True)
    try:
        yield
    finally:
        _INTERPRET.reset(token)


def detect() -> Platform:
    """The platform jitted code runs on by default, with the interpret-mode switch applied."""
    name = jax.default_backend()
    vendor, capability = "", None
    if name == "gpu":
        device = jax.devices()[0]
        version = str(getattr(device.client, "platform_version", "")).lower()
        vendor = "amd" if "rocm" in version or "hip" in version else "nvidia"
        given = getattr(device, "compute_capability", None)
        if given:
            major, minor = str(given).split(".")[:2]
            capability = (int(major), int(minor))
    return Platform(name, vendor, capability, _INTERPRET.get())
