"""A classifier's state from a config: build it, describe its checkpoints, restore it.

Training it from a config (modes, the loop, evaluation) is `rsec.train_classifier`.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from rsec import parallel
from rsec.data.sources import ClassificationData
from rsec.models.classifiers import make_model
from rsec.training.checkpoint import Checkpointer, read_run_config, restore_latest
from rsec.training.state import TrainState, create_train_state, make_optimizer


def build_state(c: ml_collections.ConfigDict, num_classes: int, image_shape: tuple[int, ...],
                steps_per_epoch: int) -> TrainState:
  """A fresh state; the learning rate decays every epoch (`steps_per_epoch` steps) or every
  `training.lr_decay_every` steps (> 0)."""
  model = make_model(c.model.name, num_classes)
  t = c.training
  every = int(t.get("lr_decay_every", 0))
  tx = make_optimizer(t.learning_rate, every or steps_per_epoch,
                      lr_decay=t.lr_decay, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay,
                      name=t.optimizer)
  key = jax.random.fold_in(jax.random.key(c.seed), 0)
  return create_train_state(model, tx, key, (1,) + tuple(image_shape))


def checkpoint_meta(c: ml_collections.ConfigDict, num_classes: int,
                    image_shape: tuple[int, ...]) -> dict[str, Any]:
  return {"model": c.model.name, "num_classes": num_classes, "mode": c.training.mode,
          "image_shape": [int(d) for d in image_shape]}


def check_resumable(c: ml_collections.ConfigDict, data: ClassificationData, workdir: str) -> None:
  """ValueError if `workdir` holds checkpoints written for another model configuration.

  Called before anything is written into the workdir, so a refused run changes nothing.
  """
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return
  ckpt = Checkpointer(directory, checkpoint_meta(c, data.num_classes,
                                                 data.train["image"].shape[1:]))
  try:
    if ckpt.latest_step() is not None:
      state = build_state(c, data.num_classes, data.train["image"].shape[1:], 1)
      ckpt.check_compatible(state, ckpt.latest_step())
  finally:
    ckpt.close()


def restore_classifier(workdir: str, config: ml_collections.ConfigDict | None = None
                       ) -> tuple[TrainState, ml_collections.ConfigDict]:
  """Loads the final classifier that `train_classifier` left in `workdir`.

  The config comes from `workdir/config.json` unless given. Raises ValueError naming the
  command that makes the checkpoint when there is none.
  """
  command = ("python -m experiments.train_classifier --config=configs/train_classifier.py:quick "
             f"--workdir={workdir}")
  if config is None:
    config = read_run_config(workdir, "classifier", command)

  def build(meta):
    steps_per_epoch = max(1, config.data.train_size // config.training.batch_size)
    image_shape = tuple(meta.get("image_shape", (config.data.size, config.data.size, 1)))
    state = build_state(config, meta["num_classes"], image_shape, steps_per_epoch)
    return parallel.replicate(state, parallel.data_mesh())

  state = restore_latest(os.path.join(workdir, "checkpoints"), build, "classifier", command)
  return state, config
