r"""Robustness vs generalization on FONTS: the four claims of Stutz et al. (CVPR 2019).

python -m experiments.robustness_generalization \
    --config=configs/robustness_generalization.py:quick --workdir=/tmp/rsec/rg

Writes config.json, vaegan/ (unless config.vaegan_workdir names one), cells/<cell>/ (one
trained classifier each, resumable: a rerun skips finished cells), study.json (distances
of one normal model's adversarial examples), results.json (per-mode tables and `claims`),
report.md and PNG figures.
"""
from rsec import config as cfg_lib
from rsec.studies.robustness_generalization import run

if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/robustness_generalization.py:quick")
