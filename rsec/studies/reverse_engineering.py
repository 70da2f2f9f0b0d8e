"""Reverse engineering: the zoo, kennen-o / -i / -io on R and E splits, transfer, defences.

The library behind `experiments.reverse_engineering` (presets in
configs/reverse_engineering.py); `run(config, workdir)` is what it calls. Config checks:
`rsec.studies.reverse_engineering_config`. The zoo is a
resumable grid of stacks (`rsec.reverse.zoo.build`) in WORKDIR/zoo or
`config.zoo_workdir`; the metamodels are retrained on every run (seconds each).
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec import io
from rsec.data.sources import load_classification, load_prototypes_from_config
from rsec.reverse import kennen, splits as splits_lib, zoo as zoo_lib, zoo_lanes, zoo_train
from rsec.stealing import defences as defences_lib

from rsec.studies.reverse_engineering_config import (  # noqa: F401  (public here too)
    ZOO_KEYS, check_zoo_workdir, defence_points, mad_surrogate, validate_config, zoo_spec)


# ------------------------------------------------------------------------- the study

class Study:
  def __init__(self, c, workdir: str):
    self.c, self.workdir = c, workdir
    self.spec = zoo_spec(c)
    data = load_classification(c.data, c.seed)
    self.data = {"train": {k: data.train[k] for k in ("image", "label")},
                 "test": {k: data.test[k] for k in ("image", "label")}}
    from rsec.data.fonts_dataset import fonts_split
    protos = load_prototypes_from_config(c.data)
    self.queries = np.asarray(fonts_split(protos, "validation", c.zoo.queries, seed=c.seed,
                                          difficulty=c.data.difficulty)["image"])
    self.zoo_dir = c.zoo_workdir or os.path.join(workdir, "zoo")

  def build_zoo(self) -> zoo_lib.Zoo:
    io.prepare_workdir(self.zoo_dir)
    if io.is_chief():
      io.write_text_atomic(os.path.join(self.zoo_dir, "zoo_config.json"),
                           cfg_lib.to_json(ml_collections.ConfigDict(
                               {k: self.c[k] for k in ZOO_KEYS})))
    rows = zoo_lib.build(self.spec, self.data, self.queries, self.zoo_dir,
                         progress=self.c.progress)
    self.zoo_seconds = float(sum(r["seconds"] for r in rows))
    self.zoo = zoo_lib.load(self.spec, self.zoo_dir)
    self.names = list(zoo_lib.ATTRIBUTES)
    self.values = {n: zoo_lib.attribute_values(n, self.spec.train.batch_sizes)
                   for n in self.names}
    self.heads = tuple(len(self.values[n]) for n in self.names)
    self.labels = np.stack([self.zoo.attributes[n] for n in self.names], 1)
    self.variables = jax.tree.map(jnp.asarray, self.zoo.member_variables(
        np.arange(len(self.zoo.arch["act"]))))
    return self.zoo

  def split(self, name: str) -> splits_lib.Split:
    return splits_lib.make_split(name, self.zoo.attributes, self.values,
                                 test_share=self.c.kennen.test_share, seed=self.c.seed)

  def scores(self, split, pred, method, output, n) -> list[dict]:
    rows = []
    for a, name in enumerate(self.names):
      if split.scored[a]:
        rows.append({"method": method, "output": output, "split": split.name,
                     "n_queries": n, "attribute": name,
                     "accuracy": float(np.mean(pred[:, a] == self.labels[split.test, a])),
                     "chance": splits_lib.chance(self.labels[split.train, a],
                                                 self.labels[split.test, a]),
                     "chance_uniform": 1.0 / self.heads[a]})
    return rows

  def kennen_o(self, split, output: str, n: int, probs=None):
    """(metamodel params, test predictions [T, A]) of kennen-o on `split`."""
    probs = self.zoo.probs[:, :n] if probs is None else probs
    f = kennen.encode(probs, output)
    meta = kennen.MetaSpec.from_config(self.c.kennen.meta)
    params = kennen.train_metamodel(meta, f[split.train], self.labels[split.train],
                                    self.heads, split.scored,
                                    key=jax.random.key(self.c.seed + 3),
                                    desc=f"kennen-o {split.name}/{output}/{n}")
    return params, kennen.predict(params, f[split.test], self.heads)

  def kennen_i(self, split) -> np.ndarray:
    """Test predictions [T, A] of kennen-i (one crafted image per attribute)."""
    ki = self.c.kennen.kennen_i
    rng = np.random.default_rng([self.c.seed, 37])
    craft = rng.permutation(split.train)[:ki.craft_models]
    targets = self.labels[craft].T                                    # [A, M]
    x0 = np.repeat(self.queries[:1], len(self.names), axis=0)
    # Only the crafting entries' members run inside the attack.
    members = self.zoo.members[craft]
    used, inverse = np.unique(np.maximum(members, 0), return_inverse=True)
    members = np.where(members >= 0, inverse.reshape(members.shape), -1)
    variables = jax.tree.map(lambda a: a[jnp.asarray(used)], self.variables)
    x = kennen.craft_inputs(variables, members, self.zoo.weights[craft], targets, x0,
                            steps=ki.steps, step_size=ki.step_size,
                            key=jax.random.key(self.c.seed + 5))
    top1 = self.entry_probs(np.arange(len(self.zoo)), x).argmax(-1)   # [N, A]
    pred = np.zeros((len(split.test), len(self.names)), np.int64)
    for a in range(len(self.names)):
      table = kennen.label_table(top1[split.train, a], self.labels[split.train, a],
                                 self.heads[a], self.zoo.probs.shape[-1])
      pred[:, a] = table[top1[split.test, a]]
    self.kennen_i_images = x
    return pred

  def entry_probs(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Posteriors [len(rows), B, K] of zoo entries `rows` on images x [B, ...] (every
    kept single runs once; entries mix them)."""
    singles = zoo_train.stack_probs(self.variables, x)                 # [U, B, K]
    members = self.zoo.members[rows]
    return np.einsum("nm,nmbk->nbk", self.zoo.weights[rows], singles[np.maximum(members, 0)])

  def kennen_io(self, split, mlp_params):
    """Test predictions [T, A] of kennen-io: queries and metamodel trained jointly (from
    kennen-o's), then, with `refit`, the metamodel retrained on the learned queries' outputs
    as kennen-o is. Why refit: kennen-o fits a small training zoo to ~100% (quick: 99.9% of
    ~460 entries), so the joint phase's loss barely guides the queries, and its metamodel
    has seen the new queries for only a few epochs."""
    io_c, n = self.c.kennen.kennen_io, self.c.kennen.n_queries
    meta = kennen.MetaSpec(tuple(self.c.kennen.meta.hidden), io_c.steps, io_c.batch_size,
                           io_c.learning_rate, self.c.kennen.meta.weight_decay)
    q, params = kennen.train_joint(meta, self.variables, self.zoo.members[split.train],
                                   self.zoo.weights[split.train], self.labels[split.train],
                                   self.queries[:n], mlp_params, self.heads, split.scored,
                                   key=jax.random.key(self.c.seed + 9),
                                   query_learning_rate=io_c.query_learning_rate,
                                   progress=self.c.progress)
    if io_c.refit:
      probs = self.entry_probs(np.arange(len(self.zoo)), q)
      return self.kennen_o(split, "score", n, probs=probs)[1]
    probs = self.entry_probs(split.test, q)
    return kennen.predict(params, kennen.encode(probs, "score"), self.heads)


CONFUSIONS = ("act", "opt", "conv")   # attributes whose confusion matrices are drawn


def confusion(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
  m = np.zeros((k, k), np.int64)
  np.add.at(m, (true, pred), 1)
  return m


def run_kennen_o(study: Study) -> list[dict]:
  """kennen-o rows: every split x output mode, and the query curve on R."""
  k = study.c.kennen
  rows: list[dict] = []
  study.metamodels = {}
  n = k.n_queries
  for name in k.splits:
    split = study.split(name)
    for output in k.outputs:
      params, pred = study.kennen_o(split, output, n)
      study.metamodels[(name, output)] = params
      rows += study.scores(split, pred, "kennen-o", output, n)
      if (name, output) == ("R", "score"):
        study.confusions = {a: confusion(study.labels[split.test, i], pred[:, i], study.heads[i])
                            for i, a in enumerate(study.names) if a in CONFUSIONS}
  r = study.split("R")
  for q in k.query_curve:
    if q != n or "score" not in k.outputs:
      _, pred = study.kennen_o(r, "score", q)
      rows += study.scores(r, pred, "kennen-o", "score", q)
  return rows


def run_kennen_i(study: Study) -> list[dict]:
  r = study.split("R")
  return study.scores(r, study.kennen_i(r), "kennen-i", "label", 1)


def run_kennen_io(study: Study) -> list[dict]:
  """kennen-io rows, each split starting from its kennen-o metamodel (run_kennen_o first)."""
  k = study.c.kennen
  n = k.n_queries
  rows: list[dict] = []
  for name in k.kennen_io.splits:
    split = study.split(name)
    base = study.metamodels.get((name, "score"))
    if base is None:
      base, _ = study.kennen_o(split, "score", n)
    rows += study.scores(split, study.kennen_io(split, base), "kennen-io", "score", n)
  return rows


# ------------------------------------------------------------- beyond the paper

def run_transfer(study: Study, r: splits_lib.Split) -> dict[str, Any]:
  """Attribute-informed attacks: PGD on zoo models that share a black box's predicted
  (kennen-o, score) attributes vs random zoo models vs many zoo models, measured on
  held-out black boxes (R test singles)."""
  from rsec.attacks.gradient import pgd
  t = study.c.transfer
  zoo = study.zoo
  rng = np.random.default_rng([study.c.seed, 41])
  singles = zoo.members[:, 1] < 0
  boxes = rng.permutation(r.test[singles[r.test]])[:t.black_boxes]
  train_singles = r.train[singles[r.train]]
  f = kennen.encode(zoo.probs[boxes, :study.c.kennen.n_queries], "score")
  pred = kennen.predict(study.metamodels[("R", "score")], f, study.heads)
  x_all, y_all = study.data["test"]["image"], study.data["test"]["label"]
  attack = pgd(t.eps, steps=t.steps, select="max_loss")

  @jax.jit
  def transfer(params, arch, key, x, y):
    """PGD on the mean posterior of a source set (a lanes stack, traced: one compile per
    set size, not one per black box)."""
    def source_logits(z):
      probs = zoo_lanes.shared_probs(params, arch, z).mean(0)
      return jnp.log(jnp.maximum(probs, 1e-30))
    return attack(source_logits, key, x, y, check=False)
  out: dict[str, list] = {"matched": [], "random": [], "zoo": []}
  matches = []
  for b, p in zip(boxes, pred):
    box_fn = zoo.logits_fn(int(b))
    idx = rng.permutation(len(y_all))[:4 * t.images]
    ok = np.asarray(jnp.argmax(box_fn(jnp.asarray(x_all[idx])), -1)) == y_all[idx]
    idx = idx[ok][:t.images]
    x, y = jnp.asarray(x_all[idx]), jnp.asarray(y_all[idx])
    agree = (study.labels[train_singles] == p[None]).sum(1)
    order = np.lexsort((rng.random(len(train_singles)), -agree))
    matched = train_singles[order[:t.sources]]
    matches.append(float(agree[order[:t.sources]].mean() / len(study.names)))
    sources = {"matched": matched,
               "random": rng.permutation(train_singles)[:t.sources],
               "zoo": rng.permutation(train_singles)[:t.zoo_sources]}
    for name, rows in sources.items():
      members = jnp.asarray(zoo.members[rows][:, 0])
      v = jax.tree.map(lambda a: a[members], study.variables)
      x_adv = transfer(zoo_lanes.to_lanes(v["params"]), v["arch"],
                       jax.random.key(study.c.seed + 11), x, y)
      out[name].append(float(np.mean(np.asarray(jnp.argmax(box_fn(x_adv), -1)) != y_all[idx])))
  return {"black_boxes": len(boxes), "eps": t.eps, "steps": t.steps,
          "sources": t.sources, "zoo_sources": t.zoo_sources,
          "matched_attribute_share": float(np.mean(matches)),
          "success": {k: float(np.mean(v)) for k, v in out.items()},
          "success_std": {k: float(np.std(v)) for k, v in out.items()}}


def run_defences(study: Study, r: splits_lib.Split) -> list[dict]:
  """kennen-o on defended black boxes: trained on clean outputs, and retrained on the
  defended outputs of the training zoo; the defender's cost on FONTS test images."""
  c = study.c
  n, output = c.kennen.n_queries, c.defences.output
  zoo = study.zoo
  ctx = defences_lib.DefenceContext(zoo.probs.shape[-1], study.queries.shape[1:])
  clean = study.metamodels[("R", output)]
  test_x = study.data["test"]["image"][:c.defences.utility_images]
  test_y = study.data["test"]["label"][:c.defences.utility_images]
  boxes = r.test
  box_probs = study.entry_probs(boxes, test_x)                 # [T, U, K]
  clean_acc = float(np.mean(box_probs.argmax(-1) == test_y[None]))
  rows = []
  for name, settings in c.defences.grid.items():
    for point in defence_points(name, settings):
      d = defences_lib.make_defence(name, ctx, **point, **mad_surrogate(name, study.spec))

      def defended(probs, x, chunk=4096):
        """Defended posteriors of M black boxes' [M, Q, K] on images x [Q, ...], in row
        chunks (MAD runs its surrogate on every row; per-row keys come from the content,
        so chunking changes nothing)."""
        m, q, k = probs.shape
        xs = np.broadcast_to(x[None], (m,) + x.shape).reshape((m * q,) + x.shape[1:])
        flat = probs.reshape(m * q, k)
        y = [np.asarray(defences_lib.defend(d, flat[i:i + chunk], xs[i:i + chunk],
                                            key=jax.random.key(c.seed)))
             for i in range(0, m * q, chunk)]
        return np.concatenate(y).reshape(m, q, k)
      q = study.queries[:n]
      probs = defended(zoo.probs[:, :n], q)
      f = kennen.encode(probs, output)
      pred_clean = kennen.predict(clean, f[boxes], study.heads)
      _, pred_retrained = study.kennen_o(r, output, n, probs=probs)
      util = defended(box_probs, test_x)
      acc = float(np.mean(util.argmax(-1) == test_y[None]))
      l1 = float(np.mean(np.abs(util - box_probs).sum(-1)))
      for method, pred in (("clean-trained", pred_clean), ("retrained", pred_retrained)):
        scores = study.scores(r, pred, method, output, n)
        rows.append({"defence": name, **point, "metamodel": method,
                     "accuracy": float(np.mean([s["accuracy"] for s in scores])),
                     "chance": float(np.mean([s["chance"] for s in scores])),
                     "per_attribute": {s["attribute"]: s["accuracy"] for s in scores},
                     "defender_accuracy": acc, "undefended_accuracy": clean_acc,
                     "mean_l1": l1})
  return rows


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  from rsec.studies import reverse_engineering_report as report
  validate_config(c)
  cfg_lib.check_same_run(workdir, c)
  zoo_dir = c.zoo_workdir or os.path.join(workdir, "zoo")
  check_zoo_workdir(c, zoo_dir)
  io.prepare_workdir(workdir)
  if io.is_chief():
    io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(c))
  seconds: dict[str, float] = {}   # wall time per stage, for sizing the presets

  def timed(stage, fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    seconds[stage] = time.perf_counter() - t0
    return out
  study = timed("data", Study, c, workdir)
  zoo = timed("zoo", study.build_zoo)
  for name in c.kennen.splits:   # every split is checked before any metamodel trains
    study.split(name)
  rows = timed("kennen_o", run_kennen_o, study)
  rows += timed("kennen_i", run_kennen_i, study)
  rows += timed("kennen_io", run_kennen_io, study)
  r = study.split("R")
  transfer = timed("transfer", run_transfer, study, r)
  defended = timed("defences", run_defences, study, r)
  results = report.summarise(c, study, zoo, rows, transfer, defended)
  results["seconds"] = seconds
  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    report.write_report(workdir, c, results, rows, study)
  return results
