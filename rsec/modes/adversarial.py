"""Adversarial training modes: perturb (part of) the batch with an attack, then step.

- `adversarial` (Stutz et al. / Goodfellow et al.): a `fraction` of each batch (default
  half, spread evenly over the batch so every device gets its share) is replaced by
  adversarial examples; the loss is averaged over the whole batch.
- `adversarial_full` (Madry et al.): every example is adversarial.
- `trades` (Zhang et al. 2019): the inner maximisation is of KL(p(x) || p(x')) and the loss
  is CE(x) + beta * KL(p(x) || p(x')) (`training.attack.name` 'pgd' or 'paper').

The attack runs in inference mode (BatchNorm running statistics) with the highest-loss
iterate (`select="max_loss"`), configured by `config.training.attack` (a registry name plus
its keyword arguments).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rsec.attacks import build_attack, params, run_attack, steps as attack_steps
from rsec.modes.base import TRAINING_MODES, TrainingMode, spread_rows


def attack_from_config(c: ml_collections.ConfigDict):
  """`config.training.attack` = {name, **kwargs} -> an attack function."""
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in c.to_dict().items()
            if k != "name"}
  return build_attack(c.name, **kwargs)


def _adversarial(config: ml_collections.ConfigDict, apply_fn: Callable, fraction: float):
  attack = attack_from_config(config.training.attack)

  def perturb(variables, key, batch):
    logits_fn = lambda x: apply_fn(variables, x, train=False)
    x, y = batch["image"], batch["label"]
    rows = spread_rows(x.shape[0], fraction)
    x_adv = attack(logits_fn, key, x[rows], y[rows], check=False)
    return dict(batch, image=x.at[rows].set(x_adv))
  return TrainingMode(perturb)


@TRAINING_MODES.register("adversarial")
def adversarial(config, apply_fn):
  return _adversarial(config, apply_fn, float(config.training.get("adversarial_fraction", 0.5)))


@TRAINING_MODES.register("adversarial_full")
def adversarial_full(config, apply_fn):
  return _adversarial(config, apply_fn, 1.0)


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
  """KL(softmax(p) || softmax(q)) per example, [B]."""
  logp, logq = jax.nn.log_softmax(p_logits), jax.nn.log_softmax(q_logits)
  return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


TRADES_ATTACKS = ("pgd", "paper")   # the inner maximisations TRADES can run


@TRAINING_MODES.register("trades")
def trades(config, apply_fn):
  """The TRADES perturbation (clean and adversarial images stacked) and its loss.

  The inner maximisation of KL(p(x) || p(x')) runs with `training.attack`: name 'pgd'
  (steepest ascent for the norm, step_size default 2.5 eps / steps, as Zhang et al.) or
  'paper' (Adam on delta with `lr`); eps, norm and steps from the same block. The loss
  weight is `training.trades_beta` (Zhang et al.: 6).
  """
  a = config.training.attack
  if a.name not in TRADES_ATTACKS:
    raise ValueError(f"config.training.attack.name={a.name!r}: training mode 'trades' runs "
                     f"its KL maximisation with one of {list(TRADES_ATTACKS)}")
  eps, steps = float(a.eps), int(a.steps)
  norm = a.get("norm", "linf")
  if a.name == "paper":
    rule = attack_steps.STEPS.get("adam")(norm, steps, {"step_size": float(a.get("lr", 0.005))})
  else:
    step_size = float(a.get("step_size", None) or 2.5 * eps / steps)
    rule = attack_steps.STEPS.get("sign" if norm == "linf" else "l2")(
        norm, steps, {"step_size": step_size, "eps": eps})

  def perturb(variables, key, batch):
    logits_fn = lambda x: apply_fn(variables, x, train=False)
    x = batch["image"]
    clean = jax.lax.stop_gradient(logits_fn(x))
    # Zhang et al. start from x + 0.001 N(0, 1): at u = 0 the KL gradient vanishes.
    start = lambda k, u0, p, e: 0.001 * jax.random.normal(k, u0.shape, u0.dtype)
    _, x_adv, _ = run_attack(
        logits_fn, key, x, batch["label"], params.pixel(0.0, 1.0), norm=norm, eps=eps,
        step=rule, loss=lambda logits, y, t: kl_divergence(clean, logits), steps=steps,
        init=start, select="last")
    return dict(batch, image=jnp.concatenate([x, x_adv]))
  return TrainingMode(perturb, trades_loss(float(config.training.trades_beta)))


def trades_loss(beta: float):
  """CE on the clean half + beta * KL(clean || adversarial) on the pair (see `trades`)."""

  def loss(logits, batch):
    clean, adv = jnp.split(logits, 2)
    ce = optax.softmax_cross_entropy_with_integer_labels(clean, batch["label"]).mean()
    return ce + beta * kl_divergence(clean, adv).mean()
  return loss
