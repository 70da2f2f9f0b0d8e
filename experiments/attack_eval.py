r"""Robustness evaluation of a trained classifier: attacks, worst case, eps curve, sanity.

python -m experiments.attack_eval --config=configs/attack_eval.py:quick \
    --config.classifier_workdir=workdirs/train_classifier --workdir=workdirs/attack_eval

Writes config.json, results.json (clean_accuracy, robust_accuracy/*, success_rate/*,
success_rate_any/*, mean_{l1,l2,linf}/*, curve), report.md, robust_vs_eps.png and
examples.png.
"""
from rsec import config as cfg_lib
from rsec.studies.attack_eval import run

if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/attack_eval.py:quick",
                   headline=("clean_accuracy", "robust_accuracy/worst_case"))
