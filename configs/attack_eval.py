"""Robustness evaluation of a trained classifier (the checkpoint train_classifier left).

  python -m experiments.attack_eval --config=configs/attack_eval.py:quick \
      --config.classifier_workdir=workdirs/train_classifier --workdir=workdirs/attack_eval

`attacks` maps a display name to an rsec.attacks.ATTACKS name and its arguments; the
`worst_case` cascade over all of them is always added. Presets: quick (CPU minutes), paper
(Stutz et al.'s protocol: first 1,000 test images, 5 attempts, 40 Adam iterations).
"""
import ml_collections


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.classifier_workdir = ""   # required: a train_classifier workdir
  c.seed = 0
  c.num_examples = 1000       # the first N test examples
  c.batch_size = 500
  c.attacks = ml_collections.ConfigDict(dict(
      fgsm=dict(name="fgsm", eps=0.3),
      pgd=dict(name="pgd", eps=0.3, steps=40, restarts=1),
      paper=dict(name="paper", eps=0.3, steps=40, lr=0.005, restarts=5),
      apgd_ce=dict(name="apgd_ce", eps=0.3, steps=100),
      apgd_dlr=dict(name="apgd_dlr", eps=0.3, steps=100),
      square=dict(name="square", eps=0.3, steps=1000),
      l2_paper=dict(name="paper", eps=1.5, norm="l2", steps=40, lr=0.005, restarts=5),
  ))
  c.cascade = ("apgd_ce", "apgd_dlr", "paper", "square")  # run on still-robust points only
  # Robust accuracy vs eps (PGD, L-inf).
  c.curve = ml_collections.ConfigDict(dict(
      attack=dict(name="pgd", norm="linf", steps=40, restarts=1),
      eps_grid=(0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4),
  ))
  c.sanity = ml_collections.ConfigDict(dict(eps=0.3, norm="linf", steps=20,
                                            square_steps=300, num_examples=200))
  if preset == "quick":
    c.num_examples = 500
    c.attacks.apgd_ce.steps = 50
    c.attacks.apgd_dlr.steps = 50
    c.attacks.square.steps = 300
    del c.attacks["l2_paper"]
    c.curve.attack.steps = 20
  elif preset == "paper":
    pass
  else:
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  return c
