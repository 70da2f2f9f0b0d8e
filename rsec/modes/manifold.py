"""On-manifold and deformation training modes: perturb half the batch, then the ordinary step.

- on_manifold_true: theta attack on the FONTS generator (batches carry 'font' and 'theta').
- on_manifold_learned: zeta attack on the true class's VAE-GAN decoder around mu_enc(x);
  perturbed rows count only where valid (classifier correct on dec(z0), z in [-2, 2]^d):
  invalid rows get weight 0 in the loss instead of being subsampled away.
- stn_augment: a random affine per perturbed row, uniform in the configured theta box.
- stn_adversarial: the deformation attack (u = theta - identity) in the same box.

Settings live in `config.training.manifold` (`validate_manifold_config`); attacks use
Adam, select the highest-loss iterate and run on inference-mode logits.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rsec.attacks import make_loss, run_attack
from rsec.attacks.steps import STEPS
from rsec.manifold import parametrisations
from rsec.modes.base import TRAINING_MODES, TrainingMode, check_fraction, spread_rows


MANIFOLD_MODES = ("on_manifold_true", "on_manifold_learned", "stn_augment", "stn_adversarial")


def validate_manifold_config(c: ml_collections.ConfigDict) -> None:
  """Range checks for `config.training.manifold` (ValueError names the key). Defaults:
  `configs/train_classifier.py:manifold_config`."""
  from rsec import config as cfg_lib
  m = "training.manifold."
  if not c.training.get("manifold"):
    raise ValueError(f"config.training.mode={c.training.mode!r} needs config.training.manifold "
                     "(see configs/train_classifier.py:manifold_config)")
  for k in ("eta", "lr", "stn_eps", "latent_bound"):
    cfg_lib.check(c, m + k, type_=(int, float), low=0, low_exclusive=True)
  for k in ("steps", "restarts"):
    cfg_lib.check(c, m + k, type_=int, low=1)
  cfg_lib.check(c, m + "latent_dim", type_=int, low=0)
  check_fraction("config.training.manifold.fraction", c.training.manifold.fraction,
                 c.training.batch_size)
  if c.training.mode == "on_manifold_learned":
    cfg_lib.check(c, m + "vaegan_workdir", type_=str)
    if not c.training.manifold.vaegan_workdir:
      raise ValueError("config.training.manifold.vaegan_workdir is empty: on_manifold_learned "
                       "needs the workdir of `python -m experiments.train_vaegan "
                       "--config=configs/train_vaegan.py:quick --workdir=DIR`")


def _settings(config) -> ml_collections.ConfigDict:
  validate_manifold_config(config)
  return config.training.manifold


def weighted_cross_entropy(logits: jax.Array, batch: dict) -> jax.Array:
  """Mean cross-entropy over rows with weight 1 (batch['weight'] [B]; all rows if absent)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  w = batch.get("weight", jnp.ones_like(ce))
  return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1.0)


def _adam(s):
  return STEPS.get("adam")("linf", int(s.steps), {"step_size": float(s.lr)})


def _need(batch: dict, keys: tuple[str, ...], mode: str) -> None:
  missing = [k for k in keys if k not in batch]
  if missing:
    raise ValueError(f"training mode {mode!r} needs batch keys {list(keys)}; missing "
                     f"{missing} (FONTS data carries 'font' and 'theta')")


@TRAINING_MODES.register("on_manifold_true")
def on_manifold_true(config, apply_fn) -> TrainingMode:
  from rsec.data.fonts_dataset import theta_range
  from rsec.data.sources import load_prototypes_from_config
  if config.data.name != "fonts":
    raise ValueError(f"training mode 'on_manifold_true' needs FONTS data (the true manifold), "
                     f"got config.data.name={config.data.name!r}")
  s = _settings(config)
  protos = jnp.asarray(load_prototypes_from_config(config.data).images)
  low, high = theta_range(config.data.difficulty)
  param = parametrisations.true_manifold(protos, low, high)

  def perturb(variables, key, batch):
    _need(batch, ("font", "theta"), "on_manifold_true")
    rows = spread_rows(batch["label"].shape[0], float(s.fraction))
    y = batch["label"][rows]
    origin = parametrisations.true_origin(batch["font"][rows], y, batch["theta"][rows], low, high)
    _, x_adv, _ = run_attack(lambda x: apply_fn(variables, x, train=False), key, origin, y,
                             param, norm="linf", eps=float(s.eta), step=_adam(s),
                             loss=make_loss("ce"), steps=int(s.steps),
                             restarts=int(s.restarts), init="zero", select="max_loss")
    return dict(batch, image=batch["image"].at[rows].set(x_adv.astype(batch["image"].dtype)))
  return TrainingMode(perturb)


@TRAINING_MODES.register("on_manifold_learned")
def on_manifold_learned(config, apply_fn) -> TrainingMode:
  from rsec.manifold import learned
  s = _settings(config)
  state, _ = learned.restore_vaegan(s.vaegan_workdir, latent_dim=int(s.latent_dim) or None)
  low, high = learned.load_latent_box(s.vaegan_workdir)
  low, high = jnp.asarray(low), jnp.asarray(high)
  enc, dec = learned.class_encoder(state), learned.class_decoder(state)
  param = parametrisations.learned_manifold(dec)
  bound = float(s.latent_bound)

  def perturb(variables, key, batch):
    rows = spread_rows(batch["label"].shape[0], float(s.fraction))
    x, y = batch["image"][rows], batch["label"][rows]
    logits_fn = lambda im: apply_fn(variables, im, train=False)
    origin = parametrisations.learned_origin(enc(x, y), y, low[y], high[y])
    clean_ok = jnp.argmax(logits_fn(dec(origin["z0"], y)), -1) == y
    u, x_adv, _ = run_attack(logits_fn, key, origin, y, param, norm="linf",
                             eps=float(s.eta), step=_adam(s), loss=make_loss("ce"),
                             steps=int(s.steps), restarts=int(s.restarts), init="zero",
                             select="max_loss")
    valid = clean_ok & jnp.all(jnp.abs(origin["z0"] + u) <= bound + 1e-6, axis=-1)
    weight = jnp.ones(batch["label"].shape, jnp.float32).at[rows].set(
        valid.astype(jnp.float32))
    return dict(batch, image=batch["image"].at[rows].set(x_adv.astype(x.dtype)), weight=weight)
  return TrainingMode(perturb, weighted_cross_entropy)


def _stn_box(s):
  return parametrisations.deformation_ranges(float(s.stn_eps))


@TRAINING_MODES.register("stn_augment")
def stn_augment(config, apply_fn) -> TrainingMode:
  del apply_fn
  s = _settings(config)
  low, high = _stn_box(s)

  def perturb(variables, key, batch):
    del variables
    rows = spread_rows(batch["label"].shape[0], float(s.fraction))
    x = batch["image"][rows]
    theta = jax.random.uniform(key, (len(rows), 6), jnp.float32, low, high)
    return dict(batch, image=batch["image"].at[rows].set(parametrisations.warp_images(x, theta)))
  return TrainingMode(perturb)


@TRAINING_MODES.register("stn_adversarial")
def stn_adversarial(config, apply_fn) -> TrainingMode:
  s = _settings(config)
  low, high = _stn_box(s)
  param = parametrisations.deformation(low, high)

  def perturb(variables, key, batch):
    rows = spread_rows(batch["label"].shape[0], float(s.fraction))
    x, y = batch["image"][rows], batch["label"][rows]
    _, x_adv, _ = run_attack(lambda im: apply_fn(variables, im, train=False), key, x, y,
                             param, norm="linf", eps=float(s.stn_eps), step=_adam(s),
                             loss=make_loss("ce"), steps=int(s.steps),
                             restarts=int(s.restarts), init="uniform", select="max_loss")
    return dict(batch, image=batch["image"].at[rows].set(x_adv))
  return TrainingMode(perturb)
