"""The paper's three non-pixel attacks, ready to call: engine + parametrisation + rule.

Each returns (u, x_adv, info) like `run_attack`, with info['success_valid'] [B] the paper's
success (for on-manifold attacks: classifier correct on the unperturbed on-manifold image,
and z in [-2, 2]^d for latents). Defaults follow Stutz et al.'s protocol: L-inf eta 0.3,
Adam lr 0.005, 40 iterations, 5 attempts, the first misclassified iterate kept.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rsec.attacks import make_loss, run_attack
from rsec.attacks.steps import STEPS
from rsec.manifold import parametrisations


def _common(steps: int, lr: float, loss: str):
  return dict(step=STEPS.get("adam")("linf", steps, {"step_size": lr}), loss=make_loss(loss),
              steps=steps)


def true_manifold_attack(logits_fn: Callable, key: jax.Array, prototype_images: jax.Array,
                         font: jax.Array, char: jax.Array, theta0: jax.Array, low, high, *,
                         eta: float = 0.3, steps: int = 40, restarts: int = 5,
                         lr: float = 0.005, loss: str = "ce", init: str = "random_direction",
                         select: str = "first_success"):
  """zeta on theta0 [B, 6] (font, char [B] fixed), theta in [low, high]; labels = char."""
  param = parametrisations.true_manifold(prototype_images, low, high)
  origin = parametrisations.true_origin(font, char, theta0, low, high)
  y = origin["char"]
  u, x, info = run_attack(logits_fn, key, origin, y, param, norm="linf", eps=eta,
                          restarts=restarts, init=init, select=select,
                          **_common(steps, lr, loss))
  clean_ok = jnp.argmax(logits_fn(param.to_image(jnp.zeros_like(u), origin)), -1) == y
  info = dict(info, clean_correct=clean_ok,
              success_valid=parametrisations.on_manifold_success(info, clean_ok),
              theta=origin["theta0"] + u)
  return u, x, info


def learned_manifold_attack(logits_fn: Callable, key: jax.Array, decode: Callable,
                            z0: jax.Array, y: jax.Array, low, high, *, eta: float = 0.3,
                            steps: int = 40, restarts: int = 5, lr: float = 0.005,
                            loss: str = "ce", bound: float = 2.0,
                            init: str = "random_direction", select: str = "first_success"):
  """zeta on z0 [B, d] (= mu_enc(x) of class y's encoder), decoded by class y's decoder,
  z kept in [low, high] (the box of encoded latents)."""
  param = parametrisations.learned_manifold(decode)
  origin = parametrisations.learned_origin(z0, y, low, high)
  u, x, info = run_attack(logits_fn, key, origin, y, param, norm="linf", eps=eta,
                          restarts=restarts, init=init, select=select,
                          **_common(steps, lr, loss))
  z = origin["z0"] + u
  clean_ok = jnp.argmax(logits_fn(decode(origin["z0"], origin["cls"])), -1) == y
  info = dict(info, clean_correct=clean_ok, z=z,
              success_valid=parametrisations.on_manifold_success(info, clean_ok, z, bound))
  return u, x, info


def deformation_attack(logits_fn: Callable, key: jax.Array, x0: jax.Array, y: jax.Array,
                       low, high, *, eps: float = 0.3, steps: int = 40, restarts: int = 5,
                       lr: float = 0.005, loss: str = "ce", init: str = "random_direction",
                       select: str = "first_success"):
  """u = theta - identity on images x0 [B, H, W, C], |u| <= eps, theta in [low, high]."""
  param = parametrisations.deformation(low, high)
  u, x, info = run_attack(logits_fn, key, x0, y, param, norm="linf", eps=eps,
                          restarts=restarts, init=init, select=select,
                          **_common(steps, lr, loss))
  return u, x, dict(info, success_valid=info["success"], theta=parametrisations.IDENTITY + u)
