"""Data parallelism: one 1-D mesh over every device, batch sharded along axis 'batch'.

Everything hot is `jax.jit` over this mesh: parameters replicated, batches split along
their leading axis. Because jit sees the global batch, reductions (losses, BatchNorm
statistics) are global without hand-written `pmean`s, and the same code runs on one CPU,
four fake CPU devices, or many hosts joined by `jax.distributed`.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rsec import checks

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
  # A zero, negative or fractional batch would give an empty or reversed slice silently.
  checks.check_positive_int("global batch", global_batch)
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


def device_multiple(batch_size: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh's device count that is >= batch_size."""
  n = mesh.devices.size
  return -(-batch_size // n) * n


def predict_batches(fn: Any, arrays: tuple[np.ndarray, ...], batch_size: int,
                    mesh: Mesh | None = None) -> np.ndarray:
  """`fn(*batch) -> [B, ...]` over row-aligned host arrays, data-parallel: the one padded
  batched-inference helper (`map_batches` with the batch rounded up to a multiple of the
  device count). Returns the outputs [N, ...] on host."""
  mesh = mesh or data_mesh()
  named = {str(i): a for i, a in enumerate(arrays)}
  out = map_batches(lambda b: {"y": fn(*(b[str(i)] for i in range(len(arrays))))}, named,
                    device_multiple(batch_size, mesh), mesh)
  return out["y"]


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


# ---------------------------------------------------------------------------------------
# Deterministic reductions ("virtual shards")
#
# XLA's SPMD partitioner sums per-device partials in an order that depends on the device
# count and on the all-reduce implementation (in-process, gloo, NCCL), so the fast path
# agrees across layouts only to float rounding. The deterministic path splits every global
# batch into a fixed number V of virtual shards (contiguous row blocks, V a multiple of the
# device count), computes every cross-row quantity as one partial per virtual shard, and
# adds the V partials in one fixed order on every device: all_gather (a copy, hence exact)
# followed by an unrolled left-to-right sum. The result then depends on V only, not on
# how the V shards are laid out on devices or hosts.
#
# Each device runs its V/D shards one at a time in a loop (`map_local_shards`), not under
# vmap: XLA:CPU picks its reduction and matmul kernels by shape, and a [V/D, rows, ...]
# batch compiles to different kernels for different V/D (measured: BatchNorm-style sums
# over [V/D, 5, 2, 2, 64] differ in the last bit between V/D = 1, 2 and 4, and so does a
# [25, 576] x [576, 100] matmul batched over 1 vs 2 shards). A loop body sees one shard of
# the same shape on every layout, so it runs the same kernels.

def check_virtual_shards(virtual_shards: int, batch_size: int, num_devices: int,
                         name: str = "training.virtual_shards") -> None:
  """ValueError unless `virtual_shards` is 0 (off) or a multiple of `num_devices` that
  divides `batch_size`."""
  v = virtual_shards
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
    raise ValueError(f"{name}={v!r} must be 0 (off) or a positive integer")
  if v == 0:
    return
  if v % num_devices:
    raise ValueError(f"{name}={v} must be a multiple of the number of devices "
                     f"({num_devices})")
  if batch_size % v:
    raise ValueError(f"{name}={v} must divide the global batch size ({batch_size})")


def ordered_sum(stacked: Any) -> Any:
  """Sum over the leading axis of every leaf in a fixed left-to-right order.

  An unrolled chain of adds: XLA does not reassociate floating-point adds, whereas a
  `reduce` may be split, vectorised or tree-reduced differently per program.
  """
  def one(x):
    out = x[0]
    for i in range(1, x.shape[0]):
      out = out + x[i]
    return out
  return jax.tree.map(one, stacked)


def det_sum_local_shards(local: Any) -> Any:
  """Inside `shard_map` over 'batch': the exact-order sum of per-virtual-shard partials.

  `local` leaves are [V/D, ...] (this device's virtual shards, in order); returns the sum
  over all V shards of all devices (all_gather, then `ordered_sum`), the same bits on
  every device and every layout.
  """
  gathered = jax.tree.map(lambda x: jax.lax.all_gather(x, BATCH_AXIS, tiled=True), local)
  return ordered_sum(gathered)


def map_local_shards(fn: Any, xs: Any, *consts: Any) -> Any:
  """`fn(x, *consts)` over the leading axis of `xs` ([V/D, ...] leaves), one shard per
  loop iteration; outputs stacked [V/D, ...].

  Makes the loop body (one shard) the same program on every layout:
  - the trip count goes through an optimization barrier, so XLA can neither unroll the
    loop nor inline a one-trip loop into its surroundings;
  - `consts` (parameters, statistics: everything `fn` reads besides its shard; `fn` must
    not close over traced values) pass through a barrier together with the loop index,
    so XLA cannot hoist computations on them out of the body. Hoisted code is fused with
    layout-dependent neighbours, and XLA:CPU contracts a*b+c into a fused multiply-add
    only inside one fused kernel, so fusion decides the rounding.
  """
  n = jax.tree.leaves(xs)[0].shape[0]
  first = jax.tree.map(lambda x: x[0], xs)
  out = jax.eval_shape(fn, first, *consts)
  init = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), out)

  def body(i, acc):
    i_pinned, cs = jax.lax.optimization_barrier((i, consts))
    x = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i_pinned, keepdims=False), xs)
    y = fn(x, *cs)
    return jax.tree.map(lambda a, v: jax.lax.dynamic_update_index_in_dim(a, v, i, 0), acc, y)
  trips = jax.lax.optimization_barrier(jnp.int32(n))
  return jax.lax.fori_loop(0, trips, body, init)


class BatchStatsPlan:
  """What BatchNorm layers do inside one deterministic per-shard forward pass.

  `stats[i]` ([2, C] sums of x and x^2 over the whole global batch, or None while probing)
  normalises the i-th BatchNorm call; each call appends its own shard's partial sums to
  `partials`. The train step computes `stats` layer by layer from the partials.
  """

  def __init__(self, stats: list | None, num_shards: int):
    self.stats, self.num_shards, self.partials = stats, num_shards, []


_PLAN: contextvars.ContextVar[BatchStatsPlan | None] = contextvars.ContextVar(
    "rsec_batch_stats_plan", default=None)


@contextlib.contextmanager
def batch_stats_plan(plan: BatchStatsPlan):
  """Trace-time switch for `rsec.models.layers.BatchNorm` (see `BatchStatsPlan`)."""
  token = _PLAN.set(plan)
  try:
    yield plan
  finally:
    _PLAN.reset(token)


def current_batch_stats_plan() -> BatchStatsPlan | None:
  return _PLAN.get()
