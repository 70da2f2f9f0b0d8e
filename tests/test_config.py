"""Config helpers: diffs between configs and the rerun guard."""
import os

import ml_collections
import pytest

from rsec import config as cfg_lib


def _config(**training):
  return ml_collections.ConfigDict(dict(
      seed=0, progress=True, training=dict(dict(steps=10, sizes=(1, 2)), **training)))


def test_changed_keys_names_every_difference():
  a, b = _config(), _config(steps=20, extra=1)
  assert cfg_lib.changed_keys(a, a) == []
  assert cfg_lib.changed_keys(a, b) == ["training.extra", "training.steps"]
  # Tuples and the lists JSON turns them into are the same value.
  assert cfg_lib.changed_keys({"t": [1, 2]}, {"t": (1, 2)}) == []


def test_check_same_run(tmp_path):
  workdir = str(tmp_path)
  cfg_lib.check_same_run(workdir, _config())  # nothing there yet
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(cfg_lib.to_json(_config()))
  cfg_lib.check_same_run(workdir, _config())
  p = _config()
  p.progress = False
  cfg_lib.check_same_run(workdir, p)  # ignored by default
  with pytest.raises(ValueError, match=r"training\.steps"):
    cfg_lib.check_same_run(workdir, _config(steps=11))
