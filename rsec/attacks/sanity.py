"""Sanity checks of a robustness evaluation (after Carlini et al. 2019's checklist).

`sanity_checks` never raises: every check that fails to run becomes a warning too. The
warnings flag the usual signs of a broken evaluation or of gradient masking:
  - input gradients non-finite or exactly zero (saturated softmax, non-differentiable ops);
  - logits that change between two calls (randomness inside logits_fn);
  - outputs that look like probabilities rather than logits;
  - an iterative attack weaker than a single step;
  - robust accuracy increasing with eps, or not near zero at a huge eps;
  - a black-box attack (Square) stronger than the white-box one.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rsec.attacks.base import LogitsFn
from rsec.attacks.evaluate import evaluate_attacks, robust_accuracy_curve
from rsec.attacks.gradient import fgsm, pgd
from rsec.attacks.losses import cross_entropy
from rsec.attacks.square_attack import square


def _default_large_eps(norm: str, d: int, lo: float, hi: float) -> float:
  # Radii that contain the whole image box: any image is reachable.
  return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}.get(norm, 1.0) * (hi - lo)


def sanity_checks(logits_fn: LogitsFn, key: jax.Array, x: Any, y: Any, *, eps: float,
                  norm: str = "linf", steps: int = 20, square_steps: int = 500,
                  batch_size: int = 128, mesh: Mesh | None = None, lo: float = 0.0,
                  hi: float = 1.0, tol: float = 0.02,
                  large_eps: float | None = None) -> tuple[list[str], dict[str, float]]:
  """Runs the checks on (x [N, ...], y [N]); returns (warnings, measured values).

  eps, norm: the threat model under evaluation. steps: PGD steps. square_steps: Square's
  query budget (skipped for L1). tol: slack on accuracy comparisons. large_eps: radius at
  which robust accuracy should be ~0 (default: a ball containing the whole box).
  """
  warnings: list[str] = []
  values: dict[str, float] = {}

  def guard(name: str, fn: Callable[[], None]) -> None:
    try:
      fn()
    except Exception as e:  # a sanity check reports, it never stops the caller
      warnings.append(f"{name}: could not run ({type(e).__name__}: {e})")

  xb, yb = jnp.asarray(x[:batch_size]), jnp.asarray(y[:batch_size])

  def gradients():
    g = jax.grad(lambda v: jnp.sum(cross_entropy(logits_fn(v), yb)))(xb)
    g = np.asarray(g).reshape(g.shape[0], -1)
    values["grad_nonfinite_fraction"] = float(np.mean(~np.all(np.isfinite(g), axis=1)))
    values["grad_zero_fraction"] = float(np.mean(np.all(g == 0, axis=1)))
    if values["grad_nonfinite_fraction"] > 0:
      warnings.append(f"{values['grad_nonfinite_fraction']:.0%} of examples have non-finite "
                      "input gradients")
    if values["grad_zero_fraction"] > 0:
      warnings.append(f"{values['grad_zero_fraction']:.0%} of examples have exactly zero "
                      "input gradients (saturated softmax or non-differentiable model: "
                      "gradient attacks will fail there)")

  def outputs():
    a, b = np.asarray(logits_fn(xb)), np.asarray(logits_fn(xb))
    values["logits_max_abs_diff"] = float(np.max(np.abs(a - b)))
    if values["logits_max_abs_diff"] > 0:
      warnings.append("logits_fn is not deterministic: two calls differ by up to "
                      f"{values['logits_max_abs_diff']:.3g} (dropout or noise at test time?)")
    probs = bool(np.all((a >= 0) & (a <= 1)) and np.allclose(a.sum(1), 1.0, atol=1e-3))
    values["outputs_look_like_probabilities"] = float(probs)
    if probs:
      warnings.append("logits_fn outputs look like probabilities (rows in [0, 1] summing "
                      "to 1); attacks expect logits, and softmax twice flattens gradients")

  def attacks():
    members = {"fgsm": fgsm(eps, norm, lo=lo, hi=hi),
               "pgd": pgd(eps, norm, steps=steps, select="first_success", lo=lo, hi=hi)}
    if norm in ("linf", "l2") and x.ndim in (3, 4):
      members["square"] = square(eps, norm, steps=square_steps, lo=lo, hi=hi)
    r = evaluate_attacks(logits_fn, key, x, y, members, batch_size=batch_size, mesh=mesh,
                         lo=lo, hi=hi)
    values["clean_accuracy"] = r["clean_accuracy"]
    for n in members:
      values[f"robust_accuracy/{n}"] = r[f"robust_accuracy/{n}"]
    if r["robust_accuracy/pgd"] > r["robust_accuracy/fgsm"] + tol:
      warnings.append(f"PGD ({r['robust_accuracy/pgd']:.3f}) is weaker than FGSM "
                      f"({r['robust_accuracy/fgsm']:.3f}): the iterative attack is broken "
                      "or gradients are masked")
    if "square" in members and r["robust_accuracy/square"] < r["robust_accuracy/pgd"] - tol:
      warnings.append(f"black-box Square ({r['robust_accuracy/square']:.3f}) beats "
                      f"white-box PGD ({r['robust_accuracy/pgd']:.3f}): a sign of gradient "
                      "masking")

  def curve():
    d = int(np.prod(x.shape[1:]))
    big = _default_large_eps(norm, d, lo, hi) if large_eps is None else large_eps
    grid = [0.0, eps / 2, eps, 2 * eps, big]
    accs = robust_accuracy_curve(
        logits_fn, key, x, y, lambda e: pgd(e, norm, steps=steps, select="first_success",
                                            lo=lo, hi=hi),
        grid, batch_size=batch_size, mesh=mesh, lo=lo, hi=hi)
    for e, a in zip(grid, accs):
      values[f"curve/eps={e:g}"] = a
    values["robust_accuracy/large_eps"] = accs[-1]
    rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1)
             if accs[i + 1] > accs[i] + tol]
    if rises:
      warnings.append(f"robust accuracy increases with eps between {rises}: the attack "
                      "is not finding the strongest perturbation")
    if accs[-1] > 0.1:
      warnings.append(f"robust accuracy {accs[-1]:.3f} at eps={big:g}, a ball containing "
                      "every image, should be ~0: attack or gradients are broken")

  guard("gradients", gradients)
  guard("outputs", outputs)
  guard("attack strength", attacks)
  guard("eps curve", curve)
  return warnings, values
