"""Auto-PGD (Croce & Hein, ICML 2020) as a step rule on the engine: APGD-CE, -DLR, -T.

The rule keeps APGD's own state: step size eta (starting at 2 eps), the previous iterate
for the momentum term (alpha = 0.75), the best point so far, and the counters for the
checkpoints w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} -
0.03, 0.06). At a checkpoint eta is halved, and the iterate restarts from the best point,
when (1) the loss increased in fewer than rho = 0.75 of the steps since the last
checkpoint, or (2) eta was not halved at the last checkpoint and the best loss has not
improved since. After such a restart the momentum term starts from zero.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rsec.attacks.base import ATTACKS, Attack
from rsec.attacks.losses import TARGETED
from rsec.attacks.gradient import PixelSpec, build, check_common
from rsec.attacks.steps import STEPS, StepRule, l2_direction, sign_direction
from rsec.attacks.threat import per_example
from rsec.checks import check_choice, check_finite_scalar, check_positive_int


def checkpoints(n: int) -> tuple[np.ndarray, np.ndarray]:
  """(is_checkpoint [n] bool, window length [n] int) over step indices 0..n-1."""
  p = [0, 22]  # in hundredths, so that ceil(p_j N) is exact
  while p[-1] < 100:
    p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
  w = sorted({-(-pj * n // 100) for pj in p})
  is_ck, window = np.zeros(n, bool), np.ones(n, np.int32)
  for prev, cur in zip(w, w[1:]):
    if 0 < cur < n:
      is_ck[cur], window[cur] = True, cur - prev
  return is_ck, window


class ApgdState(NamedTuple):
  eta: jax.Array        # [B] step size
  u_prev: jax.Array     # previous iterate, for momentum
  obj_prev: jax.Array   # [B] loss at u_prev
  count: jax.Array      # [B] loss increases since the last checkpoint
  obj_max: jax.Array    # [B] best loss so far
  u_max: jax.Array      # best point so far
  g_max: jax.Array      # gradient there
  obj_ck: jax.Array     # [B] best loss at the last checkpoint
  reduced: jax.Array    # [B] eta was halved at the last checkpoint


@STEPS.register("apgd")
def apgd_step(norm: str, steps: int, hp: Mapping[str, Any]) -> StepRule:
  """APGD's update for norm in {linf, l2}. hp: eps, rho (0.75), alpha (0.75)."""
  check_choice("norm", norm, ("linf", "l2"))
  direction = sign_direction if norm == "linf" else l2_direction
  eps, rho, alpha = hp["eps"], hp.get("rho", 0.75), hp.get("alpha", 0.75)
  is_ck_np, window_np = checkpoints(steps)

  def init(u):
    b = u.shape[0]
    neg = jnp.full((b,), -jnp.inf, jnp.float32)
    eta = jnp.broadcast_to(2.0 * jnp.asarray(eps, u.dtype), (b,))
    return ApgdState(eta, u, neg, jnp.zeros((b,), jnp.int32), neg, u, jnp.zeros_like(u),
                     neg, jnp.zeros((b,), bool))

  def update(u, g, obj, s: ApgdState, ctx):
    t = ctx.t
    count = s.count + ((t > 0) & (obj > s.obj_prev))
    imp = obj > s.obj_max
    obj_max = jnp.where(imp, obj, s.obj_max)
    u_max = jnp.where(per_example(imp, u), u, s.u_max)
    g_max = jnp.where(per_example(imp, u), g, s.g_max)
    is_ck = jnp.asarray(is_ck_np)[t]
    window = jnp.asarray(window_np)[t]
    too_few_increases = count < rho * window
    stalled = ~s.reduced & (obj_max <= s.obj_ck)
    reduce = is_ck & (too_few_increases | stalled)
    eta = jnp.where(reduce, s.eta / 2, s.eta)
    r = per_example(reduce, u)
    base, grad = jnp.where(r, u_max, u), jnp.where(r, g_max, g)
    prev = jnp.where(r, u_max, s.u_prev)
    at_ck = is_ck | (t == 0)
    z = ctx.project(base + per_example(eta, u) * direction(grad))
    a = jnp.where(t == 0, 1.0, alpha).astype(u.dtype)
    u_next = ctx.project(base + a * (z - base) + (1 - a) * (base - prev))
    state = ApgdState(eta, base, jnp.where(reduce, obj_max, obj),
                      jnp.where(at_ck, 0, count), obj_max, u_max, g_max,
                      jnp.where(at_ck, obj_max, s.obj_ck), jnp.where(is_ck, reduce, s.reduced))
    return u_next, state

  return StepRule(init, update)


@ATTACKS.register("apgd")
def apgd(eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
         loss: str = "ce", n_target_classes: int = 9, init: str = "uniform",
         select: str = "first_success", rho: float = 0.75, alpha: float = 0.75,
         lo: float = 0.0, hi: float = 1.0) -> Attack:
  """APGD under L-inf or L2 with loss "ce", "dlr", or a targeted loss ("dlr_targeted":
  APGD-T, attacking each of the n_target_classes most likely wrong classes `restarts`
  times). steps: iterations per attempt (N_iter)."""
  check_common(eps, norm, steps, restarts, loss, init, select, lo, hi, norms=("linf", "l2"),
               attack="apgd")
  check_finite_scalar("rho", rho, low=0.0, high=1.0)
  check_finite_scalar("alpha", alpha, low=0.0, high=1.0)
  n_t = check_positive_int("n_target_classes", n_target_classes) if loss in TARGETED else 0
  spec = PixelSpec(norm, steps, restarts, loss, init, select, "apgd", n_targets=n_t,
                   lo=lo, hi=hi)
  return build(spec, {"eps": eps, "rho": rho, "alpha": alpha}, f"apgd_{loss}_{norm}")


@ATTACKS.register("apgd_ce")
def apgd_ce(eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
            **kw) -> Attack:
  """APGD on the cross-entropy loss."""
  return apgd(eps, norm, steps, restarts, loss="ce", **kw)


@ATTACKS.register("apgd_dlr")
def apgd_dlr(eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
             **kw) -> Attack:
  """APGD on the DLR loss (needs >= 3 classes)."""
  return apgd(eps, norm, steps, restarts, loss="dlr", **kw)


@ATTACKS.register("apgd_t")
def apgd_t(eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
           n_target_classes: int = 9, **kw) -> Attack:
  """Targeted APGD on the targeted DLR loss over the top n_target_classes (needs >= 4
  classes; capped at K - 1 targets)."""
  return apgd(eps, norm, steps, restarts, loss="dlr_targeted",
              n_target_classes=n_target_classes, **kw)
