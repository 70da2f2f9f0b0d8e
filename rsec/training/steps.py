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
  """Mean softmax cross-entropy; logits [B, K], integer labels [B]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(perturb: Perturb | None = None,
                    loss_fn: Callable[..., jax.Array] | None = None
                    ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
  """Builds the supervised step.

  Args:
    perturb: optional batch perturbation (adversarial examples, augmentation), given the
      inference-mode variables; its output is treated as data (no gradient flows through).
    loss_fn: `loss_fn(logits, batch) -> scalar`; default: cross-entropy on batch['label'].

  The returned step leaves the state unchanged (and reports `finite = 0`) when the loss
  or a gradient is not finite, so the caller can stop with the last good state intact.
  """
  loss_fn = loss_fn or (lambda logits, batch: cross_entropy(logits, batch["label"]))

  def step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
    if perturb is not None:
      batch = jax.lax.stop_gradient(perturb(state.variables, key, batch))

    def objective(params):
      logits, updates = state.apply_fn(
          {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
          mutable=["batch_stats"])
      return loss_fn(logits, batch), (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
    finite = jnp.isfinite(loss) & _all_finite(grads)
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    metrics = {
        "loss": loss,
        # Modes may stack extra rows after the labelled ones (TRADES): score the first B.
        "accuracy": jnp.mean(jnp.argmax(logits[:batch["label"].shape[0]], -1)
                             == batch["label"]),
        "grad_norm": optax.tree.norm(grads),
        "finite": finite.astype(jnp.float32),
    }
    return new, metrics

  return step


def make_multi_step(step: Callable, mesh: jax.sharding.Mesh | None = None):
  """Compiles `K` steps into one call: `multi(state, batches, base_key, steps, valid)`.

  Args (of the returned function):
    batches: pytree with leaves [K, B, ...]; batch axis 1 is sharded over `mesh`.
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
                 in_shardings=(repl, batch_sharded(mesh, axis=1), repl, repl, repl),
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
