"""Train and evaluate a classifier on FONTS (or a local TFDS image classification set).

  python -m experiments.train_classifier --config=configs/train_classifier.py:quick \
      --workdir=/tmp/fonts_quick [--config.model.name=mlp]

Presets: `quick` (a few minutes on a 2-core CPU), `paper` (Stutz et al., CVPR 2019).
"""
import ml_collections


def data_config(train_size: int, test_size: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="fonts",           # 'fonts', or a TFDS name read from data_dir ('mnist', ...)
      font_paths=(),          # TTF/OTF files or folders; () = default_font_paths()
      characters="ABCDEFGHIJ",
      # Outlier exposure (training.mode=outlier_exposure): train_size more images of
      # these characters join the training set, labelled -1. '' = none.
      outlier_characters="",
      size=28,
      difficulty="hard",      # easy | moderate | hard (theta ranges)
      font_seed=0,            # the seeded permutation of the sorted font list
      cache_dir="~/.cache/rsec/prototypes",
      data_dir="",            # for TFDS sets
      train_size=train_size,
      test_size=test_size,
  ))


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = data_config(train_size=20_000, test_size=5_000)
  c.model = ml_collections.ConfigDict(dict(name="paper_classifier"))
  c.training = ml_collections.ConfigDict(dict(
      # normal | adversarial | adversarial_full | trades | on_manifold_* | stn_* |
      # outlier_exposure | misinformation (rsec.training.modes)
      mode="normal",
      # Adversarial modes: the attack (an rsec.attacks.ATTACKS name + its arguments).
      # The paper: Adam on delta, eps 0.3 L-inf, 40 iterations, highest-loss iterate.
      attack=dict(name="paper", eps=0.3, norm="linf", steps=40, lr=0.005, restarts=1,
                  select="max_loss"),
      adversarial_fraction=0.5,  # share of each batch made adversarial ('adversarial')
      trades_beta=6.0,
      outlier_weight=0.5,     # outlier_exposure: weight of the uniform-posterior term
      batch_size=100,
      epochs=8,
      optimizer="adam",
      learning_rate=0.01,
      lr_decay=0.95,          # per epoch
      b1=0.5,
      b2=0.9,
      weight_decay=1e-4,
      steps_per_call=10,      # steps per compiled call (lax.scan)
      # 0: fast data parallelism (agrees across device counts and hosts to float
      # rounding). V > 0: deterministic reductions over V virtual shards, bit-identical on
      # any layout of them (V a multiple of the device count dividing batch_size; slower).
      virtual_shards=0,
      checkpoint_every=500,   # steps
      log_every=50,           # steps
  ))
  c.eval = ml_collections.ConfigDict(dict(batch_size=500))
  c.progress = True

  if preset == "quick":
    pass
  elif preset == "paper":
    c.data.train_size = 112_000
    c.data.test_size = 28_000
    c.training.epochs = 20
    c.training.checkpoint_every = 1000
  else:
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  return c
