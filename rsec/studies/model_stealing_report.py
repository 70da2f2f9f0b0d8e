"""results.json and report.md (with PNG figures) of the model stealing experiment."""
from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from rsec import io, reporting

FLOORS = {"natural_ratio": 0.9, "noise_ratio": 0.35, "mad_drop": 0.15, "mad_loss": 0.01}
MAD_FLOOR_VARIANTS = ("mad", "mad_argmax")
METRICS = ("accuracy", "ratio", "fidelity_test", "fidelity_query", "transfer_success")


def point_label(row: dict) -> str:
  """'mad/eps=0.5', 'mad@oe/eps=0.2' (on the outlier-exposure victim), 'label'."""
  return (row["defence"] + ("@oe" if row["victim"] == "oe" else "")
          + (f"/{row['setting']}={row['value']}" if row["setting"] else ""))


def _mean(rows: list[dict]) -> dict:
  out = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
  acc = [r["accuracy"] for r in rows]
  out.update(accuracy_std=float(np.std(acc)), seeds=len(rows),
             accuracy_per_seed=[float(a) for a in acc])
  return out


def summarise(c, rows: list[dict], accuracy: dict[str, float], white_box: float) -> dict:
  """The results dict: victim_accuracy (and oe_victim_accuracy), knockoff, jbda, defences,
  floors, expectations. `accuracy`: undefended test accuracy of each victim."""
  victim_accuracy = accuracy["plain"]
  big, small = c.budgets[-1], c.budgets[0]
  groups = defaultdict(list)
  for r in rows:
    if r["grid"] == "undefended":
      key = (f"{r['query_set']}/{r['strategy']}/{r['labels']}/{r['budget']}"
             if r["attack"] == "knockoff" else f"{r['attack']}/{r['budget']}")
      groups[(r["attack"] == "knockoff", key)].append(r)
  knockoff = {k: _mean(v) for (is_ko, k), v in groups.items() if is_ko}
  jbda = {k: _mean(v) for (is_ko, k), v in groups.items() if not is_ko}
  defences: dict[str, dict] = {}
  for r in rows:
    if r["grid"] != "defences":
      continue
    d = defences.setdefault(point_label(r), {"defence": r["defence"], "victim": r["victim"]})
    d.update(defender_accuracy=r["defender_accuracy"],
             accuracy_loss=r["defender_accuracy_loss"],
             accuracy_loss_vs_plain=r["defender_accuracy_loss_vs_plain"],
             flip_rate=r["defender_flip_rate"], mean_l1=r["defender_mean_l1"])
    who = (r["labels"] if r["attack"] == "knockoff" else r["attack"])
    if r["repeats"] > 1:
      who = f"repeat{r['repeats']}_{r['key_mode']}"
    d[f"{who}_accuracy"] = r["accuracy"]
    d[f"{who}_fidelity"] = r["fidelity_test"]
  results = {"victim_accuracy": victim_accuracy,
             "oe_victim_accuracy": accuracy.get("oe"), "white_box_transfer": white_box,
             "knockoff": knockoff, "jbda": jbda, "defences": defences}
  results["floors"] = _floors(knockoff, defences, big)
  results["expectations"] = _expectations(knockoff, jbda, defences, big, small)
  return results


def _get(d: dict, key: str, field: str = "accuracy"):
  return d[key][field] if key in d else None


def _mad_points(defences, victim: str, variants) -> list[tuple[float, str, float]]:
  """(soft attacker accuracy, point label, defender loss) of every point of `variants`
  on `victim` that the soft knockoff attacked."""
  return [(p["probs_accuracy"], label, p["accuracy_loss"]) for label, p in defences.items()
          if p["defence"] in variants and p["victim"] == victim and "probs_accuracy" in p]


def _floors(knockoff, defences, big) -> dict:
  out = {}
  nat, noise = _get(knockoff, f"natural/random/probs/{big}", "ratio"), _get(
      knockoff, f"noise/random/probs/{big}", "ratio")
  if nat is not None:
    out["natural_ratio"] = {"value": nat, "floor": FLOORS["natural_ratio"],
                            "met": nat >= FLOORS["natural_ratio"]}
  if noise is not None:
    out["noise_ratio"] = {"value": noise, "ceiling": FLOORS["noise_ratio"],
                          "met": noise <= FLOORS["noise_ratio"]}
  # MAD on each victim: the largest drop of the soft knockoff, against that victim
  # undefended, among the settings of MAD and MAD-argmax (the paper's two MAD defences)
  # that cost the defender <= 1 point. `mad_drop_by_variant` in the expectations
  # separates them.
  bases = {"plain": _get(knockoff, f"natural/random/probs/{big}"),
           "oe": defences.get("none@oe", {}).get("probs_accuracy")}
  for victim, base in bases.items():
    mads = _mad_points(defences, victim, MAD_FLOOR_VARIANTS)
    if base is None or not mads:
      continue
    name = "mad_drop" + ("_oe" if victim == "oe" else "")
    cheap = [m for m in mads if m[2] <= FLOORS["mad_loss"]]
    if not cheap:
      out[name] = {"value": None, "floor": FLOORS["mad_drop"], "met": False, "setting": None,
                   "defender_loss": min(m[2] for m in mads), "undefended": base,
                   "defended": None}
      continue
    acc, label, loss = min(cheap)
    drop = base - acc
    out[name] = {"value": drop, "floor": FLOORS["mad_drop"], "met": drop >= FLOORS["mad_drop"],
                 "setting": label, "defender_loss": loss, "undefended": base, "defended": acc}
  return out


def _expectations(knockoff, jbda, defences, big, small) -> dict:
  out = {}
  soft, hard = _get(knockoff, f"natural/random/probs/{small}"), _get(
      knockoff, f"natural/random/argmax/{small}")
  if soft is not None and hard is not None:
    out["soft_beats_argmax_small_budget"] = {"soft": soft, "argmax": hard, "holds": soft > hard}
  ad, ra = f"natural/adaptive/probs/{big}", f"natural/random/probs/{big}"
  if ad in knockoff and ra in knockoff:
    a, r = knockoff[ad], knockoff[ra]
    out["adaptive_vs_random"] = {
        "adaptive": a["accuracy"], "adaptive_std": a["accuracy_std"], "random": r["accuracy"],
        "random_std": r["accuracy_std"], "seeds": min(a["seeds"], r["seeds"]),
        "holds": a["accuracy"] >= r["accuracy"]}
  best_jb = max(((v["accuracy"], k) for k, v in jbda.items() if k.endswith(f"/{big}")),
                default=None)
  if best_jb and ra in knockoff:
    out["knockoff_beats_jbda"] = {"knockoff": knockoff[ra]["accuracy"], "jbda": best_jb[0],
                                  "variant": best_jb[1], "holds": knockoff[ra]["accuracy"] >
                                  best_jb[0]}
  cmp = {}
  for label, p in defences.items():
    if p["defence"] in ("mad", "mad_argmax", "reverse_sigmoid", "logit_noise",
                        "simplex_noise") and "probs_accuracy" in p:
      cmp[label] = {"defender_loss": p["accuracy_loss"], "soft_attacker": p["probs_accuracy"],
                    "mean_l1": p["mean_l1"]}
  out["soft_attacker_vs_perturbation_defences"] = cmp
  base = _get(knockoff, f"natural/random/probs/{big}")
  by_variant = {}
  for variant in MAD_FLOOR_VARIANTS if base is not None else ():
    cheap = [m for m in _mad_points(defences, "plain", (variant,))
             if m[2] <= FLOORS["mad_loss"]]
    if cheap:
      acc, label, _ = min(cheap)
      by_variant[variant] = {"drop": base - acc, "setting": label}
  if by_variant:   # the soft knockoff's largest drop within 1 point, per MAD variant
    out["mad_drop_by_variant"] = by_variant
  base_arg = _get(knockoff, f"natural/random/argmax/{big}")
  arg = {label: p["argmax_accuracy"] for label, p in defences.items()
         if p["defence"] in ("mad", "mad_argmax", "reverse_sigmoid") and "argmax_accuracy" in p}
  if base_arg is not None:
    out["argmax_attacker"] = {"undefended": base_arg, **arg}
  return out


# -------------------------------------------------------------------------------- report

def _figures(workdir: str, c, results: dict, rows: list[dict]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  ko, va = results["knockoff"], results["victim_accuracy"]
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  curves = defaultdict(list)
  for key, v in ko.items():
    run, budget = key.rsplit("/", 1)
    curves[run].append((int(budget), v["accuracy"], v["accuracy_std"]))
  for key, v in results["jbda"].items():
    run, budget = key.rsplit("/", 1)
    curves[run].append((int(budget), v["accuracy"], v["accuracy_std"]))
  for i, (run, pts) in enumerate(sorted(curves.items())):
    pts = sorted(pts)
    if len(pts) < 2:
      continue
    style = "--" if run.startswith("jb") else "-"
    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts], fmt=style,
                marker="os^vD<>p"[i % 8], ms=4, capsize=2, color=plt.cm.tab10(i % 10), label=run)
  ax.axhline(va, color="k", lw=0.8, ls=":", label=f"victim {va:.3f}")
  ax.set_xscale("log")
  _save(fig, ax, os.path.join(workdir, "budget.png"), "budget (queries)",
        "stolen model accuracy (victim's test set)", "Knockoff accuracy vs budget", fontsize=7)

  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  by_def = defaultdict(list)
  for label, p in results["defences"].items():
    by_def[p["defence"] + ("@oe" if p["victim"] == "oe" else "")].append(p)
  big = c.budgets[-1]
  for i, (name, pts) in enumerate(sorted(by_def.items())):
    pts = sorted(pts, key=lambda p: -p["defender_accuracy"])
    color = plt.cm.tab20(i % 20)
    for who, fill in (("probs", "full"), ("argmax", "none")):
      xs = [p["defender_accuracy"] for p in pts if f"{who}_accuracy" in p]
      ys = [p[f"{who}_accuracy"] for p in pts if f"{who}_accuracy" in p]
      if xs:
        ax.plot(xs, ys, "-" if who == "probs" else ":", marker="os^vD<>ph*"[i % 10], ms=5,
                fillstyle=fill, color=color, label=f"{name} ({'soft' if who == 'probs' else who})")
  for who, mk in (("probs", "*"), ("argmax", "X")):
    if f"natural/random/{who}/{big}" in ko:
      ax.plot([va], [ko[f"natural/random/{who}/{big}"]["accuracy"]], mk, ms=11, color="k",
              label=f"undefended ({'soft' if who == 'probs' else who})")
  _save(fig, ax, os.path.join(workdir, "defences.png"), "defender accuracy",
        "attacker (knockoff) accuracy",
        f"Attacker vs defender accuracy (natural, random, {big} queries)", fontsize=6, ncol=2)

  fig, ax = plt.subplots(figsize=(5.5, 4.5))
  for grid_name, color in (("undefended", "tab:blue"), ("defences", "tab:red")):
    pts = [(r["accuracy"], r["fidelity_test"]) for r in rows if r["grid"] == grid_name]
    if pts:
      ax.scatter(*zip(*pts), s=14, color=color, label=grid_name)
  ax.plot([0, 1], [0, 1], "k:", lw=0.8)
  _save(fig, ax, os.path.join(workdir, "fidelity.png"), "accuracy",
        "fidelity (agreement with the victim)", "Fidelity vs accuracy of every stolen model",
        fontsize=8)


def _save(fig, ax, path: str, xlabel: str, ylabel: str, title: str, **legend) -> None:
  import matplotlib.pyplot as plt
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(**legend)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _fmt(v) -> str:
  return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(workdir: str, c, results: dict, rows: list[dict]) -> str:
  _figures(workdir, c, results, rows)
  va = results["victim_accuracy"]
  ko = results["knockoff"]
  budget_rows = [(k.rsplit("/", 1)[0], k.rsplit("/", 1)[1], v["seeds"],
                  f"{v['accuracy']:.3f} ± {v['accuracy_std']:.3f}", _fmt(v["ratio"]),
                  _fmt(v["fidelity_test"]), _fmt(v["fidelity_query"]),
                  _fmt(v["transfer_success"]))
                 for k, v in list(ko.items()) + list(results["jbda"].items())]
  d_rows = []
  for label, p in results["defences"].items():
    d_rows.append((label, _fmt(p["defender_accuracy"]), f"{p['accuracy_loss'] * 100:+.2f}",
                   f"{p['accuracy_loss_vs_plain'] * 100:+.2f}",
                   _fmt(p["mean_l1"]), _fmt(p.get("probs_accuracy")),
                   _fmt(p.get("argmax_accuracy")),
                   ", ".join(f"{k[:-9]} {v:.3f}" for k, v in p.items()
                             if k.endswith("_accuracy") and k not in (
                                 "probs_accuracy", "argmax_accuracy", "defender_accuracy"))))
  f_rows = [(k, _fmt(v["value"]), _fmt(v.get("floor", v.get("ceiling"))),
             "yes" if v["met"] else "**no**",
             (f"{v['setting']} (defender loss {v['defender_loss'] * 100:.2f} pts)"
              if v["setting"] else f"no MAD setting within 1 point (least loss "
              f"{v['defender_loss'] * 100:.2f} pts)") if "setting" in v else "")
            for k, v in results["floors"].items()]
  e = results["expectations"]
  e_lines = []
  for k, v in e.items():
    if k == "soft_attacker_vs_perturbation_defences":
      inner = "; ".join(f"{lab}: loss {p['defender_loss'] * 100:+.2f} pts, soft attacker "
                        f"{p['soft_attacker']:.3f}" for lab, p in v.items())
      e_lines.append(f"- {k}: {inner}")
    elif k == "mad_drop_by_variant":
      e_lines.append(f"- {k} (soft knockoff, within 1 point of defender loss): " + "; ".join(
          f"{var} {p['drop'] * 100:.1f} pts at {p['setting']}" for var, p in v.items()))
    else:
      e_lines.append(f"- {k}: " + ", ".join(f"{a}={_fmt(b)}" for a, b in v.items()))
  d = c.classifier.data
  text = [
      "# Model stealing", "",
      f"Victim: {c.classifier.model.name} on FONTS {d.characters} ({d.difficulty}), test "
      f"accuracy **{va:.4f}** on {d.test_size} images. Stolen models: {c.knockoff.arch}, "
      f"{c.knockoff.steps} steps of batch {c.knockoff.batch_size} from scratch for every "
      f"budget, random +-{c.knockoff.shift} px translations, parameters selected on the "
      f"{c.knockoff.holdout:.0%} of each budget held out (agreement with the victim's "
      "answers), never on the victim's test set. Accuracy on the victim's test set; ratio "
      "to the victim's accuracy; fidelity: agreement with the victim's argmax on its test "
      f"set and on {c.fidelity_size} held-out images of the query distribution; transfer: "
      f"share of L-inf PGD examples (eps {c.transfer.eps}, {c.transfer.steps} steps) "
      f"crafted on the stolen model that fool the victim, on {c.transfer.num_examples} test "
      "images it classifies correctly (white-box PGD on the victim itself: "
      f"{results['white_box_transfer']:.3f}).", "",
      "## Floors", "",
      reporting.markdown_table(["floor", "measured", "bar", "met", "at"], f_rows), "",
      "## Undefended attacks", "",
      f"Runs (query set / strategy / label mode): {', '.join(c.undefended.runs)}; seeds "
      f"{tuple(c.undefended.seeds)}, and seeds {tuple(c.undefended.extra_seeds)} for "
      f"{', '.join(c.undefended.seed_runs)} at {c.budgets[-1]}. JBDA family: "
      f"{', '.join(c.jbda.variants) or 'none'} ({c.jbda.seeds_per_class} seeds per class, "
      f"lambda {c.jbda.lam}, tau {c.jbda.tau}, k {c.jbda.k}).", "",
      reporting.markdown_table(["run", "budget", "seeds", "accuracy", "ratio",
                                "fidelity (test)", "fidelity (query dist.)", "transfer"],
                               budget_rows), "",
      "![accuracy vs budget](budget.png)", "",
      "## Defences", "",
      f"Every defence point against the knockoff on {c.defences.query_set} / "
      f"{c.defences.strategy} at {c.budgets[-1]} queries: the soft attacker (the victim "
      "returns the defended posterior) and the argmax attacker (it returns the label), "
      f"plus {c.defences.repeats}-fold repeated queries (answers averaged) against "
      f"{', '.join(c.defences.repeat_defences) or 'none'} with content and index keys. "
      "Defender accuracy: the label is the top-1 of the defended posterior (a top-1 tied "
      "with n - 1 other classes counts 1/n) on the victim's test set; loss: "
      "against the undefended victim the defence runs on (`@oe`: the outlier-exposure "
      "victim, trained with outliers "
      f"{c.outlier_characters!r}, undefended accuracy "
      f"{_fmt(results['oe_victim_accuracy'])}), and "
      "against the plain victim.", "",
      reporting.markdown_table(["defence / setting", "defender accuracy", "loss (pts)",
                                "loss vs the plain victim", "mean L1", "soft attacker",
                                "argmax attacker", "others"],
                               d_rows), "",
      "![attacker vs defender accuracy](defences.png)", "",
      "## Expectations (measured)", "", *e_lines, "",
      "![fidelity vs accuracy](fidelity.png)", ""]
  path = os.path.join(workdir, "report.md")
  io.write_text_atomic(path, "\n".join(text))
  return path
