"""Orbax checkpoints of a `TrainState`, with metadata that guards against mismatches.

Each checkpoint holds the state pytree (step, params, batch_stats, opt_state) and a JSON
`meta` item describing the model (name, classes, parameter shapes). Restoring into a state
whose description differs raises a `ValueError` instead of loading the wrong weights.
The data position and PRNG stream are functions of `step`, so the step is all a resumed
run needs besides the state.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from rsec.training.state import TrainState


def describe_params(params: Any) -> str:
  """A short digest of the parameter tree's paths, shapes and dtypes."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  text = ";".join(f"{jax.tree_util.keystr(p)}:{tuple(x.shape)}:{x.dtype}" for p, x in leaves)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
  """Saves and restores `TrainState`s under `directory` (kept: the last `max_to_keep`)."""

  def __init__(self, directory: str, meta: dict, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.meta = dict(meta)
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, state: TrainState, *, force: bool = False) -> None:
    step = int(jax.device_get(state.step))
    if step in self._mngr.all_steps():
      return
    meta = dict(self.meta, params_digest=describe_params(state.params), step=step)
    self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state.checkpoint_tree()), meta=ocp.args.JsonSave(meta)),
        force=force)
    self._mngr.wait_until_finished()

  def read_meta(self, step: int) -> dict:
    return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def check_compatible(self, state: TrainState, step: int) -> None:
    """Raises ValueError if the checkpoint at `step` was written for another model."""
    saved = self.read_meta(step)
    want = dict(self.meta, params_digest=describe_params(state.params))
    for k, v in want.items():
      if k in saved and saved[k] != v:
        raise ValueError(
            f"the checkpoint in {self.directory} (step {step}) was written with {k}="
            f"{saved[k]!r}, but this run has {k}={v!r}; use another workdir or the same "
            f"model configuration")

  def restore(self, state: TrainState, step: int | None = None) -> TrainState:
    """Restores the latest (or given) step into the shardings and structure of `state`.

    Falls back to an older checkpoint when the newest cannot be read (a truncated or
    corrupted write), logging which one it skipped; raises ValueError if none is readable.
    """
    steps = [step] if step is not None else sorted(self._mngr.all_steps(), reverse=True)
    if not steps:
      raise ValueError(f"no checkpoint found in {self.directory}")
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, jax.Array) else x, state.checkpoint_tree())
    errors = []
    for s in steps:
      self.check_compatible(state, s)
      try:
        tree = self._mngr.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
      except Exception as e:  # noqa: BLE001 -- orbax raises many types for bad files
        logging.warning("checkpoint step %d in %s is unreadable (%s); trying an older one",
                        s, self.directory, e)
        errors.append(f"step {s}: {e}")
        continue
      if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
                 if np.issubdtype(np.asarray(x).dtype, np.floating)):
        logging.warning("checkpoint step %d holds non-finite values; trying an older one", s)
        errors.append(f"step {s}: non-finite values")
        continue
      return state.replace_tree(tree)
    raise ValueError(f"no readable checkpoint in {self.directory}: " + "; ".join(errors))

  def close(self) -> None:
    self._mngr.close()


def read_run_config(workdir: str, what: str, command: str):
  """The `config.json` an entry point left in `workdir`, as a ConfigDict.

  ValueError naming `what` was expected there and the `command` that makes it, if none.
  """
  from rsec import config as cfg_lib
  path = os.path.join(workdir or "", "config.json")
  if not workdir or not os.path.exists(path):
    raise ValueError(f"no {what} in {workdir!r} (missing config.json); make one with "
                     f"`{command}`")
  with open(path) as f:
    return cfg_lib.from_json(f.read())


def restore_latest(directory: str, build: Callable[[dict], Any], what: str, command: str):
  """Restores the newest checkpoint in `directory` into the template `build(meta)` makes
  from the checkpoint's metadata (`build` may raise ValueError on a mismatch).

  ValueError naming the `command` that makes one when `directory` holds no checkpoint.
  """
  ckpt = Checkpointer(directory, {})
  try:
    step = ckpt.latest_step()
    if step is None:
      raise ValueError(f"no {what} checkpoint in {directory}; make one with `{command}`")
    return ckpt.restore(build(ckpt.read_meta(step)))
  finally:
    ckpt.close()
