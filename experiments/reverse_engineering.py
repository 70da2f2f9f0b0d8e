r"""Reverse engineering black boxes: a vectorised FONTS model zoo and kennen metamodels.

python -m experiments.reverse_engineering --config=configs/reverse_engineering.py:quick \
    --workdir=workdirs/reverse_engineering [--config.zoo_workdir=DIR]

Writes config.json, zoo/ (zoo_config.json; cells/<stack>/: checkpoints, models.npz with
every model's parameters, test accuracy and posteriors on the query images), results.json,
report.md, queries.png, confusion.png and transfer.png.
"""
from rsec import config as cfg_lib
from rsec.studies.reverse_engineering import run

if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/reverse_engineering.py:quick",
                   headline=("zoo.size", "methods.kennen-o/score/R.accuracy",
                             "methods.kennen-o/score/R.chance"))
