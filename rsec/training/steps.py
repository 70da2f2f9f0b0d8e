"""Train and eval steps: `step(state, batch, key) -> (state, metrics)`.

Every training mode is "perturb the batch, then take the ordinary step": a mode
supplies `perturb(variables, key, batch) -> batch` (run in inference mode, outside the
gradient) and the step below stays the same. `make_multi_step` scans several steps in one
compiled call, which removes per-step dispatch overhead on small models.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from rsec.training.state import TrainState

Batch = dict[str, jax.Array]
Perturb = Callable[[dict, jax.Array, Batch], Batch]
Metrics = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy; logits [B, K], integer labels [B] or soft targets [B, K]
  (probability rows: a stolen posterior, a label-smoothed target)."""
  if labels.ndim == logits.ndim and jnp.issubdtype(labels.dtype, jnp.floating):
    return optax.softmax_cross_entropy(logits, labels).mean()
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def hard_labels(labels: jax.Array) -> jax.Array:
  """Integer classes of integer labels (as they are) or of soft targets [B, K] (argmax)."""
  soft = labels.ndim == 2 and jnp.issubdtype(labels.dtype, jnp.floating)
  return jnp.argmax(labels, -1) if soft else labels


def all_finite(*trees: Any) -> jax.Array:
  """True when every leaf of every tree is finite (a bool scalar)."""
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for t in trees
                              for x in jax.tree.leaves(t)]))


def make_train_step(perturb: Perturb | None = None,
                    loss_fn: Callable[..., jax.Array] | None = None, *,
                    virtual_shards: int = 0, mesh: jax.sharding.Mesh | None = None
                    ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
  """Builds the supervised step.

  Args:
    perturb: optional batch perturbation (adversarial examples, augmentation), given the
      inference-mode variables; its output is treated as data (no gradient flows through).
    loss_fn: `loss_fn(logits, batch) -> scalar`; default: cross-entropy on batch['label'].
    virtual_shards: 0 (default): the fast path, `jax.jit` over the mesh, where XLA adds
      per-device partials in a layout-dependent order (results agree across device counts
      and hosts to float rounding). V > 0: the deterministic path (`_deterministic_grads`),
      bit-identical for any layout of the same V virtual shards (devices and processes;
      see BUILD_NOTES.md for what XLA:CPU needed); needs `mesh`,
      and V must be a multiple of its device count and divide the global batch.
    mesh: the data mesh the step runs on (only used when `virtual_shards` > 0).

  The returned step leaves the state unchanged (and reports `finite = 0`) when the loss
  or a gradient is not finite, so the caller can stop with the last good state intact.
  """
  loss_fn = loss_fn or (lambda logits, batch: cross_entropy(logits, batch["label"]))
  if virtual_shards:
    if mesh is None:
      raise ValueError("virtual_shards > 0 needs the mesh the step runs on (mesh=None)")
    if virtual_shards % mesh.devices.size:
      raise ValueError(f"virtual_shards={virtual_shards} must be a multiple of the number "
                       f"of devices ({mesh.devices.size})")

  def step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
    if virtual_shards:
      loss, accuracy, grads, batch_stats = _deterministic_grads(
          state, batch, key, perturb, loss_fn, virtual_shards, mesh)
    else:
      loss, accuracy, grads, batch_stats = _grads(state, batch, key, perturb, loss_fn)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
    finite = jnp.isfinite(loss) & all_finite(grads)
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    metrics = {
        "loss": loss,
        "accuracy": accuracy,
        "grad_norm": optax.tree.norm(grads),
        "finite": finite.astype(jnp.float32),
    }
    return new, metrics

  return step


def _grads(state, batch, key, perturb, loss_fn):
  """The fast path: the global batch under jit; XLA inserts the cross-device sums."""
  if perturb is not None:
    batch = jax.lax.stop_gradient(perturb(state.variables, key, batch))

  def objective(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"])
    return loss_fn(logits, batch), (logits, updates["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
      state.params)
  # Modes may stack extra rows after the labelled ones (TRADES): score the first B.
  label = hard_labels(batch["label"])
  accuracy = jnp.mean(jnp.argmax(logits[:label.shape[0]], -1) == label)
  return loss, accuracy, grads, batch_stats


def _deterministic_grads(state, batch, key, perturb, loss_fn, num_shards, mesh):
  """Loss, accuracy, gradients and BatchNorm statistics, the same bits on any layout.

  The global batch [B, ...] is cut into `num_shards` = V contiguous virtual shards of
  b = B / V rows; device d of the D-device mesh holds shards d*V/D ... (d+1)*V/D - 1 and
  runs them one at a time (`parallel.map_local_shards`), so each shard's arithmetic is
  the same program on every layout. Cross-shard sums (`det_sum_local_shards`) are exact
  gathers followed by a fixed-order sum.

  BatchNorm couples the shards: layer i normalises with statistics of the whole batch,
  which depend on layers < i. With the model written as a per-shard function
  `f(params, S, shard) -> (loss_v, P_v)`, where S[i] are the global sums BatchNorm i uses
  and P_v[i] the shard's own sums at layer i, the step
    1. finds S layer by layer: S[i] = sum_v P_v[i](params, S[:i])  (L forward sweeps);
    2. differentiates: g = sum_v d loss_v / d(params, S)  (one forward-backward sweep);
    3. propagates the statistics' adjoints back, i = L-1 ... 0:
       g += sum_v (d P_v[i] / d(params, S[:i]))^T g_S[i]   (L partial backward sweeps),
  which is reverse-mode differentiation of the coupled computation with every sum over
  shards made explicit. Cost: about (L + 2) forward and (L + 1) backward passes (XLA
  drops the layers after i from sweeps that only need layer i).

  The loss is the mean over shards of `loss_fn` on each shard, which equals the global
  `loss_fn` for losses that are means over rows (all of rsec's); a perturbation sees one
  shard at a time, with key `fold_in(key, shard index)`.
  """
  from jax.sharding import PartitionSpec as P
  from rsec import parallel

  devices = mesh.devices.size
  global_rows = batch["label"].shape[0]
  parallel.check_virtual_shards(num_shards, global_rows, devices)
  local_shards, rows = num_shards // devices, global_rows // num_shards

  def per_device(params, batch_stats, batch, key):
    shards = jax.tree.map(lambda x: x.reshape((local_shards, rows) + x.shape[1:]), batch)
    if perturb is not None:
      ids = jax.lax.axis_index(parallel.BATCH_AXIS) * local_shards + jnp.arange(local_shards)
      shards = parallel.map_local_shards(
          lambda a, variables, key: jax.lax.stop_gradient(
              perturb(variables, jax.random.fold_in(key, a[1]), a[0])),
          (shards, ids), {"params": params, "batch_stats": batch_stats}, key)

    def forward(params, sums, batch_stats, shard):
      with parallel.batch_stats_plan(parallel.BatchStatsPlan(sums, num_shards)) as plan:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": batch_stats}, shard["image"], train=True,
            mutable=["batch_stats"])
      correct = jnp.sum(jnp.argmax(logits[:rows], -1) == hard_labels(shard["label"]))
      loss = loss_fn(logits, shard) / num_shards
      return (loss, plan.partials), (correct.astype(jnp.float32), updates["batch_stats"])

    first = jax.tree.map(lambda x: x[0], shards)
    probe = jax.eval_shape(lambda: forward(params, None, batch_stats, first)[0][1])
    sums = [jnp.zeros(p.shape, p.dtype) for p in probe]
    for i in range(len(sums)):                                                    # 1.
      sums[i] = parallel.det_sum_local_shards(parallel.map_local_shards(
          lambda shard, params, sums, bs, i=i: forward(params, sums, bs, shard)[0][1][i],
          shards, params, sums, batch_stats))

    def full(shard, params, sums, batch_stats):                                   # 2.
      (loss, partials), vjp, aux = jax.vjp(
          lambda p, s: forward(p, s, batch_stats, shard), params, sums, has_aux=True)
      g_params, g_sums = vjp((jnp.ones_like(loss), jax.tree.map(jnp.zeros_like, partials)))
      return loss, g_params, g_sums, aux
    loss, grads, g_sums, (correct, new_stats) = parallel.map_local_shards(
        full, shards, params, sums, batch_stats)
    loss, grads, g_sums, correct = parallel.det_sum_local_shards(
        (loss, grads, g_sums, correct))

    for i in reversed(range(len(sums))):                                          # 3.
      def adjoint(shard, params, sums, batch_stats, g_sum, i=i):
        _, vjp = jax.vjp(lambda p, s: forward(p, s, batch_stats, shard)[0][1][i],
                         params, sums)
        return vjp(g_sum)
      d_params, d_sums = parallel.det_sum_local_shards(parallel.map_local_shards(
          adjoint, shards, params, sums, batch_stats, g_sums[i]))
      grads = jax.tree.map(jnp.add, grads, d_params)
      # P[i] depends on S[:i] only: the adjoints of S[i:] are complete already.
      g_sums = [a + b if j < i else a for j, (a, b) in enumerate(zip(g_sums, d_sums))]
    # Every shard computed the same running statistics (from the global sums): keep one.
    return loss, correct / global_rows, grads, jax.tree.map(lambda x: x[0], new_stats)

  return jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(), P(parallel.BATCH_AXIS), P()),
      out_specs=P(), check_vma=False)(state.params, state.batch_stats, batch, key)


def make_multi_step(step: Callable, mesh: jax.sharding.Mesh | None = None,
                    batch_axis: int = 1):
  """Compiles `K` steps into one call: `multi(state, batches, base_key, steps, valid)`.

  Args (of the returned function):
    batches: pytree with leaves [K, B, ...] (or [K, M, B, ...] for a stack of M models,
      `batch_axis`=2); the batch axis is sharded over `mesh`.
    base_key: the run's PRNG key; step s uses `fold_in(base_key, s)`, so a resumed run
      draws the same randomness as an uninterrupted one.
    steps: int32 [K], the global step index of each slot.
    valid: bool [K]; invalid slots (padding of a final partial chunk) leave the state as
      is, so every chunk has the same shape and the function compiles once. (They still
      compute a step: a `lax.cond` would trace the step twice; padding is rare.)
  Returns (state, metrics) with metric leaves [K].
  The state argument is donated.
  """

  def multi(state, batches, base_key, steps, valid):
    def body(state, inp):
      batch, s, v = inp
      new, metrics = step(state, batch, jax.random.fold_in(base_key, s))
      new = jax.tree.map(lambda a, b: jnp.where(v, a, b), new, state)
      return new, jax.tree.map(lambda m: jnp.where(v, m, jnp.zeros_like(m)), metrics)
    return jax.lax.scan(body, state, (batches, steps, valid))

  if mesh is None:
    return jax.jit(multi, donate_argnums=0)
  from rsec.parallel import batch_sharded, replicated
  repl = replicated(mesh)
  return jax.jit(multi, donate_argnums=0,
                 in_shardings=(repl, batch_sharded(mesh, axis=batch_axis), repl, repl, repl),
                 out_shardings=(repl, repl))


@functools.cache
def make_eval_step(mesh: jax.sharding.Mesh | None = None):
  """`eval_step(state, images [B,...], labels [B], mask [B]) -> (correct, loss_sum, count)`.

  Inference mode (running BatchNorm statistics); `mask` drops padding rows so the last
  partial batch can be padded to the compiled shape. Cached per mesh, so repeated
  evaluations reuse one compiled function.
  """

  def eval_step(state: TrainState, images, labels, mask):
    logits = state.apply_fn(state.variables, images, train=False)
    m = mask.astype(jnp.float32)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * m)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    nonfinite = jnp.sum(~jnp.all(jnp.isfinite(logits), -1) * m)
    return {"correct": correct, "loss_sum": jnp.sum(ce * m), "count": jnp.sum(m),
            "nonfinite_logits": nonfinite}

  if mesh is None:
    return jax.jit(eval_step)
  from rsec.parallel import batch_sharded, replicated
  repl, data = replicated(mesh), batch_sharded(mesh)
  return jax.jit(eval_step, in_shardings=(repl, data, data, data), out_shardings=repl)
