"""The training loop: chunks of compiled steps, resumable, logged, checkpointed.

Data order and randomness are functions of the global step: step s reads batch
`s % steps_per_epoch` of the permutation for epoch `s // steps_per_epoch` (NumPy PCG64
seeded with (seed, epoch)) and uses PRNG key `fold_in(key, s)`. A run resumed from a
checkpoint at step s therefore continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Mapping

import jax
import numpy as np
from tqdm.auto import tqdm

from rsec import parallel
from rsec.training.checkpoint import Checkpointer
from rsec.training.metrics import MetricWriter
from rsec.training.state import TrainState
from rsec.training.steps import make_eval_step, make_multi_step, make_train_step


class NonFiniteError(RuntimeError):
  """Training produced a non-finite loss or gradient."""


@dataclasses.dataclass
class FitStats:
  steps_run: int          # steps executed by this call (0 when fully resumed)
  seconds: float          # wall time of those steps, compilation included
  examples_per_second: float


class EpochSampler:
  """Deterministic batches from a fixed training set: `indices(step) -> int [B]`."""

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples < batch_size:
      raise ValueError(
          f"the training set has {num_examples} examples, fewer than batch_size={batch_size}")
    self.n, self.b, self.seed = num_examples, batch_size, seed
    self.steps_per_epoch = num_examples // batch_size
    self._perms: dict[int, np.ndarray] = {}

  def indices(self, step: int) -> np.ndarray:
    epoch, pos = divmod(step, self.steps_per_epoch)
    if epoch not in self._perms:
      self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
    return self._perms[epoch][pos * self.b:(pos + 1) * self.b]


def fit(state: TrainState, data: Mapping[str, np.ndarray], *, key: jax.Array, batch_size: int,
        num_steps: int, seed: int = 0, mesh: jax.sharding.Mesh | None = None,
        perturb: Callable | None = None, loss_fn: Callable | None = None,
        steps_per_call: int = 8, virtual_shards: int = 0,
        checkpointer: Checkpointer | None = None, checkpoint_every: int = 1000,
        writer: MetricWriter | None = None, log_every: int = 100, progress: bool = True,
        desc: str = "train") -> tuple[TrainState, FitStats]:
  """Trains `state` for `num_steps` global steps on the arrays in `data`.

  Args:
    data: host arrays with a common leading axis N; must hold 'image' [N,H,W,C] and
      'label' [N]; other keys (e.g. 'font', 'theta') ride along for perturbations.
    key: base PRNG key of the run (see module docstring).
    mesh: data-parallel mesh (default: all devices); batch_size must divide evenly.
    perturb, loss_fn: the training mode's perturbation and loss (`rsec.training.modes`).
    steps_per_call: steps per compiled call (`lax.scan`); chunks end at checkpoint
      boundaries and are padded with no-op slots so the call compiles once.
    virtual_shards: 0 (default): the fast path. V > 0: deterministic reductions over V
      virtual shards (`make_train_step`): parameters, BatchNorm statistics, optimizer
      state and metrics are bit-identical on any number of devices and hosts holding the
      same V shards (on XLA:CPU: hosts with equal local device counts). Slower (about 4x
      for the paper classifier). V must be a multiple of the device count and divide
      batch_size.
    checkpointer: if given, the run resumes from its latest checkpoint and saves every
      `checkpoint_every` steps and at the end.
  Returns the trained state and timing statistics.
  """
  mesh = mesh or parallel.data_mesh()
  parallel.check_batch_divisible(batch_size, mesh, "batch_size")
  parallel.check_virtual_shards(virtual_shards, batch_size, mesh.devices.size)
  if "image" not in data or "label" not in data:
    raise ValueError(f"data must hold 'image' and 'label' arrays, got keys {sorted(data)}")
  sampler = EpochSampler(len(data["label"]), batch_size, seed)
  rows = parallel.process_rows(batch_size)

  state = parallel.replicate(state, mesh)
  start = 0
  if checkpointer is not None and checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    start = int(jax.device_get(state.step))
    logging.info("resumed from step %d in %s", start, checkpointer.directory)
  if writer is not None:
    writer.truncate_after(start)
  if start >= num_steps:
    return state, FitStats(0, 0.0, 0.0)

  multi = make_multi_step(
      make_train_step(perturb, loss_fn, virtual_shards=virtual_shards, mesh=mesh), mesh)
  k = max(1, min(steps_per_call, num_steps))

  def chunk(s0: int):
    end = min(s0 + k, num_steps)
    if checkpointer is not None:
      end = min(end, (s0 // checkpoint_every + 1) * checkpoint_every)
    steps = np.arange(s0, s0 + k, dtype=np.int32)
    valid = steps < end
    idx = np.stack([sampler.indices(int(s))[rows] if v else sampler.indices(0)[rows]
                    for s, v in zip(steps, valid)])
    batches = {name: arr[idx] for name, arr in data.items()}
    return end, steps, valid, parallel.shard_local_batch(batches, mesh, axis=1)

  bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress,
             dynamic_ncols=True, mininterval=1.0)
  t0, s = time.perf_counter(), start
  pending = chunk(s)
  acc: dict[str, list] = {}
  while s < num_steps:
    end, steps, valid, batches = pending
    state, metrics = multi(state, batches, key, steps, valid)
    if end < num_steps:
      pending = chunk(end)  # overlaps the host gather with the device work
    metrics = jax.device_get(metrics)
    n_valid = end - s
    bad = np.flatnonzero(metrics["finite"][:n_valid] == 0)
    if bad.size:
      where = f"; the last good checkpoint (step {checkpointer.latest_step()}) is kept in " \
              f"{checkpointer.directory}" if checkpointer is not None else ""
      raise NonFiniteError(
          f"non-finite loss or gradients at step {s + int(bad[0])}{where}")
    for name, v in metrics.items():
      acc.setdefault(name, []).extend(v[:n_valid].tolist())
    at_checkpoint = checkpointer is not None and (end % checkpoint_every == 0
                                                  or end == num_steps)
    # Log windows also close at checkpoints, so a run resumed from one logs the same rows.
    if writer is not None and (end // log_every > s // log_every or end == num_steps
                               or at_checkpoint):
      writer.write(end, {f"train/{n}": float(np.mean(v)) for n, v in acc.items()
                         if n != "finite"})
      acc = {}
    bar.update(n_valid)
    bar.set_postfix(loss=f"{np.mean(metrics['loss'][:n_valid]):.3f}", refresh=False)
    s = end
    if at_checkpoint:
      checkpointer.save(state)
  bar.close()
  seconds = time.perf_counter() - t0
  ran = num_steps - start
  return state, FitStats(ran, seconds, ran * batch_size / max(seconds, 1e-9))


def evaluate(state: TrainState, images: np.ndarray, labels: np.ndarray, *, batch_size: int,
             mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
  """Accuracy, mean cross-entropy and the count of non-finite logits over a data set.

  The last partial batch is padded (and masked), so evaluation compiles once per shape.
  """
  mesh = mesh or parallel.data_mesh()
  parallel.check_batch_divisible(batch_size, mesh, "batch_size")
  n = len(labels)
  if n == 0:
    raise ValueError("cannot evaluate on an empty data set (0 examples)")
  step = make_eval_step(mesh)
  totals = {"correct": 0.0, "loss_sum": 0.0, "count": 0.0, "nonfinite_logits": 0.0}
  for i in range(0, n, batch_size):
    x, y = images[i:i + batch_size], labels[i:i + batch_size]
    mask = np.ones(len(y), bool)
    if len(y) < batch_size:
      pad = batch_size - len(y)
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros(pad, y.dtype)])
      mask = np.concatenate([mask, np.zeros(pad, bool)])
    out = jax.device_get(step(state, *parallel.shard_batch((x, y, mask), mesh)))
    for name in totals:
      totals[name] += float(out[name])
  return {"accuracy": totals["correct"] / n, "loss": totals["loss_sum"] / n,
          "nonfinite_logits": int(totals["nonfinite_logits"])}
