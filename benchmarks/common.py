"""Shared benchmark helpers: interleaved timing and the CPU's measured matmul peak."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int = 5,
                     min_seconds: float = 1.0) -> dict[str, float]:
  """Median seconds per call of each fn, measured in alternation (fair on a shared CPU).

  Each fn must block until its work is done. Every fn is called once first (warm-up,
  compilation), then each round times each fn over at least `min_seconds`.
  """
  for f in fns.values():
    f()
  per_call: dict[str, list[float]] = {k: [] for k in fns}
  for _ in range(rounds):
    for name, f in fns.items():
      n, t0 = 0, time.perf_counter()
      while True:
        f()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
          break
      per_call[name].append(dt / n)
  return {k: statistics.median(v) for k, v in per_call.items()}


def matmul_peak_gflops(n: int = 2048, rounds: int = 5) -> float:
  """GFLOP/s of a jitted n x n float32 matmul on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  t = time_interleaved({"mm": lambda: f(a).block_until_ready()}, rounds=rounds)["mm"]
  return 2 * n ** 3 / t / 1e9


def compiled_flops(jitted, *args) -> float:
  """FLOPs XLA counts for one call of a jitted function (its cost analysis)."""
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  return float(cost.get("flops", float("nan")))
