"""Config -> VAE-GAN state, config validation, and the training driver (no report writing)."""
from __future__ import annotations

import contextlib
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec.manifold.vaegan_step import (VAEGANState, class_sampler, init_vaegan_state,
                                           make_vaegan_step)
from rsec.models.vaegan import make_vaegan
from rsec.training.checkpoint import Checkpointer, global_step
from rsec.training.loop import run_loop
from rsec.training.metrics import MetricWriter
from rsec.training.state import make_optimizer


def validate_vaegan_config(c: ml_collections.ConfigDict) -> None:
  """Range checks for a train_vaegan config (ValueError names the key)."""
  from rsec.data.sources import validate_data_config
  cfg_lib.check(c, "seed", type_=int, low=0)
  validate_data_config(c)
  m, t = "model.", "training."
  cfg_lib.check(c, m + "latent_dim", type_=int, low=1)
  cfg_lib.check(c, m + "channels", type_=(tuple, list))
  cfg_lib.check(c, m + "disc_channels", type_=(tuple, list))
  for k in ("batch_size", "steps_per_call", "checkpoint_every", "log_every"):
    cfg_lib.check(c, t + k, type_=int, low=1)
  cfg_lib.check(c, t + "epochs", type_=(int, float), low=0, low_exclusive=True)
  cfg_lib.check(c, t + "learning_rate", type_=float, low=0, low_exclusive=True)
  cfg_lib.check(c, t + "lr_decay", type_=float, low=0, high=1, low_exclusive=True)
  cfg_lib.check(c, t + "b1", type_=float, low=0, high=1)
  cfg_lib.check(c, t + "b2", type_=float, low=0, high=1)
  cfg_lib.check(c, t + "weight_decay", type_=float, low=0)
  cfg_lib.check(c, t + "beta", type_=float, low=0)
  cfg_lib.check(c, t + "gamma", type_=float, low=0)
  if c.training.batch_size % jax.device_count():
    raise ValueError(f"config.training.batch_size={c.training.batch_size} must be divisible "
                     f"by the number of devices ({jax.device_count()})")


def build_vaegan_state(c: ml_collections.ConfigDict, num_classes: int,
                       image_shape: tuple[int, ...], steps_per_epoch: int = 1) -> VAEGANState:
  """num_classes + 1 freshly initialised VAE-GANs for config `c`."""
  modules = make_vaegan(c.model.latent_dim, image_shape[0], tuple(c.model.channels),
                        tuple(c.model.disc_channels), image_shape[-1])
  t = c.training
  tx = make_optimizer(t.learning_rate, steps_per_epoch, lr_decay=t.lr_decay, b1=t.b1, b2=t.b2,
                      weight_decay=t.weight_decay)
  key = jax.random.fold_in(jax.random.key(c.seed), 0)
  return init_vaegan_state(modules, tx, key, num_classes + 1, image_shape)


def vaegan_meta(c: ml_collections.ConfigDict, num_classes: int,
                image_shape: tuple[int, ...]) -> dict[str, Any]:
  return {"latent_dim": c.model.latent_dim, "num_classes": num_classes,
          "image_shape": [int(d) for d in image_shape]}


def train_vaegans(c: ml_collections.ConfigDict, train: dict[str, np.ndarray], num_classes: int,
                  workdir: str, progress: bool = True) -> tuple[VAEGANState, dict[str, Any]]:
  """Trains (or resumes) the C + 1 VAE-GANs of config `c` in one data-parallel run of the
  one training loop (checkpoints in <workdir>/checkpoints, logs in <workdir>)."""
  validate_vaegan_config(c)
  t = c.training
  sampler = class_sampler(train["label"], num_classes, t.batch_size, c.seed)
  num_steps = max(1, int(round(t.epochs * sampler.steps_per_epoch)))
  image_shape = tuple(train["image"].shape[1:])
  state = build_vaegan_state(c, num_classes, image_shape, sampler.steps_per_epoch)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                      vaegan_meta(c, num_classes, image_shape))
  with contextlib.closing(MetricWriter(workdir)) as writer, contextlib.closing(ckpt):
    state, stats = run_loop(
        state, make_vaegan_step(t.beta, t.gamma), {"image": train["image"]}, sampler,
        key=jax.random.fold_in(jax.random.key(c.seed), 1), num_steps=num_steps,
        steps_per_call=t.steps_per_call, checkpointer=ckpt,
        checkpoint_every=t.checkpoint_every, writer=writer, log_every=t.log_every,
        progress=progress, desc="vaegan")
  return state, {"steps": global_step(state), "train_seconds": stats.seconds,
                 "steps_per_epoch": sampler.steps_per_epoch,
                 "seconds_per_step": stats.seconds / max(1, stats.steps_run)}
