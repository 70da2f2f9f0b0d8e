"""Orbax checkpoints of a `TrainState`, with metadata that guards against mismatches.

Each checkpoint holds the state pytree (step, params, batch_stats, opt_state) and a JSON
`meta` item describing the model (name, classes, parameter shapes) and a SHA-256 digest
of the saved arrays. Restoring into a state whose description differs raises a
`ValueError` instead of loading the wrong weights; a checkpoint whose metadata or arrays
cannot be read, or whose arrays do not match their digest (a bit flip), is skipped for
the next older one, and a resuming run deletes it so that training on rewrites that step.
Temporary directories left by a write that was killed are removed on start.
The data position and PRNG stream are functions of `step`, so the step is all a resumed
run needs besides the state.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from rsec.training.state import TrainState


def arrays_digest(tree: Any) -> str:
  """SHA-256 (hex, 32 digits) of every leaf's path, dtype, shape and bytes.

  Multi-process: the state is replicated, so each process hashes its own full copy.
  """
  h = hashlib.sha256()
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    a = np.ascontiguousarray(np.asarray(jax.device_get(x)))
    h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:32]


def describe_params(params: Any) -> str:
  """A short digest of the parameter tree's paths, shapes and dtypes."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  text = ";".join(f"{jax.tree_util.keystr(p)}:{tuple(x.shape)}:{x.dtype}" for p, x in leaves)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def remove_stale_writes(directory: str) -> list[str]:
  """Deletes the `<step>.orbax-checkpoint-tmp*` folders a killed write left in `directory`
  (process 0 only; orbax's own cleanup option runs asynchronously, after our first
  restore). Returns the names removed."""
  if jax.process_index() != 0 or not os.path.isdir(directory):
    return []
  stale = [n for n in os.listdir(directory) if ".orbax-checkpoint-tmp" in n]
  for name in stale:
    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
  if stale:
    logging.warning("removed %d unfinished checkpoint writes in %s: %s", len(stale),
                    directory, ", ".join(stale))
  return stale


def global_step(state: Any) -> int:
  """The step counter of a state: a scalar, or [M] for a stack of models (all equal)."""
  return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


class Checkpointer:
  """Saves and restores `TrainState`s under `directory` (kept: the last `max_to_keep`)."""

  def __init__(self, directory: str, meta: dict, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.meta = dict(meta)
    remove_stale_writes(self.directory)
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, state: TrainState, *, force: bool = False) -> None:
    step = global_step(state)
    if step in self._mngr.all_steps():
      return
    meta = dict(self.meta, params_digest=describe_params(state.params), step=step,
                arrays_digest=arrays_digest(state.checkpoint_tree()))
    self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state.checkpoint_tree()), meta=ocp.args.JsonSave(meta)),
        force=force)
    self._mngr.wait_until_finished()

  def read_meta(self, step: int) -> dict:
    return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def check_compatible(self, state: TrainState, step: int,
                       saved: dict | None = None) -> None:
    """Raises ValueError if the checkpoint at `step` (metadata `saved`, read if not
    given) was written for another model."""
    saved = self.read_meta(step) if saved is None else saved
    want = dict(self.meta, params_digest=describe_params(state.params))
    for k, v in want.items():
      if k in saved and saved[k] != v:
        raise ValueError(
            f"the checkpoint in {self.directory} (step {step}) was written with {k}="
            f"{saved[k]!r}, but this run has {k}={v!r}; use another workdir or the same "
            f"model configuration")

  def restore(self, state: TrainState, step: int | None = None, *,
              drop_unreadable: bool = True) -> TrainState:
    """Restores the latest (or given) step into the shardings and structure of `state`.

    Falls back to an older checkpoint when the newest cannot be read (a truncated or
    corrupted write, unreadable metadata, arrays that do not match their digest), logging
    which one it skipped, and (`drop_unreadable`, what a resuming run wants) deletes it,
    so the step is written again when training reaches it. Raises ValueError if none is
    readable, or if a readable one was written for another model.
    """
    steps = [step] if step is not None else sorted(self._mngr.all_steps(), reverse=True)
    if not steps:
      raise ValueError(f"no checkpoint found in {self.directory}")
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, jax.Array) else x, state.checkpoint_tree())
    errors = []
    for s in steps:
      try:
        meta = self.read_meta(s)
      except Exception as e:  # noqa: BLE001 -- orbax raises many types for bad files
        self._skip(s, f"unreadable metadata ({e})", errors, drop_unreadable)
        continue
      self.check_compatible(state, s, meta)
      try:
        tree = self._mngr.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
      except Exception as e:  # noqa: BLE001
        self._skip(s, f"unreadable ({e})", errors, drop_unreadable)
        continue
      if "arrays_digest" in meta and arrays_digest(tree) != meta["arrays_digest"]:
        self._skip(s, "arrays that do not match their saved digest", errors, drop_unreadable)
        continue
      if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
                 if np.issubdtype(np.asarray(x).dtype, np.floating)):
        self._skip(s, "non-finite values", errors, drop_unreadable)
        continue
      return state.replace_tree(tree)
    raise ValueError(f"no readable checkpoint in {self.directory}: " + "; ".join(errors))

  def _skip(self, step: int, why: str, errors: list, drop: bool) -> None:
    logging.warning("checkpoint step %d in %s has %s; trying an older one%s", step,
                    self.directory, why, " (deleting it)" if drop else "")
    errors.append(f"step {step}: {why}")
    if drop:
      self._mngr.delete(step)

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
    if ckpt.latest_step() is None:
      raise ValueError(f"no {what} checkpoint in {directory}; make one with `{command}`")
    for step in reversed(ckpt.all_steps()):  # the newest step whose metadata reads
      try:
        meta = ckpt.read_meta(step)
      except Exception as e:  # noqa: BLE001 -- orbax raises many types for bad files
        logging.warning("checkpoint step %d in %s has unreadable metadata (%s)", step,
                        directory, e)
        continue
      return ckpt.restore(build(meta), drop_unreadable=False)
    raise ValueError(f"no {what} checkpoint in {directory} has readable metadata; make one "
                     f"with `{command}`")
  finally:
    ckpt.close()
