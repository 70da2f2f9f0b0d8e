"""results.json, report.md and figures of the reverse-engineering study."""
from __future__ import annotations

import os

import numpy as np

from rsec import io
from rsec.reporting import markdown_table


def _avg(rows, **match) -> tuple[float, float, int]:
  sel = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
  if not sel:
    return float("nan"), float("nan"), 0
  return (float(np.mean([r["accuracy"] for r in sel])),
          float(np.mean([r["chance"] for r in sel])), len(sel))


def summarise(c, study, zoo, rows, transfer, defended) -> dict:
  n = c.kennen.n_queries
  singles = zoo.members[:, 1] < 0
  methods = {}
  for m, out in [("kennen-o", o) for o in c.kennen.outputs] + [("kennen-i", "label"),
                                                              ("kennen-io", "score")]:
    for split in c.kennen.splits:
      q = 1 if m == "kennen-i" else n
      acc, ch, k = _avg(rows, method=m, output=out, split=split, n_queries=q)
      if k:
        uniform = float(np.mean([r["chance_uniform"] for r in rows if r["method"] == m and
                                 r["output"] == out and r["split"] == split and
                                 r["n_queries"] == q]))
        methods[f"{m}/{out}/{split}"] = {"accuracy": acc, "chance": ch,
                                         "chance_uniform": uniform, "scored": k}
  r_o = methods.get("kennen-o/score/R", {})
  r_io = methods.get("kennen-io/score/R", {})
  r_label = methods.get("kennen-o/label/R", {})
  expectations = {
      "kennen_o_score_R_over_chance_points": 100 * (r_o.get("accuracy", np.nan)
                                                     - r_o.get("chance", np.nan)),
      "kennen_o_score_R_ge_chance_plus_25": bool(r_o and r_o["accuracy"] >= r_o["chance"] + .25),
      "kennen_o_score_R_over_uniform_chance_points": 100 * (
          r_o.get("accuracy", np.nan) - r_o.get("chance_uniform", np.nan)),
      "kennen_io_ge_kennen_o": bool(r_io and r_o and r_io["accuracy"] >= r_o["accuracy"]),
      "label_below_score_above_chance": bool(
          r_label and r_o and r_o["accuracy"] > r_label["accuracy"] > r_label["chance"]),
      "E_splits_below_R_above_chance": {
          s: bool(v["accuracy"] < r_o.get("accuracy", np.nan) and v["accuracy"] > v["chance"])
          for s in c.kennen.splits if s != "R"
          for v in [methods.get(f"kennen-o/score/{s}")] if v},
  }
  return {
      "zoo": {"trained": zoo.trained, "kept_singles": int(singles.sum()),
              "ensembles": int((~singles).sum()), "size": len(zoo),
              "dropped": zoo.dropped, "mean_accuracy": float(zoo.accuracy[singles].mean()),
              "train_seconds": study.zoo_seconds,
              "models_per_minute": zoo.trained / max(study.zoo_seconds, 1e-9) * 60},
      "kennen": rows, "methods": methods, "expectations": expectations,
      "transfer": transfer, "defences": defended,
  }


def _figures(workdir, c, results, rows, study) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  made = []
  # accuracy vs number of queries (kennen-o, score, R), mean over attributes
  qs = sorted({r["n_queries"] for r in rows if r["method"] == "kennen-o"
               and r["output"] == "score" and r["split"] == "R"})
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(qs, [_avg(rows, method="kennen-o", output="score", split="R", n_queries=q)[0]
               for q in qs], "o-", label="kennen-o (score)")
  ax.plot(qs, [_avg(rows, method="kennen-o", output="score", split="R", n_queries=q)[1]
               for q in qs], "k--", label="chance")
  ax.set_xscale("log"); ax.set_xlabel("queries"); ax.set_ylabel("mean attribute accuracy")
  ax.set_title("kennen-o on R"); ax.legend()
  fig.tight_layout(); fig.savefig(os.path.join(workdir, "queries.png"), dpi=120)
  plt.close(fig); made.append("queries.png")
  # transfer success per source
  t = results["transfer"]["success"]
  fig, ax = plt.subplots(figsize=(4.5, 3.5))
  ax.bar(list(t), list(t.values()), yerr=list(results["transfer"]["success_std"].values()))
  ax.set_ylabel("transfer success"); ax.set_title("PGD from zoo sources to black boxes")
  fig.tight_layout(); fig.savefig(os.path.join(workdir, "transfer.png"), dpi=120)
  plt.close(fig); made.append("transfer.png")
  # confusion matrices (kennen-o score R) for a few attributes
  if getattr(study, "confusions", None):
    names = list(study.confusions)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2))
    for ax, name in zip(np.atleast_1d(axes), names):
      m = study.confusions[name]
      ax.imshow(m / np.maximum(m.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
      vals = [str(v) for v in study.values[name]]
      ax.set_xticks(range(len(vals)), vals, rotation=45); ax.set_yticks(range(len(vals)), vals)
      ax.set_title(name); ax.set_xlabel("predicted"); ax.set_ylabel("true")
    fig.tight_layout(); fig.savefig(os.path.join(workdir, "confusion.png"), dpi=120)
    plt.close(fig); made.append("confusion.png")
  return made


def _pct(x) -> str:
  return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def write_report(workdir, c, results, rows, study) -> None:
  z = results["zoo"]
  names = study.names
  lines = ["# Reverse engineering black boxes: the zoo and kennen", "",
           f"Zoo: {z['trained']} models trained in {z['train_seconds']:.0f} s "
           f"({z['models_per_minute']:.0f} models/min, stacks compiled once per batch size); "
           f"{z['dropped']['accuracy']} dropped below {100 * c.zoo.min_accuracy:.0f}% FONTS "
           f"test accuracy and {z['dropped']['diverged']} diverged; kept {z['kept_singles']} "
           f"single models (mean accuracy {100 * z['mean_accuracy']:.1f}%) and "
           f"{z['ensembles']} ensembles: {z['size']} black boxes.", "",
           "Wall time per stage (this run; a reused zoo is not retrained): " + ", ".join(
               f"{k} {v:.0f} s" for k, v in results.get("seconds", {}).items()) + ".", "",
           "## Attribute accuracy on R (%, as the paper's Table 2)", ""]
  header = ["method"] + names + ["avg"]
  table = []
  r_rows = [r for r in rows if r["split"] == "R"]
  chance = {r["attribute"]: r["chance"] for r in r_rows}
  table.append(["chance (majority)"] + [_pct(chance.get(n)) for n in names]
               + [_pct(np.mean(list(chance.values())))])
  uniform = {r["attribute"]: r["chance_uniform"] for r in r_rows}
  table.append(["chance (1/#values, the paper's)"] + [_pct(uniform.get(n)) for n in names]
               + [_pct(np.mean(list(uniform.values())))])
  n = c.kennen.n_queries
  for method, output, q in ([("kennen-o", o, n) for o in c.kennen.outputs]
                            + [("kennen-i", "label", 1), ("kennen-io", "score", n)]):
    sel = {r["attribute"]: r["accuracy"] for r in r_rows if r["method"] == method
           and r["output"] == output and r["n_queries"] == q}
    if sel:
      table.append([f"{method} {output} ({q} q)"] + [_pct(sel.get(a)) for a in names]
                   + [_pct(np.mean(list(sel.values())))])
  lines += [markdown_table(header, table), "",
            "Chance is the accuracy of always answering the training split's most common "
            "value (the kept zoo is not uniform over values: the accuracy filter drops more "
            "of some). The paper's chance is 1/#values.", "",
            "## Splits (mean over the scored attributes, %)", ""]
  split_rows = []
  for key, v in results["methods"].items():
    m, out, split = key.split("/")
    split_rows.append([m, out, split, v["scored"], _pct(v["accuracy"]), _pct(v["chance"]),
                       _pct(v["chance_uniform"])])
  lines += [markdown_table(["method", "output", "split", "attributes", "accuracy",
                            "chance (majority)", "chance (1/#values)"], split_rows), ""]
  t = results["transfer"]
  lines += ["## Attribute-informed attacks", "",
            f"L-inf PGD (eps {t['eps']}, {t['steps']} steps) crafted on zoo models, tested on "
            f"{t['black_boxes']} held-out black boxes (R test singles). matched: the "
            f"{t['sources']} training models sharing the most kennen-o-predicted attributes "
            f"({100 * t['matched_attribute_share']:.0f}% of attributes shared on average); "
            f"random: {t['sources']} random training models; zoo: {t['zoo_sources']} random "
            "training models (the whole-zoo source). Sources average their posteriors.", "",
            markdown_table(["source", "transfer success (%)", "std"],
                           [[k, _pct(v), _pct(t["success_std"][k])]
                            for k, v in t["success"].items()]), "",
            "## kennen-o against defended black boxes", ""]
  drows = []
  for d in results["defences"]:
    setting = ", ".join(f"{k}={d[k]}" for k in d if k not in (
        "defence", "metamodel", "accuracy", "chance", "per_attribute", "defender_accuracy",
        "undefended_accuracy", "mean_l1"))
    drows.append([d["defence"], setting, d["metamodel"], _pct(d["accuracy"]), _pct(d["chance"]),
                  _pct(d["defender_accuracy"]), _pct(d["undefended_accuracy"]),
                  f"{d['mean_l1']:.3f}"])
  lines += [markdown_table(["defence", "setting", "metamodel", "attribute acc", "chance",
                            "defender acc", "undefended acc", "mean L1"], drows), "",
            "clean-trained: the R kennen-o metamodel trained on undefended outputs; "
            "retrained: trained on the training zoo's defended outputs (an attacker who "
            "knows the defence).", "", "## Expectations (issue 18)", ""]
  for k, v in results["expectations"].items():
    lines.append(f"- {k}: {v}")
  made = _figures(workdir, c, results, rows, study)
  lines += [""] + [f"![{m}]({m})" for m in made]
  io.write_text_atomic(os.path.join(workdir, "report.md"), "\n".join(lines) + "\n")
