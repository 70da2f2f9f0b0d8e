"""Data parallelism: one 1-D mesh over every device, batch sharded along axis 'batch'.

Everything hot is `jax.jit` over this mesh: parameters replicated, batches split along
their leading axis. Because jit sees the global batch, reductions (losses, BatchNorm
statistics) are global without hand-written `pmean`s, and the same code runs on one CPU,
four fake CPU devices, or many hosts joined by `jax.distributed`.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXIS = "batch"


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named 'batch' over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (BATCH_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Axis `axis` (the batch axis) split over the mesh; other axes whole."""
  return NamedSharding(mesh, P(*([None] * axis), BATCH_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f"{name}={batch_size} must be divisible by the number of devices ({n})")


def shard_batch(tree: Any, mesh: Mesh, axis: int = 0) -> Any:
  """Places a host batch (global, identical on every process) on the mesh, split on `axis`.

  Single-process: a plain device_put. Multi-process: each process keeps only the rows
  its devices own, so the global array is the same as in the single-process case.
  """
  return _put(tree, batch_sharded(mesh, axis))


def _put(tree: Any, sharding: NamedSharding) -> Any:
  """device_put of a value every process holds whole (multi-process: each keeps its part)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(put, tree)


def process_rows(global_batch: int) -> slice:
  """The rows of a global batch that this process reads (contiguous, in process order)."""
  n = jax.process_count()
  if global_batch % n:
    raise ValueError(f"global batch {global_batch} must be divisible by the process count {n}")
  per = global_batch // n
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def shard_local_batch(tree: Any, mesh: Mesh, axis: int = 0) -> Any:
  """Builds global arrays from per-process shards (each host read only its `process_rows`)."""
  sharding = batch_sharded(mesh, axis)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree on every device of the mesh (parameters, optimizer state)."""
  return _put(tree, replicated(mesh))


def map_batches(fn: Any, arrays: dict[str, np.ndarray], batch_size: int,
                mesh: Mesh | None = None) -> dict[str, np.ndarray]:
  """Runs `fn(batch) -> dict of per-row arrays [batch_size, ...]` over `arrays` in chunks.

  Every chunk has exactly `batch_size` rows (the last one is padded with its final row and
  the padding cut from the outputs), so a jitted `fn` compiles once. With a mesh, each
  chunk is sharded along its rows. Returns the outputs concatenated on host, [N, ...].
  """
  n = len(next(iter(arrays.values())))
  if n == 0:
    raise ValueError("map_batches needs at least one row, got empty arrays")
  if mesh is not None:
    check_batch_divisible(batch_size, mesh)
  outs: dict[str, list[np.ndarray]] = {}
  for start in range(0, n, batch_size):
    keep = min(batch_size, n - start)
    rows = np.minimum(np.arange(start, start + batch_size), n - 1)
    batch = {k: np.asarray(v)[rows] for k, v in arrays.items()}
    if mesh is not None:
      batch = shard_batch(batch, mesh)
    for k, v in fn(batch).items():
      outs.setdefault(k, []).append(np.asarray(v)[:keep])
  return {k: np.concatenate(v) for k, v in outs.items()}
