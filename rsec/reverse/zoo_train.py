"""Training a stack of zoo models with different attributes in one compiled call.

The training attributes are data too: the optimiser (SGD with momentum, Adam, RMSprop:
all three rules advance, each model's update is its own rule's, selected by index) and
the batch size (every step reads the stack's largest batch; a model of batch size b
averages its loss over the first b rows). `make_step` is one model's step; a stack
trains with `make_stack_step`, the same step for M models at once in the lanes layout
of `rsec.reverse.zoo_lanes` (models on the last axis of every leaf:
`to_lanes(init_stack(...))`), on `run_loop` like everything else (data-parallel along
the batch axis).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rsec.reverse import zoo_lanes, zoo_net
from rsec.training.steps import all_finite

OPTIMIZERS = ("sgd", "adam", "rmsprop")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """How zoo models train (config primitives): learning rate per optimiser (SGD uses
  momentum 0.9), the batch sizes the `bs` attribute indexes, and the step count."""
  net: zoo_net.NetSpec = zoo_net.NetSpec()
  batch_sizes: tuple[int, ...] = (64, 128, 256)
  lr_sgd: float = 0.05
  lr_adam: float = 1e-3
  lr_rmsprop: float = 1e-3
  steps: int = 300

  def optimizers(self) -> tuple[optax.GradientTransformation, ...]:
    return (optax.sgd(self.lr_sgd, momentum=0.9), optax.adam(self.lr_adam),
            optax.rmsprop(self.lr_rmsprop))


@struct.dataclass
class ZooState:
  """One zoo model (or a stack: leaves [M, ...]). `arch` holds int32 attribute indices:
  the network's (zoo_net.ARCH_ATTRIBUTES) plus 'opt' and 'bs'."""
  step: jax.Array
  params: Any
  opt_state: Any       # one state per optimiser rule (OPTIMIZERS order)
  arch: dict
  skipped: jax.Array   # steps skipped as non-finite (the model diverged; it is dropped)

  @property
  def variables(self) -> dict:
    return {"params": self.params, "arch": self.arch}

  def checkpoint_tree(self) -> dict:
    return {"step": self.step, "params": self.params, "opt_state": self.opt_state,
            "arch": self.arch, "skipped": self.skipped}

  def replace_tree(self, tree: dict) -> "ZooState":
    return self.replace(**tree)


def init_state(spec: TrainSpec, key: jax.Array, arch: dict) -> ZooState:
  """A fresh model of `arch` (int32 indices; traceable, so `jax.vmap` builds a stack)."""
  params = zoo_net.init_params(spec.net, key, arch)
  return ZooState(jnp.zeros((), jnp.int32), params,
                  tuple(tx.init(params) for tx in spec.optimizers()),
                  {k: jnp.asarray(v, jnp.int32) for k, v in arch.items()},
                  jnp.zeros((), jnp.int32))


@functools.cache
def _init_stack(spec: TrainSpec):
  return jax.jit(jax.vmap(functools.partial(init_state, spec)))


def init_stack(spec: TrainSpec, keys: jax.Array, arch: dict[str, np.ndarray]) -> ZooState:
  """M fresh models: keys [M], arch {name: int [M]}."""
  return _init_stack(spec)(keys, {k: jnp.asarray(v, jnp.int32) for k, v in arch.items()})


def select_rule(updates: tuple, index: jax.Array) -> Any:
  """The update tree of rule `index` among per-rule update trees (same structure); nested
  selects, which stay elementwise when `index` is batched by vmap."""
  def pick(*u):
    out = u[-1]
    for i in range(len(u) - 2, -1, -1):
      out = jnp.where(index == i, u[i], out)
    return out
  return jax.tree.map(pick, *updates)


def advance(txs: tuple, state: ZooState, grads: Any, finite: jax.Array) -> ZooState:
  """The state after one step: every rule advances, each model takes its own rule's
  update (`arch['opt']`); where `finite` is False (a scalar for one model, [M] for a stack
  with the models last) the model keeps its state and counts the skipped step."""
  outs = [tx.update(grads, s, state.params) for tx, s in zip(txs, state.opt_state)]
  updates = select_rule(tuple(u for u, _ in outs), state.arch["opt"])
  new = state.replace(params=optax.apply_updates(state.params, updates),
                      opt_state=tuple(s for _, s in outs))
  # One member diverging is a property of that model, not a failed run: it keeps its
  # last finite state, counts the skipped step and is dropped from the zoo afterwards.
  new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
  return new.replace(step=state.step + 1, skipped=state.skipped + (~finite).astype(jnp.int32))


@functools.cache
def make_step(spec: TrainSpec):
  """`step(state, batch, key)` of one model (batch: 'image' [B, ...], 'label' [B] with
  B = max(batch_sizes)); `make_stack_step` is the same step for a stack. Cached per spec,
  so the compiled chunk is recognised across calls."""
  txs = spec.optimizers()
  sizes = jnp.asarray(spec.batch_sizes, jnp.float32)

  def step(state: ZooState, batch: dict, key: jax.Array):
    x, y = batch["image"], batch["label"]
    bs = sizes[state.arch["bs"]]
    weight = (jnp.arange(y.shape[0]) < bs).astype(jnp.float32) / bs

    def objective(params):
      logits = zoo_net.apply({"params": params, "arch": state.arch}, x, train=True,
                             rngs={"dropout": key}, dropout=spec.net.dropout)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.sum(ce * weight), logits

    (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    finite = jnp.isfinite(loss) & all_finite(grads)
    new = advance(txs, state, grads, finite)
    accuracy = jnp.sum((jnp.argmax(logits, -1) == y) * weight)
    return new, {"loss": jnp.where(finite, loss, 0.0), "accuracy": accuracy,
                 "finite": jnp.ones((), jnp.float32)}

  return step


def _finite_per_model(tree) -> jax.Array:
  """[M]: whether every entry of model m is finite (leaves [..., M])."""
  leaves = jax.tree.leaves(tree)
  return functools.reduce(jnp.logical_and, [
      jnp.all(jnp.isfinite(a), axis=tuple(range(a.ndim - 1))) for a in leaves])


@functools.cache
def make_stack_step(spec: TrainSpec):
  """`step(state, batch, key)` of a stack in lanes layout (`zoo_lanes.to_lanes` of an
  `init_stack` state); batch: 'image' [M, B, ...], 'label' [M, B]. Model m's update is
  `make_step`'s with the dropout key `fold_in(key, m)` (as `rsec.training.stack.vmap_step`
  derives it), so a stack trains each model as it would train alone; metrics are [M]."""
  txs = spec.optimizers()
  sizes = jnp.asarray(spec.batch_sizes, jnp.float32)

  def step(state: ZooState, batch: dict, key: jax.Array):
    x, y = batch["image"], batch["label"]
    m = y.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(m))
    bs = sizes[state.arch["bs"]]
    weight = (jnp.arange(y.shape[1])[None] < bs[:, None]).astype(jnp.float32) / bs[:, None]

    def objective(params):
      logits = zoo_lanes.apply(params, state.arch, x, train=True, keys=keys,
                               dropout=spec.net.dropout)                     # [M, B, K]
      losses = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y) * weight, 1)
      return jnp.sum(losses), (losses, logits)   # models share no parameter: grads per model

    (_, (losses, logits)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    finite = jnp.isfinite(losses) & _finite_per_model(grads)                # [M]
    new = advance(txs, state, grads, finite)
    accuracy = jnp.sum((jnp.argmax(logits, -1) == y) * weight, 1)
    return new, {"loss": jnp.where(finite, losses, 0.0), "accuracy": accuracy,
                 "finite": jnp.ones((m,), jnp.float32)}

  return step


_to_lanes = jax.jit(zoo_lanes.to_lanes)
_shared_probs = jax.jit(zoo_lanes.shared_probs)


def stack_probs(variables: dict, x: np.ndarray, batch: int = 500,
                models: int = 128) -> np.ndarray:
  """Softmax posteriors [M, N, K] of a stack (variables with leaves [M, ...]) on x [N, ...].

  Runs the lanes network on chunks of `models` models x `batch` images, the last chunk and
  batch padded to full size, so stacks of any size above `models` and any N above
  `batch` share one compile. The lanes
  copy of each chunk is made in its own call: transposing inside the forward lets XLA keep
  the weights strided in the convolution loop (2x slower, zoo_lanes' docstring).
  """
  m, n = len(variables["arch"]["act"]), len(x)
  k = variables["params"][f"fc{zoo_net.MAX_FC - 1}"]["w"].shape[-1]
  models, batch = min(models, m), min(batch, n)
  x = np.asarray(x, np.float32)
  out = np.empty((m, n, k), np.float32)
  for lo in range(0, m, models):
    rows = np.minimum(np.arange(lo, lo + models), m - 1)     # pad with the last model
    chunk = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[rows]), variables)
    params, arch = _to_lanes(chunk["params"]), chunk["arch"]
    for i in range(0, n, batch):
      xb = x[np.minimum(np.arange(i, i + batch), n - 1)]
      probs = np.asarray(_shared_probs(params, arch, jnp.asarray(xb)))
      take = min(batch, n - i)
      out[lo:lo + models, i:i + take] = probs[:m - lo, :take]
  return out
