"""Stacks of models trained together: parameters with a leading model axis M under `vmap`.

A stack is any train state whose array leaves are [M, ...] (`stack`); `vmap_step` turns a
one-model step into a step of the stack, which `rsec.training.loop.run_loop` runs like any
other, with batches [M, B, ...] from an `IndexSetSampler` (one index set per model: class
pools, nested budget prefixes, zoo splits). Model m draws its randomness from
`fold_in(key, m)`: its training depends on its data, its initialisation and its index m.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp


def stack(states: Sequence[Any]) -> Any:
  """One pytree with leaves [M, ...] from M states of the same structure (static fields,
  e.g. `apply_fn` and `tx`, are taken from the first)."""
  if not states:
    raise ValueError("stack() needs at least one state")
  leaves, treedef = jax.tree.flatten(states[0])
  others = [jax.tree.leaves(s) for s in states[1:]]
  for i, ls in enumerate(others, 1):
    if [jnp.shape(x) for x in ls] != [jnp.shape(x) for x in leaves]:
      raise ValueError(f"stack(): state {i} has other arrays than state 0 (a stack needs "
                       f"models of one architecture)")
  return jax.tree.unflatten(treedef, [jnp.stack(xs) for xs in zip(leaves, *others)])


def unstack(tree: Any, index: int) -> Any:
  """Model `index` of a stack (leaves [M, ...] -> [...])."""
  return jax.tree.map(lambda x: x[index], tree)


def num_models(tree: Any) -> int:
  return jax.tree.leaves(tree)[0].shape[0]


def vmap_step(step: Callable) -> Callable:
  """`step(state, batch, key)` of one model -> the same step of a stack.

  The returned step takes a stacked state, batches with leaves [M, B, ...] and one key;
  model m uses `fold_in(key, m)`. Metrics come back [M] (the loop logs their mean and
  stops on any model's non-finite step).
  """

  def stacked(state, batch, key):
    keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(num_models(state)))
    return jax.vmap(step)(state, batch, keys)

  return stacked
