"""Square attack (Andriushchenko et al., ECCV 2020): gradient-free, as an engine step rule.

Each step proposes a random square update of the current best point; the engine evaluates
the proposal (one query), and the next step accepts it if the loss (margin by default)
went up. The square's side shrinks with the fraction p of pixels, halved on the paper's
schedule (after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000 rescaled steps).
L-inf: init with vertical stripes of +-eps, proposals set a square to +-eps per channel.
L2: init with a grid of tiles of the paper's centre-weighted pattern eta, proposals move
the L2 mass of two squares into the first one, reshaped to eta (their Algorithm 3).
Images are [B, H, W, C] (or [B, H, W]); the attack never reads gradients.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rsec.attacks.base import ATTACKS, Attack
from rsec.attacks.losses import TARGETED
from rsec.attacks.gradient import PixelSpec, build, check_common
from rsec.attacks.steps import STEPS, StepRule
from rsec.attacks.threat import INITS, per_example
from rsec.checks import check_choice, check_finite_scalar

_TINY = 1e-12
_P_HALVINGS = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])


def _nhwc(u: jax.Array) -> jax.Array:
  if u.ndim not in (3, 4):
    raise ValueError(f"Square needs images [B, H, W(, C)], got shape {u.shape}")
  return u[..., None] if u.ndim == 3 else u


def p_schedule(t: jax.Array, steps: int, p_init: Any) -> jax.Array:
  """Fraction of pixels in the square at step t: p_init halved at the rescaled marks."""
  i = jnp.floor(t * 10000.0 / steps)
  return p_init / 2.0 ** jnp.sum(i > _P_HALVINGS)


def _inv_sq_cumsum(n: int) -> np.ndarray:
  """c[j] = sum_{m=1}^{j} 1/m^2, j = 0..n."""
  return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1) ** 2)])


def _eta(a, b, s, table, xp=jnp):
  """The paper's centre-heavy pattern on an s x s square at local coordinates (a, b):
  eta = sum_{k=0}^{M} 1/(n + 1 - k)^2 with n = s // 2, M = n - max(|a - n|, |b - n|).
  xp: jnp for traced window sizes, np for the static init pattern."""
  n = s // 2
  m = xp.clip(n - xp.maximum(xp.abs(a - n), xp.abs(b - n)), 0, n)
  return table[n + 1] - table[n - m]


def _window(key, b: int, h: int, w: int, s):
  """A random s x s square per example: (mask [B, H, W, 1], local row, local col)."""
  kr, kc = jax.random.split(key)
  r = jax.random.randint(kr, (b, 1), 0, h - s + 1)
  c = jax.random.randint(kc, (b, 1), 0, w - s + 1)
  a, bb = jnp.arange(h)[None] - r, jnp.arange(w)[None] - c  # [B, H], [B, W]
  mask = ((a >= 0) & (a < s))[:, :, None] & ((bb >= 0) & (bb < s))[:, None, :]
  return mask[..., None], a[:, :, None], bb[:, None, :]


def _sum_hw(v):
  return jnp.sum(v, axis=(1, 2), keepdims=True)


def _l2_proposal(v, key, s, eps, table):
  """Algorithm 3: move the mass of squares W1, W2 into W1, shaped like eta, per channel."""
  b, h, w, c = v.shape
  k1, k2, k3 = jax.random.split(key, 3)
  m1, a, bb = _window(k1, b, h, w, s)
  m2, _, _ = _window(k2, b, h, w, s)
  eta = jnp.where(m1, _eta(a, bb, s, table)[..., None], 0.0).astype(v.dtype)
  eta = eta / jnp.sqrt(jnp.maximum(_sum_hw(eta ** 2), _TINY))
  e = per_example(eps, v)
  unused = jnp.maximum(e ** 2 - jnp.sum(v ** 2, axis=(1, 2, 3), keepdims=True), 0.0)
  both = m1 | m2
  n1 = jnp.sqrt(_sum_hw(jnp.where(m1, v, 0.0) ** 2))
  n12_sq = _sum_hw(jnp.where(both, v, 0.0) ** 2)
  rho = jax.random.rademacher(k3, (b, 1, 1, c), v.dtype)
  temp = rho * eta + jnp.where(m1, v, 0.0) / jnp.maximum(n1, _TINY)
  temp = temp / jnp.sqrt(jnp.maximum(_sum_hw(temp ** 2), _TINY))
  avail = jnp.sqrt(n12_sq + unused / c)
  return jnp.where(m1, temp * avail, jnp.where(both, 0.0, v))


@STEPS.register("square")
def square_step(norm: str, steps: int, hp: Mapping[str, Any]) -> StepRule:
  """Square's accept-then-propose rule. hp: eps, p_init."""
  check_choice("norm", norm, ("linf", "l2"))
  eps, p_init = hp["eps"], hp.get("p_init", 0.8)

  def init(u):
    return u, jnp.full((u.shape[0],), -jnp.inf, jnp.float32)

  def update(u, g, obj, state, ctx):
    del g
    u_cur, obj_cur = state
    acc = obj > obj_cur
    u_cur = jnp.where(per_example(acc, u), u, u_cur)
    obj_cur = jnp.where(acc, obj, obj_cur)
    v = _nhwc(u_cur)
    b, h, w, c = v.shape
    side = jnp.round(jnp.sqrt(p_schedule(ctx.t, steps, p_init) * h * w))
    s = jnp.clip(side, 1, max(min(h, w) - 1, 1)).astype(jnp.int32)
    if norm == "linf":
      k1, k2 = jax.random.split(ctx.key)
      m, _, _ = _window(k1, b, h, w, s)
      signs = jax.random.rademacher(k2, (b, 1, 1, c), v.dtype)
      v_new = jnp.where(m, per_example(eps, v) * signs, v)
    else:
      table = jnp.asarray(_inv_sq_cumsum(max(h, w) + 2), v.dtype)
      v_new = _l2_proposal(v, ctx.key, s, eps, table)
    return v_new.reshape(u.shape), (u_cur, obj_cur)

  return StepRule(init, update, needs_grad=False)


@INITS.register("square")
def init_square(key: jax.Array, u0: jax.Array, p: str, eps: jax.Array) -> jax.Array:
  """Square's start: +-eps vertical stripes (L-inf) or a grid of +-eta tiles of side
  min(H, W) // 5 rescaled to L2 norm eps (L2), one random sign per stripe/tile/channel."""
  v = _nhwc(u0)
  b, h, w, c = v.shape
  e = per_example(eps, v)
  if p in ("linf", "box"):
    d = jnp.broadcast_to(e * jax.random.rademacher(key, (b, 1, w, c), v.dtype), v.shape)
  elif p == "l2":
    s = max(min(h, w) // 5, 1)
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    inside = (ii < (h // s) * s) & (jj < (w // s) * s)
    pattern = np.where(inside, _eta(ii % s, jj % s, s, _inv_sq_cumsum(s + 2), np), 0.0)
    tile = np.minimum(ii // s, h // s - 1) * (w // s) + np.minimum(jj // s, w // s - 1)
    signs = jax.random.rademacher(key, (b, (h // s) * (w // s), c), v.dtype)
    d = jnp.asarray(pattern, v.dtype)[None, :, :, None] * signs[:, tile.reshape(-1)].reshape(
        b, h, w, c)
    d = e * d / jnp.sqrt(jnp.maximum(jnp.sum(d ** 2, axis=(1, 2, 3), keepdims=True), _TINY))
  else:
    raise ValueError(f"Square supports norm 'linf' or 'l2', got {p!r}")
  return u0 + d.reshape(u0.shape)


@ATTACKS.register("square")
def square(eps: float, norm: str = "linf", steps: int = 1000, p_init: float = 0.8,
           restarts: int = 1, loss: str = "margin", select: str = "first_success",
           lo: float = 0.0, hi: float = 1.0) -> Attack:
  """Square attack, L-inf or L2; steps + 1 model queries per attempt (the budget).

  p_init: initial fraction of pixels per square (0.8 as in AutoAttack). loss: an
  untargeted loss to maximise (default the margin max_{j != y} z_j - z_y).
  """
  check_common(eps, norm, steps, restarts, loss, "square", select, lo, hi,
               norms=("linf", "l2"), attack="square")
  if loss in TARGETED:
    raise ValueError(f"loss must be untargeted for Square, got {loss!r}")
  check_finite_scalar("p_init", p_init, low=0.0, high=1.0, low_inclusive=False)
  spec = PixelSpec(norm, steps, restarts, loss, "square", select, "square", lo=lo, hi=hi)
  return build(spec, {"eps": eps, "p_init": p_init}, f"square_{norm}", ndims=(3, 4))
