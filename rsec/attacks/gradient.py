"""Pixel-space attacks on the engine: FGSM/FGM, PGD (L-inf, L2, L1), Stutz et al., C&W-L2.

Every factory takes config primitives and returns `attack(logits_fn, key, x, y)` (see
base.py). They differ only in the static `PixelSpec` and float hyperparameters they give
the single implementation `engine_impl`, which APGD and Square reuse too.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp

from rsec.attacks.base import ATTACKS, Attack, make_attack
from rsec.attacks.engine import SELECTS, run_attack
from rsec.attacks.losses import LOSSES, MIN_CLASSES, TARGETED, make_loss, ranked_targets
from rsec.attacks.params import pixel as pixel_param, tanh_pixel
from rsec.attacks.steps import STEPS, default_step_for
from rsec.attacks.threat import INITS, NORMS, flat
from rsec.checks import check_choice, check_finite_scalar, check_positive_int


class PixelSpec(NamedTuple):
  """Static (hashable) configuration of an engine-backed pixel attack."""
  norm: str
  steps: int
  restarts: int
  loss: str
  init: str
  select: str
  step: str
  n_targets: int = 0            # > 0: targeted loss against the n most likely wrong classes
  param: str = "pixel"          # "pixel" (x0 + delta, clipped) or "tanh" (C&W)
  l2_penalty: bool = False      # subtract ||x - x0||_2^2 from the objective (C&W)
  max_l2: bool = False          # count only successes with ||x - x0||_2 <= eps (C&W)
  sparsity: float = 0.99        # sparse-L1 step: fraction of coordinates left still
  lo: float = 0.0
  hi: float = 1.0
  unroll: int = 1


def engine_impl(spec: PixelSpec, logits_fn, key, x, y, hp: Mapping[str, Any]):
  """(x_adv, info) for a pixel attack described by spec and hyperparameters hp."""
  param = (tanh_pixel if spec.param == "tanh" else pixel_param)(spec.lo, spec.hi)
  loss_fn = make_loss(spec.loss, kappa=hp.get("kappa", jnp.inf))
  scale = hp.get("loss_scale", 1.0)

  def loss(logits, y_, target):
    return scale * loss_fn(logits, y_, target)

  targets = None
  if spec.n_targets:
    clean = logits_fn(x)
    targets = ranked_targets(clean, y, min(spec.n_targets, clean.shape[1] - 1))
  penalty = None
  if spec.l2_penalty:
    def penalty(u, x_adv, x0):
      del u
      return jnp.sum(flat(x_adv - x0) ** 2, axis=1)
  step = STEPS.get(spec.step)(spec.norm, spec.steps, dict(hp, sparsity=spec.sparsity))
  _, x_adv, info = run_attack(
      logits_fn, key, x, y, param, norm=spec.norm, eps=hp["eps"], step=step, loss=loss,
      steps=spec.steps, restarts=spec.restarts, init=spec.init, select=spec.select,
      targets=targets, penalty=penalty, unroll=spec.unroll)
  if spec.max_l2:
    ok = jnp.sqrt(jnp.sum(flat(x_adv - x) ** 2, axis=1)) <= hp["eps"]
    keep = ok | ~info["success"]
    x_adv = jnp.where(keep.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv, x)
    info = dict(info, success=info["success"] & ok,
                attempt_success=info["attempt_success"] & ok)
  return x_adv, info


def check_norm(norm, norms, attack: str) -> str:
  """ValueError unless `norm` is one of the norms this attack supports (never a fallback)."""
  if norm in NORMS and norm not in norms:
    raise ValueError(f"{attack} does not support norm {norm!r}; supported norms: "
                     f"{sorted(norms)}")
  return check_choice("norm", norm, norms)


def check_common(eps, norm, steps, restarts, loss, init, select, lo, hi,
                 norms=NORMS, attack: str = "this attack") -> None:
  """Factory-time checks shared by the engine-backed attacks."""
  check_finite_scalar("eps", eps, low=0.0)
  check_norm(norm, norms, attack)
  check_positive_int("steps", steps)
  check_positive_int("restarts", restarts)
  check_choice("loss", loss, LOSSES.names())
  if isinstance(init, str):
    check_choice("init", init, INITS.names())
  check_choice("select", select, SELECTS)
  check_finite_scalar("lo", lo)
  check_finite_scalar("hi", hi, low=lo, low_inclusive=False)


def build(spec: PixelSpec, hp: Mapping[str, float], name: str, **kw) -> Attack:
  """The public attack for an engine spec; `kw` goes to make_attack (ndims, ...)."""
  return make_attack(engine_impl, spec, hp, lo=spec.lo, hi=spec.hi,
                     min_classes=MIN_CLASSES.get(spec.loss, 2),
                     name=name, **kw)


def _n_targets(loss: str, n_target_classes: int) -> int:
  return check_positive_int("n_target_classes", n_target_classes) if loss in TARGETED else 0


@ATTACKS.register("pgd")
def pgd(eps: float, norm: str = "linf", steps: int = 40, step_size: float | None = None,
        restarts: int = 1, loss: str = "ce", init: str = "uniform",
        select: str = "max_loss", step: str | None = None, sparsity: float = 0.99,
        n_target_classes: int = 1, kappa: float | None = None, lo: float = 0.0,
        hi: float = 1.0, unroll: int = 1, name: str | None = None) -> Attack:
  """Projected gradient ascent in the eps-ball (Madry et al.), L-inf / L2 / L1.

  eps: radius in pixel units. step_size: default 2.5 eps / steps. step: a STEPS name,
  default steepest ascent for the norm (sign, L2-normalised, sparse-L1 top-k with
  `sparsity`). A targeted loss attacks each of the n_target_classes most likely wrong
  classes `restarts` times. kappa caps margin losses (None: no cap). select defaults to
  max_loss (adversarial training); evaluations want "first_success". unroll: fori_loop
  unroll (1 was fastest on CPU for small models). name: shown in the attack's repr.
  """
  check_common(eps, norm, steps, restarts, loss, init, select, lo, hi)
  step = default_step_for(norm) if step is None else check_choice("step", step, STEPS.names())
  step_size = 2.5 * eps / steps if step_size is None else step_size
  check_finite_scalar("step_size", step_size, low=0.0)
  check_finite_scalar("sparsity", sparsity, low=0.0, high=1.0)
  hp = {"eps": eps, "step_size": step_size,
        "kappa": float("inf") if kappa is None else check_finite_scalar("kappa", kappa)}
  spec = PixelSpec(norm, steps, restarts, loss, init, select, step,
                   n_targets=_n_targets(loss, n_target_classes), sparsity=float(sparsity),
                   lo=lo, hi=hi,
                   unroll=check_positive_int("unroll", unroll))
  return build(spec, hp, name or f"pgd_{norm}")


@ATTACKS.register("fgsm")
def fgsm(eps: float, norm: str = "linf", loss: str = "ce", lo: float = 0.0,
         hi: float = 1.0) -> Attack:
  """One steepest-ascent step of length eps from x (FGSM for L-inf, FGM for L2/L1)."""
  return pgd(eps, norm, steps=1, step_size=eps, restarts=1, loss=loss, init="zero",
             select="last", lo=lo, hi=hi, name=f"fgsm_{norm}")


@ATTACKS.register("fgm")
def fgm(eps: float, norm: str = "l2", loss: str = "ce", lo: float = 0.0,
        hi: float = 1.0) -> Attack:
  """FGSM's L2 form: one L2-normalised gradient step of length eps."""
  return fgsm(eps, norm, loss, lo, hi)


@ATTACKS.register("paper")
def paper(eps: float = 0.3, norm: str = "linf", steps: int = 40, lr: float = 0.005,
          restarts: int = 5, loss: str = "ce", init: str = "random_direction",
          select: str = "first_success", lo: float = 0.0, hi: float = 1.0) -> Attack:
  """Stutz, Hein & Schiele (CVPR 2019)'s evaluation attack on pixels.

  Adam on delta (lr 0.005) for 40 iterations, projected onto the eps-ball (0.3 L-inf; use
  1.5 for L2) and [lo, hi]; 5 attempts from the random-direction init; the first
  misclassified iterate is kept. Loss: cross-entropy of the true class.
  """
  check_finite_scalar("lr", lr, low=0.0, low_inclusive=False)
  return pgd(eps, norm, steps=steps, step_size=lr, restarts=restarts, loss=loss,
             init=init, select=select, step="adam", lo=lo, hi=hi, name=f"paper_{norm}")


@ATTACKS.register("cw_l2")
def cw_l2(c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01,
          eps: float | None = None, lo: float = 0.0, hi: float = 1.0,
          norm: str = "l2") -> Attack:
  """Carlini & Wagner's L2 attack with a fixed trade-off constant c (no binary search).

  Minimises ||x - x0||_2^2 - c * min(max_{j != y} z_j - z_y, kappa) over the tanh
  parametrisation with Adam (lr), keeping the misclassified iterate of smallest L2
  distance. Without a search over c, a c too small finds nothing and one too large finds
  needlessly large perturbations: tune c per model. One attempt (the start is x itself,
  so restarts would repeat it). eps: if given, successes with
  ||x_adv - x||_2 > eps are discarded (x_adv = x), which makes this an eps-threat attack.
  norm: only "l2"; it is accepted so that configs can name every attack's norm, and any
  other value raises instead of silently measuring L2.
  """
  check_norm(norm, ("l2",), "cw_l2")
  check_finite_scalar("c", c, low=0.0, low_inclusive=False)
  check_finite_scalar("kappa", kappa, low=0.0)
  check_finite_scalar("lr", lr, low=0.0, low_inclusive=False)
  check_common(0.0 if eps is None else eps, "l2", steps, 1, "margin", "zero", "min_norm",
               lo, hi)
  hp = {"eps": 0.0 if eps is None else eps, "step_size": lr, "kappa": kappa,
        "loss_scale": c}
  spec = PixelSpec("box", steps, 1, "margin", "zero", "min_norm", "adam",
                   param="tanh", l2_penalty=True, max_l2=eps is not None, lo=lo, hi=hi)
  return build(spec, hp, "cw_l2")
