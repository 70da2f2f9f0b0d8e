"""On-manifold and deformation training modes: half the batch perturbed, labels kept,
clear errors before training for missing or mismatched VAE-GANs."""
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.train_classifier import get_config
from configs.train_vaegan import get_config as vaegan_config
from rsec import config as cfg_lib
from rsec.data.fonts_dataset import theta_range
from rsec.data import warp
from rsec.manifold import learned
from rsec.manifold.train_vaegan import build_vaegan_state, vaegan_meta
from rsec import modes
from rsec.training.checkpoint import Checkpointer
from tests.manifold.conftest import make_prototypes
from tests.helpers import small_state, squares_data

N = 8


def _config(mode, **manifold):
  c = get_config("quick")
  c.training.mode = mode
  c.training.manifold.update(dict(steps=3, lr=0.05, **manifold))
  c.data.size = 16
  return c


def _batch():
  d = squares_data(N)
  protos = make_prototypes(fonts=2, chars=10)
  font = np.arange(N) % 2
  low, high = theta_range("hard")
  theta = np.asarray(jax.random.uniform(jax.random.key(0), (N, 6), minval=low, maxval=high))
  image = np.asarray(warp.render_batch(protos, font, d["label"], theta))[..., None]
  return protos, {"image": jnp.asarray(image), "label": jnp.asarray(d["label"]),
                  "font": jnp.asarray(font, jnp.int32), "theta": jnp.asarray(theta)}


def _check_half(out, batch):
  diff = np.abs(np.asarray(out["image"]) - np.asarray(batch["image"])).reshape(N, -1).max(1)
  assert np.all(diff[1::2] == 0), diff
  assert np.mean(diff[0::2] > 0) >= 0.75, diff
  np.testing.assert_array_equal(out["label"], batch["label"])
  assert out["image"].shape == batch["image"].shape


@pytest.fixture()
def fake_prototypes(monkeypatch):
  protos, batch = _batch()
  import rsec.data.sources as sources
  monkeypatch.setattr(sources, "load_prototypes_from_config",
                      lambda c: types.SimpleNamespace(images=protos))
  return protos, batch


@pytest.mark.parametrize("mode", ["stn_augment", "stn_adversarial", "on_manifold_true"])
def test_modes_perturb_half_the_batch_and_keep_labels(mode, fake_prototypes):
  protos, batch = fake_prototypes
  state = small_state()
  m = modes.make_mode(_config(mode), state.apply_fn)
  out = jax.jit(m.perturb)(state.variables, jax.random.key(1), batch)
  _check_half(out, batch)


def test_on_manifold_true_renders_only_inside_the_theta_range(fake_prototypes, monkeypatch):
  """Every image the theta attack renders has its theta in the 'hard' box, and each
  perturbed row is one of those renders (not a pixel-space edit of one).

  The batch's thetas start outside the box on every component, so a mode that skipped
  clipping the origin, or projecting the attack's steps, would render outside it.
  """
  from rsec.manifold import parametrisations
  protos, batch = fake_prototypes
  low, high = theta_range("hard")
  batch = dict(batch, theta=jnp.asarray(np.where(np.arange(6) % 2, high + 0.5, low - 0.5)
                                        [None].repeat(N, 0), jnp.float32))
  rendered = []  # (font, char, theta) of every render, [rows] / [rows, 6]
  true_manifold = parametrisations.true_manifold

  def spying_true_manifold(images, lo, hi):
    p = true_manifold(images, lo, hi)

    def to_image(u, o):
      jax.debug.callback(lambda f, c, t: rendered.append(tuple(map(np.asarray, (f, c, t)))),
                         o["font"], o["char"], o["theta0"] + u)
      return p.to_image(u, o)
    return p._replace(to_image=to_image)

  monkeypatch.setattr(parametrisations, "true_manifold", spying_true_manifold)
  state = small_state()
  m = modes.make_mode(_config("on_manifold_true"), state.apply_fn)
  out = jax.jit(m.perturb)(state.variables, jax.random.key(1), batch)
  _check_half(out, batch)
  assert rendered, "the attack rendered nothing"
  thetas = np.stack([t for _, _, t in rendered])       # [calls, rows, 6]
  assert np.all(thetas >= low - 1e-6) and np.all(thetas <= high + 1e-6)
  assert np.ptp(thetas, axis=0).max() > 0              # the attack moved theta
  # Each perturbed row (the even ones) is the render of one of the visited thetas.
  image = np.asarray(out["image"])[0::2, ..., 0]
  font, char = rendered[0][0], rendered[0][1]
  for r in range(len(image)):
    candidates = np.asarray(warp.render_batch(
        protos, np.full(len(thetas), font[r]), np.full(len(thetas), char[r]), thetas[:, r]))
    assert np.abs(candidates - image[r]).reshape(len(thetas), -1).max(1).min() < 1e-5, r


def test_on_manifold_true_needs_font_and_theta(fake_prototypes):
  state = small_state()
  m = modes.make_mode(_config("on_manifold_true"), state.apply_fn)
  batch = {k: v for k, v in fake_prototypes[1].items() if k != "font"}
  with pytest.raises(ValueError, match="font"):
    m.perturb(state.variables, jax.random.key(1), batch)


@pytest.fixture(scope="module")
def vaegan_dir(tmp_path_factory):
  """A tiny untrained VAE-GAN checkpoint as train_vaegan leaves it (10 classes, 16 x 16)."""
  d = str(tmp_path_factory.mktemp("vaegan"))
  c = vaegan_config("quick")
  c.model.latent_dim, c.model.channels, c.model.disc_channels = 3, (4, 4, 4), (4, 4, 4)
  c.data.size = 16
  with open(os.path.join(d, "config.json"), "w") as f:
    f.write(cfg_lib.to_json(c))
  state = build_vaegan_state(c, 10, (16, 16, 1))
  ckpt = Checkpointer(os.path.join(d, "checkpoints"), vaegan_meta(c, 10, (16, 16, 1)))
  ckpt.save(state)
  ckpt.close()
  learned.save_latent_box(d, -np.ones((10, 3), np.float32), np.ones((10, 3), np.float32))
  return d


def test_on_manifold_learned_perturbs_half_with_decoder_images(vaegan_dir):
  _, batch = _batch()
  state = small_state()
  m = modes.make_mode(_config("on_manifold_learned", vaegan_workdir=vaegan_dir),
                      state.apply_fn)
  out = jax.jit(m.perturb)(state.variables, jax.random.key(1), batch)
  _check_half(out, batch)
  w = np.asarray(out["weight"])
  assert np.all(w[1::2] == 1) and set(np.unique(w)) <= {0.0, 1.0}
  loss = m.loss(jnp.zeros((N, 10)), out)
  assert np.isfinite(float(loss))


def test_missing_or_mismatched_vaegan_is_a_clear_error(vaegan_dir, tmp_path):
  state = small_state()
  with pytest.raises(ValueError, match="experiments.train_vaegan"):
    modes.make_mode(_config("on_manifold_learned", vaegan_workdir=str(tmp_path)),
                    state.apply_fn)
  with pytest.raises(ValueError, match="experiments.train_vaegan"):
    modes.make_mode(_config("on_manifold_learned"), state.apply_fn)
  with pytest.raises(ValueError, match="latent size 3"):
    modes.make_mode(_config("on_manifold_learned", vaegan_workdir=vaegan_dir, latent_dim=10),
                    state.apply_fn)
  with pytest.raises(ValueError, match="10 class models"):
    learned.restore_vaegan(vaegan_dir, num_classes=3)


def test_unknown_mode_and_registration():
  names = modes.mode_names()
  for n in ("on_manifold_true", "on_manifold_learned", "stn_augment", "stn_adversarial"):
    assert n in names
  with pytest.raises(ValueError, match="training mode"):
    modes.make_mode(_config("on_manifold_fake"), lambda *a, **k: None)
