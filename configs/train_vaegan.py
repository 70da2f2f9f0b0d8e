"""Train the class-specific VAE-GANs (one per class) and the class-agnostic one on FONTS.

  python -m experiments.train_vaegan --config=configs/train_vaegan.py:quick \
      --workdir=/tmp/rsec/vaegan [--config.training.epochs=2]

Presets: `quick` (narrower networks, a few minutes on a 2-core CPU), `paper` (Stutz et al.,
CVPR 2019: channels 64/128/256, latent 10, beta 3 for FONTS, gamma 1, Adam (0.5, 0.9),
lr 0.005 x 0.9 per epoch, weight decay 1e-4, batch 100).
"""
import ml_collections

from configs.train_classifier import data_config


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = data_config(train_size=112_000, test_size=28_000)
  c.model = ml_collections.ConfigDict(dict(
      latent_dim=10,                 # 25 for CelebA-sized images
      channels=(64, 128, 256),       # encoder; the decoder mirrors them
      disc_channels=(16, 32, 64),
  ))
  c.training = ml_collections.ConfigDict(dict(
      batch_size=100,                # per model (every class model and the agnostic one)
      epochs=20,                     # passes over one class's examples
      learning_rate=0.005,
      lr_decay=0.9,                  # per epoch
      b1=0.5,
      b2=0.9,
      weight_decay=1e-4,
      beta=3.0,                      # L1 reconstruction weight (EMNIST 2.25, Fashion 2.75)
      gamma=1.0,                     # adversarial weight
      steps_per_call=10,
      checkpoint_every=200,
      log_every=20,
  ))
  c.eval = ml_collections.ConfigDict(dict(batch_size=250, num_images=8))
  c.progress = True

  if preset == "quick":
    c.data.train_size = 6_400
    c.data.test_size = 500
    c.model.channels = (16, 32, 64)
    c.model.disc_channels = (8, 16, 32)
    c.training.batch_size = 32
    c.training.epochs = 24         # 20 steps per epoch: 480 steps
    c.training.checkpoint_every = 100
  elif preset == "paper":
    pass
  else:
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  return c
