"""Model stealing: knockoff nets, the JBDA family and defences, as two resumable grids.

The library behind `experiments.model_stealing` (command line and presets in
configs/model_stealing.py); `run(config, workdir)` is what it calls.

A cell is one stolen model: {grid, attack, query_set, strategy, labels, budget, seed,
defence, setting, value, repeats, key_mode}. The cells of one grid train together as one
stack (`rsec.grid.run_grid(stack_by=...)`, `rsec.stealing.knockoff.train_stack`): every
budget and seed from scratch, for the same steps. What a cell trains on is its *stream*'s
first `budget / repeats` queries; a stream (the cell without its budget) is
collected once, up to the largest budget, from a fresh victim with `victim_budget`, and
cached in `streams/` (pool indices or images, and the answers).
"""
from __future__ import annotations

import hashlib
import os
import zlib
from typing import Any

import jax
import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec import grid, io, parallel
from rsec.data.sources import load_classification
from rsec.stealing import jbda as jbda_lib
from rsec.stealing import knockoff as ko
from rsec.stealing import strategies, transfer
from rsec.stealing.defences import DEFENCES, defence_settings
from rsec.stealing.query_sets import POOLS, build_pool
from rsec.stealing.rewards import REWARDS
from rsec.stealing.utility import defender_utility
from rsec.stealing.victim import Victim

# What the victim returns for each label mode (its output mode); the attacker trains on it.
LABEL_OUTPUTS = {"probs": "probs", "topk": "topk", "rounded": "rounded", "argmax": "label"}


# ------------------------------------------------------------------------------ config

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
  """Builds every defence-grid point on a stand-in model so a bad setting is refused
  (naming its grid key) before anything trains."""
  import jax.numpy as jnp
  from rsec.stealing.defences import AuxModel, DefenceContext, make_defence
  d = c.classifier.data
  k = len(d.characters)
  ctx = DefenceContext(k, (d.size, d.size, 1), c.classifier.model.name)
  stand_in = AuxModel(lambda v, x, train=False: jnp.zeros((x.shape[0], k)), {})
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
    extra = ({"misinformation": stand_in} if name == "adaptive_misinformation" else
             {"surrogate": stand_in} if name.startswith("mad") else {})
    try:
      make_defence(name, ctx, **({setting: value} if setting else {}), **extra)
    except ValueError as e:
      raise ValueError(f"{where}.{name}: {e}") from None


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


# ---------------------------------------------------------------------------- the study

class Study:
  """The victim(s), the pools and the streams of one run (built lazily, cached)."""

  def __init__(self, c, workdir: str):
    from rsec.stealing.utility_study import train_or_restore
    from rsec.training.classifier import restore_classifier
    self.c, self.workdir = c, workdir
    d = c.classifier.data
    self.shape = (d.size, d.size, 1)
    self.num_classes = len(d.characters)
    victim_dir = c.victim_workdir or os.path.join(workdir, "victim")
    self.victim_state = (restore_classifier(c.victim_workdir)[0] if c.victim_workdir
                         else train_or_restore(c, "normal", victim_dir))
    self.logits_fn = self.victim_state.logits_fn()
    self.logits = {"plain": self.logits_fn}   # the victims the defences run on
    test = load_classification(d, c.seed).test
    self.test_x, self.test_y = test["image"], test["label"]
    self._labels: dict[str, Any] = {}
    self.victim_labels = lambda x: self.victim_labels_of("plain", x)
    self.test_pred = self.victim_labels(self.test_x)
    self.victim_accuracy = float(np.mean(self.test_pred == self.test_y))
    self.accuracy = {"plain": self.victim_accuracy}
    if c.defences.oe_grid:
      oe = train_or_restore(c, "outlier_exposure", os.path.join(workdir, "oe_victim"))
      self.logits["oe"] = oe.logits_fn()
      self.accuracy["oe"] = float(np.mean(self.victim_labels_of("oe", self.test_x)
                                          == self.test_y))
    self.misinformation = None
    if "adaptive_misinformation" in c.defences.oe_grid:
      from rsec.stealing.misinformation import load_misinformation_model
      mis_dir = os.path.join(workdir, "misinformation")
      train_or_restore(c, "misinformation", mis_dir)
      self.misinformation = load_misinformation_model(mis_dir)
    self._pools: dict[tuple[str, int, int], Any] = {}
    self._utilities: dict[tuple, dict] = {}
    self.streams_dir = os.path.join(workdir, "streams")

  def victim_labels_of(self, victim: str, x: np.ndarray) -> np.ndarray:
    """The (undefended) victim's argmax on x [N, ...] (victim 'plain' or 'oe')."""
    if victim not in self._labels:
      fn = self.logits[victim]
      self._labels[victim] = jax.jit(lambda x: jax.numpy.argmax(fn(x), -1))
    return parallel.predict_batches(self._labels[victim], (x,), 500)

  def pool(self, name: str, seed: int, fidelity: bool = False):
    size = self.c.fidelity_size if fidelity else self.c.pool_size
    s = self.c.pool_seed + seed + (500 if fidelity else 0)
    if (name, s, size) not in self._pools:
      self._pools[(name, s, size)] = build_pool(name, size, s, self.c.classifier.data)
    return self._pools[(name, s, size)]

  def victim(self, cell: dict) -> Victim:
    """A fresh victim (its own budget) for one stream."""
    c = self.c
    name, setting, value = cell["defence"], cell["setting"], cell["value"]
    params = {setting: value} if setting else {}
    logits_fn = self.logits[cell["victim"]]
    if name == "adaptive_misinformation":
      params["misinformation"] = self.misinformation
    output = LABEL_OUTPUTS[cell["labels"]]
    oparams = {"k": c.outputs.k} if output == "topk" else (
        {"decimals": c.outputs.decimals} if output == "rounded" else {})
    return Victim(logits_fn, self.shape, defence=name, defence_params=params,
                  output_mode=output, output_params=oparams,
                  key=jax.random.fold_in(jax.random.key(c.seed), 1),
                  key_mode=cell["key_mode"], budget=c.victim_budget, chunk=500,
                  model_name=c.classifier.model.name)

  def stream(self, cell: dict) -> dict[str, np.ndarray]:
    """The cell's stream: 'image' [n, ...], 'label' [n, K] targets and, in the defence
    grid, the defender's utility ('utility_*'); collected once, cached in streams/."""
    name = stream_name(cell)
    path = os.path.join(self.streams_dir, name + ".npz")
    if os.path.exists(path):
      with np.load(path) as f:
        saved = dict(f)
    else:
      saved = self._collect(cell)
      io.prepare_workdir(self.streams_dir)
      if io.is_chief():
        io.save_npz_atomic(path, saved)
    if "images" in saved:
      images = saved["images"]
    else:
      images = self.pool(cell["query_set"], cell["seed"]).images[saved["order"]]
    targets = strategies.targets_from_outputs(saved["outputs"], str(saved["output_mode"]))
    return {"image": images, "label": targets, **{k: saved[k] for k in saved
                                                  if k.startswith("utility_")}}

  def _collect(self, cell: dict) -> dict[str, np.ndarray]:
    c, big = self.c, self.c.budgets[-1]
    victim = self.victim(cell)
    key = jax.random.fold_in(jax.random.key(c.seed), zlib.crc32(stream_name(cell).encode()))
    out: dict[str, Any] = {}
    if cell["strategy"] == "jacobian":
      same = self.pool("same", cell["seed"])
      seeds = same.images[jbda_lib.seed_set(same.images, same.fine, c.jbda.seeds_per_class)]
      s, images = jbda_lib.collect_jbda(
          victim, seeds, big, cell["attack"], ko.KnockoffSpec.from_config(c.knockoff),
          lam=c.jbda.lam, tau=c.jbda.tau, k=c.jbda.k, round_steps=c.jbda.round_steps,
          key=key, progress=c.progress)
      out["images"] = images
    else:
      pool = self.pool(cell["query_set"], cell["seed"])
      a = c.adaptive
      spec = ko.KnockoffSpec.from_config(c.knockoff)
      rounds = -(-big // a.batch)
      learner = lambda: ko.OnlineKnockoff(spec, self.num_classes, self.shape, key,
                                          a.online_steps, total_steps=rounds * a.online_steps)
      s = strategies.collect(cell["strategy"], victim, pool, big // cell["repeats"],
                             cell["seed"], learner_factory=learner, reward=a.reward,
                             batch=c.query_batch if cell["strategy"] == "random" else a.batch,
                             lr=a.lr, window=a.window, repeats=cell["repeats"],
                             progress=c.progress)
      out["order"] = s.order
      if s.leaves is not None:
        out["leaves"] = s.leaves
    out.update(outputs=s.outputs, output_mode=np.array(s.output_mode),
               queries=np.array(victim.queries_used))
    if cell["grid"] == "defences":
      out.update({f"utility_{k}": np.array(v) for k, v in self.utility(cell, victim).items()})
    return out

  def utility(self, cell: dict, victim: Victim) -> dict[str, float]:
    """The defender's utility of the cell's defence point on the victim's test set (once
    per point: the attackers of one point share it)."""
    point = (cell["victim"], cell["defence"], cell["setting"], cell["value"], cell["key_mode"])
    if point not in self._utilities:
      r = victim.respond(self.test_x, fields=("posterior", "defended"))
      # accuracy_loss: against the victim the defence runs on; and against the plain one.
      u = defender_utility(r["posterior"], r["defended"], self.test_y)
      u["accuracy_loss_vs_plain"] = self.victim_accuracy - u["accuracy"]
      self._utilities[point] = u
    return self._utilities[point]

  # -------------------------------------------------------------------------- a stack

  def run_stack(self, cells: list[dict], stack_dir: str) -> list[dict]:
    """Trains the cells' models as one stack, then measures each (results per cell)."""
    from rsec.training.checkpoint import Checkpointer
    from rsec.training.metrics import MetricWriter
    c = self.c
    spec = ko.KnockoffSpec.from_config(c.knockoff)
    streams: dict[str, dict] = {}
    for cell in cells:
      streams.setdefault(stream_name(cell), self.stream(cell))
    offsets, parts, at = {}, [], 0
    for name, s in streams.items():
      offsets[name] = at
      parts.append(s)
      at += len(s["image"])
    data = {k: np.concatenate([p[k] for p in parts]) for k in ("image", "label")}
    # Cells whose training data are the same bits (e.g. the argmax attacker against
    # defences that keep the argmax) train one model, which they then share.
    first: dict[str, int] = {}
    twin = []
    for i, cell in enumerate(cells):
      n = cell["budget"] // cell["repeats"]
      rows = offsets[stream_name(cell)] + np.arange(n)
      digest = hashlib.sha1(data["image"][rows].tobytes() + data["label"][rows].tobytes())
      twin.append(first.setdefault(digest.hexdigest(), i))
    trained = sorted(set(twin))
    train_sets, held_sets, keys = [], [], []
    for i in trained:
      cell = cells[i]
      n = cell["budget"] // cell["repeats"]
      rows = offsets[stream_name(cell)] + np.arange(n)
      held = ko.heldout_rows(n, spec.holdout)
      train_sets.append(rows[~held])
      held_sets.append(rows[held])
      keys.append(jax.random.fold_in(jax.random.key(c.seed),
                                     zlib.crc32(grid.cell_name(cell).encode())))
    ckpt = Checkpointer(os.path.join(stack_dir, "checkpoints"), {"cells": len(trained)})
    writer = MetricWriter(stack_dir)
    try:
      apply_fn, variables, stats = ko.train_stack(
          spec, self.num_classes, data, train_sets, held_sets, keys,
          key=jax.random.fold_in(jax.random.key(c.seed), 7), checkpointer=ckpt,
          writer=writer, progress=c.progress, desc=f"{len(trained)} stolen models")
    finally:
      ckpt.close()
      writer.close()
    measured = self._measure([cells[i] for i in trained], streams, apply_fn, variables, stats)
    out = []
    for i, cell in enumerate(cells):
      r = dict(measured[trained.index(twin[i])])
      if twin[i] != i:
        r["same_answers_as"] = grid.cell_name(cells[twin[i]])
        r.update(self._utility(streams[stream_name(cell)]))
      out.append(r)
    return out

  @staticmethod
  def _utility(stream: dict) -> dict:
    return {"defender_" + k[len("utility_"):]: float(v) for k, v in stream.items()
            if k.startswith("utility_")}

  def _measure(self, cells, streams, apply_fn, variables, stats) -> list[dict]:
    c = self.c
    pred = ko.predict_stack(apply_fn, variables, self.test_x).argmax(-1)     # [M, N]
    fid_query = np.zeros(len(cells))
    for qs, seed in {(cell["query_set"], cell["seed"]) for cell in cells}:
      pool = self.pool(qs, seed, fidelity=True)
      theirs = self.victim_labels(pool.images)
      mine = ko.predict_stack(apply_fn, variables, pool.images).argmax(-1)
      for m, cell in enumerate(cells):
        if (cell["query_set"], cell["seed"]) == (qs, seed):
          fid_query[m] = float(np.mean(mine[m] == theirs))
    correct = np.flatnonzero(self.test_pred == self.test_y)[:c.transfer.num_examples]
    x_adv = transfer.stack_adversarials(
        apply_fn, variables, self.test_x[correct], self.test_y[correct],
        eps=c.transfer.eps, steps=c.transfer.steps, key=jax.random.key(c.seed))
    moved = transfer.transfer_success(self.logits_fn, x_adv, self.test_y[correct])
    best = jax.device_get(stats.best)
    out = []
    for m, cell in enumerate(cells):
      s = streams[stream_name(cell)]
      acc = float(np.mean(pred[m] == self.test_y))
      r = {"accuracy": acc, "ratio": acc / self.victim_accuracy,
           "fidelity_test": float(np.mean(pred[m] == self.test_pred)),
           "fidelity_query": fid_query[m], "transfer_success": float(moved[m]),
           "heldout_agreement": float(best.score[m]), "selected_step": int(best.step[m]),
           "distinct_queries": cell["budget"] // cell["repeats"],
           "victim_accuracy": self.victim_accuracy}
      r.update(self._utility(s))
      out.append(r)
    return out

  def white_box_transfer(self) -> float:
    """PGD on the victim itself (the ceiling of transfer success)."""
    c = self.c
    correct = np.flatnonzero(self.test_pred == self.test_y)[:c.transfer.num_examples]
    from rsec.attacks.gradient import pgd
    attack = pgd(c.transfer.eps, steps=c.transfer.steps, select="max_loss")
    x, y = self.test_x[correct], self.test_y[correct]
    adv = parallel.predict_batches(lambda xb, yb: attack(self.logits_fn, jax.random.key(c.seed),
                                                         xb, yb, check=False), (x, y), 200)
    return float(transfer.transfer_success(self.logits_fn, adv[None], y)[0])


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  from rsec.studies import model_stealing_report as report
  validate_config(c)
  cfg_lib.check_same_run(workdir, c)
  if c.victim_workdir:   # a missing or mismatched victim is refused before writing
    from rsec.training.classifier import restore_classifier
    _, vc = restore_classifier(c.victim_workdir)
    for key in ("name", "characters", "size", "difficulty"):
      if vc.data.get(key) != c.classifier.data.get(key):
        raise ValueError(f"config.victim_workdir holds a victim with data.{key}="
                         f"{vc.data.get(key)!r}, but config.classifier.data.{key}="
                         f"{c.classifier.data.get(key)!r} (the query pools and test set "
                         "are built from it)")
  io.prepare_workdir(workdir)
  if io.is_chief():
    io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(c))
  study = Study(c, workdir)
  cells = make_cells(c)
  rows = grid.run_grid(workdir, cells, stack_by=lambda cell: {"grid": cell["grid"]},
                       run_stack=study.run_stack, progress=c.progress, desc="grids")
  results = report.summarise(c, rows, study.accuracy, study.white_box_transfer())
  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    report.write_report(workdir, c, results, rows)
  return results
