"""Every registered attack with each norm it supports, and a linear model with exact answers.

The pinned property tests (test_constraints.py) build each attack here with a small budget
and run it on `LinearCase` data. Factories trace eps (and step sizes), so one (attack,
norm, box) case compiles once however many radii a test runs it at, and the tests that
share a case share its compilation: keep the same `LinearCase` object and batch shape.

For a linear classifier z = x W + b the distance from x (predicted class y) to the nearest
point classified otherwise is exact: the misclassified set is the union over j != y of
the half-spaces z_j >= z_y, and the p-norm distance to the half-space (w_j - w_y) . d >=
z_y - z_j is (z_y - z_j) / ||w_y - w_j||_q, q the dual norm of p (L1 for L-inf, L2 for
L2, L-inf for L1). The box [lo, hi] only removes candidates, so no attack can succeed
closer than that, whatever its threat model.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import rsec.attacks as A

BOXES = ((0.0, 1.0), (-1.0, 1.0))
# The norms each registered attack accepts; test_constraints checks this against ATTACKS
# and checks that every other norm raises, so a new attack or norm must be listed here.
SUPPORTED = {
    "fgsm": ("linf", "l2", "l1", "box"),
    "fgm": ("linf", "l2", "l1", "box"),
    "pgd": ("linf", "l2", "l1", "box"),
    "paper": ("linf", "l2", "l1", "box"),
    "cw_l2": ("l2",),
    "apgd": ("linf", "l2"),
    "apgd_ce": ("linf", "l2"),
    "apgd_dlr": ("linf", "l2"),
    "apgd_t": ("linf", "l2"),
    "square": ("linf", "l2"),
    "autoattack": ("linf", "l2"),
    "cascade": ("linf", "l2", "l1", "box"),
}
PAIRS = [(a, p) for a, norms in SUPPORTED.items() for p in norms]
DUAL = {"linf": 1, "l2": 2, "l1": np.inf}   # ord of the dual norm, for np.linalg.norm


def radius_of_box(p: str, d: int, lo: float, hi: float) -> float:
  """The smallest p-ball radius around any point of [lo, hi]^d that contains the box."""
  return {"linf": 1.0, "box": 1.0, "l2": math.sqrt(d), "l1": float(d)}[p] * (hi - lo)


def make(name: str, eps: float, p: str, lo: float, hi: float) -> A.Attack:
  """`name` under norm p with a small budget; the same arguments give the same spec."""
  d_scale = {"linf": 1.0, "box": 1.0, "l2": 6.0, "l1": 36.0}[p]  # sqrt(D), D for D = 36
  if name in ("fgsm", "fgm"):
    return A.build_attack(name, eps=eps, norm=p, lo=lo, hi=hi)
  if name == "pgd":
    return A.pgd(eps, p, steps=5, select="first_success", lo=lo, hi=hi)
  if name == "paper":
    # Adam moves every coordinate by about lr per step whatever eps is: scale lr with the
    # per-coordinate size of the ball, or a large ball is never used (lr must be > 0).
    lr = 0.5 * max(eps, 1e-3) / d_scale
    return A.paper(eps, p, steps=5, restarts=2, lr=lr, lo=lo, hi=hi)
  if name == "cw_l2":
    return A.cw_l2(c=10.0, steps=10, lr=0.1, eps=eps, lo=lo, hi=hi, norm=p)
  # APGD-CE, APGD-T and Square get the budgets of AutoAttack's quick members, so that
  # the autoattack cases reuse their compilations.
  if name in ("apgd", "apgd_ce", "apgd_dlr"):
    return A.build_attack(name, eps=eps, norm=p, steps=20, lo=lo, hi=hi)
  if name == "apgd_t":
    return A.apgd_t(eps, p, steps=20, n_target_classes=3, lo=lo, hi=hi)
  if name == "square":
    return A.square(eps, p, steps=200, lo=lo, hi=hi)
  if name == "autoattack":
    return A.autoattack(eps, p, version="quick", lo=lo, hi=hi)
  if name == "cascade":
    return A.cascade([make("fgsm", eps, p, lo, hi), make("pgd", eps, p, lo, hi)], lo=lo,
                     hi=hi)
  raise KeyError(name)


class LinearCase(NamedTuple):
  """A K-class linear model on images [B, 6, 6(, 1)] in [lo, hi], and exact distances."""
  logits_fn: Callable[[jax.Array], jax.Array]
  w: np.ndarray      # [D, K] float64
  b: np.ndarray      # [K]
  x: jax.Array       # [B, 6, 6, 1] (box [0, 1]) or [B, 6, 6] (box [-1, 1]) float32
  y: jax.Array       # [B] int32, the model's own predictions (every point clean-correct)
  lo: float
  hi: float

  def margins(self, x) -> np.ndarray:
    """z_y - z_j [B, K] in float64 (+inf at j = y)."""
    z = np.asarray(x, np.float64).reshape(len(self.y), -1) @ self.w + self.b
    y = np.asarray(self.y)
    m = z[np.arange(len(y)), y][:, None] - z
    m[np.arange(len(y)), y] = np.inf
    return m

  def min_distance(self, p: str) -> np.ndarray:
    """[B] exact p-norm distance from each clean point to the misclassified set."""
    y = np.asarray(self.y)
    v = self.w[:, y].T[:, None, :] - self.w.T[None]      # [B, K, D]: w_y - w_j
    dual = np.linalg.norm(v, ord=DUAL[p], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.min(np.where(dual > 0, self.margins(self.x) / dual, np.inf), axis=1)

  def breakable_in_box(self) -> np.ndarray:
    """[B] bool: some point of the box is classified otherwise (exact, per class j)."""
    y = np.asarray(self.y)
    v = self.w.T[None] - self.w[:, y].T[:, None, :]      # [B, K, D]: w_j - w_y
    best = np.sum(np.maximum(v * self.lo, v * self.hi), axis=2) + (self.b[None] -
                                                                    self.b[y][:, None])
    best[np.arange(len(y)), y] = -np.inf
    return np.max(best, axis=1) > 0


@functools.lru_cache(maxsize=None)
def linear_case(lo: float, hi: float, batch: int = 32, k: int = 5, seed: int = 0
                ) -> LinearCase:
  """One model and data set per box, cached so that every test gets the same objects.

  Logits are centred on the box's centre, so that (for Gaussian weights) every class owns
  a cone of directions from it and every point can be misclassified inside the box.
  """
  rng = np.random.default_rng(seed)
  d = 36
  w = rng.normal(size=(d, k))
  b = -(lo + hi) / 2 * w.sum(0)
  w32, b32 = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)

  def logits_fn(x):
    return x.reshape(x.shape[0], -1) @ w32 + b32

  # Both image layouts Square accepts: [B, H, W, C] on one box, [B, H, W] on the other.
  shape = (batch, 6, 6, 1) if lo == 0.0 else (batch, 6, 6)
  x = jnp.asarray(rng.uniform(lo, hi, size=shape), jnp.float32)
  y = jnp.argmax(logits_fn(x), axis=1).astype(jnp.int32)
  return LinearCase(logits_fn, w, b, x, y, lo, hi)
