"""Adversarial training modes: perturb the right rows inside the ball, then the usual step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.train_classifier import get_config
from rsec.attacks import pgd
from rsec.data.sources import ClassificationData
from rsec import modes
from rsec.train_classifier import train_classifier
from tests.helpers import small_state, squares_data


def _config(mode, eps=0.3, steps=5):
  c = get_config("quick")
  c.training.mode = mode
  c.training.attack.eps = eps
  c.training.attack.steps = steps
  c.training.attack.lr = 0.05
  return c


@pytest.mark.parametrize("mode,rows", [("adversarial", slice(0, None, 2)),
                                       ("adversarial_full", slice(None))])
def test_perturbs_the_chosen_rows_inside_the_ball(mode, rows):
  state = small_state()
  data = squares_data(40)
  mode_fn = modes.make_mode(_config(mode), state.apply_fn)
  batch = {k: jnp.asarray(v) for k, v in data.items()}
  out = jax.jit(mode_fn.perturb)(state.variables, jax.random.key(0), batch)
  diff = np.abs(np.asarray(out["image"]) - data["image"]).reshape(40, -1).max(1)
  touched = np.zeros(40, bool)
  touched[rows] = True
  assert np.all(diff[~touched] == 0)
  assert np.mean(diff[touched] > 0) > 0.9
  assert diff.max() <= 0.3 + 1e-6
  assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
  np.testing.assert_array_equal(out["label"], data["label"])


def test_trades_stacks_clean_and_adversarial_and_has_its_loss():
  state = small_state()
  data = squares_data(40)
  mode = modes.make_mode(_config("trades", eps=0.1), state.apply_fn)
  batch = {k: jnp.asarray(v) for k, v in data.items()}
  out = mode.perturb(state.variables, jax.random.key(0), batch)
  assert out["image"].shape == (80, 16, 16, 1)
  np.testing.assert_array_equal(out["image"][:40], data["image"])
  assert float(jnp.abs(out["image"][40:] - data["image"]).max()) <= 0.1 + 1e-6
  logits = state.logits_fn()(out["image"])
  loss = mode.loss(logits, out)
  assert np.isfinite(float(loss)) and float(loss) > 0


def test_adversarial_training_is_more_robust_than_normal(tmp_path):
  """On data a model can fit, adversarial training (eps 0.15) resists PGD better."""
  d = squares_data(800, seed=1)
  test = squares_data(200, seed=2)
  data = ClassificationData(d, test, 10, {"name": "squares"})
  robust = {}
  for mode in ("normal", "adversarial"):
    c = _config(mode, eps=0.15, steps=7)
    c.data.train_size, c.data.test_size = 800, 200
    c.training.epochs = 3
    c.training.attack.lr = 0.03
    c.eval.batch_size = 100
    state, results = train_classifier(c, data, str(tmp_path / mode), progress=False)
    logits_fn = state.logits_fn()
    x_adv = pgd(0.15, steps=10)(logits_fn, jax.random.key(0), jnp.asarray(test["image"]),
                               jnp.asarray(test["label"]))
    robust[mode] = float(np.mean(np.argmax(np.asarray(logits_fn(x_adv)), 1) == test["label"]))
    assert results["test_accuracy"] > 0.8, (mode, results["test_accuracy"])
  assert robust["adversarial"] > robust["normal"] + 0.2, robust
