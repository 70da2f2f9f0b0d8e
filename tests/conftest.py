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

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops every compiled program after each test module.

  Each live XLA:CPU executable holds ~6 memory mappings of JIT-compiled code, and one
  xdist worker runs ~450 tests' worth of programs: late in the suite a worker passed
  Linux's vm.max_map_count (65,530), after which LLVM's next mmap fails and the worker
  dies natively (a segfault or abort inside compile or cache (de)serialisation, seen
  in test_attack_eval and test_zoo at 81-89% of the suite). The persistent cache above
  makes recompiling a program another module needs again cheap.
  """
  yield
  jax.clear_caches()
  gc.collect()
