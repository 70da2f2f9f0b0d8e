"""The model stealing experiment's config checks and grid cells.

A cell is one stolen model: {grid, attack, query_set, strategy, labels, budget, seed,
defence, setting, value, repeats, key_mode, victim}; its stream is the cell without its
budget (`stream_name`). `validate_config` runs every check that can fail before anything
is trained or written. The study that runs the cells: `rsec.studies.model_stealing`.
"""
from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec import grid, parallel
from rsec.stealing import jbda as jbda_lib
from rsec.stealing import knockoff as ko
from rsec.stealing import strategies
from rsec.stealing.defences import DEFENCES, defence_settings
from rsec.stealing.query_sets import POOLS
from rsec.stealing.rewards import REWARDS

# What the victim returns for each label mode (its output mode); the attacker trains on it.
LABEL_OUTPUTS = {"probs": "probs", "topk": "topk", "rounded": "rounded", "argmax": "label"}


def parse_run(run: str) -> tuple[str, str, str]:
  """'query_set/strategy/label_mode' -> its parts (ValueError naming what is unknown)."""
  parts = run.split("/")
  if len(parts) != 3:
    raise ValueError(f"an undefended run is 'query_set/strategy/label_mode', got {run!r}")
  qs, strategy, labels = parts
  for what, value, known in (("query set", qs, POOLS.names()),
                             ("strategy", strategy, strategies.STRATEGIES),
                             ("label mode", labels, tuple(LABEL_OUTPUTS))):
    if value not in known:
      hint = " (a ranking gives no class scores to train on)" if value == "ranking" else ""
      raise ValueError(f"run {run!r}: unknown {what} {value!r}{hint}; expected one of "
                       f"{list(known)}")
  return qs, strategy, labels


# The defence grids: which victim each defends (`config.defences.<grid>`).
DEFENCE_GRIDS = {"grid": "plain", "oe_grid": "oe"}


def defence_cells(c) -> list[tuple[str, str, str, Any]]:
  """(victim, defence, setting, value) of every defence-grid point (setting '' for a
  defence without settings); victim 'plain' (the victim) or 'oe' (the outlier-exposure
  victim: Adaptive Misinformation's, and MAD's with calibrated OOD posteriors)."""
  out = []
  for key, victim in DEFENCE_GRIDS.items():
    for name, settings in c.defences[key].items():
      if not settings:
        out.append((victim, name, "", 0))
      for setting, values in settings.items():
        out += [(victim, name, setting, v) for v in values]
  return out


def validate_config(c: ml_collections.ConfigDict) -> None:
  """Every check that can fail, before anything is trained or written."""
  from rsec.train_classifier import validate_train_config
  cfg_lib.check(c, "seed", type_=int, low=0)
  cfg_lib.check(c, "victim_workdir", type_=str)
  for key in ("victim_budget", "query_batch", "pool_size", "fidelity_size", "pool_seed"):
    cfg_lib.check(c, key, type_=int, low=0 if key == "pool_seed" else 1)
  cfg_lib.check(c, "key_mode", type_=str, choices=("content", "index"))
  validate_train_config(c.classifier)
  if c.classifier.data.name != "fonts":
    raise ValueError("config.classifier.data.name must be 'fonts' (the query pools are FONTS "
                     f"glyphs), got {c.classifier.data.name!r}")
  budgets = tuple(c.budgets)
  if not budgets or any(not isinstance(b, int) or b < 1 for b in budgets) or \
      list(budgets) != sorted(set(budgets)):
    raise ValueError(f"config.budgets must be increasing positive integers, got {budgets}")
  big = budgets[-1]
  if big > c.pool_size:
    raise ValueError(f"the largest budget ({big}) is larger than the query pool "
                     f"(config.pool_size={c.pool_size})")
  if big > c.victim_budget:
    raise ValueError(f"the largest budget ({big}) is larger than the victim's budget "
                     f"(config.victim_budget={c.victim_budget})")
  spec = ko.KnockoffSpec.from_config(c.knockoff)
  for f, low in (("steps", 1), ("batch_size", 1), ("eval_every", 1), ("steps_per_call", 1),
                 ("shift", 0)):
    cfg_lib.check(c, f"knockoff.{f}", type_=int, low=low)
  cfg_lib.check(c, "knockoff.holdout", type_=float, low=0.0, high=0.5)
  parallel.check_batch_divisible(spec.batch_size, parallel.data_mesh(),
                                 "config.knockoff.batch_size")
  d = c.classifier.data
  ko.check_architecture(spec.arch, len(d.characters), (d.size, d.size, 1))
  cfg_lib.check(c, "adaptive.reward", type_=str, choices=REWARDS)
  for f in ("batch", "window", "online_steps"):
    cfg_lib.check(c, f"adaptive.{f}", type_=int, low=1)
  cfg_lib.check(c, "adaptive.lr", type_=float, low=0.0, low_exclusive=True)
  for run in tuple(c.undefended.runs) + tuple(c.undefended.seed_runs):
    parse_run(run)
  for v in tuple(c.jbda.variants) + tuple(c.defences.jbda):
    if v not in jbda_lib.VARIANTS:
      raise ValueError(f"unknown JBDA variant {v!r}; expected one of {list(jbda_lib.VARIANTS)}")
  cfg_lib.check(c, "jbda.seeds_per_class", type_=int, low=0)
  if (c.jbda.variants or c.defences.jbda) and c.jbda.seeds_per_class < 1:
    raise ValueError("config.jbda.seeds_per_class must be >= 1: JBDA needs a non-empty seed "
                     "set")
  if c.jbda.seeds_per_class * len(d.characters) > budgets[0]:
    raise ValueError(f"the JBDA seed set ({c.jbda.seeds_per_class} x {len(d.characters)} "
                     f"classes) is larger than the smallest budget ({budgets[0]})")
  small = int(np.sum(~ko.heldout_rows(budgets[0] // max(1, c.defences.repeats),
                                      spec.holdout)))
  if small < spec.batch_size:
    raise ValueError(f"the smallest budget leaves {small} training rows, fewer than "
                     f"config.knockoff.batch_size={spec.batch_size}")
  for a in c.defences.attackers:
    if a not in LABEL_OUTPUTS:
      raise ValueError(f"config.defences.attackers: unknown label mode {a!r}; expected one "
                       f"of {list(LABEL_OUTPUTS)}")
  parse_run(f"{c.defences.query_set}/{c.defences.strategy}/probs")
  cfg_lib.check(c, "defences.repeats", type_=int, low=1)
  for name in c.defences.repeat_defences:
    if name not in c.defences.grid:
      raise ValueError(f"config.defences.repeat_defences names {name!r}, which is not in "
                       f"config.defences.grid")
  for km in c.defences.repeat_key_modes:
    if km not in ("content", "index"):
      raise ValueError(f"config.defences.repeat_key_modes: unknown key mode {km!r}")
  _check_defences(c)
  cfg_lib.check(c, "transfer.eps", type_=float, low=0.0)
  cfg_lib.check(c, "transfer.steps", type_=int, low=1)
  cfg_lib.check(c, "transfer.num_examples", type_=int, low=1)


def _check_defences(c) -> None:
  """Every defence-grid point: a known defence, its own settings, valid values."""
  from rsec.stealing.utility_study import check_defence_points
  for victim, name, setting, value in defence_cells(c):
    where = "config.defences." + ("grid" if victim == "plain" else "oe_grid")
    if name not in DEFENCES:
      raise ValueError(f"{where} names an unknown defence {name!r}; expected "
                       f"one of {DEFENCES.names()}")
    if name == "adaptive_misinformation" and victim == "plain":
      raise ValueError("adaptive_misinformation defends the outlier-exposure victim: list it "
                       "in config.defences.oe_grid, not config.defences.grid")
    if setting and setting not in defence_settings(name):
      raise ValueError(f"{where}.{name}.{setting}: defence {name!r} takes "
                       f"{defence_settings(name)}")
    check_defence_points(c.classifier, [(name, {setting: value} if setting else {})], where)


# ------------------------------------------------------------------------------- cells

def _cell(grid_name, attack, qs, strategy, labels, budget, seed, defence="none", setting="",
          value=0, repeats=1, key_mode="content", victim="plain"):
  return dict(grid=grid_name, attack=attack, query_set=qs, strategy=strategy, labels=labels,
              budget=budget, seed=seed, defence=defence, setting=setting, value=value,
              repeats=repeats, key_mode=key_mode, victim=victim)


def make_cells(c) -> list[dict]:
  """Every cell of both grids, in report order."""
  budgets, big = tuple(c.budgets), c.budgets[-1]
  km = c.key_mode
  cells = []
  for run in c.undefended.runs:
    qs, strategy, labels = parse_run(run)
    for seed in c.undefended.seeds:
      cells += [_cell("undefended", "knockoff", qs, strategy, labels, b, seed, key_mode=km)
                for b in budgets]
  for run in c.undefended.seed_runs:
    qs, strategy, labels = parse_run(run)
    for seed in c.undefended.extra_seeds:
      cells.append(_cell("undefended", "knockoff", qs, strategy, labels, big, seed,
                         key_mode=km))
  for v in c.jbda.variants:
    labels = "argmax" if jbda_lib.VARIANT_LABELS[v] == "argmax" else "probs"
    cells += [_cell("undefended", v, "same", "jacobian", labels, b, 0, key_mode=km)
              for b in budgets]
  d = c.defences
  for victim, name, setting, value in defence_cells(c):
    point = dict(defence=name, setting=setting, value=value, key_mode=km, victim=victim)
    for labels in d.attackers:
      cells.append(_cell("defences", "knockoff", d.query_set, d.strategy, labels, big, 0,
                         **point))
    for v in d.jbda:
      labels = "argmax" if jbda_lib.VARIANT_LABELS[v] == "argmax" else "probs"
      cells.append(_cell("defences", v, "same", "jacobian", labels, big, 0, **point))
    if name in d.repeat_defences and victim == "plain":
      for mode in d.repeat_key_modes:
        cells.append(_cell("defences", "knockoff", d.query_set, d.strategy, "probs", big, 0,
                           **dict(point, key_mode=mode), repeats=d.repeats))
  seen, out = set(), []
  for cell in cells:  # a seed_run at the largest budget may repeat a run's cell
    name = grid.cell_name(cell)
    if name not in seen:
      seen.add(name)
      out.append(cell)
  return out


def stream_name(cell: dict) -> str:
  """The cell without its budget: the attacker whose first queries the cell trains on."""
  return grid.cell_name({k: v for k, v in cell.items() if k != "budget"})
