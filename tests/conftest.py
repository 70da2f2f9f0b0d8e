"""Test setup: four fake CPU devices so every data-parallel path runs in CI."""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("MPLBACKEND", "Agg")
# Many tests (and the processes the kill/resume and multi-host tests launch) compile the
# same programs: a persistent compilation cache, shared through the environment, compiles
# each once per machine. Entries are keyed by the program and the jax version.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"rsec-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_threefry_partitionable", True)
