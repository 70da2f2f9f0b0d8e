"""Two-player train state and a generic resumable loop for the remover's GAN-style training.

`GanState` is a pytree holding a generator-side and a discriminator-side model (the
in-painter and its PatchGAN, or the mask generator and its realism critic); a step is
`step(state, batch, key) -> (state, metrics)` exactly like classifier steps, so
`rsec.training.steps.make_multi_step` scans chunks of them on the data mesh.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rsec import parallel
from rsec.training.checkpoint import Checkpointer
from rsec.training.loop import EpochSampler
from rsec.training.metrics import MetricWriter
from rsec.training.steps import make_multi_step


@struct.dataclass
class GanState:
  """step, generator (g) and discriminator (d) params and optimizer states."""
  step: jax.Array
  g_params: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  g_apply: Callable = struct.field(pytree_node=False)
  d_apply: Callable = struct.field(pytree_node=False)
  g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @property
  def params(self) -> dict:
    return {"g": self.g_params, "d": self.d_params}

  def checkpoint_tree(self) -> dict:
    return {"step": self.step, "g_params": self.g_params, "d_params": self.d_params,
            "g_opt": self.g_opt, "d_opt": self.d_opt}

  def replace_tree(self, tree: dict) -> "GanState":
    return self.replace(**tree)


def create_gan_state(g_model, d_model, g_inputs: tuple, d_inputs: tuple, key: jax.Array,
                     g_lr: float, d_lr: float, b1: float = 0.5, b2: float = 0.999) -> GanState:
  """Initialises both models on example inputs (tuples of arrays) with Adam optimizers."""
  kg, kd = jax.random.split(key)
  gp = g_model.init(kg, *g_inputs)["params"]
  dp = d_model.init(kd, *d_inputs)["params"]
  g_tx, d_tx = optax.adam(g_lr, b1, b2), optax.adam(d_lr, b1, b2)
  return GanState(step=jnp.zeros((), jnp.int32), g_params=gp, d_params=dp,
                  g_opt=g_tx.init(gp), d_opt=d_tx.init(dp), g_apply=g_model.apply,
                  d_apply=d_model.apply, g_tx=g_tx, d_tx=d_tx)


def bce_logits(logits: jax.Array, target: float | jax.Array) -> jax.Array:
  """Mean sigmoid binary cross-entropy against a constant or array target."""
  return optax.sigmoid_binary_cross_entropy(logits, jnp.broadcast_to(target, logits.shape)).mean()


def apply_grads(params, opt, tx, grads):
  updates, opt = tx.update(grads, opt, params)
  return optax.apply_updates(params, updates), opt


def all_finite(*trees) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for t in trees
                              for x in jax.tree.leaves(t)]))


def run_steps(step: Callable, state: GanState, data: Mapping[str, np.ndarray], *,
              key: jax.Array, batch_size: int, num_steps: int, seed: int = 0,
              mesh=None, steps_per_call: int = 10, checkpointer: Checkpointer | None = None,
              checkpoint_every: int = 500, writer: MetricWriter | None = None,
              log_every: int = 50, prefix: str = "train") -> tuple[GanState, dict]:
  """Runs `num_steps` global steps of `step` over epochs of `data` (host arrays, axis 0).

  Resumes from `checkpointer`'s latest step; step s uses batch `s` of the seeded epoch
  permutation and key fold_in(key, s), so a resumed run equals an uninterrupted one.
  Returns the state and {'seconds', 'steps_run'}.
  """
  mesh = mesh or parallel.data_mesh()
  parallel.check_batch_divisible(batch_size, mesh, "batch_size")
  n = len(next(iter(data.values())))
  sampler = EpochSampler(n, batch_size, seed)
  state = parallel.replicate(state, mesh)
  start = 0
  if checkpointer is not None and checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    start = int(jax.device_get(state.step))
    logging.info("resumed %s from step %d", prefix, start)
  if writer is not None:
    writer.truncate_after(start)
  if start >= num_steps:
    return state, {"seconds": 0.0, "steps_run": 0}
  multi = make_multi_step(step, mesh)
  k = max(1, min(steps_per_call, num_steps))
  t0, s, acc = time.perf_counter(), start, {}
  while s < num_steps:
    end = min(s + k, num_steps)
    if checkpointer is not None:
      end = min(end, (s // checkpoint_every + 1) * checkpoint_every)
    steps = np.arange(s, s + k, dtype=np.int32)
    valid = steps < end
    idx = np.stack([sampler.indices(int(t) if v else 0) for t, v in zip(steps, valid)])
    batch = {name: a[idx] for name, a in data.items()}
    batch = jax.device_put(batch, parallel.batch_sharded(mesh, axis=1))
    state, metrics = multi(state, batch, key, steps, valid)
    metrics = jax.device_get(metrics)
    nv = end - s
    if "finite" in metrics and np.any(metrics["finite"][:nv] == 0):
      raise FloatingPointError(f"{prefix}: non-finite loss or gradients near step {s}")
    for name, v in metrics.items():
      acc.setdefault(name, []).extend(v[:nv].tolist())
    if writer is not None and (end // log_every > s // log_every or end == num_steps):
      writer.write(end, {f"{prefix}/{m}": float(np.mean(v)) for m, v in acc.items()
                         if m != "finite"})
      acc = {}
    s = end
    if checkpointer is not None and (s % checkpoint_every == 0 or s == num_steps):
      checkpointer.save(state)
  return state, {"seconds": time.perf_counter() - t0, "steps_run": num_steps - start}
