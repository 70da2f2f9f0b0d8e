r"""Context sensitivity of scene classifiers, and removal-based augmentation (classification).

python -m experiments.context_sensitivity --config=configs/context_sensitivity.py:quick \
    --workdir=/tmp/rsec/context

Writes config.json, checkpoints/{regular,augmented} (resumable), results.json
(map_in_context, map_out_of_context, violation_rate, flip_rate, s_object_without_context,
s_context_without_object, bias, score_change, artifact_control per model and removal
source), report.md, score_change.png, violation_rate.png and removals.png.
"""
from rsec import config as cfg_lib
from rsec.studies.context_sensitivity import run

if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/context_sensitivity.py:quick",
                   headline=("map_in_context.regular", "map_out_of_context.regular",
                             "map_out_of_context.augmented"))
