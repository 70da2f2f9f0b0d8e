"""Knockoff (and substitute) training: stacks of models from scratch, one per budget.

Every stolen model of one architecture trains in one stack under `vmap`
(`rsec.training.stack`) through the one training loop (`run_loop`): model m reads only
its own training rows (an `IndexSetSampler` over the concatenated transfer sets: a
budget's prefix of a stream, minus its held-out rows) for the same number of steps, from
its own initialisation, with random-translation augmentation. Its parameters are selected
by agreement with the victim's answers on its held-out rows (`Evaluator`): part of its
own budget, never the victim's test set.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsec import parallel
from rsec.models.classifiers import make_model
from rsec.training import stack as stack_lib
from rsec.training.loop import EpochSampler, Evaluator, IndexSetSampler, run_loop
from rsec.training.state import create_train_state
from rsec.training.steps import make_train_step


@dataclasses.dataclass(frozen=True)
class KnockoffSpec:
  """How a stolen model trains (config primitives; see configs/model_stealing.py)."""
  arch: str = "paper_classifier"
  steps: int = 1500
  batch_size: int = 64
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  shift: int = 2                  # augmentation: random translations of up to +-shift px
  holdout: float = 0.1            # share of each budget held out for selection
  eval_every: int = 250
  steps_per_call: int = 10

  @classmethod
  def from_config(cls, c) -> "KnockoffSpec":
    return cls(**{f.name: c[f.name] for f in dataclasses.fields(cls)})


def check_architecture(arch: str, num_classes: int, input_shape: tuple[int, ...]) -> None:
  """ValueError unless `arch` is a registered classifier that maps the victim's input
  shape to [B, num_classes] logits."""
  model = make_model(arch, num_classes)
  try:
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0],
                         jax.ShapeDtypeStruct((2,) + tuple(input_shape), jnp.float32))
  except Exception as e:  # noqa: BLE001 -- flax raises many kinds of shape errors
    raise ValueError(f"knockoff architecture {arch!r} does not accept the victim's input "
                     f"shape {tuple(input_shape)}: {type(e).__name__}: {e}") from None
  if out.shape != (2, num_classes):
    raise ValueError(f"knockoff architecture {arch!r} returns {out.shape[1:]} for the "
                     f"victim's input, expected ({num_classes},) logits")


def heldout_rows(budget: int, holdout: float) -> np.ndarray:
  """Bool [budget]: the held-out rows of a budget's prefix (every round(1/holdout)-th row,
  so a smaller budget's held-out rows are a prefix of a larger one's)."""
  if holdout <= 0:
    return np.zeros(budget, bool)
  period = max(2, int(round(1.0 / holdout)))
  return np.arange(budget) % period == period - 1


def augment(shift: int):
  """`perturb(variables, key, batch)`: each image translated by up to +-shift pixels
  (edge-padded), the augmentation the public knockoff code leaves out."""
  def perturb(variables, key, batch):
    del variables
    x = batch["image"]
    if shift == 0:
      return batch
    n, h, w = x.shape[:3]
    d = jax.random.randint(key, (n, 2), 0, 2 * shift + 1)
    pad = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    moved = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0),
                                                         (h, w, x.shape[3])))(pad, d)
    return dict(batch, image=moved)
  return perturb


@functools.cache
def _train_step(shift: int):
  """One model's step with augmentation (one function per shift, so `run_loop`'s
  compile cache can recognise it)."""
  return make_train_step(perturb=augment(shift))


@functools.cache
def _stack_step(shift: int):
  return stack_lib.vmap_step(_train_step(shift))


@functools.cache
def _model_and_optimizer(arch: str, num_classes: int, learning_rate: float,
                         weight_decay: float, steps: int):
  """Cached, so states built for equal settings have equal static fields (`apply_fn`,
  `tx`) and reuse each other's compiled steps."""
  schedule = optax.cosine_decay_schedule(learning_rate, max(1, steps))
  tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(schedule))
  return make_model(arch, num_classes), tx


def fresh_state(spec: KnockoffSpec, num_classes: int, input_shape: tuple[int, ...],
                key: jax.Array):
  """A randomly initialised model (from `key`) with Adam, weight decay and a cosine
  learning-rate decay over `spec.steps`."""
  model, tx = _model_and_optimizer(spec.arch, num_classes, spec.learning_rate,
                                   spec.weight_decay, spec.steps)
  return create_train_state(model, tx, key, (1,) + tuple(input_shape))


@functools.cache
def _agreement(apply_fn):
  """jit: per-model share [M] of masked rows where the model's argmax is the target."""
  @jax.jit
  def agreement(variables, x, y, mask):
    pred = jax.vmap(lambda v, xm: apply_fn(v, xm, train=False).argmax(-1))(variables, x)
    return jnp.sum((pred == y) * mask, axis=1) / jnp.maximum(mask.sum(1), 1.0)
  return agreement


@functools.cache
def _stack_logits(apply_fn):
  return jax.jit(lambda v, xb: jax.vmap(lambda vm: apply_fn(vm, xb, train=False))(v))


def predict_stack(apply_fn, variables: Any, x: np.ndarray, batch: int = 500) -> np.ndarray:
  """Logits [M, N, K] of a stack of M models (variables with leaves [M, ...]) on x [N, ...]."""
  fn = _stack_logits(apply_fn)
  outs = parallel.predict_batches(lambda xb: jnp.moveaxis(fn(variables, xb), 0, 1), (x,),
                                  batch)
  return np.moveaxis(outs, 0, 1)


def train_stack(spec: KnockoffSpec, num_classes: int, data: dict[str, np.ndarray],
                train_sets: Sequence[np.ndarray], heldout_sets: Sequence[np.ndarray],
                init_keys: Sequence[jax.Array], *, key: jax.Array, checkpointer=None,
                writer=None, progress: bool = True, desc: str = "knockoffs",
                compile_cache: dict | None = None):
  """Trains M = len(train_sets) models from scratch, one per index set.

  Args:
    data: 'image' [N, H, W, C] float32 and 'label' [N, K] float32 probability targets.
    train_sets / heldout_sets: int row indices into `data` per model (held-out rows select
      the model's parameters by argmax agreement with their targets; empty: the last).
    init_keys: one initialisation key per model.
    compile_cache: `run_loop`'s (repeated stacks of one shape, e.g. JBDA's rounds).
  Returns (apply_fn, variables with leaves [M, ...] (the selected parameters), FitStats).
  """
  shape = data["image"].shape[1:]
  states = [fresh_state(spec, num_classes, shape, k) for k in init_keys]
  state = stack_lib.stack(states)
  step = _stack_step(spec.shift)
  sampler = IndexSetSampler(list(train_sets), spec.batch_size, seed=0)
  held = max(1, max(len(h) for h in heldout_sets))
  rows = np.stack([np.resize(h, held) if len(h) else np.zeros(held, np.int64)
                   for h in heldout_sets])
  mask = np.stack([np.arange(held) < len(h) for h in heldout_sets]).astype(np.float32)
  x_held = jnp.asarray(data["image"][rows])
  y_held = jnp.asarray(data["label"][rows].argmax(-1))
  apply_fn = states[0].apply_fn
  agreement = _agreement(apply_fn)

  def evaluate(st):
    variables = {"params": st.params, "batch_stats": st.batch_stats}
    score = agreement(variables, x_held, y_held, jnp.asarray(mask))
    # A model without held-out rows keeps its last parameters (score rises each time).
    score = jnp.where(jnp.asarray(mask.sum(1) > 0), score, st.step.astype(jnp.float32))
    return {"score": score}

  evaluator = Evaluator(evaluate, every=spec.eval_every, models=len(states))
  state, stats = run_loop(state, step, data, sampler, key=key, num_steps=spec.steps,
                          steps_per_call=spec.steps_per_call, checkpointer=checkpointer,
                          checkpoint_every=spec.eval_every, writer=writer,
                          log_every=spec.eval_every, evaluator=evaluator, progress=progress,
                          desc=desc, compile_cache=compile_cache)
  return apply_fn, stats.best.tree, stats


class OnlineKnockoff:
  """The adaptive strategy's knockoff: `steps` more training steps (through `run_loop`,
  continuing its state) on everything collected so far after each batch of queries."""

  def __init__(self, spec: KnockoffSpec, num_classes: int, input_shape: tuple[int, ...],
               key: jax.Array, steps: int, total_steps: int | None = None,
               compile_cache: dict | None = None):
    self.spec, self.steps = spec, int(steps)
    # Its learning rate decays over the steps of the whole collection (`total_steps`).
    self.state = fresh_state(dataclasses.replace(spec, steps=total_steps or spec.steps),
                             num_classes, input_shape, key)
    self.key = jax.random.fold_in(key, 1)
    # One compiled chunk for every update (share a dict to reuse it across knockoffs).
    self._compiled = {} if compile_cache is None else compile_cache
    self._logits = jax.jit(lambda v, x: self.state.apply_fn(v, x, train=False))

  def logits(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(parallel.predict_batches(
        lambda xb: self._logits(self.state.variables, xb), (x,), 500))

  def update(self, x: np.ndarray, targets: np.ndarray) -> None:
    batch = min(self.spec.batch_size, len(x))
    batch = max(batch - batch % parallel.data_mesh().devices.size, 0)
    if batch == 0:
      return
    step = _train_step(self.spec.shift)
    start = int(jax.device_get(self.state.step))
    self.state, _ = run_loop(self.state, step, {"image": x, "label": targets},
                             EpochSampler(len(x), batch, seed=start), key=self.key,
                             num_steps=start + self.steps,
                             steps_per_call=min(self.steps, self.spec.steps_per_call),
                             progress=False, compile_cache=self._compiled)
