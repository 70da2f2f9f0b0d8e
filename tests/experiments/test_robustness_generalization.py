"""The robustness-vs-generalization experiment end to end on a tiny grid, and its bad input."""
import json
import os

import numpy as np
import pytest

from configs.robustness_generalization import get_config
from rsec.studies import robustness_generalization as rg

# Compilation dominates: adversarial and on_manifold_true training are covered in
# tests/training and tests/manifold; the claims they feed are left out here.
MODES = ("normal", "on_manifold_learned")


def tiny_config(vaegan_workdir: str):
  c = get_config("quick")
  c.data.train_size, c.data.test_size = 80, 40
  c.model.name = "mlp"
  c.modes = MODES
  c.train_sizes = (40, 80)
  c.training.update(steps=4, batch_size=20, steps_per_call=2, checkpoint_every=2, log_every=2)
  c.training.attack.steps = 2
  c.training.manifold.steps = 2
  c.training.manifold.latent_dim = 3
  c.eval.update(batch_size=20, num_examples=20, num_on_manifold=20, steps=2, attempts=1)
  c.distances.update(num=4, steps=5, restarts=2, pca_train=80, pca_components=10,
                     pca_neighbours=5)
  c.vaegan_workdir = vaegan_workdir
  c.progress = False
  return c


@pytest.fixture(scope="module")
def ran(tiny_vaegan, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rg"))
  return workdir, rg.run(tiny_config(tiny_vaegan[0]), workdir)


@pytest.mark.slow
def test_grid_report_and_claims(ran):
  workdir, results = ran
  for name in ("config.json", "results.json", "report.md", "vs_n.png", "success_vs_error.png",
               "distances.png", "examples.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert len(results["rows"]) == len(MODES) * 2
  for row in results["rows"]:
    assert 0 <= row["test_error"] <= 1
    for kind in ("regular", "true", "learned"):
      r = row[f"{kind}_success_rate"]
      assert np.isnan(r) or 0 <= r <= row[f"{kind}_success_rate_any"] <= 1
  cl = results["claims"]
  for key in ("regular_leave_manifold", "orthogonal_fraction", "on_manifold_success_normal",
              "on_manifold_training_gain", "success_error_pearson_r"):
    assert key in cl, key
  assert "off_manifold_training_error_gap" not in cl  # no 'adversarial' mode in the grid
  assert set(cl["on_manifold_training_gain"]) == {"on_manifold_learned"}
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved["claims"]["on_manifold_success_normal"].keys() == {"true", "learned"}
  report = open(os.path.join(workdir, "report.md")).read()
  assert "## Claims" in report and "1. Regular adversarial examples" in report


@pytest.mark.slow
def test_rerun_skips_finished_cells(ran, tiny_vaegan):
  workdir, results = ran
  cells = os.path.join(workdir, "cells")
  stamps = {d: os.path.getmtime(os.path.join(cells, d, "results.json"))
            for d in os.listdir(cells)}
  again = rg.run(tiny_config(tiny_vaegan[0]), workdir)
  assert {d: os.path.getmtime(os.path.join(cells, d, "results.json"))
          for d in os.listdir(cells)} == stamps
  assert json.dumps(again["claims"], sort_keys=True) == json.dumps(results["claims"],
                                                                  sort_keys=True)


@pytest.mark.parametrize("change, match", [
    (lambda c: setattr(c, "modes", ("normal", "on_manifold_teleport")), "on_manifold_teleport"),
    (lambda c: setattr(c, "modes", ("adversarial",)), "'normal'"),
    (lambda c: setattr(c, "train_sizes", (40, 400)), "larger than the data"),
    (lambda c: setattr(c, "train_sizes", (10,)), "train_sizes"),
    (lambda c: setattr(c.eval, "num_on_manifold", 400), "test_size"),
    (lambda c: setattr(c.training.manifold, "latent_dim", 5), "latent size 3"),
    (lambda c: setattr(c, "vaegan_workdir", "/nonexistent/vaegan"),
     "experiments.train_vaegan"),
    (lambda c: setattr(c.distances, "model_train_size", 50), "model_train_size"),
])
def test_bad_input_fails_before_any_training(tiny_vaegan, tmp_path, change, match):
  c = tiny_config(tiny_vaegan[0])
  change(c)
  workdir = str(tmp_path / "rg")
  with pytest.raises(ValueError, match=match):
    rg.run(c, workdir)
  assert not os.path.exists(workdir)  # nothing written


@pytest.mark.slow
def test_rerun_with_another_config_is_refused(ran, tiny_vaegan):
  workdir, _ = ran
  c = tiny_config(tiny_vaegan[0])
  c.training.steps = 6
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(ValueError, match="training.steps"):
    rg.run(c, workdir)
  assert open(os.path.join(workdir, "config.json")).read() == before


@pytest.mark.parametrize("train_size", [250, 300, 40_000])
def test_every_cell_trains_the_configured_steps(train_size):
  """Every N trains training.steps steps (N need not be a multiple of the batch)."""
  from rsec.train_classifier import num_steps
  c = get_config("paper")
  tc = rg.cell_config(c, "normal", train_size, 0, "unused")
  assert num_steps(tc, train_size) == c.training.steps == 20_000
