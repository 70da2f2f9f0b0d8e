"""The defence utility study behind experiments/defence_utility: what each defence costs.

Trains (through `train_classifier`, the one training loop) the victim, an outlier-exposure
victim and a misinformation model, then answers the victim's test set through every cell
of the defence grid and reports the defender's utility (`rsec.stealing.utility`).
Adaptive Misinformation defends the OE victim; its utility is measured against the
ordinary victim's undefended accuracy, which stays the baseline for every defence.
"""
from __future__ import annotations

import itertools
import os
from typing import Any

import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec import io
from rsec.data.sources import load_classification
from rsec.stealing.defences import DEFENCES, defence_settings
from rsec.stealing.misinformation import load_misinformation_model, misinformation_weight
from rsec.stealing.utility import defender_utility
from rsec.stealing.victim import Victim


def validate_config(c: ml_collections.ConfigDict) -> None:
  from rsec.train_classifier import validate_train_config
  cfg_lib.check(c, "seed", type_=int, low=0)
  cfg_lib.check(c, "victim_workdir", type_=str)
  cfg_lib.check(c, "num_examples", type_=int, low=1)
  cfg_lib.check(c, "chunk", type_=int, low=1)
  cfg_lib.check(c, "outlier_weight", type_=float, low=0, low_exclusive=True)
  cfg_lib.check(c, "key_mode", type_=str, choices=("content", "index"))
  for key in ("outlier_characters", "ood_characters"):
    cfg_lib.check(c, key, type_=str)
    if not cfg_lib.get(c, key):
      raise ValueError(f"config.{key} must name at least one character")
    shared = set(cfg_lib.get(c, key)) & set(c.classifier.data.characters)
    if shared:
      raise ValueError(f"config.{key} must not repeat the victim's characters, got "
                       f"{''.join(sorted(shared))!r}")
  validate_train_config(c.classifier)
  for name, settings in c.grid.items():
    if name not in DEFENCES:
      raise ValueError(f"config.grid names an unknown defence {name!r}; expected one of "
                       f"{DEFENCES.names()}")
    for setting, values in settings.items():
      if setting not in defence_settings(name):
        raise ValueError(f"config.grid.{name}.{setting}: defence {name!r} takes "
                         f"{defence_settings(name)}")
      if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"config.grid.{name}.{setting} must be a non-empty tuple of values")
  _check_cells(c)


def _check_cells(c: ml_collections.ConfigDict) -> None:
  check_defence_points(c.classifier, cells(c.grid), "config.grid")


def check_defence_points(classifier: ml_collections.ConfigDict,
                         points: list[tuple[str, dict[str, Any]]], where: str) -> None:
  """Builds every (defence, settings) point once on a stand-in victim of the `classifier`
  config, so a bad setting is refused (as '<where>.<defence>: ...') before anything trains.
  MAD's surrogate and the misinformation model are stand-ins too: only the settings are
  checked here."""
  import jax.numpy as jnp
  from rsec.stealing.defences import AuxModel, DefenceContext, make_defence
  d = classifier.data
  k = len(d.characters)
  ctx = DefenceContext(k, (d.size, d.size, 1), classifier.model.name)
  stand_in = AuxModel(lambda v, x, train=False: jnp.zeros((x.shape[0], k)), {})
  for name, settings in points:
    extra = ({"misinformation": stand_in} if name == "adaptive_misinformation" else
             {"surrogate": stand_in} if name.startswith("mad") else {})
    try:
      make_defence(name, ctx, **settings, **extra)
    except ValueError as e:
      raise ValueError(f"{where}.{name}: {e}") from None


def cells(grid: ml_collections.ConfigDict) -> list[tuple[str, dict[str, Any]]]:
  """(defence, settings) for every combination of every defence's listed values."""
  out = []
  for name, settings in grid.items():
    keys = sorted(settings)
    for values in itertools.product(*(settings[k] for k in keys)):
      out.append((name, dict(zip(keys, values))))
  return out


def cell_label(name: str, settings: dict[str, Any]) -> str:
  return name + "".join(f"/{k}={v}" for k, v in sorted(settings.items()))


def _classifier_config(c, mode: str):
  k = ml_collections.ConfigDict(c.classifier.to_dict())
  k.seed = c.seed
  k.training.mode = mode
  if mode == "outlier_exposure":
    k.data.outlier_characters = c.outlier_characters
    k.training.outlier_weight = c.outlier_weight
  return k


def train_or_restore(c, mode: str, workdir: str):
  """train_classifier of `c.classifier` in training mode `mode` into `workdir` (resumes;
  a finished run is only restored); `c` also gives seed, outlier_characters and
  outlier_weight (for the outlier-exposure victim). Returns the trained state."""
  from rsec.studies import train_classifier
  from rsec.training.classifier import restore_classifier
  if not os.path.exists(os.path.join(workdir, "results.json")):
    train_classifier.run(_classifier_config(c, mode), workdir)
  return restore_classifier(workdir)[0]


def run_study(c: ml_collections.ConfigDict, workdir: str, progress: bool = True
              ) -> tuple[dict, list]:
  """Trains what is missing, measures every cell; returns the flat results dict and the
  rows (defence, settings, utility dict) in grid order."""
  from tqdm.auto import tqdm

  from rsec.training.classifier import restore_classifier
  validate_config(c)
  victim_dir = c.victim_workdir or os.path.join(workdir, "victim")
  victim_state = (restore_classifier(victim_dir)[0] if c.victim_workdir
                  else train_or_restore(c, "normal", victim_dir))
  oe_state = train_or_restore(c, "outlier_exposure", os.path.join(workdir, "oe_victim"))
  mis_dir = os.path.join(workdir, "misinformation")
  train_or_restore(c, "misinformation", mis_dir)
  misinformation = load_misinformation_model(mis_dir)

  data_cfg = ml_collections.ConfigDict(c.classifier.data.to_dict())
  data_cfg.train_size = 1
  data_cfg.test_size = c.num_examples
  test = load_classification(data_cfg, c.seed).test
  x, labels = test["image"], test["label"]
  data_cfg.characters = c.ood_characters
  ood = load_classification(data_cfg, c.seed + 2).test["image"][:min(c.num_examples, 2000)]
  shape = tuple(x.shape[1:])
  model_name = c.classifier.model.name

  undefended = Victim(victim_state.logits_fn(), shape, chunk=c.chunk).respond(x)
  base = float(np.mean(undefended["posterior"].argmax(1) == labels))
  results: dict[str, Any] = {"victim_accuracy": base, "num_examples": int(len(labels))}
  rows = []
  for name, settings in tqdm(cells(c.grid), desc="defences", disable=not progress):
    am = name == "adaptive_misinformation"
    params = dict(settings, misinformation=misinformation) if am else dict(settings)
    state = oe_state if am else victim_state
    victim = Victim(state.logits_fn(), shape, defence=name, defence_params=params,
                    key_mode=c.key_mode, chunk=c.chunk, model_name=model_name)
    r = victim.respond(x)
    u = defender_utility(r["posterior"], r["defended"], labels)
    if am:  # the baseline is the ordinary victim, not the OE one
      u["oe_undefended_accuracy"] = u["undefended_accuracy"]
      u["undefended_accuracy"], u["accuracy_loss"] = base, base - u["accuracy"]
      tau, nu = params.get("tau", 0.5), params.get("nu", 1000.0)
      u["misinformed_in_distribution"] = float(np.mean(
          np.asarray(misinformation_weight(r["posterior"], tau, nu)) > 0.5))
      u["misinformed_ood"] = float(np.mean(np.asarray(misinformation_weight(
          victim.respond(ood)["posterior"], tau, nu)) > 0.5))
    label = cell_label(name, settings)
    results.update({f"{label}/{k}": v for k, v in u.items()})
    rows.append((name, settings, u))
  return results, rows


def write_report(workdir: str, c, results: dict, rows) -> str:
  """report.md and utility.png; returns the report's path."""
  import matplotlib.pyplot as plt

  from rsec import reporting
  table = [(cell_label(n, s), f"{u['accuracy']:.4f}", f"{u['accuracy_loss'] * 100:+.2f}",
            f"{u['flip_rate']:.4f}", f"{u['mean_l1']:.3f}", f"{u['mean_kl']:.3f}")
           for n, s, u in rows]
  am = [(cell_label(n, s), f"{u['oe_undefended_accuracy']:.4f}",
         f"{u['misinformed_in_distribution']:.3f}", f"{u['misinformed_ood']:.3f}")
        for n, s, u in rows if n == "adaptive_misinformation"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  by_name: dict[str, list] = {}
  for n, s, u in rows:
    by_name.setdefault(n, []).append((u["mean_l1"], u["accuracy_loss"] * 100))
  for i, (n, pts) in enumerate(by_name.items()):
    pts = sorted(pts)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker="os^vD"[i % 5], ms=4,
            color=plt.cm.tab20(i % 20), label=n)
  ax.set_xlabel("mean L1 perturbation ||y~ - y||_1")
  ax.set_ylabel("defender accuracy loss (points)")
  ax.set_title("What each defence costs the defender")
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "utility.png"), dpi=120)
  plt.close(fig)
  text = ["# Defence utility", "",
          f"Victim: {c.classifier.model.name} on FONTS {c.classifier.data.characters} "
          f"({c.classifier.data.difficulty}), undefended test accuracy "
          f"**{results['victim_accuracy']:.4f}** on {results['num_examples']} test images. "
          "Accuracy: the label is the top-1 of the defended posterior (a top-1 tied with n "
          "- 1 other classes counts 1/n); loss in points against the undefended victim; "
          "flips: share of rows whose top-1 is no longer the victim's argmax; L1 and "
          "KL(y~ || y) (nats, y floored at 1e-12) of the perturbation.", "",
          reporting.markdown_table(["defence / setting", "accuracy", "loss (pts)", "flip rate",
                                    "mean L1", "mean KL"], table), "",
          "![utility](utility.png)", "",
          "## Adaptive Misinformation", "",
          f"Defends an outlier-exposure victim (outliers {c.outlier_characters!r}); its loss "
          "above is against the ordinary victim. Share of queries misinformed (a > 0.5) on "
          f"the victim's test set and on held-out characters {c.ood_characters!r}:", "",
          reporting.markdown_table(["setting", "OE victim accuracy (undefended)",
                                    "misinformed: in distribution", "misinformed: OOD"], am),
          ""]
  path = os.path.join(workdir, "report.md")
  io.write_text_atomic(path, "\n".join(text))
  return path
