"""The one training loop: chunks of compiled steps, resumable, guarded, logged, checkpointed.

Everything in rsec that trains goes through `run_loop`: a classifier (`fit`), a GAN pair
(the remover's in-painter and mask generator), the stacked VAE-GANs, stacks of models
under `vmap` (`rsec.training.stack`). A run is a step function
`step(state, batch, key) -> (state, metrics)` plus a sampler `indices(step) -> int
[..., B]` (the last axis is the global batch); batches are `data[name][indices]`.

Data order and randomness are functions of the global step: step s reads
`sampler.indices(s)` and uses PRNG key `fold_in(key, s)`, so a run resumed from a
checkpoint at step s continues exactly as the uninterrupted run would have. Chunks and
log windows end at checkpoints (and held-out evaluations), which makes the resumed run's
`metrics.jsonl` identical too. Each process reads only its own rows of every batch.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from tqdm.auto import tqdm

from rsec import parallel
from rsec.training.checkpoint import Checkpointer, global_step
from rsec.training.metrics import MetricWriter
from rsec.training.state import TrainState
from rsec.training.steps import make_eval_step, make_multi_step, make_train_step


class NonFiniteError(FloatingPointError):
  """Training produced a non-finite loss or gradient (the last good checkpoint is kept)."""


class Sampler(Protocol):
  def indices(self, step: int) -> np.ndarray:
    """int [..., B] row indices of the batch of global step `step` (B last)."""


@dataclasses.dataclass
class FitStats:
  steps_run: int          # steps executed by this call (0 when fully resumed)
  seconds: float          # wall time of those steps, compilation included
  examples_per_second: float
  best: Any = None        # `Best` when an `Evaluator` selected parameters, else None


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """Held-out evaluation inside the loop, keeping the best parameters per stacked model.

  fn(state) -> {'score': [] or [M], other metrics}: higher scores are better (e.g. held-out
    accuracy; [M] for a stack of `models` = M models, each selected on its own score).
  every: evaluate every `every` steps and at the end (chunks end there).
  select(state) -> the pytree kept (default: params and batch_stats), leaves [M, ...] for
    a stack.
  """
  fn: Callable[[Any], Mapping[str, Any]]
  every: int
  models: int | None = None   # M for a stack (scores [M]); None: one model (score [])
  select: Callable[[Any], Any] = lambda st: {"params": st.params,
                                             "batch_stats": st.batch_stats}


@struct.dataclass
class Best:
  """The selected parameters (`Evaluator.select`'s tree), their score and step ([] or [M])."""
  tree: Any
  score: jax.Array
  step: jax.Array

  def update(self, tree: Any, score: jax.Array, step: int) -> "Best":
    better = score > self.score
    def pick(new, old):
      b = better.reshape(better.shape + (1,) * (new.ndim - better.ndim))
      return jnp.where(b, new, old)
    return Best(jax.tree.map(pick, tree, self.tree), jnp.maximum(score, self.score),
                jnp.where(better, step, self.step))


@struct.dataclass
class _WithBest:
  """What a run with an `Evaluator` checkpoints: the train state and the best so far."""
  state: Any
  best: Best

  @property
  def step(self):
    return self.state.step

  @property
  def params(self):
    return self.state.params

  def checkpoint_tree(self) -> dict:
    return {"state": self.state.checkpoint_tree(), "best": self.best}

  def replace_tree(self, tree: dict) -> "_WithBest":
    return _WithBest(self.state.replace_tree(tree["state"]), tree["best"])


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


class IndexSetSampler:
  """One index set per stacked model: `indices(step) -> int [M, B]`.

  Model m reads epochs of its own set (NumPy PCG64 seeded with (seed, m, epoch)), so models
  with different training subsets (class pools, nested budget prefixes, zoo splits) train
  side by side in one stack. `steps_per_epoch` counts epochs of the smallest set.
  """

  def __init__(self, index_sets: Sequence[np.ndarray], batch_size: int, seed: int):
    self.sets = [np.asarray(s, np.int64) for s in index_sets]
    if not self.sets:
      raise ValueError("index_sets must hold at least one index set")
    small = min(len(s) for s in self.sets)
    if small < batch_size:
      raise ValueError(f"every index set needs at least batch_size={batch_size} rows; "
                       f"the smallest has {small}")
    self.b, self.seed = batch_size, seed
    self.steps_per_epoch = small // batch_size
    self._perm: dict[tuple[int, int], np.ndarray] = {}

  def indices(self, step: int) -> np.ndarray:
    rows = []
    for m, pool in enumerate(self.sets):
      epoch, pos = divmod(step, len(pool) // self.b)
      if (m, epoch) not in self._perm:
        self._perm = {k: v for k, v in self._perm.items() if k[0] != m}
        self._perm[(m, epoch)] = pool[np.random.default_rng([self.seed, m, epoch]).permutation(
            len(pool))]
      rows.append(self._perm[(m, epoch)][pos * self.b:(pos + 1) * self.b])
    return np.stack(rows)


def run_loop(state: Any, step: Callable, data: Mapping[str, np.ndarray], sampler: Sampler, *,
             key: jax.Array, num_steps: int, mesh: jax.sharding.Mesh | None = None,
             steps_per_call: int = 8, checkpointer: Checkpointer | None = None,
             checkpoint_every: int = 1000, writer: MetricWriter | None = None,
             log_every: int = 100, evaluator: Evaluator | None = None,
             prefix: str = "train", progress: bool = True, desc: str = "train",
             compile_cache: dict | None = None) -> tuple[Any, FitStats]:
  """Runs global steps [state.step or the resumed step, num_steps) of `step` on `data`.

  Training sets that grow between rounds (adaptive knockoffs, JBDA) are successive calls,
  each with the round's data and sampler and the previous round's state.

  Args:
    state: any pytree with a `step` counter (and `checkpoint_tree` / `replace_tree` /
      `params` when checkpointed): a TrainState, a GanState, stacked states.
    step: `step(state, batch, key) -> (state, metrics)`; metrics hold 'loss' and
      'finite' (0 where the loss or a gradient was not finite), leaves [] or [M].
    data: host arrays with a common leading axis N (every process holds them whole).
    sampler: `indices(s) -> int [..., B]`; batch leaves are [..., B, ...] and are sharded
      over the mesh along the B axis (each process gathers only its `process_rows`).
    mesh: data-parallel mesh (default: all devices); B must divide evenly.
    steps_per_call: steps per compiled call (`lax.scan`); chunks end at checkpoint and
      evaluation boundaries and are padded with no-op slots, so the call compiles once.
    checkpointer: if given, the run resumes from its latest checkpoint and saves every
      `checkpoint_every` steps and at the end.
    writer: means over each log window (every `log_every` steps, at checkpoints, at the
      end) of every metric, over steps and stacked models, as '<prefix>/<name>'.
    evaluator: held-out evaluation and per-model selection (`Evaluator`); its metrics are
      logged as 'eval/<name>' and the selection comes back in `FitStats.best`.
    compile_cache: a dict the caller keeps across calls (rounds of a growing training
      set with the same `step`): the compiled chunk is reused instead of traced and
      compiled again each call. None: compiled for this call.
  Raises NonFiniteError (the last good checkpoint kept) when a step was not finite.
  """
  mesh = mesh or parallel.data_mesh()
  probe = np.asarray(sampler.indices(0))
  parallel.check_batch_divisible(probe.shape[-1], mesh, "batch_size")
  rows = parallel.process_rows(probe.shape[-1])
  axis = probe.ndim  # batch leaves are [K, ..., B, ...]: B follows the index axes
  state = parallel.replicate(state, mesh)
  if evaluator is not None:
    if not isinstance(evaluator.every, int) or evaluator.every < 1:
      raise ValueError(f"evaluator.every={evaluator.every!r} must be a positive integer")
    shape = () if evaluator.models is None else (evaluator.models,)
    # A copy: the state's own buffers are donated to the next compiled chunk.
    tree = jax.tree.map(jnp.copy, evaluator.select(state))
    score = parallel.replicate(jnp.full(shape, -jnp.inf, jnp.float32), mesh)
    state = _WithBest(state, Best(tree, score, parallel.replicate(
        jnp.full(shape, -1, jnp.int32), mesh)))
  start = global_step(state)   # 0 for a fresh state; a later round continues its state
  if checkpointer is not None and checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    start = global_step(state)
    logging.info("resumed %s from step %d in %s", desc, start, checkpointer.directory)
  if writer is not None:
    writer.truncate_after(start)
  inner = lambda st: st.state if evaluator is not None else st
  if start >= num_steps:
    return inner(state), FitStats(0, 0.0, 0.0, state.best if evaluator else None)

  if compile_cache is None:
    multi = make_multi_step(step, mesh, batch_axis=axis)
  else:
    if (step, mesh, axis) not in compile_cache:
      compile_cache[(step, mesh, axis)] = make_multi_step(step, mesh, batch_axis=axis)
    multi = compile_cache[(step, mesh, axis)]
  k = max(1, min(steps_per_call, num_steps))
  cuts = [checkpoint_every] if checkpointer is not None else []
  cuts += [evaluator.every] if evaluator is not None else []

  def chunk(s0: int):
    end = min([s0 + k, num_steps] + [(s0 // c + 1) * c for c in cuts])
    steps = np.arange(s0, s0 + k, dtype=np.int32)
    valid = steps < end
    idx = np.stack([np.asarray(sampler.indices(int(s) if v else 0))[..., rows]
                    for s, v in zip(steps, valid)])
    batches = {name: arr[idx] for name, arr in data.items()}
    return end, steps, valid, parallel.shard_local_batch(batches, mesh, axis=axis)

  bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress,
             dynamic_ncols=True, mininterval=1.0)
  t0, s = time.perf_counter(), start
  pending = chunk(s)
  acc: dict[str, list] = {}
  while s < num_steps:
    end, steps, valid, batches = pending
    train, metrics = multi(inner(state), batches, key, steps, valid)
    state = state.replace(state=train) if evaluator is not None else train
    if end < num_steps:
      pending = chunk(end)  # overlaps the host gather with the device work
    metrics = jax.device_get(metrics)
    n_valid = end - s
    finite = np.reshape(metrics["finite"][:n_valid], (n_valid, -1))
    bad = np.flatnonzero(np.any(finite == 0, axis=1))
    if bad.size:
      where = f"; the last good checkpoint (step {checkpointer.latest_step()}) is kept in " \
              f"{checkpointer.directory}" if checkpointer is not None else ""
      raise NonFiniteError(f"{desc}: non-finite loss or gradients at step "
                           f"{s + int(bad[0])}{where}")
    for name, v in metrics.items():
      acc.setdefault(name, []).append(np.asarray(v[:n_valid], np.float64))
    at_checkpoint = checkpointer is not None and (end % checkpoint_every == 0
                                                  or end == num_steps)
    at_eval = evaluator is not None and (end % evaluator.every == 0 or end == num_steps)
    row = {}
    # Log windows also close at checkpoints, so a run resumed from one logs the same rows.
    if end // log_every > s // log_every or end == num_steps or at_checkpoint:
      row = {f"{prefix}/{n}": float(np.mean(np.concatenate(v)))
             for n, v in acc.items() if n != "finite"}
      acc = {}
    if at_eval:
      out = jax.device_get(evaluator.fn(inner(state)))
      state = state.replace(best=state.best.update(
          evaluator.select(inner(state)), jnp.asarray(out["score"], jnp.float32), end))
      row.update({f"eval/{n}": float(np.mean(v)) for n, v in out.items()})
    if writer is not None and row:
      writer.write(end, row)
    bar.update(n_valid)
    bar.set_postfix(loss=f"{np.mean(metrics['loss'][:n_valid]):.3f}", refresh=False)
    s = end
    if at_checkpoint:
      checkpointer.save(state)
  bar.close()
  seconds = time.perf_counter() - t0
  ran = num_steps - start
  rows_per_step = int(np.prod(probe.shape))
  return inner(state), FitStats(ran, seconds, ran * rows_per_step / max(seconds, 1e-9),
                                state.best if evaluator is not None else None)


def fit(state: TrainState, data: Mapping[str, np.ndarray], *, key: jax.Array, batch_size: int,
        num_steps: int, seed: int = 0, mesh: jax.sharding.Mesh | None = None,
        perturb: Callable | None = None, loss_fn: Callable | None = None,
        steps_per_call: int = 8, virtual_shards: int = 0,
        checkpointer: Checkpointer | None = None, checkpoint_every: int = 1000,
        writer: MetricWriter | None = None, log_every: int = 100,
        evaluator: Evaluator | None = None, progress: bool = True,
        desc: str = "train") -> tuple[TrainState, FitStats]:
  """Trains one classifier `state` for `num_steps` global steps: `run_loop` over epochs.

  Args:
    data: host arrays with a common leading axis N; must hold 'image' [N,H,W,C] and
      'label': integer classes [N], or soft targets [N, K] (posteriors, rows summing to
      1: soft cross-entropy; checked only for the default loss, a `loss_fn` reads labels
      its own way, e.g. per-pixel classes [N, H, W]); other keys (e.g. 'font', 'theta') ride along for perturbations.
    key: base PRNG key of the run (see module docstring).
    perturb, loss_fn: the training mode's perturbation and loss (`rsec.modes`).
    virtual_shards: 0 (default): the fast path. V > 0: deterministic reductions over V
      virtual shards (`make_train_step`): parameters, BatchNorm statistics, optimizer
      state and metrics are bit-identical on any number of devices and hosts holding the
      same V shards (on XLA:CPU: hosts with equal local device counts). Slower (about 4x
      for the paper classifier). V must be a multiple of the device count and divide
      batch_size.
    The other arguments are `run_loop`'s.
  Returns the trained state and timing statistics.
  """
  mesh = mesh or parallel.data_mesh()
  parallel.check_batch_divisible(batch_size, mesh, "batch_size")
  parallel.check_virtual_shards(virtual_shards, batch_size, mesh.devices.size)
  if "image" not in data or "label" not in data:
    raise ValueError(f"data must hold 'image' and 'label' arrays, got keys {sorted(data)}")
  label = np.asarray(data["label"])
  default_loss = loss_fn is None   # a mode's own loss reads labels its own way
  if default_loss and not ((label.ndim == 1 and np.issubdtype(label.dtype, np.integer))
                           or (label.ndim == 2 and np.issubdtype(label.dtype, np.floating))):
    raise ValueError(f"data['label'] must be integer classes [N] or soft targets [N, K], "
                     f"got {label.dtype} {label.shape}")
  sampler = EpochSampler(len(label), batch_size, seed)
  step = make_train_step(perturb, loss_fn, virtual_shards=virtual_shards, mesh=mesh)
  return run_loop(state, step, data, sampler, key=key, num_steps=num_steps, mesh=mesh,
                  steps_per_call=steps_per_call, checkpointer=checkpointer,
                  checkpoint_every=checkpoint_every, writer=writer, log_every=log_every,
                  evaluator=evaluator, progress=progress, desc=desc)


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
