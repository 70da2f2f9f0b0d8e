"""Train and evaluate one classifier from a config: the library behind train_classifier.

Other experiments (robustness vs generalization, context) call `train_classifier` with their
own data and modes, so this stays free of report writing.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from rsec import config as cfg_lib
from rsec import parallel
from rsec.data.sources import ClassificationData, validate_data_config
from rsec.models.classifiers import MODELS, make_model
from rsec.training import modes
from rsec.training.checkpoint import Checkpointer, read_run_config, restore_latest
from rsec.training.loop import evaluate, fit
from rsec.training.metrics import MetricWriter
from rsec.training.state import TrainState, create_train_state, make_optimizer


def validate_train_config(c: ml_collections.ConfigDict) -> None:
  """Range and choice checks for a train_classifier config (ValueError names the key)."""
  cfg_lib.check(c, "seed", type_=int, low=0)
  validate_data_config(c)
  cfg_lib.check(c, "model.name", type_=str, choices=MODELS.names())
  t = "training."
  cfg_lib.check(c, t + "mode", type_=str, choices=modes.mode_names())
  cfg_lib.check(c, t + "batch_size", type_=int, low=1)
  cfg_lib.check(c, t + "epochs", type_=(int, float), low=0, low_exclusive=True)
  cfg_lib.check(c, t + "optimizer", type_=str, choices=("adam", "sgd"))
  cfg_lib.check(c, t + "learning_rate", type_=float, low=0, low_exclusive=True)
  cfg_lib.check(c, t + "lr_decay", type_=float, low=0, high=1, low_exclusive=True)
  cfg_lib.check(c, t + "b1", type_=float, low=0, high=1)
  cfg_lib.check(c, t + "b2", type_=float, low=0, high=1)
  cfg_lib.check(c, t + "weight_decay", type_=float, low=0)
  cfg_lib.check(c, t + "steps_per_call", type_=int, low=1)
  cfg_lib.check(c, t + "checkpoint_every", type_=int, low=1)
  cfg_lib.check(c, t + "log_every", type_=int, low=1)
  cfg_lib.check(c, "eval.batch_size", type_=int, low=1)
  if c.training.mode == "outlier_exposure":
    cfg_lib.check(c, t + "outlier_weight", type_=float, low=0, low_exclusive=True)
    if not c.data.get("outlier_characters"):
      raise ValueError("config.training.mode='outlier_exposure' needs outlier images: set "
                       "config.data.outlier_characters (e.g. 'KLMNOPQRST')")
  if c.training.mode not in ("normal", "outlier_exposure", "misinformation"):
    from rsec.attacks import ATTACKS
    cfg_lib.check(c, t + "attack.name", type_=str, choices=ATTACKS.names())
    cfg_lib.check(c, t + "adversarial_fraction", type_=float, low=0, high=1, low_exclusive=True)
    cfg_lib.check(c, t + "trades_beta", type_=float, low=0)
  n = jax.device_count()
  for key in ("training.batch_size", "eval.batch_size"):
    if cfg_lib.get(c, key) % n:
      raise ValueError(f"config.{key}={cfg_lib.get(c, key)} must be divisible by the number "
                       f"of devices ({n})")
  parallel.check_virtual_shards(c.training.get("virtual_shards", 0), c.training.batch_size, n,
                                name="config.training.virtual_shards")
  if c.training.batch_size > c.data.train_size:
    raise ValueError(f"config.training.batch_size={c.training.batch_size} is larger than "
                     f"config.data.train_size={c.data.train_size}")


def build_state(c: ml_collections.ConfigDict, num_classes: int, image_shape: tuple[int, ...],
                steps_per_epoch: int) -> TrainState:
  model = make_model(c.model.name, num_classes)
  t = c.training
  tx = make_optimizer(t.learning_rate, steps_per_epoch, lr_decay=t.lr_decay, b1=t.b1, b2=t.b2,
                      weight_decay=t.weight_decay, name=t.optimizer)
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


def train_classifier(c: ml_collections.ConfigDict, data: ClassificationData, workdir: str,
                     *, progress: bool = True) -> tuple[TrainState, dict[str, Any]]:
  """Trains (or resumes) the classifier of config `c` on `data`; checkpoints in workdir.

  Returns the final state and a flat dict of results (test accuracy/error, train size,
  steps, throughput).
  """
  validate_train_config(c)
  mesh = parallel.data_mesh()
  t = c.training
  n_train = len(data.train["label"])
  steps_per_epoch = n_train // t.batch_size
  num_steps = max(1, int(round(t.epochs * steps_per_epoch)))
  state = build_state(c, data.num_classes, data.train["image"].shape[1:], steps_per_epoch)
  mode = modes.make_mode(c, state.apply_fn)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                      checkpoint_meta(c, data.num_classes, data.train["image"].shape[1:]))
  writer = MetricWriter(workdir)
  try:
    state, stats = fit(
        state, data.train, key=jax.random.fold_in(jax.random.key(c.seed), 1),
        batch_size=t.batch_size, num_steps=num_steps, seed=c.seed, mesh=mesh, perturb=mode.perturb,
        loss_fn=mode.loss,
        steps_per_call=t.steps_per_call, virtual_shards=t.get("virtual_shards", 0),
        checkpointer=ckpt, checkpoint_every=t.checkpoint_every,
        writer=writer, log_every=t.log_every, progress=progress)
    test = evaluate(state, data.test["image"], data.test["label"],
                    batch_size=c.eval.batch_size, mesh=mesh)
    train_eval = evaluate(state, data.train["image"][:len(data.test["label"])],
                          data.train["label"][:len(data.test["label"])],
                          batch_size=c.eval.batch_size, mesh=mesh)
    writer.write(num_steps, {"test/accuracy": test["accuracy"], "test/loss": test["loss"]})
  finally:
    writer.close()
    ckpt.close()
  results = {
      "test_accuracy": test["accuracy"],
      "test_error": 1.0 - test["accuracy"],
      "test_loss": test["loss"],
      "train_accuracy": train_eval["accuracy"],
      "nonfinite_logits": test["nonfinite_logits"],
      "train_size": n_train,
      "test_size": len(data.test["label"]),
      "steps": num_steps,
      "epochs": t.epochs,
      "examples_per_second": stats.examples_per_second,
      "train_seconds": stats.seconds,
      "devices": jax.device_count(),
  }
  return state, results


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
