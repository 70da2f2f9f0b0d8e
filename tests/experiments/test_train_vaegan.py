"""The train_vaegan entry point end to end on a tiny FONTS configuration."""
import json
import os

import numpy as np
import pytest

from rsec.studies import train_vaegan
from rsec.manifold import learned
from tests.experiments.conftest import tiny_vaegan_config as tiny_config


@pytest.fixture(scope="module")
def trained(tiny_vaegan):
  return tiny_vaegan


def test_writes_everything(trained):
  """(Resume: tests/reliability/test_kill_resume.py kills and reruns a real run.)"""
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
