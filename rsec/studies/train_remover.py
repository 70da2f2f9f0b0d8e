"""Train the object remover (in-painter + weakly supervised mask generator) on SCENES.

The library behind `experiments.train_remover` (its command line, presets and outputs are in
that module's docstring); `run(config, workdir)` is what it calls.
"""
from __future__ import annotations

import os

from rsec import config as cfg_lib
from rsec import io, reporting
from rsec.context.train_remover import save_examples, train_remover, validate_config

BARS = (("inpainter_gain_db", ">=", 3.0), ("removal_success", ">=", 0.8),
        ("false_removal", "<=", 0.1), ("mask_iou", ">=", 0.5))


def run(config, workdir: str) -> dict:
  validate_config(config)
  io.prepare_workdir(workdir)
  if io.is_chief():
    io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(config))
  results, _, examples = train_remover(config, workdir)
  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    save_examples(examples, os.path.join(workdir, "removals.png"))
    from rsec.data.scenes_sheet import save_scene_sheet
    save_scene_sheet(os.path.join(workdir, "scenes.png"), seed=config.seed,
                     size=config.data.size)
    io.write_text_atomic(os.path.join(workdir, "report.md"), _report(config, results))
  return results


def _report(config, r: dict) -> str:
  keys = ("inpainter_psnr_hole", "mean_fill_psnr_hole", "blur_fill_psnr_hole",
          "baseline_psnr_hole", "inpainter_gain_db", "removal_success", "false_removal",
          "mask_iou", "generated_mask_area", "gt_removal_success", "gt_false_removal",
          "oracle_removal_success", "oracle_false_removal", "classifier_eval_test_accuracy",
          "eval_images", "classifier_seconds", "inpainter_seconds", "mask_generator_seconds",
          "eval_seconds", "devices")
  rows = [(k, r[k]) for k in keys if k in r]
  bars = [(k, f"{op} {v}", r.get(k, "n/a"),
           "yes" if k in r and (r[k] >= v if op == ">=" else r[k] <= v) else "no")
          for k, op, v in BARS]
  return "\n".join([
      f"# train_remover: SCENES {config.data.size}x{config.data.size}", "",
      "PSNR inside the hole (GT mask, dilated) against the oracle scene without the object;"
      " removal success / false removal judged by an independently trained classifier.", "",
      reporting.markdown_table(["metric", "value"], rows), "",
      "## Bars", "", reporting.markdown_table(["metric", "bar", "value", "met"], bars), "",
      "![removals](removals.png)", "", "![scenes](scenes.png)", ""])
