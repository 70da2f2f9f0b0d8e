"""What each prediction defence costs the defender (model stealing, part 1).

  python -m experiments.defence_utility --config=configs/defence_utility.py:quick \\
      --workdir=workdirs/defence_utility [--config.victim_workdir=DIR]

Trains (or reuses) the victim, an outlier-exposure victim and a misinformation model
(Adaptive Misinformation) with train_classifier, then measures every defence of
`grid` on the victim's test set. Presets: `quick` (a few minutes on a 2-core CPU),
`paper` (the paper-size FONTS classifier and finer grids).
"""
import ml_collections

from configs.train_classifier import get_config as classifier_config


def victims_config(preset: str) -> ml_collections.ConfigDict:
  """The victim, the outlier-exposure victim and the misinformation model's settings
  (shared with configs/model_stealing.py)."""
  if preset not in ("quick", "paper"):
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.victim_workdir = ""        # a train_classifier workdir to reuse; '' trains WORKDIR/victim
  c.classifier = classifier_config(preset)   # victim, OE victim and misinformation model
  c.classifier.progress = False
  c.outlier_characters = "KLMNOPQRST"        # outlier exposure (the OE victim's training)
  c.outlier_weight = 0.5
  return c


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = victims_config(preset)
  c.ood_characters = "UVWXYZ"  # held-out characters: how often Adaptive Misinformation fires
  c.num_examples = 5000        # victim test images the utility is measured on
  c.key_mode = "content"
  c.chunk = 500
  c.progress = True
  # Defence -> {setting: values}; each value is one cell (settings not named: defaults).
  c.grid = ml_collections.ConfigDict({
      "none": {},
      "rounding": {"decimals": (0, 1, 2)},
      "topk": {"k": (1, 2, 3)},
      "label": {},
      "high_confidence": {"cutoff": (0.25, 0.5)},
      "reverse_sigmoid": {"beta": (0.2, 0.5, 0.7)},
      "logit_noise": {"sigma": (0.5, 1.0, 2.0)},
      "simplex_noise": {"eps": (0.1, 0.5, 1.0)},
      "mad": {"eps": (0.1, 0.5, 1.0)},
      "mad_argmax": {"eps": (0.1, 0.5, 1.0)},
      "mad_random": {"eps": (0.5,)},
      "mad_identity": {"eps": (0.5,)},
      "mad_argmin": {"eps": (0.5,)},
      "adaptive_misinformation": {"tau": (0.5, 0.7, 0.9)},
  })
  if preset == "quick":
    c.classifier.data.train_size, c.classifier.data.test_size = 10_000, 5_000
    c.classifier.training.epochs = 6
  else:
    c.num_examples = 28_000
    for name in ("mad", "mad_argmax", "simplex_noise"):
      c.grid[name].eps = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    c.grid.reverse_sigmoid.beta = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    c.grid.adaptive_misinformation.tau = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
  return c
