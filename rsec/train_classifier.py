"""Train and evaluate one classifier from a config: the library behind
`experiments.train_classifier`.

Other experiments (robustness vs generalization, the stealing victims) call
`train_classifier` with their own data and modes, so this stays free of report writing.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from rsec import config as cfg_lib
from rsec import modes, parallel
from rsec.data.sources import ClassificationData, validate_data_config
from rsec.models.classifiers import MODELS
from rsec.modes.manifold import MANIFOLD_MODES, validate_manifold_config
from rsec.modes.scenes import SCENES_MODES
from rsec.training.checkpoint import Checkpointer
from rsec.training.classifier import build_state, checkpoint_meta
from rsec.training.loop import evaluate, fit
from rsec.training.metrics import MetricWriter
from rsec.training.state import TrainState


def num_steps(c: ml_collections.ConfigDict, train_size: int) -> int:
  """`training.steps` if > 0, else round(epochs * (train_size // batch_size)) (at least 1)."""
  t = c.training
  if t.get("steps", 0):
    return int(t.steps)
  return max(1, int(round(t.epochs * (train_size // t.batch_size))))


def validate_train_config(c: ml_collections.ConfigDict) -> None:
  """Range and choice checks for a train_classifier config (ValueError names the key)."""
  cfg_lib.check(c, "seed", type_=int, low=0)
  validate_data_config(c)
  cfg_lib.check(c, "model.name", type_=str, choices=MODELS.names())
  t = "training."
  cfg_lib.check(c, t + "mode", type_=str, choices=modes.mode_names())
  if c.training.mode in SCENES_MODES:
    raise ValueError(
        f"config.training.mode={c.training.mode!r} is a SCENES mode: it edits scene layouts, "
        "which FONTS / TFDS classifiers do not have; it trains the SCENES classifiers and "
        "segmenters of experiments.context_sensitivity and experiments.train_remover")
  cfg_lib.check(c, t + "batch_size", type_=int, low=1)
  cfg_lib.check(c, t + "epochs", type_=(int, float), low=0, low_exclusive=True)
  cfg_lib.check(c, t + "steps", type_=int, low=0)
  if "lr_decay_every" in c.training:
    cfg_lib.check(c, t + "lr_decay_every", type_=int, low=0)   # 0: every epoch
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
  if c.training.mode in ("adversarial", "adversarial_full", "trades"):
    from rsec.attacks import ATTACKS
    cfg_lib.check(c, t + "attack.name", type_=str, choices=ATTACKS.names())
  if c.training.mode == "adversarial":
    modes.check_fraction("config.training.adversarial_fraction",
                         c.training.adversarial_fraction, c.training.batch_size)
  if c.training.mode == "trades":
    from rsec.modes.adversarial import TRADES_ATTACKS
    cfg_lib.check(c, t + "attack.name", type_=str, choices=TRADES_ATTACKS)
    cfg_lib.check(c, t + "trades_beta", type_=float, low=0)
  if c.training.mode in MANIFOLD_MODES:
    validate_manifold_config(c)
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
  total = num_steps(c, n_train)
  state = build_state(c, data.num_classes, data.train["image"].shape[1:], steps_per_epoch)
  mode = modes.make_mode(c, state.apply_fn)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                      checkpoint_meta(c, data.num_classes, data.train["image"].shape[1:]))
  writer = MetricWriter(workdir)
  try:
    state, stats = fit(
        state, data.train, key=jax.random.fold_in(jax.random.key(c.seed), 1),
        batch_size=t.batch_size, num_steps=total, seed=c.seed, mesh=mesh, perturb=mode.perturb,
        loss_fn=mode.loss,
        steps_per_call=t.steps_per_call, virtual_shards=t.get("virtual_shards", 0),
        checkpointer=ckpt, checkpoint_every=t.checkpoint_every,
        writer=writer, log_every=t.log_every, progress=progress)
    test = evaluate(state, data.test["image"], data.test["label"],
                    batch_size=c.eval.batch_size, mesh=mesh)
    train_eval = evaluate(state, data.train["image"][:len(data.test["label"])],
                          data.train["label"][:len(data.test["label"])],
                          batch_size=c.eval.batch_size, mesh=mesh)
    writer.write(total, {"test/accuracy": test["accuracy"], "test/loss": test["loss"]})
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
      "steps": total,
      "epochs": total / max(steps_per_epoch, 1),
      "examples_per_second": stats.examples_per_second,
      "train_seconds": stats.seconds,
      "devices": jax.device_count(),
  }
  return state, results


