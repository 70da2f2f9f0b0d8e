"""Model stealing: knockoff nets, the JBDA family and defences, as two resumable grids.

The library behind `experiments.model_stealing` (command line and presets in
configs/model_stealing.py); `run(config, workdir)` is what it calls.

Cells and config checks: `rsec.studies.model_stealing_cells`. The cells of one grid train together as one
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
from rsec.stealing.query_sets import build_pool
from rsec.stealing.utility import defender_utility
from rsec.stealing.victim import Victim

from rsec.studies.model_stealing_cells import (  # noqa: F401  (make_cells: public here too)
    LABEL_OUTPUTS, make_cells, stream_name, validate_config)


# ---------------------------------------------------------------------------- the study

class Study:
  """The victim(s), the pools and the streams of one run (built lazily, cached)."""

  def __init__(self, c, workdir: str, victim_state=None):
    """`victim_state`: the restored `config.victim_workdir` classifier (None: trained or
    restored in WORKDIR/victim)."""
    from rsec.stealing.utility_study import train_or_restore
    self.c, self.workdir = c, workdir
    d = c.classifier.data
    self.shape = (d.size, d.size, 1)
    self.num_classes = len(d.characters)
    self.victim_state = victim_state or train_or_restore(
        c, "normal", os.path.join(workdir, "victim"))
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
  victim_state = None
  if c.victim_workdir:   # a missing or mismatched victim is refused before writing
    from rsec.training.classifier import restore_classifier
    victim_state, vc = restore_classifier(c.victim_workdir)
    for key in ("name", "characters", "size", "difficulty"):
      if vc.data.get(key) != c.classifier.data.get(key):
        raise ValueError(f"config.victim_workdir holds a victim with data.{key}="
                         f"{vc.data.get(key)!r}, but config.classifier.data.{key}="
                         f"{c.classifier.data.get(key)!r} (the query pools and test set "
                         "are built from it)")
  io.prepare_workdir(workdir)
  if io.is_chief():
    io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(c))
  study = Study(c, workdir, victim_state)
  cells = make_cells(c)
  rows = grid.run_grid(workdir, cells, stack_by=lambda cell: {"grid": cell["grid"]},
                       run_stack=study.run_stack, progress=c.progress, desc="grids")
  results = report.summarise(c, rows, study.accuracy, study.white_box_transfer())
  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    report.write_report(workdir, c, results, rows)
  return results
