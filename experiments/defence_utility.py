r"""What each prediction defence costs the defender (accuracy, flips, L1, KL).

python -m experiments.defence_utility --config=configs/defence_utility.py:quick \
    --workdir=workdirs/defence_utility [--config.victim_workdir=DIR]

Writes config.json, victim/ oe_victim/ misinformation/ (train_classifier workdirs; a rerun
resumes them), results.json (flat keys DEFENCE/SETTING=VALUE/METRIC), report.md and
utility.png.
"""
from __future__ import annotations

import os

from rsec import config as cfg_lib
from rsec import io
from rsec.stealing import utility_study


def run(c, workdir: str) -> dict:
  utility_study.validate_config(c)
  io.prepare_workdir(workdir)
  cfg_lib.check_same_run(workdir, c)
  io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(c))
  results, rows = utility_study.run_study(c, workdir, progress=c.progress)
  io.write_json_atomic(os.path.join(workdir, "results.json"), results)
  report = utility_study.write_report(workdir, c, results, rows)
  line = f"report: {report} (victim accuracy {results['victim_accuracy']:.4f}"
  for name, settings, u in rows:
    if name == "mad":  # the headline: MAD's cost at its first setting
      line += (f"; {utility_study.cell_label(name, settings)}: accuracy loss "
               f"{u['accuracy_loss'] * 100:+.2f} points, flips {u['flip_rate']:.3f}")
      break
  print(line + ")")
  return results


if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/defence_utility.py:quick")
