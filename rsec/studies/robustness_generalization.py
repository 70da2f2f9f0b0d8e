"""Robustness vs generalization on FONTS: the four claims of Stutz et al. (CVPR 2019).

The library behind `experiments.robustness_generalization` (its command line, presets
and outputs are in that module's docstring); `run(config, workdir)` is what it calls.
"""
from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec import grid, io, parallel
from rsec.data.fonts_dataset import theta_range
from rsec.data.sources import ClassificationData, load_classification
from rsec.manifold import claims as claims_lib
from rsec.manifold import evaluation, learned, rg_report
from rsec.manifold.distances import PCANeighbours
from rsec.models.classifiers import make_model
from rsec import modes as modes_lib
from rsec.train_classifier import train_classifier, validate_train_config
from rsec.training.classifier import restore_classifier

RATE_KEYS = tuple(f"{k}_{r}" for k in evaluation.KINDS for r in ("success_rate",
                                                                   "success_rate_any"))


def cell_config(c: ml_collections.ConfigDict, mode: str, train_size: int, model: int,
                vaegan_dir: str) -> ml_collections.ConfigDict:
  """The train_classifier config of one cell: `training.steps` steps whatever N (the
  learning rate still decays per epoch of N unless `training.lr_decay_every` > 0)."""
  training = c.training.to_dict()
  training["mode"] = mode
  training["manifold"] = dict(training["manifold"], vaegan_workdir=vaegan_dir)
  tc = ml_collections.ConfigDict(dict(
      seed=c.seed + model, data=c.data.to_dict(), model=c.model.to_dict(), training=training,
      eval=dict(batch_size=c.eval.batch_size), progress=c.progress))
  tc.data.train_size = train_size
  return tc


def _vaegan_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.vaegan with the experiment's data (fonts, characters, difficulty)."""
  v = ml_collections.ConfigDict(c.vaegan.to_dict())
  for k, val in c.data.items():
    if k not in ("train_size", "test_size"):
      v.data[k] = val
  v.progress = c.progress
  return v


def validate(c: ml_collections.ConfigDict) -> None:
  """Every check that can fail, before any training starts."""
  cfg_lib.check(c, "seed", type_=int, low=0)
  cfg_lib.check(c, "data.name", type_=str, choices=("fonts",))
  cfg_lib.check(c, "num_models", type_=int, low=1)
  cfg_lib.check(c, "vaegan_workdir", type_=str)
  if not c.modes:
    raise ValueError("config.modes must name at least one training mode")
  if "normal" not in c.modes:
    raise ValueError(f"config.modes must include 'normal' (the baseline every claim compares "
                     f"against), got {tuple(c.modes)}")
  for m in c.modes:
    if m not in modes_lib.mode_names():
      raise ValueError(f"config.modes: unknown training mode {m!r}; expected one of "
                       f"{modes_lib.mode_names()}")
  if not c.train_sizes:
    raise ValueError("config.train_sizes must hold at least one training size")
  for n in c.train_sizes:
    if not isinstance(n, int) or n < c.training.batch_size:
      raise ValueError(f"config.train_sizes must hold ints >= config.training.batch_size="
                       f"{c.training.batch_size}, got {n!r}")
    if n > c.data.train_size:
      raise ValueError(f"config.train_sizes holds {n}, larger than the data: "
                       f"config.data.train_size={c.data.train_size} examples")
  cfg_lib.check(c, "training.steps", type_=int, low=1)
  for k in ("batch_size", "num_examples", "num_on_manifold", "steps", "attempts"):
    cfg_lib.check(c, f"eval.{k}", type_=int, low=1)
  for k in ("eps", "eta", "lr", "latent_bound"):
    cfg_lib.check(c, f"eval.{k}", type_=float, low=0, low_exclusive=True)
  for k in ("num", "steps", "restarts", "pca_components", "pca_neighbours", "pca_train"):
    cfg_lib.check(c, f"distances.{k}", type_=int, low=1)
  cfg_lib.check(c, "distances.model_train_size", type_=int, low=0)
  cfg_lib.check(c, "distances.all_fonts", type_=int, low=0)
  if c.distances.model_train_size and c.distances.model_train_size not in c.train_sizes:
    raise ValueError(f"config.distances.model_train_size={c.distances.model_train_size} "
                     f"is not in config.train_sizes {tuple(c.train_sizes)}")
  if c.distances.pca_train > c.data.train_size:
    raise ValueError(f"config.distances.pca_train={c.distances.pca_train} is larger than "
                     f"config.data.train_size={c.data.train_size}")
  need = max(c.eval.num_examples, c.eval.num_on_manifold)
  if need > c.data.test_size:
    raise ValueError(f"config.data.test_size={c.data.test_size} is smaller than the "
                     f"{need} test examples config.eval asks for")
  for mode in c.modes:
    validate_train_config(cell_config(c, mode, max(c.train_sizes), 0, "unset"))
  if c.vaegan_workdir:  # a missing or mismatched VAE-GAN fails here, before any training
    learned.restore_vaegan(c.vaegan_workdir,
                           latent_dim=int(c.training.manifold.latent_dim) or None)
    learned.load_latent_box(c.vaegan_workdir)
  else:
    from rsec.manifold.train_vaegan import validate_vaegan_config
    validate_vaegan_config(_vaegan_config(c))


def _vaegan(c: ml_collections.ConfigDict, workdir: str) -> str:
  """The VAE-GAN workdir: config.vaegan_workdir, or <workdir>/vaegan trained (or resumed)."""
  if c.vaegan_workdir:
    return c.vaegan_workdir
  from rsec.studies import train_vaegan
  vdir = os.path.join(workdir, "vaegan")
  if not os.path.exists(os.path.join(vdir, "results.json")):
    train_vaegan.run(_vaegan_config(c), vdir)
  return vdir


def _manifolds(data: ClassificationData, c, vdir: str) -> evaluation.Manifolds:
  state, _ = learned.restore_vaegan(vdir, latent_dim=int(c.training.manifold.latent_dim) or None,
                                    num_classes=data.num_classes)
  low, high = learned.load_latent_box(vdir)
  t_low, t_high = theta_range(c.data.difficulty)
  return evaluation.Manifolds(
      prototypes=np.asarray(data.prototypes.images), theta_low=t_low, theta_high=t_high,
      decode=learned.class_decoder(state), encode=learned.class_encoder(state),
      latent_low=low, latent_high=high)


def _protocol(c) -> evaluation.Protocol:
  e = c.eval
  return evaluation.Protocol(eps=e.eps, eta=e.eta, steps=e.steps, attempts=e.attempts,
                             lr=e.lr, latent_bound=e.latent_bound)


def _attack_suites(c, num_classes: int, manifolds: evaluation.Manifolds):
  """attack(variables, key, test) -> (rates, examples): the regular attack on the first
  eval.num_examples test images, the on-manifold ones on the first eval.num_on_manifold.
  Compiled once for every model of the grid."""
  model = make_model(c.model.name, num_classes)
  logits = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
  regular = evaluation.make_attack_suite(logits, manifolds, _protocol(c), ("regular",))
  on_manifold = evaluation.make_attack_suite(logits, manifolds, _protocol(c),
                                             ("true", "learned"))
  mesh = parallel.data_mesh()

  def attack(variables, key, test):
    sub = lambda n: {k: v[:n] for k, v in test.items()}  # noqa: E731
    r1, e1 = regular(variables, key, sub(c.eval.num_examples), batch_size=c.eval.batch_size,
                     mesh=mesh)
    r2, e2 = on_manifold(variables, jax.random.fold_in(key, 1), sub(c.eval.num_on_manifold),
                         batch_size=c.eval.batch_size, mesh=mesh)
    return {**r1, **r2}, {**e1, **e2}
  return attack


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(c)
  # Finished cells and the study are reused on a rerun; they must come from this config.
  cfg_lib.check_same_run(workdir, c)
  io.prepare_workdir(workdir)
  if io.is_chief():
    io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(c))
  vdir = _vaegan(c, workdir)
  data = load_classification(c.data, c.seed)
  manifolds = _manifolds(data, c, vdir)
  attack = _attack_suites(c, data.num_classes, manifolds)
  key = jax.random.key(c.seed)

  def run_cell(cell, cell_dir):
    tc = cell_config(c, cell["mode"], cell["train_size"], cell["seed"], vdir)
    if io.is_chief():
      io.write_text_atomic(os.path.join(cell_dir, "config.json"), cfg_lib.to_json(tc))
    n = cell["train_size"]
    subset = ClassificationData({k: v[:n] for k, v in data.train.items()}, data.test,
                                data.num_classes, data.info, data.prototypes)
    state, results = train_classifier(tc, subset, cell_dir, progress=c.progress)
    rates, _ = attack(state.variables, jax.random.fold_in(key, tc.seed), data.test)
    for kind, r in rates.items():
      results.update({f"{kind}_success_rate": r["success_rate"],
                      f"{kind}_success_rate_any": r["success_rate_any"],
                      f"{kind}_counted": r["counted"]})
    return results

  cells = [{"mode": m, "train_size": n, "seed": k}
           for m in c.modes for n in c.train_sizes for k in range(c.num_models)]
  rows = grid.run_grid(workdir, cells, run_cell, progress=c.progress, desc="models")

  study_n = c.distances.model_train_size or max(c.train_sizes)
  study_dir = os.path.join(workdir, "cells", grid.cell_name(
      {"mode": "normal", "train_size": study_n, "seed": 0}))
  study, examples = _distance_study(c, study_dir, data, manifolds, attack, key)

  results = {
      "table": claims_lib.per_mode_table(rows, ("test_error",) + RATE_KEYS),
      "rows": rows,
      "claims": claims_lib.compute_claims(rows, study),
      "study": {"model": os.path.basename(study_dir),
                **{k: {m: float(np.nanmedian(v)) for m, v in d.items()}
                   for k, d in study.items()}},
  }
  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    rg_report.write(workdir, c, rows, results, study, examples, data.test)
  return results


def _distance_study(c, study_dir, data, manifolds, attack, key):
  """Adversarial examples of one normal model and their distances (cached in study.npz)."""
  path = os.path.join(study_dir, "study.npz")
  if os.path.exists(path):
    with np.load(path) as f:
      flat = dict(f)
  else:
    state, _ = restore_classifier(study_dir)
    d = c.distances
    test = {k: v[:c.eval.num_examples] for k, v in data.test.items()}
    _, examples = attack(state.variables, jax.random.fold_in(key, 10**6), test)
    pca = PCANeighbours(data.train["image"][:d.pca_train], d.pca_components, d.pca_neighbours)
    study = evaluation.distance_study(jax.random.fold_in(key, 10**6 + 1), test, examples,
                                      manifolds, pca=pca, num=d.num, steps=d.steps,
                                      restarts=d.restarts, all_fonts=d.all_fonts)
    flat = {f"study/{k}/{m}": v for k, dd in study.items() for m, v in dd.items()}
    flat.update({f"examples/{k}/{m}": v[:8] for k, dd in examples.items()
                 for m, v in dd.items() if m in ("x_adv", "success")})
    if io.is_chief():
      io.save_npz_atomic(path, flat)
  study, examples = {}, {}
  for name, v in flat.items():
    group, kind, m = name.split("/")
    (study if group == "study" else examples).setdefault(kind, {})[m] = v
  return study, examples
