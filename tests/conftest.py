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


def _mappings() -> tuple[int, int]:
  """(memory mappings of this process, the kernel's per-process limit); (0, 1) off Linux."""
  if not os.path.exists("/proc/self/maps"):
    return 0, 1
  with open("/proc/self/maps") as f:
    mapped = sum(1 for _ in f)
  with open("/proc/sys/vm/max_map_count") as f:
    return mapped, int(f.read())


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops every compiled program after a test module once the worker holds a quarter
  of the kernel's memory-mapping limit.

  Each live XLA:CPU executable holds ~6 memory mappings of JIT-compiled code, and one
  xdist worker runs half the suite: late in the suite a worker reached 47,795 mappings
  (Linux's vm.max_map_count is 65,530), and workers died natively there (a segfault or
  abort inside compile or cache (de)serialisation, in test_attack_eval and test_zoo at
  81-89% of the suite, never in isolation). Releasing only past the threshold keeps
  the programs the next modules reuse (releasing after every module cost minutes of
  recompiling small programs); the persistent cache makes the rest cheap.
  """
  yield
  mapped, limit = _mappings()
  if mapped > limit // 4:
    jax.clear_caches()
    gc.collect()
    mapped, limit = _mappings()
    if mapped > limit // 2:   # a tripwire: a clear error instead of a native crash
      pytest.fail(f"{mapped} memory mappings after releasing compiled programs (the "
                  f"limit is {limit}): something holds compiled programs across modules")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
  # After a worker dies natively, end the run with its report: pytest-xdist 3.8 with
  # --dist loadfile can deadlock restarting a crashed worker (its issues 784 and 1378;
  # one crash became a CI timeout). An explicit --max-worker-restart wins.
  if hasattr(config.option, "maxworkerrestart") and config.option.maxworkerrestart is None:
    config.option.maxworkerrestart = "0"
