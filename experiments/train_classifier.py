r"""Train and evaluate a classifier (default: the paper's CNN on FONTS-hard).

python -m experiments.train_classifier --config=configs/train_classifier.py:quick \
    --workdir=/tmp/rsec/train_classifier [--config.training.epochs=2]

Writes config.json, metrics.jsonl, TensorBoard events, checkpoints/ (a rerun resumes),
results.json, report.md, samples.png and curves.png into the workdir.
"""
from rsec import config as cfg_lib
from rsec.studies.train_classifier import run

if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/train_classifier.py:quick",
                   headline=("test_accuracy", "steps"))
