"""Using trained VAE-GANs: per-model encode/decode, per-example class decoders, latent boxes,
reconstruction errors, and restoring the checkpoint `experiments.train_vaegan` writes.

Model m < C is class m's VAE-GAN; model C is the class-agnostic one. Everything runs in
inference mode (BatchNorm running statistics).
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from rsec import io, parallel
from rsec.manifold.vaegan_step import VAEGANState

TRAIN_COMMAND = ("python -m experiments.train_vaegan --config=configs/train_vaegan.py:quick "
                 "--workdir={}")


def encode_mean(state: VAEGANState, x: jax.Array, model: int) -> jax.Array:
  """mu_enc of model `model`: images [B, H, W, C] -> [B, d]."""
  return state.modules[0].apply(state.variables("enc", model), x, train=False)[0]


def decode(state: VAEGANState, z: jax.Array, model: int) -> jax.Array:
  """Decoder of model `model`: z [B, d] -> images [B, H, W, C]."""
  return state.modules[1].apply(state.variables("dec", model), z, train=False)


def per_example(apply: Callable, stacked: dict) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`f(inputs [B, ...], model [B] int) -> [B, ...]`: example i through model[i]'s weights.

  Gathers each example's weights (vmap over examples), so a batch of mixed classes costs
  one pass, not one per class.
  """
  def one(inp, m):
    v = jax.tree.map(lambda a: a[m], stacked)
    out = apply(v, inp[None], train=False)
    return jax.tree.map(lambda o: o[0], out)
  return jax.vmap(one)


def class_decoder(state: VAEGANState) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`decode(z [B, d], cls [B]) -> images`: each latent through its class's decoder."""
  return per_example(state.modules[1].apply, state.variables("dec"))


def class_encoder(state: VAEGANState) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`encode(x [B, H, W, C], cls [B]) -> mu [B, d]` with each example's class encoder."""
  f = per_example(state.modules[0].apply, state.variables("enc"))
  return lambda x, cls: f(x, cls)[0]


@jax.jit
def _reconstruct(state: VAEGANState, x: jax.Array, m: jax.Array) -> jax.Array:
  return class_decoder(state)(class_encoder(state)(x, m), m)


@jax.jit
def _encode(state: VAEGANState, x: jax.Array, m: jax.Array) -> jax.Array:
  return class_encoder(state)(x, m)


def reconstruct_by_model(state: VAEGANState, images: np.ndarray, models: np.ndarray,
                         batch: int = 250) -> np.ndarray:
  """dec_m(mu_enc_m(x)) for each image with its model index m [N] -> [N, H, W, C].

  Runs in padded chunks of `batch`, so one compilation serves every call of that size."""
  fn = lambda x, m: _reconstruct(state, x, m)
  return parallel.predict_batches(fn, (images, np.asarray(models, np.int32)), batch)


def latent_box(state: VAEGANState, images: np.ndarray, labels: np.ndarray,
               batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
  """Per-class box of encoded training latents: (low [C, d], high [C, d]), class encoders."""
  mu = parallel.predict_batches(lambda x, m: _encode(state, x, m),
                               (images, np.asarray(labels, np.int32)), batch)
  classes = state.num_models - 1
  low = np.stack([mu[labels == c].min(0) for c in range(classes)])
  high = np.stack([mu[labels == c].max(0) for c in range(classes)])
  return low, high


def reconstruction_errors(state: VAEGANState, images: np.ndarray, labels: np.ndarray,
                          batch: int = 250) -> dict[str, float]:
  """Mean per-image L2 reconstruction error ||x - dec(mu(x))||_2 and mean |x - x_rec| per
  pixel, for the class-specific models (each image through its class's model, overall and
  per class) and for the class-agnostic model."""
  c = state.num_models - 1
  out = {}
  for name, models in (("class", labels), ("agnostic", np.full_like(labels, c))):
    rec = reconstruct_by_model(state, images, models, batch)
    d = (images - rec).reshape(len(images), -1)
    l2, l1 = np.linalg.norm(d, axis=1), np.abs(d).mean(1)
    out[f"{name}_l2"], out[f"{name}_l1"] = float(l2.mean()), float(l1.mean())
    if name == "class":
      for k in range(c):
        out[f"class_{k}_l2"] = float(l2[labels == k].mean())
  return out


def restore_vaegan(workdir: str, latent_dim: int | None = None,
                   num_classes: int | None = None) -> tuple[VAEGANState,
                                                           ml_collections.ConfigDict]:
  """Loads the VAE-GANs `experiments.train_vaegan` left in `workdir`.

  Raises ValueError naming the command that makes them when they are missing, and when the
  checkpoint's latent size or class count differs from the ones asked for.
  """
  from rsec.manifold.train_vaegan import build_vaegan_state
  from rsec.training.checkpoint import read_run_config, restore_latest
  command = TRAIN_COMMAND.format(workdir or "DIR")
  config = read_run_config(workdir, "VAE-GAN", command)

  def build(meta):
    if latent_dim is not None and meta["latent_dim"] != latent_dim:
      raise ValueError(f"the VAE-GAN in {workdir} has latent size {meta['latent_dim']}, "
                       f"but latent_dim={latent_dim} was asked for")
    if num_classes is not None and meta["num_classes"] != num_classes:
      raise ValueError(f"the VAE-GAN in {workdir} has {meta['num_classes']} class models, "
                       f"but the data has {num_classes} classes")
    return build_vaegan_state(config, meta["num_classes"], tuple(meta["image_shape"]))

  state = restore_latest(os.path.join(workdir, "checkpoints"), build, "VAE-GAN", command)
  return state, config


def save_latent_box(workdir: str, low: np.ndarray, high: np.ndarray) -> str:
  """Writes the per-class box of encoded training latents next to the checkpoints."""
  path = os.path.join(workdir, "latent_box.npz")
  io.save_npz_atomic(path, {"low": low, "high": high})
  return path


def load_latent_box(workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """(low [C, d], high [C, d]) saved by `experiments.train_vaegan`."""
  path = os.path.join(workdir, "latent_box.npz")
  if not os.path.exists(path):
    raise ValueError(f"no latent box in {workdir!r} (missing latent_box.npz); make it with "
                     f"`{TRAIN_COMMAND.format(workdir or 'DIR')}`")
  with np.load(path) as f:
    return f["low"], f["high"]
