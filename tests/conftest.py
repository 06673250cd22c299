"""Test setup shared by every test: eight host CPU devices for the multi-device tests."""

import os

# XLA reads this when the backend starts, so it must be set before any test imports jax.
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=8"])
)
