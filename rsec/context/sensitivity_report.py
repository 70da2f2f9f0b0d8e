"""report.md and figures of the context-sensitivity experiment."""
from __future__ import annotations

import os

import numpy as np

from rsec import io, reporting
from rsec.context import sensitivity as S
from rsec.data import scene_rules as R

DEFINITIONS = """\
Definitions (per class c; "context" = the things the context rules pair with c):
- object case: the image with every c removed and its context kept ("context only");
  context case: the image with c's context removed and c kept ("object only").
- **violation rate**: over images with both cases, the share where c scores at least as
  high with only its context as with only the object (a classifier that looks at the
  object scores 0). `mean` averages the classes that have a context rule.
- **flip rate**: over context cases where c was detected (score >= 0.5), the share where
  removing the context drops c below 0.5.
- **S(object without context)** / **S(context without object)**: mean score of c in its
  context cases / object cases.
- **bias(b|z)** (Singh et al. 2020, on counterfactual pairs): mean score of b on images
  with b and z, divided by its mean score once z is removed (1 = no reliance on z).
- **artifact control** (in-painter sources): mean |score change| of the classes not
  removed when a region of the same shape moved onto stuff is filled, beside the same for
  real object removals; the oracle removes exactly and needs no control."""


def plot_score_change(results: dict, source: str, path: str) -> None:
  plt = reporting.plt  # Agg backend, set once by rsec.reporting
  models = list(results["score_change"])
  fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4), squeeze=False)
  for ax, name in zip(axes[0], models):
    m = np.asarray(results["score_change"][name][source], np.float64)
    im = ax.imshow(m, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks(range(R.NUM_THINGS), R.THINGS, rotation=60, fontsize=7)
    ax.set_yticks(range(R.NUM_THINGS), R.THINGS, fontsize=7)
    ax.set_xlabel("class scored")
    ax.set_ylabel("class removed")
    ax.set_title(f"{name}: mean score change ({source})", fontsize=8)
  fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def plot_violation(results: dict, source: str, path: str) -> None:
  plt = reporting.plt  # Agg backend, set once by rsec.reporting
  models = list(results["violation_rate"])
  names = [n for n in results["violation_rate"][models[0]][source] if n != "mean"]
  fig, ax = plt.subplots(figsize=(5.5, 3.2))
  w = 0.8 / len(models)
  for j, name in enumerate(models):
    v = [results["violation_rate"][name][source][n] for n in names]
    ax.bar(np.arange(len(names)) + j * w, v, w, label=name)
  ax.set_xticks(np.arange(len(names)) + w * (len(models) - 1) / 2, names, fontsize=8)
  ax.set_ylabel(f"violation rate ({source})")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_removals(test: dict, edited: dict, path: str, n: int = 6) -> None:
  """Per source: the first n object cases and context cases beside the originals."""
  plt = reporting.plt  # Agg backend, set once by rsec.reporting
  rows = []
  for source, (cases, images) in edited.items():
    for kind, label in ((S.OBJECT, "object removed"), (S.CONTEXT, "context removed")):
      idx = np.flatnonzero(cases["kind"] == kind)[:n]
      if len(idx):
        rows.append((f"{source}: {label}", images[idx], cases["img"][idx], cases["cls"][idx]))
  if not rows:
    return
  fig, axes = plt.subplots(2 * len(rows), n, figsize=(1.3 * n, 2.7 * len(rows)),
                           squeeze=False)
  for r, (title, imgs, img_idx, cls) in enumerate(rows):
    for j in range(n):
      for k, im in enumerate((test["image"][img_idx[j]] if j < len(imgs) else None,
                              imgs[j] if j < len(imgs) else None)):
        ax = axes[2 * r + k, j]
        ax.axis("off")
        if im is not None:
          ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
          if k == 0:
            ax.set_title(R.THINGS[cls[j]], fontsize=6)
    axes[2 * r + 1, 0].text(-2, -2, title, fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def _f(v) -> str:
  return f"{v:.3f}" if isinstance(v, float) else str(v)


def _segmentation_section(results: dict, sources) -> list[str]:
  seg = results.get("segmentation")
  if not seg:
    return ["Segmentation was not run (config.segmentation.steps = 0)."]
  rows = [(m, _f(r["miou_in_context"]), _f(r["miou_out_of_context"]),
           *(_f(r["pixel_flip_rate"][s]["all"]) for s in sources),
           *(_f(r["revealed_miou"][s]) for s in sources)) for m, r in seg.items()]
  header = (["model", "mIoU in context", "mIoU out of context"]
            + [f"pixel flip rate ({s})" for s in sources]
            + [f"revealed mIoU ({s})" for s in sources])
  stuff = [n for n in R.STUFF if n in seg["regular"]["pixel_flip_rate"][sources[0]]]
  per = [(n, *(_f(seg[m]["pixel_flip_rate"][sources[0]].get(n, float("nan"))) for m in seg))
         for n in stuff]
  classes = [n for n in R.THINGS + R.STUFF if n in seg["regular"]["iou_out_of_context"]]
  iou = [(n, *(_f(seg[m][k].get(n, float("nan"))) for m in seg
               for k in ("iou_in_context", "iou_out_of_context"))) for n in classes]
  out = ["## Segmentation", "",
         "Pixel flip rate: share of pixels outside the removed objects' dilated masks whose "
         "predicted label changes when one object is removed; revealed mIoU: prediction "
         "where the object was, against the oracle's labels of what lies behind it.", "",
         reporting.markdown_table(header, rows), "",
         f"Pixel flip rate by ground-truth stuff class ({sources[0]}):", "",
         reporting.markdown_table(["stuff"] + list(seg), per), "",
         "IoU per class, in context / out of context:", "",
         reporting.markdown_table(["class"] + [f"{m} {k}" for m in seg for k in ("in", "out")],
                                  iou)]
  if "stuff_swapped" in seg:
    out += ["", "`stuff_swapped` is a diagnostic, not removal augmentation: its training "
            "scenes take another scene type's stuff with probability "
            "`segmentation.stuff_swap`, things staying where they stood "
            "(`rsec.context.augment.make_stuff_swap`). Out of context, things stand in "
            "scene types and on stuff they are never seen with in training; removing "
            "objects never changes the stuff a thing stands on, so it cannot teach a "
            "segmenter to label a thing by its own look rather than by its scene. The "
            "per-class table shows where out-of-context mIoU is lost (things, not stuff) "
            "and how much of it this one change of context recovers."]
  return out


def write(workdir: str, c, results: dict, test: dict, edited: dict) -> None:
  j = lambda name: os.path.join(workdir, name)  # noqa: E731
  main = c.sources[0]
  plot_score_change(results, main, j("score_change.png"))
  plot_violation(results, main, j("violation_rate.png"))
  plot_removals(test, edited, j("removals.png"))
  models = list(results["map_in_context"])
  summary = [(name, _f(results["map_in_context"][name]), _f(results["map_out_of_context"][name]),
              *(_f(results["violation_rate"][name][s]["mean"]) for s in c.sources),
              *(_f(results["flip_rate"][name][s]["mean"]) for s in c.sources))
             for name in models]
  header = (["model", "mAP in context", "mAP out of context"]
            + [f"violation ({s})" for s in c.sources] + [f"flip ({s})" for s in c.sources])
  per_class = []
  for cls in [n for n in results["violation_rate"][models[0]][main] if n != "mean"]:
    per_class.append((cls, *(_f(results[k][m][main][cls]) for m in models
                             for k in ("violation_rate", "flip_rate",
                                       "s_object_without_context",
                                       "s_context_without_object"))))
  pc_header = ["class"] + [f"{m} {k}" for m in models
                           for k in ("violation", "flip", "S(obj w/o ctx)", "S(ctx w/o obj)")]
  bias = [(p, *(_f(results["bias"][m][main].get(p, float("nan"))) for m in models))
          for p in results["bias"][models[0]][main]]
  art = [(m, s, _f(d["control_change"]), _f(d["object_removal_change"]))
         for m, per in results["artifact_control"].items() for s, d in per.items()]
  v_reg = results["violation_rate"]["regular"][main]["mean"]
  v_aug = results["violation_rate"]["augmented"][main]["mean"]
  how = (f"online: context_augment, a fresh oracle removal with probability "
         f"{c.augment.fraction} per image and step" if c.augment.mode == "online"
         else f"{c.augment.source} removals on {results['augmented_examples']} extra images")
  verdict = (f"Augmentation ({how}) moves the mean violation rate ({main}) from {v_reg:.3f} to "
             f"{v_aug:.3f} ({'cut by at least half' if v_aug <= v_reg / 2 else 'NOT cut by half'}),"
             f" out-of-context mAP from {results['map_out_of_context']['regular']:.3f} to "
             f"{results['map_out_of_context']['augmented']:.3f} and in-context mAP from "
             f"{results['map_in_context']['regular']:.3f} to "
             f"{results['map_in_context']['augmented']:.3f}.")
  text = "\n".join([
      f"# Context sensitivity on SCENES {c.data.size}x{c.data.size}", "",
      f"Classifiers: {c.classifier.model}, {c.classifier.steps} steps; test: "
      f"{c.data.test_size} in-context and {c.data.ood_size} out-of-context scenes; removal "
      f"sources {', '.join(c.sources)} ({results['cases']} cases).", "", verdict, "",
      reporting.markdown_table(header, summary), "", DEFINITIONS, "",
      f"## Per class ({main})", "", reporting.markdown_table(pc_header, per_class), "",
      "![violation rate](violation_rate.png)", "",
      f"## Bias on counterfactual pairs ({main})", "",
      reporting.markdown_table(["b|z"] + models, bias), "",
      "## Artifact control", "",
      (reporting.markdown_table(["model", "source", "control change", "object-removal change"],
                                art) if art else "Only oracle removals: nothing to control."),
      "", "![score change](score_change.png)", "", "![removals](removals.png)", "",
      *_segmentation_section(results, c.sources), ""])
  io.write_text_atomic(j("report.md"), text)
