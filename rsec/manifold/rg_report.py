"""report.md and figures of the robustness-vs-generalization experiment."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from rsec import io, reporting

# Stutz et al.'s README plot (their code, FONTS-hard): on-true-manifold success rate.
PAPER_TRUE_SUCCESS = {"normal": {500: .95, 2500: .745, 10000: .50},
                      "on_manifold_true": {500: .775, 2500: .34, 10000: .22},
                      "adversarial": {500: .885, 2500: .715, 10000: .495}}
KIND_LABEL = {"regular": "regular (pixels)", "true": "on true manifold",
              "learned": "on learned manifold"}


def _by_mode(table: dict, key: str):
  for mode, cells in table.items():
    ns = sorted(int(n) for n in cells)
    yield mode, ns, [cells[str(n)][key] for n in ns], [cells[str(n)][key + "_std"] for n in ns]


def plot_vs_n(table: dict, keys: Sequence[str], titles: Sequence[str], path: str) -> None:
  plt = reporting.plt  # Agg backend, set once by rsec.reporting
  fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
  for ax, key, title in zip(axes[0], keys, titles):
    for mode, ns, mean, std in _by_mode(table, key):
      ax.errorbar(ns, mean, yerr=std, marker="o", capsize=2, label=mode)
    ax.set_xscale("log")
    ns = sorted({int(n) for cells in table.values() for n in cells})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("training set size N")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_success_vs_error(rows: Sequence[dict], fits: dict, path: str) -> None:
  plt = reporting.plt  # Agg backend, set once by rsec.reporting
  fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
  modes = list(dict.fromkeys(r["mode"] for r in rows))
  for ax, kind in zip(axes, ("true", "learned")):
    for mode in modes:
      sel = [r for r in rows if r["mode"] == mode]
      ax.scatter([r["test_error"] for r in sel],
                 [r.get(f"{kind}_success_rate", np.nan) for r in sel], label=mode, s=18)
    f = fits[kind]
    if np.isfinite(f["slope"]):
      xs = np.linspace(min(r["test_error"] for r in rows), max(r["test_error"] for r in rows), 2)
      ax.plot(xs, f["slope"] * xs + f["intercept"], "k--", lw=1,
              label=f"fit: r={f['pearson_r']:.2f}, p={f['p_value']:.2g}")
    ax.set_xlabel("test error")
    ax.set_ylabel(f"success rate, {KIND_LABEL[kind]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_distances(study: dict, path: str) -> None:
  plt = reporting.plt  # Agg backend, set once by rsec.reporting
  panels = [("ratio_true", "dist(x~, true manifold) / ||x~ - x||"),
            ("true", "dist(x~, true manifold) (L2)"),
            ("orthogonal", "share of ||x~ - x|| orthogonal to the tangent space")]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
  for ax, (key, title) in zip(axes, panels):
    for kind, d in study.items():
      v = np.asarray(d[key])
      v = v[np.isfinite(v)]
      if len(v):
        ax.hist(v, bins=20, alpha=0.5, label=f"{KIND_LABEL[kind]} (median {np.median(v):.2f})")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_examples(test: dict, examples: dict, path: str, n: int = 8) -> None:
  plt = reporting.plt  # Agg backend, set once by rsec.reporting
  rows = [("clean", test["image"][:n], np.ones(n, bool))]
  rows += [(KIND_LABEL[k], e["x_adv"][:n], e["success"][:n]) for k, e in examples.items()]
  fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.2 * len(rows)), squeeze=False)
  for r, (name, imgs, ok) in enumerate(rows):
    for j in range(n):
      ax = axes[r, j]
      ax.imshow(imgs[j].squeeze(), cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([]), ax.set_yticks([])
      if r:
        ax.set_title("success" if ok[j] else "-", fontsize=6, color="r" if ok[j] else "k")
      if j == 0:
        ax.set_ylabel(name, fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _fmt(v: Any) -> str:
  return f"{v:.3f}" if isinstance(v, float) else str(v)


def _verdicts(cl: dict) -> list[str]:
  """One honest sentence per claim, from the numbers (no fixed text)."""
  out = []
  r = cl["regular_leave_manifold"]
  out.append(f"1. Regular adversarial examples leave the manifold: median distance to the true "
             f"manifold / perturbation size = {r['regular']:.2f} for regular examples vs "
             f"{r['learned']:.2f} (learned-manifold) and {r['true']:.2f} (true-manifold); "
             f"orthogonal share of the perturbation {cl['orthogonal_fraction']['regular']:.2f} "
             f"vs {cl['orthogonal_fraction']['true']:.2f}. "
             + ("Reproduced." if r["regular"] > 0.5 and r["regular"] > r["true"] else
                "NOT reproduced at this scale."))
  s = cl["on_manifold_success_normal"]["true"]
  out.append("2. On-manifold adversarial examples exist: on-true-manifold success against the "
             "normal models " + ", ".join(f"N={n}: {v:.2f}" for n, v in s.items()) + ". "
             + ("Reproduced." if any(v > 0.05 for v in s.values()) else "NOT reproduced."))
  g = cl["on_manifold_training_gain"].get("on_manifold_true", {})
  if g:
    better = [n for n, d in g.items() if d["test_error"] > 0]
    out.append("3. On-manifold adversarial training (true manifold) vs normal training, "
               "test error and on-true-manifold success (normal minus on-manifold; positive "
               "= on-manifold training better): " + "; ".join(
                   f"N={n}: {d['test_error']:+.3f} / {d['true_success']:+.3f}"
                   for n, d in g.items())
               + f". Lower test error at {len(better)} of {len(g)} sizes; success vs error "
               f"across all models: Pearson r = "
               f"{cl['success_error_pearson_r']['true']['pearson_r']:.2f} "
               f"(p = {cl['success_error_pearson_r']['true']['p_value']:.2g}).")
  gap = cl.get("off_manifold_training_error_gap")
  if gap:
    out.append("4. Regular adversarial training vs normal (adversarial minus normal), test "
               "error / regular success: " + "; ".join(
                   f"N={n}: {d['test_error']:+.3f} / {d['regular_success']:+.3f}"
                   for n, d in gap.items())
               + ". The claim holds where regular success falls while test error does not "
               "rise much (robustness without a generalization cost, or with a small one).")
  return out


def write(workdir: str, c, rows: Sequence[dict], results: dict, study: dict, examples: dict,
          test: dict) -> None:
  table, cl = results["table"], results["claims"]
  j = lambda name: os.path.join(workdir, name)  # noqa: E731
  plot_vs_n(table, ["test_error", "true_success_rate", "learned_success_rate",
                    "regular_success_rate"],
            ["test error", "on-true-manifold success", "on-learned-manifold success",
             "regular success"], j("vs_n.png"))
  plot_success_vs_error(rows, cl["success_error_pearson_r"], j("success_vs_error.png"))
  plot_distances(study, j("distances.png"))
  plot_examples(test, examples, j("examples.png"))
  header = ["mode", "N", "models", "test error", "regular", "on true", "on learned"]
  trs = [(mode, n, d["models"], d["test_error"], d["regular_success_rate"],
          d["true_success_rate"], d["learned_success_rate"])
         for mode, cells in table.items() for n, d in cells.items()]
  ref = [(mode, n, v) for mode, d in PAPER_TRUE_SUCCESS.items() for n, v in d.items()]
  st = results["study"]
  dist_rows = [(KIND_LABEL[k], *(_fmt(st[k].get(m, float("nan"))) for m in
                                 ("perturbation", "true", "true_all_fonts", "learned", "local",
                                  "ratio_true", "orthogonal"))) for k in study]
  text = "\n".join([
      "# Robustness vs generalization on FONTS", "",
      f"{len(rows)} classifiers ({c.model.name}): modes {', '.join(c.modes)}; N in "
      f"{', '.join(str(n) for n in c.train_sizes)}; {c.num_models} seed(s); "
      f"{c.training.steps} steps of batch {c.training.batch_size} each; FONTS-"
      f"{c.data.difficulty}. Attacks: Adam, {c.eval.steps} iterations, {c.eval.attempts} "
      f"attempts, lr {c.eval.lr}; regular L-inf eps {c.eval.eps} on the first "
      f"{c.eval.num_examples} test images; on-manifold eta {c.eval.eta} on the first "
      f"{c.eval.num_on_manifold}. Success rate = share of successful attempts over the "
      "examples the paper's rule counts (clean on-manifold image classified correctly; for "
      "latents also z in [-2, 2]^d).", "",
      "## Claims", "", *_verdicts(cl), "",
      "## Per mode and training size (means over seeds)", "",
      reporting.markdown_table(header, [[_fmt(v) for v in r] for r in trs]), "",
      "![vs N](vs_n.png)", "", "![success vs error](success_vs_error.png)", "",
      "Reference (Stutz et al.'s code, FONTS-hard, on-true-manifold success, 5 models):", "",
      reporting.markdown_table(["mode", "N", "success"], ref), "",
      f"## Distances to the manifolds ({st['model']})", "",
      "Medians over successful adversarial examples; x~ adversarial, x the clean test image "
      "(which lies on the true manifold). true: projection over theta (font, character "
      "fixed); any font: the same minimised over the class's fonts (first "
      f"{c.distances.all_fonts} examples only); learned: over z of the "
      "class decoder; local: NN+PCA residual.", "",
      reporting.markdown_table(["kind", "||x~ - x||", "to true", "to true (any font)",
                                "to learned", "local", "ratio (true)", "orthogonal share"],
                               dist_rows), "",
      "![distances](distances.png)", "", "![examples](examples.png)", ""])
  io.write_text_atomic(j("report.md"), text)
