"""The train_vaegan entry point end to end on a tiny FONTS configuration."""
import json
import os

import numpy as np
import pytest

from configs.train_vaegan import get_config
from experiments import train_vaegan
from rsec.manifold import learned


def tiny_config():
  c = get_config("quick")
  c.data.train_size, c.data.test_size = 200, 40
  c.model.latent_dim, c.model.channels, c.model.disc_channels = 3, (4, 4, 4), (4, 4, 4)
  c.training.batch_size, c.training.epochs, c.training.steps_per_call = 4, 1, 5
  c.eval.batch_size, c.eval.num_images = 20, 2
  c.progress = False
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("train_vaegan"))
  return workdir, train_vaegan.run(tiny_config(), workdir)


def test_writes_everything_and_resumes(trained):
  workdir, results = trained
  for name in ("config.json", "metrics.jsonl", "results.json", "report.md",
               "reconstructions.png", "samples.png", "latent_box.npz"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved["steps"] == 5 and saved["num_classes"] == 10
  assert all(np.isfinite(saved[f"test_class_{c}_l2"]) for c in range(10))
  state, _ = learned.restore_vaegan(workdir, latent_dim=3, num_classes=10)
  assert state.num_models == 11 and int(state.step) == 5
  low, high = learned.load_latent_box(workdir)
  assert low.shape == high.shape == (10, 3) and np.all(low <= high)


def test_bad_configs_fail_before_training(tmp_path):
  c = tiny_config()
  c.training.batch_size = 40  # 200 examples: 20 per class < 40
  with pytest.raises(ValueError, match="batch_size"):
    train_vaegan.run(c, str(tmp_path / "a"))
  c = tiny_config()
  c.training.lr_decay = 1.5
  with pytest.raises(ValueError, match="config.training.lr_decay"):
    train_vaegan.run(c, str(tmp_path / "b"))
