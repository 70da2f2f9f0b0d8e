"""Properties of every registered attack under every norm it supports, on both boxes.

Pinned cases (one per attack x norm x box, on the linear model of cases.py, where the
distance to the nearest misclassified point is known exactly):
  - unsupported norms raise a ValueError; supported ones are kept, never swapped;
  - the output is finite, in [lo, hi] and in the eps-ball of the norm that was asked for,
    on images [B, H, W, C] (box [0, 1]) and [B, H, W] (box [-1, 1]), and info["success"]
    says which outputs are misclassified;
  - no success is closer than the exact minimal distance, in any norm, and below the
    smallest such distance robust accuracy is exactly 1;
  - with a ball containing the whole box, robust accuracy falls to ~0 (every point is
    breakable inside the box, checked exactly).
On top, hypothesis draws random shapes (2-D to 4-D), radii, boxes and models, the same
ones on every run (conftest.py's profile; RSEC_HYPOTHESIS=explore draws new ones).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rsec.attacks as A
from rsec.attacks import threat
from tests.attacks.cases import (BOXES, PAIRS, SUPPORTED, linear_case, make,
                                 radius_of_box)
from tests.attacks.models import random_linear

KEY = jax.random.key(0)
REL = 1e-5   # float32 slack on norms measured after the attack's own projection
CASES = [pytest.param(a, p, box, id=f"{a}-{p}-{box[0]:g},{box[1]:g}")
         for a, p in PAIRS for box in BOXES]

# Each example compiles an attack for a new shape (about a second): few, and fixed (see
# conftest.py; RSEC_HYPOTHESIS=explore for fresh ones).
PROFILE = settings(settings.get_profile("rsec-attacks"), max_examples=6)


def check_inside(x_adv, x, p, eps, lo, hi):
  """Shape, dtype, finiteness, the box, and (unless p is "box") the p-ball of radius eps."""
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert bool(jnp.all(jnp.isfinite(x_adv)))
  assert float(x_adv.min()) >= lo and float(x_adv.max()) <= hi
  if p != "box":
    n = threat.norm(x_adv - x, p)
    assert float(n.max()) <= eps * (1 + REL) + REL, (float(n.max()), eps)


def test_every_registered_attack_is_covered():
  assert sorted(SUPPORTED) == sorted(A.ATTACKS.names())


@pytest.mark.parametrize("name, bad", [
    (a, p) for a in SUPPORTED if a != "cascade"   # a cascade's norms are its members'
    for p in [q for q in A.NORMS if q not in SUPPORTED[a]] + ["l3"]])
def test_unsupported_norm_raises(name, bad):
  # A known norm the attack cannot run must say so, not fall back to another norm.
  match = "unknown norm 'l3'" if bad == "l3" else f"does not support norm '{bad}'"
  with pytest.raises(ValueError, match=match):
    A.build_attack(name, eps=0.1, norm=bad)


@pytest.mark.parametrize("name, p", [pair for pair in PAIRS if pair[0] not in (
    "cw_l2", "cascade", "autoattack")])   # C&W measures L2 itself; cascades: members
def test_requested_norm_is_the_norm_used(name, p):
  assert make(name, 0.1, p, 0.0, 1.0).spec.norm == p


@pytest.mark.parametrize("name, p, box", CASES)
def test_inside_ball_and_box_and_never_below_the_exact_distance(name, p, box):
  lo, hi = box
  c = linear_case(lo, hi)
  q = "linf" if p == "box" else p     # box: no ball; eps sets the scale of steps only
  dist = {r: c.min_distance(r) for r in ("linf", "l2", "l1")}
  assert np.all(np.isfinite(dist[q])) and dist[q].min() > 0
  # A quarter of the points can be broken: enough to test, and it leaves over half the
  # batch to a cascade's later members, which then reuse the full-batch compilation.
  eps = float(np.quantile(dist[q], 0.25))
  x_adv, info = make(name, eps, p, lo, hi)(c.logits_fn, KEY, c.x, c.y, return_info=True)
  check_inside(x_adv, c.x, p, eps, lo, hi)
  broken = np.asarray(jnp.argmax(c.logits_fn(x_adv), 1) != c.y)
  np.testing.assert_array_equal(info["success"], broken)
  for r in ("linf", "l2", "l1"):
    n = np.asarray(threat.norm(x_adv - c.x, r), np.float64)
    assert np.all(n[broken] >= dist[r][broken] * (1 - 1e-4)), r
  if p != "box":
    # Below the smallest exact distance no attack can succeed: accuracy exactly 1.
    small = 0.9 * float(dist[q].min())
    x_small = make(name, small, p, lo, hi)(c.logits_fn, KEY, c.x, c.y)
    check_inside(x_small, c.x, p, small, lo, hi)
    np.testing.assert_array_equal(jnp.argmax(c.logits_fn(x_small), 1), c.y)


@pytest.mark.parametrize("name, p, box", CASES)
def test_accuracy_falls_to_zero_when_the_ball_contains_the_box(name, p, box):
  lo, hi = box
  c = linear_case(lo, hi)
  assert c.breakable_in_box().all()   # so ~0 is the right answer, not just a hope
  eps = radius_of_box(p, int(np.prod(c.x.shape[1:])), lo, hi)
  x_adv = make(name, eps, p, lo, hi)(c.logits_fn, KEY, c.x, c.y)
  check_inside(x_adv, c.x, p, eps, lo, hi)
  acc = float(jnp.mean(jnp.argmax(c.logits_fn(x_adv), 1) == c.y))
  assert acc <= 0.05, acc   # at most 1 of the 32 points survives


def _shapes(name):
  images = st.one_of(
      st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
      st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6),
                st.sampled_from([1, 3])))
  if name == "square":   # Square needs [B, H, W(, C)]
    return images
  return st.one_of(st.tuples(st.integers(1, 4), st.integers(1, 12)), images)


@st.composite
def attack_cases(draw):
  # AutoAttack compiles three attacks per shape: pinned above, left out of random draws.
  name = draw(st.sampled_from(sorted(set(SUPPORTED) - {"autoattack"})))
  return (name, draw(st.sampled_from(SUPPORTED[name])), draw(_shapes(name)))


@PROFILE
@given(attack_cases(), st.floats(0.0, 3.0), st.sampled_from(BOXES),
       st.integers(0, 2**31 - 1))
def test_random_shapes_and_radii_stay_inside_ball_and_box(case, eps, box, seed):
  name, p, shape = case
  lo, hi = box
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(lo, hi, size=shape), jnp.float32)
  f = random_linear(int(np.prod(shape[1:])), seed=seed % 7)
  y = jnp.asarray(rng.integers(0, 5, size=shape[0]), jnp.int32)
  x_adv = make(name, eps, p, lo, hi)(f, jax.random.key(seed), x, y)
  check_inside(x_adv, x, p, eps, lo, hi)
