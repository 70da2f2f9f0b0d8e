"""Test setup: four fake CPU devices so every data-parallel path runs in CI."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_threefry_partitionable", True)
