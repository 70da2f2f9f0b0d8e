"""Config checks of the reverse-engineering study: everything refused before any training.

`validate_config` (every key), `zoo_spec` (the config as a `ZooSpec`), `check_zoo_workdir`
(a reused zoo must have been built with the same seed, data and zoo settings),
`defence_points` and `mad_surrogate` (the defence grid, shared with the study).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections

from rsec import config as cfg_lib
from rsec.reverse import kennen, splits as splits_lib, zoo as zoo_lib, zoo_net, zoo_train
from rsec.stealing import defences as defences_lib

ZOO_KEYS = ("seed", "data", "zoo")   # what a reused zoo must have been built with


def zoo_spec(c: ml_collections.ConfigDict) -> zoo_lib.ZooSpec:
  z = c.zoo
  net = zoo_net.NetSpec((c.data.size, c.data.size, 1), len(c.data.characters), z.width,
                        z.hidden, z.dropout)
  train = zoo_train.TrainSpec(net, tuple(z.batch_sizes), z.lr_sgd, z.lr_adam, z.lr_rmsprop,
                              z.steps)
  return zoo_lib.ZooSpec(train, z.models, z.ensemble_groups, z.stack_size, z.min_accuracy,
                         c.seed, zoo_lib.check_values(dict(z.attributes), tuple(z.batch_sizes)))


def validate_config(c: ml_collections.ConfigDict) -> None:
  """Every refusal before any training (ValueError naming the key)."""
  from rsec.data.sources import validate_data_config
  validate_data_config(c, "data")
  if c.data.name != "fonts":
    raise ValueError(f"config.data.name must be 'fonts' (the zoo is FONTS classifiers), "
                     f"got {c.data.name!r}")
  if c.data.size % 4:
    raise ValueError(f"config.data.size must be divisible by 4 (two 2x downsamplings), "
                     f"got {c.data.size}")
  check = cfg_lib.check
  check(c, "seed", type_=int, low=0)
  for k in ("models", "stack_size", "steps", "width", "hidden", "queries"):
    check(c, f"zoo.{k}", type_=int, low=1)
  check(c, "zoo.ensemble_groups", type_=int, low=0)
  check(c, "zoo.min_accuracy", type_=float, low=0.0, high=1.0)
  check(c, "zoo.dropout", type_=float, low=0.0, high=0.9)
  for k in ("lr_sgd", "lr_adam", "lr_rmsprop"):
    check(c, f"zoo.{k}", type_=float, low=0.0, low_exclusive=True)
  sizes = tuple(c.zoo.batch_sizes)
  if len(sizes) != 3 or any(not isinstance(b, int) or b < 1 for b in sizes):
    raise ValueError(f"config.zoo.batch_sizes must be three positive integers, got {sizes}")
  if 3 * c.zoo.ensemble_groups > c.zoo.models:
    raise ValueError(f"config.zoo.ensemble_groups={c.zoo.ensemble_groups} needs "
                     f"{3 * c.zoo.ensemble_groups} models, more than config.zoo.models="
                     f"{c.zoo.models}")
  try:
    spec = zoo_spec(c)
  except ValueError as e:
    raise ValueError(f"config.zoo.attributes: {e}") from None
  smallest = c.data.train_size // 3 // 4
  if smallest < max(sizes):
    raise ValueError(f"config.data.train_size={c.data.train_size} gives subsets of "
                     f"{smallest} images (a quarter of a third), fewer than the batch size "
                     f"{max(sizes)}")
  k = c.kennen
  n = k.n_queries
  if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
    raise ValueError(f"config.kennen.n_queries must be a positive integer, got {n!r}")
  if n > c.zoo.queries:
    raise ValueError(f"config.kennen.n_queries={n} exceeds the zoo's config.zoo.queries="
                     f"{c.zoo.queries}")
  for q in k.query_curve:
    if not isinstance(q, int) or q <= 0 or q > c.zoo.queries:
      raise ValueError(f"config.kennen.query_curve values must be integers in [1, "
                       f"{c.zoo.queries}], got {q!r}")
  for mode in k.outputs:
    if mode not in kennen.OUTPUTS:
      raise ValueError(f"config.kennen.outputs: unknown output mode {mode!r}; expected "
                       f"one of {list(kennen.OUTPUTS)}")
  for name in tuple(k.splits) + tuple(k.kennen_io.splits):
    if name not in splits_lib.HELD_OUT:
      raise ValueError(f"config.kennen.splits: unknown split {name!r}; expected one of "
                       f"{list(splits_lib.HELD_OUT)}")
  if "R" not in k.splits:
    raise ValueError("config.kennen.splits must include 'R' (kennen-i, the transfer and "
                     "the defence studies use it)")
  check(c, "kennen.test_share", type_=float, low=0.0, high=1.0, low_exclusive=True)
  for name in ("meta", "kennen_io"):
    check(c, f"kennen.{name}.steps", type_=int, low=1)
    check(c, f"kennen.{name}.batch_size", type_=int, low=1)
    check(c, f"kennen.{name}.learning_rate", type_=float, low=0.0, low_exclusive=True)
  check(c, "kennen.kennen_io.query_learning_rate", type_=float, low=0.0, low_exclusive=True)
  if not isinstance(k.kennen_io.refit, bool):
    raise ValueError(f"config.kennen.kennen_io.refit must be True or False, got "
                     f"{k.kennen_io.refit!r}")
  check(c, "kennen.kennen_i.steps", type_=int, low=1)
  check(c, "kennen.kennen_i.craft_models", type_=int, low=1)
  check(c, "kennen.kennen_i.step_size", type_=float, low=0.0, low_exclusive=True)
  if c.defences.output not in k.outputs:
    raise ValueError(f"config.defences.output={c.defences.output!r}: no kennen-o metamodel "
                     f"is trained for it (config.kennen.outputs={list(k.outputs)})")
  ctx = defences_lib.DefenceContext(len(c.data.characters), (c.data.size, c.data.size, 1))
  for name, settings in c.defences.grid.items():
    if name not in defences_lib.DEFENCES.names():
      raise ValueError(f"config.defences.grid: unknown defence {name!r}; expected one of "
                       f"{defences_lib.DEFENCES.names()}")
    for point in defence_points(name, settings):
      defences_lib.make_defence(name, ctx, **point, **mad_surrogate(name, spec))
  for k2 in ("black_boxes", "images", "sources", "zoo_sources", "steps"):
    check(c, f"transfer.{k2}", type_=int, low=1)
  check(c, "transfer.eps", type_=float, low=0.0, low_exclusive=True)
  check(c, "defences.utility_images", type_=int, low=1)


def defence_points(name: str, settings) -> list[dict]:
  """The grid's settings of one defence as keyword dicts (one per value)."""
  items = list(dict(settings).items())
  if not items:
    return [{}]
  key, values = items[0]
  return [{key: v} for v in values]


def mad_surrogate(name: str, spec: zoo_lib.ZooSpec) -> dict:
  """MAD's surrogate: a randomly initialised zoo super-network (the defender's stand-in
  for the attacker's model)."""
  if not name.startswith("mad"):
    return {}
  arch = {k: 0 for k in zoo_net.ARCH_ATTRIBUTES}
  arch = {k: jnp.asarray(v, jnp.int32) for k, v in arch.items()}
  params = zoo_net.init_params(spec.train.net, jax.random.key(7), arch)
  return {"surrogate": defences_lib.AuxModel(zoo_net.apply, {"params": params, "arch": arch})}


def check_zoo_workdir(c: ml_collections.ConfigDict, zoo_dir: str) -> None:
  """ValueError if `zoo_dir` holds a zoo built with other attributes or data."""
  path = os.path.join(zoo_dir, "zoo_config.json")
  if not os.path.exists(path):
    if c.zoo_workdir and not os.path.isdir(os.path.join(zoo_dir, "cells")):
      raise ValueError(f"config.zoo_workdir={c.zoo_workdir!r} holds no zoo (no "
                       f"zoo_config.json)")
    return
  with open(path) as f:
    old = json.load(f)
  new = json.loads(cfg_lib.to_json(c))
  diff = cfg_lib.changed_keys({k: old.get(k) for k in ZOO_KEYS}, {k: new[k] for k in ZOO_KEYS})
  if diff:
    raise ValueError(f"the zoo in {zoo_dir} was built with other settings (changed: "
                     f"{', '.join(diff[:8])}); use config.zoo_workdir='' or the same "
                     f"data and zoo settings")
