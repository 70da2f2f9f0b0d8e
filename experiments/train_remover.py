r"""Train the object remover (in-painter + weakly supervised mask generator) on SCENES.

python -m experiments.train_remover --config=configs/train_remover.py:quick \
    --workdir=/tmp/rsec/train_remover

Writes config.json, metrics.jsonl, TensorBoard events, checkpoints/ (classifier_mask,
classifier_eval, inpainter, mask_generator; a rerun resumes), results.json, report.md,
removals.png (original / GT mask / generated mask / oracle) and scenes.png.
"""
from rsec import config as cfg_lib
from rsec.studies.train_remover import run

if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/train_remover.py:quick",
                   headline=("inpainter_gain_db", "removal_success", "false_removal", "mask_iou"))
