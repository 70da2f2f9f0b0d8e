"""Adaptive Misinformation (Kariyappa and Qureshi, CVPR 2020).

The defended victim is a classifier trained with outlier exposure (training mode
`outlier_exposure`: other FONTS characters pushed to the uniform posterior), so its top
probability max y is low on out-of-distribution queries. Each answer mixes its posterior
with a misinformation model's (training mode `misinformation`: -log(1 - p_true)):

    y' = (1 - a) y + a y_mis,   a = sigmoid(nu (tau - max y)),

so in-distribution queries (max y > tau) get nearly the true posterior and the
out-of-distribution queries a knockoff attacker relies on get misinformation. Both models
train through `train_classifier` (the one training loop); the defended model is the
OE-trained one, and the ordinary victim stays the undefended baseline.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rsec.checks import check_finite_scalar
from rsec.stealing import outputs
from rsec.stealing.defences import (DEFENCES, AuxModel, Defence, DefenceContext,
                                    check_aux_model)


def misinformation_weight(y: jax.Array, tau: float, nu: float) -> jax.Array:
  """a = sigmoid(nu (tau - max_k y_k)), [B, 1]."""
  return jax.nn.sigmoid(nu * (tau - jnp.max(y, axis=-1, keepdims=True)))


@DEFENCES.register("adaptive_misinformation")
def adaptive_misinformation(ctx: DefenceContext, tau: float = 0.5, nu: float = 1000.0,
                            misinformation: AuxModel | None = None,
                            misinformation_workdir: str = "") -> Defence:
  """The defence above; the misinformation model is given as an `AuxModel` or restored
  from a `train_classifier` workdir trained with `--config.training.mode=misinformation`."""
  tau = check_finite_scalar("defence tau", tau, low=0.0, high=1.0)
  nu = check_finite_scalar("defence nu", nu, low=0.0)
  if misinformation is None:
    if not misinformation_workdir:
      raise ValueError("defence 'adaptive_misinformation' needs a misinformation model: "
                       "set defence.misinformation_workdir to a train_classifier workdir "
                       "trained with --config.training.mode=misinformation")
    misinformation = load_misinformation_model(misinformation_workdir)
  check_aux_model("the misinformation model", misinformation, ctx.num_classes,
                  ctx.input_shape)
  apply_fn = misinformation.apply_fn

  def apply(variables, y, x, keys):
    y_mis = jax.nn.softmax(apply_fn(variables, x, train=False).astype(jnp.float32))
    a = misinformation_weight(y, tau, nu)
    return outputs.renormalise((1.0 - a) * y + a * y_mis)

  return Defence("adaptive_misinformation", apply, misinformation.variables,
                 needs_images=True)


def load_misinformation_model(workdir: str) -> AuxModel:
  """The misinformation model a `train_classifier` run left in `workdir` (ValueError if
  there is none, or if it was trained in another mode)."""
  from rsec.training.classifier import restore_classifier
  state, config = restore_classifier(workdir)
  if config.training.mode != "misinformation":
    raise ValueError(f"{workdir!r} holds a classifier trained with training.mode="
                     f"{config.training.mode!r}; the misinformation model needs "
                     f"--config.training.mode=misinformation")
  return AuxModel(state.apply_fn, state.variables)
