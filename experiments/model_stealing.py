r"""Model stealing: knockoff nets (random, adaptive), the JBDA family, and defences.

python -m experiments.model_stealing --config=configs/model_stealing.py:quick \
    --workdir=workdirs/model_stealing [--config.victim_workdir=DIR]

Writes config.json, victim/ (and oe_victim/, misinformation/ for Adaptive
Misinformation: train_classifier workdirs), streams/ (every attacker's queries and the
victim's answers), stacks/ (checkpoints and metrics of each grid's stack of stolen
models), cells/ (one results.json per stolen model; a rerun skips finished cells and
resumes an interrupted stack), results.json, report.md, budget.png, defences.png and
fidelity.png.
"""
from rsec import config as cfg_lib
from rsec.studies.model_stealing import run

if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/model_stealing.py:quick",
                   headline=("victim_accuracy", "floors.natural_ratio.value",
                             "floors.noise_ratio.value", "floors.mad_drop.value"))
