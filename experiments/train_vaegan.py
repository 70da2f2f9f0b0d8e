r"""Train the class-specific and class-agnostic VAE-GANs (learned manifolds) on FONTS.

python -m experiments.train_vaegan --config=configs/train_vaegan.py:quick \
    --workdir=/tmp/rsec/vaegan

Writes config.json, metrics.jsonl, TensorBoard events, checkpoints/ (a rerun resumes),
latent_box.npz (per-class box of encoded training latents), results.json (test
reconstruction errors per class), report.md, reconstructions.png and samples.png.
"""
from rsec import config as cfg_lib
from rsec.studies.train_vaegan import run

if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/train_vaegan.py:quick",
                   headline=("test_class_l2", "test_agnostic_l2", "steps"))
