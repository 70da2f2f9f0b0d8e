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


def manifold_config() -> ml_collections.ConfigDict:
  """`training.manifold`: the on-manifold and deformation modes (rsec.modes.manifold).
  The paper: eta 0.3, 40 Adam steps, lr 0.005, half of every batch."""
  return ml_collections.ConfigDict(dict(
      eta=0.3, steps=40, lr=0.005, restarts=1,
      fraction=0.5,           # share of each batch perturbed, in (0, 1]
      vaegan_workdir="",      # train_vaegan workdir (on_manifold_learned)
      stn_eps=0.3,            # deformation box: identity +- stn_eps on each theta component
      latent_dim=0,           # expected VAE-GAN latent size (0: whatever was trained)
      latent_bound=2.0))


def training_config() -> ml_collections.ConfigDict:
  """`training`: the paper's optimiser and every mode's settings (one source: the
  robustness-vs-generalization grid starts from it too)."""
  return ml_collections.ConfigDict(dict(
      # normal | adversarial | adversarial_full | trades | on_manifold_* | stn_* |
      # outlier_exposure | misinformation (rsec.modes)
      mode="normal",
      # Adversarial modes: the attack (an rsec.attacks.ATTACKS name + its arguments).
      # The paper: Adam on delta, eps 0.3 L-inf, 40 iterations, highest-loss iterate.
      attack=dict(name="paper", eps=0.3, norm="linf", steps=40, lr=0.005, restarts=1,
                  select="max_loss"),
      adversarial_fraction=0.5,  # share of each batch made adversarial ('adversarial')
      trades_beta=6.0,        # TRADES' loss weight (attack.name 'pgd' or 'paper')
      manifold=manifold_config(),
      outlier_weight=0.5,     # outlier_exposure: weight of the uniform-posterior term
      batch_size=100,
      # Duration: `steps` > 0 counts optimizer steps; 0 counts `epochs` (passes over the
      # training set, round(epochs * (N // batch_size)) steps).
      epochs=8,
      steps=0,
      optimizer="adam",
      learning_rate=0.01,
      lr_decay=0.95,
      # The learning rate is multiplied by lr_decay every epoch (0: the paper's schedule)
      # or every k > 0 steps: with a fixed step budget, per-epoch decay makes small
      # training sets decay faster (N = 500: 0.95^160 after 800 steps; N = 8,000: 0.95^10).
      lr_decay_every=0,
      b1=0.5,
      b2=0.9,
      weight_decay=1e-4,
      steps_per_call=10,      # steps per compiled call (lax.scan)
      # 0: fast data parallelism (agrees across device counts and hosts to float
      # rounding). V > 0: deterministic reductions over V virtual shards, bit-identical on
      # any layout of them (V a multiple of the device count dividing batch_size; slower).
      virtual_shards=0,
      checkpoint_every=1000,  # steps
      log_every=50,           # steps
  ))


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  """The paper's setting (Stutz et al.: 112k / 28k FONTS, 20 epochs); `quick` shrinks it."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = data_config(train_size=112_000, test_size=28_000)
  c.model = ml_collections.ConfigDict(dict(name="paper_classifier"))
  c.training = training_config()
  c.training.epochs = 20
  c.eval = ml_collections.ConfigDict(dict(batch_size=500))
  c.progress = True

  if preset == "quick":
    c.data.train_size, c.data.test_size = 20_000, 5_000
    c.training.epochs = 8
    c.training.checkpoint_every = 500
  elif preset == "paper":
    pass
  else:
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  return c
