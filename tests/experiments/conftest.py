"""A tiny trained VAE-GAN shared by the entry-point tests that need learned manifolds."""
import pytest

from configs.train_vaegan import get_config
from rsec.studies import train_vaegan


def tiny_vaegan_config():
  c = get_config("quick")
  c.data.train_size, c.data.test_size = 200, 40
  c.model.latent_dim, c.model.channels, c.model.disc_channels = 3, (4, 4, 4), (4, 4, 4)
  c.training.batch_size, c.training.epochs, c.training.steps_per_call = 4, 1, 5
  c.eval.batch_size, c.eval.num_images = 20, 2
  c.progress = False
  return c


@pytest.fixture(scope="session")
def tiny_vaegan(tmp_path_factory):
  """(workdir, results) of `train_vaegan.run` on the tiny config (latent size 3)."""
  workdir = str(tmp_path_factory.mktemp("train_vaegan"))
  return workdir, train_vaegan.run(tiny_vaegan_config(), workdir)
