"""Robustness vs generalization on FONTS (Stutz, Hein, Schiele, CVPR 2019).

  python -m experiments.robustness_generalization \
      --config=configs/robustness_generalization.py:quick --workdir=/tmp/rsec/rg

For every mode in `modes`, every N in `train_sizes` and `num_models` seeds: train a
classifier on the first N FONTS training examples, then measure test error and regular,
on-true-manifold and on-learned-manifold success rates; one normally trained model also
gets the distance study. The VAE-GANs come from `vaegan_workdir` (a train_vaegan workdir),
or are trained into <workdir>/vaegan with `config.vaegan` when it is empty.

Presets: `quick` (about 15 minutes on a 2-core CPU: fewer steps and attack iterations,
one seed), `paper` (N from 250 to 40,000, 5 models, the paper's attacks; accelerators).
"""
import ml_collections

from configs import train_vaegan
from configs.train_classifier import data_config, training_config


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                     # data seed; model k of a cell uses seed + k
  # data.train_size is the pool the training sets are prefixes of.
  c.data = data_config(train_size=40_000, test_size=5_000)
  c.model = ml_collections.ConfigDict(dict(name="paper_classifier"))
  c.modes = ("normal", "adversarial", "on_manifold_true", "on_manifold_learned",
             "stn_augment", "stn_adversarial")
  c.train_sizes = (250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 40_000)
  c.num_models = 5
  # train_classifier's training block (optimizer, attack, manifold settings), counted in
  # steps: every N trains the same number of steps (epochs = steps * batch / N).
  c.training = training_config()
  c.training.steps = 20_000
  c.training.log_every = 100
  del c.training["mode"]            # one per cell, from c.modes
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=250,
      num_examples=1_000,        # regular attack (the paper: first 1,000 test images)
      num_on_manifold=2_500,     # on-manifold attacks (the paper: 2,500)
      eps=0.3, eta=0.3, steps=40, attempts=5, lr=0.005, latent_bound=2.0,
  ))
  c.distances = ml_collections.ConfigDict(dict(
      num=100,                   # successful adversarial examples per kind
      steps=200, restarts=20,    # projection (true manifold; learned gets restarts // 2)
      pca_components=40, pca_neighbours=50, pca_train=10_000,
      all_fonts=100,             # examples also projected over every font of their class
      model_train_size=0,        # the normal model studied (0: the largest N)
  ))
  c.vaegan_workdir = ""
  c.vaegan = train_vaegan.get_config("paper" if preset == "paper" else "quick")
  c.progress = True

  if preset == "quick":
    c.data.train_size = 8_000
    c.data.test_size = 500
    c.modes = ("normal", "adversarial", "on_manifold_true", "on_manifold_learned")
    c.train_sizes = (500, 2_000, 8_000)
    c.num_models = 1
    c.training.steps = 800
    c.training.attack.steps = 10
    c.training.attack.lr = 0.05
    c.training.manifold.steps = 10
    c.training.manifold.lr = 0.05
    c.training.checkpoint_every = 400
    c.training.log_every = 50
    c.eval.num_examples = 500
    c.eval.num_on_manifold = 500
    c.eval.steps = 20
    c.eval.attempts = 2
    c.eval.lr = 0.02
    c.distances.num = 48
    c.distances.steps = 100
    c.distances.restarts = 8
    c.distances.all_fonts = 8
    c.distances.pca_train = 8_000
  elif preset == "paper":
    pass
  else:
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  return c
