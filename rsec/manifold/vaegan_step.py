"""Training C + 1 VAE-GANs at once: one per class (class-specific manifolds) + one agnostic.

The three networks' parameters are one pytree with a leading *model* axis M = C + 1
(models 0..C-1 see only their class, model C sees every class); the step vmaps the
single-model GAN update over that axis. The one training loop (`rsec.training.loop.run_loop`)
runs it with batches [K, M, B, H, W, C], sharded over B on the data mesh (BatchNorm
statistics are then global).

Losses (Larsen et al. 2016, as in Stutz et al. 2019), per model, averaged over the batch:
  encoder:  KL(q(z|x) || N(0, I)) + beta * L1(x, x_rec) + gamma * BCE(D(x_rec), real)
  decoder:                          beta * L1(x, x_rec) + gamma * BCE(D(x_rec), real)
  discriminator: BCE(D(x), real) + BCE(D(x_rec), fake)
with L1 summed over pixels. The encoder and decoder share one objective (KL does not depend
on the decoder), so one gradient gives both; the discriminator gets its own. All three are
updated simultaneously from the same forward pass.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rsec.models.vaegan import Decoder, Discriminator, Encoder
from rsec.training.loop import IndexSetSampler

NETS = ("enc", "dec", "disc")


@struct.dataclass
class VAEGANState:
  """M stacked VAE-GANs. params/batch_stats: {'enc','dec','disc'} with leaves [M, ...]."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  modules: tuple = struct.field(pytree_node=False)  # (Encoder, Decoder, Discriminator)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @property
  def num_models(self) -> int:
    return jax.tree.leaves(self.params)[0].shape[0]

  def variables(self, net: str, model: int | None = None) -> dict:
    """Inference variables of one network: stacked [M, ...], or model `model`'s."""
    v = {"params": self.params[net], "batch_stats": self.batch_stats[net]}
    return v if model is None else jax.tree.map(lambda a: a[model], v)

  def checkpoint_tree(self) -> dict:
    return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
            "opt_state": self.opt_state}

  def replace_tree(self, tree: dict) -> "VAEGANState":
    return self.replace(**tree)


def init_vaegan_state(modules: tuple[Encoder, Decoder, Discriminator],
                      tx: optax.GradientTransformation, key: jax.Array, num_models: int,
                      image_shape: tuple[int, ...]) -> VAEGANState:
  """Independent initialisations of `num_models` VAE-GANs on images [H, W, C]."""
  enc, dec, disc = modules
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  z = jnp.zeros((1, enc.latent_dim), jnp.float32)

  def one(k):
    ks = jax.random.split(k, 3)
    vs = [m.init(kk, a, train=False) for m, kk, a in zip(modules, ks, (x, z, x))]
    params = {n: v["params"] for n, v in zip(NETS, vs)}
    stats = {n: v.get("batch_stats", {}) for n, v in zip(NETS, vs)}
    return params, stats, tx.init(params)

  params, stats, opt = jax.jit(jax.vmap(one))(jax.random.split(key, num_models))
  return VAEGANState(jnp.zeros((), jnp.int32), params, stats, opt, tuple(modules), tx)


def kl_to_prior(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) per example, [B]."""
  return -0.5 * jnp.sum(1.0 + logvar - mu ** 2 - jnp.exp(logvar), axis=-1)


def make_vaegan_step(beta: float, gamma: float) -> Callable:
  """`step(state, {'image': [M, B, H, W, C]}, key) -> (state, metrics {name: [M]})`.

  Non-finite losses or gradients leave a model unchanged and report finite = 0.
  """

  def single(params, stats, opt_state, x, key, modules, tx):
    enc, dec, disc = modules

    def run(module, p, inp, s):
      out, upd = module.apply({"params": p, "batch_stats": s}, inp, train=True,
                              mutable=["batch_stats"])
      return out, upd["batch_stats"]

    def gen_objective(p):
      (mu, logvar), s_enc = run(enc, p["enc"], x, stats["enc"])
      z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
      x_rec, s_dec = run(dec, p["dec"], z, stats["dec"])
      logit_fake, _ = run(disc, params["disc"], x_rec, stats["disc"])
      kl = jnp.mean(kl_to_prior(mu, logvar))
      rec = jnp.mean(jnp.sum(jnp.abs(x - x_rec), axis=(1, 2, 3)))
      adv = jnp.mean(jax.nn.softplus(-logit_fake))
      loss = kl + beta * rec + gamma * adv
      return loss, (x_rec, s_enc, s_dec, kl, rec, adv)

    (gen_loss, (x_rec, s_enc, s_dec, kl, rec, adv)), g_gen = jax.value_and_grad(
        gen_objective, has_aux=True)({"enc": params["enc"], "dec": params["dec"]})
    x_rec = jax.lax.stop_gradient(x_rec)

    def disc_objective(p):
      logits, s_disc = run(disc, p, jnp.concatenate([x, x_rec]), stats["disc"])
      real, fake = jnp.split(logits, 2)
      loss = jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
      return loss, (s_disc, jnp.mean(real > 0) * 0.5 + jnp.mean(fake < 0) * 0.5)

    (disc_loss, (s_disc, disc_acc)), g_disc = jax.value_and_grad(
        disc_objective, has_aux=True)(params["disc"])
    grads = {"enc": g_gen["enc"], "dec": g_gen["dec"], "disc": g_disc}
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    new_stats = {"enc": s_enc, "dec": s_dec, "disc": s_disc}
    finite = (jnp.isfinite(gen_loss) & jnp.isfinite(disc_loss)
              & jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(grads)])))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    metrics = {"loss": gen_loss, "kl": kl, "l1": rec, "adv": adv, "disc_loss": disc_loss,
               "disc_accuracy": disc_acc, "finite": finite.astype(jnp.float32)}
    return (keep(new_params, params), keep(new_stats, stats), keep(new_opt, opt_state)), metrics

  def step(state: VAEGANState, batch: dict, key: jax.Array):
    m = state.num_models
    batch = batch["image"]
    keys = jax.random.split(key, m)
    (params, stats, opt), metrics = jax.vmap(
        lambda p, s, o, x, k: single(p, s, o, x, k, state.modules, state.tx))(
            state.params, state.batch_stats, state.opt_state, batch, keys)
    return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                         opt_state=opt), metrics

  return step


def class_sampler(labels: np.ndarray, num_classes: int, batch_size: int,
                  seed: int) -> IndexSetSampler:
  """Per-step indices [M, B]: rows 0..C-1 from each class's pool, row C from all examples.

  Deterministic in (seed, step) (`IndexSetSampler`), so a resumed run reads the same
  batches. An epoch is one pass over the smallest class pool; the agnostic model takes as
  many steps, i.e. 1/C of an epoch of the whole set per class-specific epoch.
  """
  labels = np.asarray(labels)
  pools = [np.flatnonzero(labels == c) for c in range(num_classes)] + [np.arange(len(labels))]
  small = min(len(p) for p in pools)
  if small < batch_size:
    raise ValueError(f"every class needs at least batch_size={batch_size} training "
                     f"examples; the smallest class has {small}")
  return IndexSetSampler(pools, batch_size, seed)
