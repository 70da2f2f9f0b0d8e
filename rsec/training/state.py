"""Train state (a pytree) and the optimizer the paper uses."""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
  """Everything a training run needs to continue, as one pytree.

  `apply_fn` and `tx` are static (not leaves): a checkpoint holds only `step`,
  `params`, `batch_stats` and `opt_state`.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @property
  def variables(self) -> dict:
    return {"params": self.params, "batch_stats": self.batch_stats}

  def logits_fn(self) -> Callable[[jax.Array], jax.Array]:
    """Inference-mode logits (running BatchNorm statistics): what attacks see."""
    return lambda x: self.apply_fn(self.variables, x, train=False)

  def checkpoint_tree(self) -> dict:
    return {"step": self.step, "params": self.params,
            "batch_stats": self.batch_stats, "opt_state": self.opt_state}

  def replace_tree(self, tree: dict) -> "TrainState":
    return self.replace(**tree)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                       input_shape: tuple[int, ...]) -> TrainState:
  """Initialises a model on zeros of `input_shape` ([B, H, W, C]) and its optimizer state."""
  variables = model.init(key, jnp.zeros(input_shape, jnp.float32), train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", flax.core.FrozenDict()),
                    opt_state=tx.init(params), apply_fn=model.apply, tx=tx)


def make_optimizer(learning_rate: float, steps_per_epoch: int, *, lr_decay: float = 1.0,
                   b1: float = 0.9, b2: float = 0.999, weight_decay: float = 0.0,
                   name: str = "adam") -> optax.GradientTransformation:
  """Adam (or SGD with momentum) with the learning rate decayed by `lr_decay` every epoch.

  Weight decay is an L2 term added to the gradient before Adam, as Torch's `optim.Adam`
  (which the paper used) does, not AdamW's decoupled decay.
  """
  schedule = optax.exponential_decay(learning_rate, transition_steps=steps_per_epoch,
                                     decay_rate=lr_decay, staircase=True)
  if name == "adam":
    opt = optax.adam(schedule, b1=b1, b2=b2)
  elif name == "sgd":
    opt = optax.sgd(schedule, momentum=b1, nesterov=True)
  else:
    raise ValueError(f"unknown optimizer name {name!r}; expected one of ['adam', 'sgd']")
  return optax.chain(optax.add_decayed_weights(weight_decay), opt) if weight_decay else opt
