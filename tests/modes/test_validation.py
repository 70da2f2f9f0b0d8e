"""Mode settings are validated before training: no silent fall-back to normal training."""
import jax
import numpy as np
import pytest

from configs.train_classifier import get_config
from rsec import modes
from rsec.train_classifier import num_steps, validate_train_config
from rsec.training.classifier import build_state


def _config(mode, **training):
  c = get_config("quick")
  c.training.mode = mode
  c.training.update(training)
  return c


@pytest.mark.parametrize("fraction", [-0.5, 0, 0.004, 1.5])
@pytest.mark.parametrize("mode", ["on_manifold_true", "stn_augment", "stn_adversarial"])
def test_manifold_fractions_that_perturb_nothing_or_repeat_rows_fail(mode, fraction):
  c = _config(mode)
  c.training.manifold.fraction = fraction
  with pytest.raises(ValueError, match=r"config\.training\.manifold\.fraction"):
    validate_train_config(c)


def test_adversarial_fraction_is_checked_against_the_batch():
  with pytest.raises(ValueError, match=r"adversarial_fraction=0.004 perturbs no row"):
    validate_train_config(_config("adversarial", adversarial_fraction=0.004))
  validate_train_config(_config("adversarial", adversarial_fraction=0.01))   # one row of 100


def test_spread_rows_refuses_empty_selections():
  np.testing.assert_array_equal(modes.spread_rows(8, 0.5), [0, 2, 4, 6])
  with pytest.raises(ValueError, match="perturbs no row"):
    modes.spread_rows(100, 0.004)


def test_manifold_settings_are_range_checked():
  c = _config("stn_augment")
  c.training.manifold.steps = 0
  with pytest.raises(ValueError, match=r"config\.training\.manifold\.steps"):
    validate_train_config(c)
  c = _config("on_manifold_learned")
  with pytest.raises(ValueError, match="vaegan_workdir is empty"):
    validate_train_config(c)


def test_trades_runs_the_configured_attack_or_refuses_it():
  validate_train_config(_config("trades"))                     # attack.name 'paper'
  c = _config("trades")
  c.training.attack = dict(name="fgsm", eps=0.3)
  with pytest.raises(ValueError, match=r"config\.training\.attack\.name must be one of \['paper', 'pgd'\]"):
    validate_train_config(c)
  state = build_state(c, 10, (28, 28, 1), 1)
  with pytest.raises(ValueError, match="training mode 'trades' runs"):
    modes.make_mode(c, state.apply_fn)
  c = _config("trades", trades_beta=-1.0)
  with pytest.raises(ValueError, match=r"config\.training\.trades_beta"):
    validate_train_config(c)


@pytest.mark.parametrize("mode", ["context_augment", "stuff_swap"])
def test_scenes_modes_are_registered_and_refused_for_fonts(mode):
  assert mode in modes.mode_names()
  with pytest.raises(ValueError, match="is a SCENES mode"):
    validate_train_config(_config(mode))


def test_duration_in_steps_or_epochs_and_the_decay_period():
  c = _config("normal")
  assert num_steps(c, 1_050) == 8 * 10                         # epochs * (N // batch)
  c.training.steps = 123
  assert num_steps(c, 1_050) == 123
  c.training.lr_decay_every = -1
  with pytest.raises(ValueError, match="lr_decay_every"):
    validate_train_config(c)

  def updates(every, steps_per_epoch):
    """The 12th update of a constant gradient: the learning rate after 11 steps."""
    tx = build_state(_config("normal", lr_decay_every=every), 10, (28, 28, 1),
                     steps_per_epoch).tx
    p = {"w": jax.numpy.zeros(3)}
    g = {"w": jax.numpy.ones(3)}
    opt = tx.init(p)
    for _ in range(12):
      u, opt = tx.update(g, opt, p)
    return np.asarray(u["w"])
  np.testing.assert_array_equal(updates(0, 5), updates(5, 99))
  assert not np.allclose(updates(0, 5), updates(3, 5))
