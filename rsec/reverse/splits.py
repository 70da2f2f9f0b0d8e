"""Training / test splits of a zoo for metamodels: random (R) and extrapolation (E).

An E split holds out attribute values: its test models have at least one of them, its
training models none, so the metamodel must extrapolate to values it never saw. The
splitting attributes are not scored on their own split (their test values have no
training models), nor are attributes derived from them (`DERIVED`); every other one is.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rsec.checks import check_choice

# Split -> {attribute: held-out values (names, as zoo.attribute_values prints them)};
# 'largest' stands for the largest configured batch size.
HELD_OUT = {
    "R": {},
    "E-conv": {"conv": ("4",)},
    "E-conv-fc": {"conv": ("4",), "fc": ("4",)},
    "E-opt": {"opt": ("rmsprop",)},
    "E-opt-bs": {"opt": ("rmsprop",), "bs": ("largest",)},
    "E-size": {"size": ("quarter",)},
}


# Attributes derived from others: not scored where a split holds out one of their sources
# (the parameter-count bin of a held-out #conv is itself a held-out value).
DERIVED = {"params": ("act", "ks", "conv", "fc")}


class Split(NamedTuple):
  name: str
  train: np.ndarray       # int row indices into the zoo table
  test: np.ndarray
  scored: tuple[bool, ...]   # per attribute (in `names` order)


def make_split(name: str, attributes: dict[str, np.ndarray], values: dict[str, tuple],
               *, test_share: float, seed: int) -> Split:
  """The split `name` of a zoo table (attributes: {name: int [N]} value indices; values:
  {name: the attribute's value names}).

  ValueError for an unknown split, or one that leaves no training models for a value of
  a scored attribute that its test set holds (the metamodel could never answer it).
  """
  check_choice("split", name, HELD_OUT)
  names = list(attributes)
  n = len(attributes[names[0]])
  if name == "R":
    perm = np.random.default_rng([seed, 31]).permutation(n)
    cut = int(round(n * (1.0 - test_share)))
    train, test = np.sort(perm[:cut]), np.sort(perm[cut:])
  else:
    held = np.zeros(n, bool)
    for attr, vals in HELD_OUT[name].items():
      names_of = [str(v) for v in values[attr]]
      for v in vals:
        idx = len(names_of) - 1 if v == "largest" else names_of.index(v)
        held |= attributes[attr] == idx
    train, test = np.flatnonzero(~held), np.flatnonzero(held)
  if len(train) == 0 or len(test) == 0:
    raise ValueError(f"split {name!r} leaves {len(train)} training and {len(test)} test "
                     f"models; the zoo needs both")
  held_out = set(HELD_OUT[name])
  scored = tuple(a not in held_out and not held_out & set(DERIVED.get(a, ())) for a in names)
  for a, s in zip(names, scored):
    if not s:
      continue
    missing = sorted(set(attributes[a][test].tolist()) - set(attributes[a][train].tolist()))
    if missing:
      shown = [str(values[a][i]) for i in missing]
      raise ValueError(f"split {name!r} leaves no training models with {a}={shown}, which "
                       f"its test models have and it scores; build a larger zoo or drop "
                       f"the split")
  return Split(name, train, test, scored)


def chance(labels_train: np.ndarray, labels_test: np.ndarray) -> float:
  """Accuracy of always answering the training set's most common value."""
  return float(np.mean(labels_test == np.bincount(labels_train).argmax()))
