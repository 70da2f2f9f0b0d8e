"""Reverse engineering: the zoo, kennen-o / -i / -io on R and E splits, transfer, defences.

The library behind `experiments.reverse_engineering` (presets in
configs/reverse_engineering.py); `run(config, workdir)` is what it calls. The zoo is a
resumable grid of stacks (`rsec.reverse.zoo.build`) in WORKDIR/zoo or
`config.zoo_workdir`; the metamodel results are cached in WORKDIR/kennen.json.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec import io
from rsec.data.sources import load_classification, load_prototypes_from_config
from rsec.reverse import kennen, splits as splits_lib, zoo as zoo_lib, zoo_net, zoo_train
from rsec.stealing import defences as defences_lib

ZOO_KEYS = ("seed", "data", "zoo")   # what a reused zoo must have been built with


# ----------------------------------------------------------------------- config checks

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
      defences_lib.make_defence(name, ctx, **point, **_surrogate(name, spec))
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


def _surrogate(name: str, spec: zoo_lib.ZooSpec) -> dict:
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
    io_c, n = self.c.kennen.kennen_io, self.c.kennen.n_queries
    meta = kennen.MetaSpec(tuple(self.c.kennen.meta.hidden), io_c.steps, io_c.batch_size,
                           io_c.learning_rate, self.c.kennen.meta.weight_decay)
    q, params = kennen.train_joint(meta, self.variables, self.zoo.members[split.train],
                                   self.zoo.weights[split.train], self.labels[split.train],
                                   self.queries[:n], mlp_params, self.heads, split.scored,
                                   key=jax.random.key(self.c.seed + 9),
                                   progress=self.c.progress)
    probs = self.entry_probs(split.test, q)
    return kennen.predict(params, kennen.encode(probs, "score"), self.heads)


CONFUSIONS = ("act", "opt", "conv")   # attributes whose confusion matrices are drawn


def confusion(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
  m = np.zeros((k, k), np.int64)
  np.add.at(m, (true, pred), 1)
  return m


def run_kennen(study: Study) -> list[dict]:
  c = study.c
  k = c.kennen
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
  rows += study.scores(r, study.kennen_i(r), "kennen-i", "label", 1)
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
      variables = jax.tree.map(lambda a: a[members], study.variables)

      def source_logits(z, v=variables):
        probs = jax.nn.softmax(jax.vmap(lambda vm: zoo_net.apply(vm, z))(v), -1).mean(0)
        return jnp.log(jnp.maximum(probs, 1e-30))
      x_adv = attack(source_logits, jax.random.key(study.c.seed + 11), x, y, check=False)
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
      d = defences_lib.make_defence(name, ctx, **point, **_surrogate(name, study.spec))

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
  study = Study(c, workdir)
  zoo = study.build_zoo()
  for name in c.kennen.splits:   # every split is checked before any metamodel trains
    study.split(name)
  rows = run_kennen(study)
  r = study.split("R")
  transfer = run_transfer(study, r)
  defended = run_defences(study, r)
  results = report.summarise(c, study, zoo, rows, transfer, defended)
  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    report.write_report(workdir, c, results, rows, study)
  return results
