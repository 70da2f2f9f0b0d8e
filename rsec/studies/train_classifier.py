"""Train and evaluate a classifier (default: the paper's CNN on FONTS-hard).

The library behind `experiments.train_classifier` (its command line, presets and outputs are in
that module's docstring); `run(config, workdir)` is what it calls.
"""
from __future__ import annotations

import os

from rsec import config as cfg_lib
from rsec import io, reporting
from rsec.data.sources import load_classification
from rsec.train_classifier import train_classifier, validate_train_config
from rsec.training.classifier import check_resumable


def run(config, workdir: str) -> dict:
  validate_train_config(config)
  io.prepare_workdir(workdir)
  data = load_classification(config.data, config.seed)
  check_resumable(config, data, workdir)
  if io.is_chief():
    io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(config))
  if io.is_chief() and data.prototypes is not None:
    from rsec.data.fonts_dataset import save_sample_grid
    save_sample_grid(data.prototypes, os.path.join(workdir, "samples.png"),
                     difficulty=config.data.difficulty)
  _, results = train_classifier(config, data, workdir, progress=config.progress)
  results.update({f"data_{k}": v for k, v in data.info.items() if k != "fonts"})
  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    curves = reporting.plot_training_curves(os.path.join(workdir, "metrics.jsonl"),
                                            os.path.join(workdir, "curves.png"))
    io.write_text_atomic(os.path.join(workdir, "report.md"),
                         _report(config, data, results, curves))
  return results


def _report(config, data, r: dict, curves: bool) -> str:
  rows = [(k, r[k]) for k in ("test_accuracy", "test_error", "train_accuracy", "train_size",
                              "test_size", "steps", "examples_per_second", "train_seconds",
                              "devices")]
  text = [f"# train_classifier: {config.model.name} on {data.info['name']}", "",
          reporting.markdown_table(["metric", "value"], rows), ""]
  if data.prototypes is not None:
    text += [f"FONTS-{config.data.difficulty}: {data.prototypes.num_fonts} fonts x "
             f"{data.prototypes.num_classes} characters ({data.prototypes.characters}).", "",
             "Fonts (in data-set order): " + ", ".join(data.prototypes.font_names), "",
             "![samples](samples.png)", ""]
  if curves:
    text += ["![training curves](curves.png)", ""]
  return "\n".join(text)
