"""Robustness evaluation of a trained classifier: attacks, worst case, eps curve, sanity.

The library behind `experiments.attack_eval` (its command line, presets and outputs are in
that module's docstring); `run(config, workdir)` is what it calls.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from rsec import config as cfg_lib
from rsec import io, parallel, reporting
from rsec.attacks import ATTACKS, build_attack, cascade
from rsec.attacks.evaluate import evaluate_attacks, robust_accuracy_curve
from rsec.attacks.sanity import sanity_checks
from rsec.data.sources import load_classification
from rsec.training.classifier import restore_classifier


def validate(c) -> None:
  cfg_lib.check(c, "classifier_workdir", type_=str)
  if not c.classifier_workdir:
    raise ValueError("config.classifier_workdir must name a train_classifier workdir "
                     "(make one with `python -m experiments.train_classifier --workdir=DIR`)")
  cfg_lib.check(c, "seed", type_=int, low=0)
  cfg_lib.check(c, "num_examples", type_=int, low=1)
  cfg_lib.check(c, "batch_size", type_=int, low=1)
  if not c.attacks:
    raise ValueError("config.attacks must name at least one attack")
  for name in c.attacks:
    cfg_lib.check(c, f"attacks.{name}.name", type_=str, choices=ATTACKS.names())
  for name in c.cascade:
    if name not in c.attacks:
      raise ValueError(f"config.cascade names {name!r}, which is not in config.attacks "
                       f"({sorted(c.attacks)})")
  cfg_lib.check(c, "curve.attack.name", type_=str, choices=ATTACKS.names())
  for e in c.curve.eps_grid:
    if not isinstance(e, (int, float)) or e < 0:
      raise ValueError(f"config.curve.eps_grid must hold numbers >= 0, got {e!r}")


def _kwargs(block) -> dict:
  return {k: v for k, v in block.to_dict().items() if k != "name"}


def run(c, workdir: str) -> dict:
  validate(c)
  state, clf_config = restore_classifier(c.classifier_workdir)
  mesh = parallel.data_mesh()
  parallel.check_batch_divisible(c.batch_size, mesh, "config.batch_size")
  io.prepare_workdir(workdir)
  done = io.finished_results(workdir, cfg_lib.to_json(c))
  if done is not None:  # a rerun of a finished evaluation: nothing to redo
    return done
  io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(c))

  data_cfg = clf_config.data
  data_cfg.train_size = clf_config.training.batch_size  # only the test split is needed
  data_cfg.test_size = max(int(data_cfg.test_size), c.num_examples)
  data = load_classification(data_cfg, clf_config.seed)
  x, y = data.test["image"][:c.num_examples], data.test["label"][:c.num_examples]
  logits_fn = state.logits_fn()
  key = jax.random.key(c.seed)

  attacks = {name: build_attack(b.name, **_kwargs(b)) for name, b in c.attacks.items()}
  if c.cascade:
    attacks["cascade"] = cascade([attacks[n] for n in c.cascade])
  results = evaluate_attacks(logits_fn, key, x, y, attacks, batch_size=c.batch_size, mesh=mesh)

  curve_kw = _kwargs(c.curve.attack)
  grid = [float(e) for e in c.curve.eps_grid]
  curve = robust_accuracy_curve(logits_fn, jax.random.fold_in(key, 1), x, y,
                                lambda e: build_attack(c.curve.attack.name, eps=e, **curve_kw),
                                grid, batch_size=c.batch_size, mesh=mesh)
  results["curve"] = {"eps": grid, "robust_accuracy": curve}

  n_s = min(c.sanity.num_examples, len(y))
  n_s -= n_s % jax.device_count() or 0
  warnings, values = sanity_checks(
      logits_fn, jax.random.fold_in(key, 2), x[:n_s], y[:n_s], eps=c.sanity.eps,
      norm=c.sanity.norm, steps=c.sanity.steps, square_steps=c.sanity.square_steps,
      batch_size=n_s, mesh=mesh)
  results["sanity_warnings"] = warnings
  results["sanity"] = values

  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    _plot_curve(grid, curve, os.path.join(workdir, "robust_vs_eps.png"))
    _plot_examples(logits_fn, key, x, y, attacks, c.batch_size, mesh,
                   os.path.join(workdir, "examples.png"))
    io.write_text_atomic(os.path.join(workdir, "report.md"), _report(c, results, list(attacks)))
  return results


def _plot_curve(grid, curve, path):
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 3.2))
  ax.plot(grid, curve, "o-")
  ax.set_xlabel("eps (L-inf)")
  ax.set_ylabel("robust accuracy")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _plot_examples(logits_fn, key, x, y, attacks, batch_size, mesh, path, n=8):
  """Clean images (top row) and each attack's adversarial examples, with predictions.

  The attacks run on a whole (sharded) evaluation batch so they reuse the compilations
  of the evaluation instead of compiling again for n examples.
  """
  import matplotlib.pyplot as plt
  m = min(batch_size, len(y))
  xb, yb = np.resize(x[:m], (batch_size,) + x.shape[1:]), np.resize(y[:m], batch_size)
  xd, yd = parallel.shard_batch((xb, yb), mesh)
  rows = {"clean": x[:n]}
  for i, (name, a) in enumerate(attacks.items()):
    rows[name] = np.asarray(a(logits_fn, jax.random.fold_in(key, 100 + i), xd, yd))[:n]
  y = y[:n]
  fig, axes = plt.subplots(len(rows), len(y), figsize=(1.1 * len(y), 1.25 * len(rows)))
  for r, (name, imgs) in enumerate(rows.items()):
    pred = np.argmax(np.asarray(logits_fn(imgs)), -1)
    for j in range(len(y)):
      ax = axes[r, j]
      ax.imshow(np.asarray(imgs[j]).squeeze(), cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([]), ax.set_yticks([])
      ax.set_title(str(pred[j]), fontsize=7, color="k" if pred[j] == y[j] else "r")
      if j == 0:
        ax.set_ylabel(name, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _report(c, r: dict, names: list[str]) -> str:
  rows = [(n, r[f"robust_accuracy/{n}"], r[f"success_rate/{n}"], r[f"success_rate_any/{n}"],
           r[f"mean_l2/{n}"], r[f"mean_linf/{n}"]) for n in names]
  rows.append(("worst_case", r["robust_accuracy/worst_case"], float("nan"),
               r["success_rate_any/worst_case"], float("nan"), float("nan")))
  warn = r["sanity_warnings"]
  return "\n".join([
      f"# attack_eval of {c.classifier_workdir}", "",
      f"Clean accuracy on the first {int(r['num_examples'])} test examples: "
      f"{r['clean_accuracy']:.4f}", "",
      reporting.markdown_table(["attack", "robust acc.", "success rate (per attempt)",
                                "success rate (any attempt)", "mean L2", "mean Linf"], rows),
      "", "Success rates follow Stutz et al.: over correctly classified clean examples; "
      "'per attempt' averages over restarts, 'any attempt' counts a point broken by any.", "",
      "![robust accuracy vs eps](robust_vs_eps.png)", "", "![examples](examples.png)", "",
      "## Sanity checks", "",
      *(["All checks passed."] if not warn else [f"- WARNING: {w}" for w in warn]), "",
      reporting.markdown_table(["check", "value"], sorted(r["sanity"].items())), ""])
