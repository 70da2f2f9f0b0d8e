"""SCENES context rules: which things appear in which scenes, on which stuff, with whom.

A `ContextRules` holds only primitives (names and probabilities), so it can live in a
config; `make_tables` validates it and compiles it into the small integer/float tables
that the pure-JAX sampler (`rsec.data.scenes`) indexes.

Each scene is four horizontal stuff bands (top to bottom, slightly slanted); its type
fixes which stuff each band shows.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rsec import checks

THINGS = ("car", "person", "sign", "tree", "dog", "chair", "table", "clock")
STUFF = ("sky", "wall", "sidewalk", "road", "grass", "floor")
# Semantic labels: things are 0..K-1, stuff K..K+len(STUFF)-1 (COCO panoptic order).
NUM_THINGS = len(THINGS)
NUM_LABELS = len(THINGS) + len(STUFF)
NUM_BANDS = 4

SCENE_BANDS = {
    "street": ("sky", "wall", "sidewalk", "road"),
    "indoor": ("wall", "wall", "floor", "floor"),
    "park": ("sky", "grass", "sidewalk", "grass"),
}


@dataclasses.dataclass(frozen=True)
class ContextRules:
  """The biased statistics of the training (and in-context test) scenes.

  Attributes:
    scene_types: scene type names (keys of SCENE_BANDS).
    scene_probs: probability of each scene type (sums to 1).
    scene_things: per scene type, the things that appear freely in it.
    ties: (thing, regions) pairs: the stuff a thing stands on (its foot lies in one).
    pairs: (a, b, p): when a is placed, b is placed next to it with probability p.
    second_object_prob: probability of a second free object (with its own partner).
    ambiguous_stuff: (a, b, p) stuff pairs: in a scene type showing both, with probability
      p per scene the two regions share one look (that of a or b, chosen at random;
      `rsec.data.scenes`), so nothing but the things tied to them tells them apart. Off
      by default (empty).
  """
  scene_types: tuple[str, ...] = ("street", "indoor", "park")
  scene_probs: tuple[float, ...] = (0.4, 0.3, 0.3)
  scene_things: tuple[tuple[str, ...], ...] = (
      ("car", "person", "sign"), ("chair", "table", "clock", "person"),
      ("tree", "dog", "person"))
  ties: tuple[tuple[str, tuple[str, ...]], ...] = (
      ("car", ("road",)), ("person", ("sidewalk", "floor")), ("sign", ("sidewalk",)),
      ("tree", ("grass",)), ("dog", ("grass", "sidewalk")), ("chair", ("floor",)),
      ("table", ("floor",)), ("clock", ("wall",)))
  pairs: tuple[tuple[str, str, float], ...] = (
      ("car", "sign", 0.9), ("chair", "table", 0.9), ("dog", "person", 0.9))
  second_object_prob: float = 0.6
  ambiguous_stuff: tuple[tuple[str, str, float], ...] = ()


def rules_from_config(c) -> ContextRules:
  """Builds `ContextRules` from a config dict of primitives (missing keys: defaults)."""
  fields = {f.name for f in dataclasses.fields(ContextRules)}
  unknown = set(dict(c)) - fields
  if unknown:
    raise ValueError(f"unknown context rule keys {sorted(unknown)}; expected {sorted(fields)}")
  kw = {}
  for k, v in dict(c).items():
    if k == "ties":
      v = tuple((t, tuple(r)) for t, r in v)
    elif k == "scene_things":
      v = tuple(tuple(s) for s in v)
    elif k in ("pairs", "ambiguous_stuff"):
      v = tuple(_triple(k, i, t) for i, t in enumerate(v))
    elif k in ("scene_types", "scene_probs"):
      v = tuple(v)
    kw[k] = v
  return ContextRules(**kw)


def _triple(field: str, i: int, t) -> tuple[str, str, float]:
  if isinstance(t, str) or len(t) != 3:
    raise ValueError(f"{field}[{i}] must be a (name, name, probability) triple, got {t!r}")
  a, b, p = t
  try:
    return (a, b, float(p))
  except (TypeError, ValueError):
    raise ValueError(f"{field}[{i}] probability must be a number, got {p!r}") from None


def _index(kind: str, name: str, names: Sequence[str]) -> int:
  if name not in names:
    raise ValueError(f"unknown {kind} {name!r} in the context rules; expected one of "
                     f"{list(names)}")
  return names.index(name)


def make_tables(rules: ContextRules) -> dict[str, np.ndarray]:
  """Validates `rules` and compiles them into arrays.

  Returns:
    bands: int32 [T, 4] stuff index (0..len(STUFF)-1) of each band per scene type.
    scene_probs: float32 [T].
    scene_things: float32 [T, K] 1 where the thing appears freely in the scene type.
    tie: float32 [K, len(STUFF)] 1 where the thing may stand on the stuff.
    partner: int32 [K] the paired thing (-1 none); partner_prob: float32 [K].
    second_object_prob: float32 [].
    ambiguous_a, ambiguous_b: int32 [P] stuff indices of each ambiguous pair;
    ambiguous_prob: float32 [P] (P = 0 without the rule).
  Raises ValueError for unknown names, probabilities outside [0, 1], probabilities that
  do not sum to 1, and ties that no scene can satisfy (a thing tied to a region missing
  from a scene type it appears in).
  """
  t = len(rules.scene_types)
  if t == 0:
    raise ValueError("context rules need at least one scene type")
  bands = np.array([[STUFF.index(s) for s in SCENE_BANDS[_check_scene(n)]]
                    for n in rules.scene_types], np.int32)
  probs = np.asarray(rules.scene_probs, np.float64)
  if probs.shape != (t,):
    raise ValueError(f"scene_probs must have {t} entries (one per scene type), got "
                     f"{len(rules.scene_probs)}")
  for i, p in enumerate(probs):
    checks.check_finite_scalar(f"scene_probs[{i}]", p, low=0.0, high=1.0)
  if abs(probs.sum() - 1.0) > 1e-6:
    raise ValueError(f"scene_probs must sum to 1, got {probs.sum():.6g}")
  checks.check_finite_scalar("second_object_prob", rules.second_object_prob, low=0.0, high=1.0)
  if len(rules.scene_things) != t:
    raise ValueError(f"scene_things must have {t} entries (one per scene type), got "
                     f"{len(rules.scene_things)}")
  scene_things = np.zeros((t, NUM_THINGS), np.float32)
  for i, names in enumerate(rules.scene_things):
    if not names:
      raise ValueError(f"scene_things[{i}] ({rules.scene_types[i]}) is empty")
    for n in names:
      scene_things[i, _index("thing", n, THINGS)] = 1
  tie = np.zeros((NUM_THINGS, len(STUFF)), np.float32)
  for thing, regions in rules.ties:
    k = _index("thing", thing, THINGS)
    for r in regions:
      tie[k, _index("stuff region", r, STUFF)] = 1
  missing = [THINGS[k] for k in range(NUM_THINGS) if not tie[k].any()]
  if missing:
    raise ValueError(f"ties must give every thing a region; missing for {missing}")
  partner = -np.ones(NUM_THINGS, np.int32)
  partner_prob = np.zeros(NUM_THINGS, np.float32)
  for i, (a, b, p) in enumerate(rules.pairs):
    ka, kb = _index("thing", a, THINGS), _index("thing", b, THINGS)
    p = checks.check_finite_scalar(f"pairs[{i}] probability ({a}, {b})", p, low=0.0, high=1.0)
    if ka == kb:
      raise ValueError(f"pairs[{i}] pairs {a!r} with itself")
    if partner[ka] >= 0:
      raise ValueError(f"pairs: {a!r} has two partners; each thing may lead one pair")
    partner[ka], partner_prob[ka] = kb, p
  for i in range(t):
    present = set(bands[i].tolist())
    for k in np.flatnonzero(scene_things[i]):
      _check_tie(rules, tie, k, present, i)
      if partner[k] >= 0 and partner_prob[k] > 0:
        _check_tie(rules, tie, partner[k], present, i)
  amb_a, amb_b, amb_p = _ambiguous(rules, bands)
  return dict(bands=bands, scene_probs=probs.astype(np.float32), scene_things=scene_things,
              tie=tie, partner=partner, partner_prob=partner_prob,
              second_object_prob=np.float32(rules.second_object_prob),
              ambiguous_a=amb_a, ambiguous_b=amb_b, ambiguous_prob=amb_p)


def _ambiguous(rules: ContextRules, bands: np.ndarray):
  """Validates `rules.ambiguous_stuff`: known, distinct stuff, each in at most one pair,
  both shown by some scene type, probability in [0, 1]."""
  a_s, b_s, p_s, used = [], [], [], set()
  for i, t in enumerate(rules.ambiguous_stuff):
    a, b, p = _triple("ambiguous_stuff", i, t)
    for n in (a, b):
      if n not in STUFF:
        raise ValueError(f"unknown stuff {n!r} in ambiguous_stuff[{i}]; expected one of "
                         f"{list(STUFF)}")
      if n in used:
        raise ValueError(f"ambiguous_stuff: {n!r} is in two pairs; each stuff may be in one")
    if a == b:
      raise ValueError(f"ambiguous_stuff[{i}] pairs {a!r} with itself")
    p = checks.check_finite_scalar(f"ambiguous_stuff[{i}] probability ({a}, {b})", p,
                                   low=0.0, high=1.0)
    ka, kb = STUFF.index(a), STUFF.index(b)
    if not any(ka in row and kb in row for row in bands.tolist()):
      raise ValueError(f"ambiguous_stuff[{i}] ({a}, {b}): no scene type shows both, so the "
                       f"rule would never apply")
    used |= {a, b}
    a_s.append(ka), b_s.append(kb), p_s.append(p)
  return (np.array(a_s, np.int32), np.array(b_s, np.int32), np.array(p_s, np.float32))


def _check_scene(name: str) -> str:
  return checks.check_choice("scene type", name, SCENE_BANDS)


def _check_tie(rules, tie, k, present: set, i: int) -> None:
  if not any(tie[k, s] for s in present):
    want = [STUFF[s] for s in np.flatnonzero(tie[k])]
    have = sorted({STUFF[s] for s in present})
    raise ValueError(
        f"context rules cannot be satisfied: {THINGS[k]!r} appears in scene type "
        f"{rules.scene_types[i]!r}, but is tied to {want}, which that scene lacks "
        f"(it has {have})")
