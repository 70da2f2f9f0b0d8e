"""Knockoff stacks, the JBDA family and adversarial transfer (model stealing, part 2)."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.models.classifiers import MODELS
from rsec.stealing import jbda, knockoff as ko, transfer
from rsec.stealing.victim import Victim


def test_heldout_rows_nest_across_budgets():
  small, big = ko.heldout_rows(100, 0.1), ko.heldout_rows(1000, 0.1)
  np.testing.assert_array_equal(big[:100], small)
  assert small.sum() == 10 and not ko.heldout_rows(50, 0.0).any()


def test_augment_translates_within_the_shift():
  x = np.zeros((8, 12, 12, 1), np.float32)
  x[:, 5:7, 5:7] = 1.0
  out = ko.augment(2)(None, jax.random.key(0), {"image": jnp.asarray(x), "label": 0})
  moved = np.asarray(out["image"])
  assert moved.shape == x.shape and out["label"] == 0
  np.testing.assert_allclose(moved.sum((1, 2, 3)), 4.0)      # the blob moved, kept whole
  ys, xs = np.nonzero(moved[..., 0].max(0))
  assert ys.min() >= 3 and ys.max() <= 8 and xs.min() >= 3 and xs.max() <= 8
  assert len({tuple(np.argwhere(m[..., 0])[0]) for m in moved}) > 1
  assert ko.augment(0)(None, jax.random.key(0), {"image": x})["image"] is x


class _Fixed32(nn.Module):
  """Only takes 32x32 inputs (a stand-in for an architecture that cannot read FONTS-28)."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], 32, 32)[:, :, 0])


MODELS.register("test_fixed32")(_Fixed32)


def test_architecture_check():
  ko.check_architecture("resnet", 10, (28, 28, 1))
  ko.check_architecture("mlp", 10, (28, 28, 1))
  with pytest.raises(ValueError, match="does not accept the victim's input shape"):
    ko.check_architecture("test_fixed32", 10, (28, 28, 1))
  with pytest.raises(ValueError, match="model"):
    ko.check_architecture("vgg99", 10, (28, 28, 1))


def _data(n=160, k=4, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((n, 12, 12, 1), np.float32)
  # A learnable rule: the class is the brightest quadrant.
  q = np.stack([x[:, :6, :6].mean((1, 2, 3)), x[:, :6, 6:].mean((1, 2, 3)),
                x[:, 6:, :6].mean((1, 2, 3)), x[:, 6:, 6:].mean((1, 2, 3))], 1)
  return {"image": x, "label": np.eye(k, dtype=np.float32)[q.argmax(1)]}


SPEC = ko.KnockoffSpec(arch="mlp", steps=24, batch_size=16, learning_rate=3e-3, shift=1,
                       eval_every=8, steps_per_call=4)


def test_stacked_models_train_independently_and_select_on_their_heldout_rows():
  data = _data()
  sets = [np.arange(0, 80), np.arange(80, 160)]
  held = [np.arange(0, 80)[ko.heldout_rows(80, 0.2)], np.arange(80, 160)[ko.heldout_rows(80, 0.2)]]
  train = [s[~ko.heldout_rows(80, 0.2)] for s in sets]
  keys = [jax.random.key(1), jax.random.key(2)]
  apply_fn, both, stats = ko.train_stack(SPEC, 4, data, train, held, keys,
                                         key=jax.random.key(0), progress=False)
  _, alone, _ = ko.train_stack(SPEC, 4, data, train[:1], held[:1], keys[:1],
                               key=jax.random.key(0), progress=False)
  # Model 0 of the pair is the model trained alone: nothing leaks between stacked models.
  for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(both)):
    np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[0], rtol=2e-4, atol=2e-5)
  logits = ko.predict_stack(apply_fn, both, data["image"])
  assert logits.shape == (2, 160, 4)
  best = jax.device_get(stats.best)
  for m in range(2):   # the selected score is model m's agreement on its own held-out rows
    agree = np.mean(logits[m, held[m]].argmax(1) == data["label"][held[m]].argmax(1))
    assert best.score[m] == pytest.approx(agree, abs=1e-6)
    assert best.step[m] in (8, 16, 24)


def test_jacobian_steps_stay_in_the_box_and_follow_the_sign(paper_cnn):
  aux, logits_fn = paper_cnn
  rng = np.random.default_rng(0)
  x = rng.random((16, 28, 28, 1), np.float32)
  x[:4] = 0.0
  x[4:8] = 1.0
  y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]
  prob = lambda z: np.take_along_axis(np.asarray(jax.nn.softmax(logits_fn(z))),
                                      y.argmax(1)[:, None], 1)[:, 0]
  for variant in jbda.VARIANTS:
    lam = 0.01
    up = np.asarray(jbda.jacobian_step(aux.apply_fn, aux.variables, jnp.asarray(x),
                                       jnp.asarray(y), jnp.float32(lam), variant, 3))
    k = 3 if variant == "jbtopk" else 1
    assert up.shape == (k * 16, 28, 28, 1)
    assert up.min() >= 0.0 and up.max() <= 1.0
    assert np.abs(up - np.tile(x, (k, 1, 1, 1))).max() <= lam + 1e-6
  up = np.asarray(jbda.jacobian_step(aux.apply_fn, aux.variables, jnp.asarray(x), jnp.asarray(y),
                                     jnp.float32(0.01), "jbda"))
  down = np.asarray(jbda.jacobian_step(aux.apply_fn, aux.variables, jnp.asarray(x),
                                       jnp.asarray(y), jnp.float32(-0.01), "jbda"))
  # (All-black rows sit where ReLU's gradient is 0: they do not move; the others follow
  # the sign of lambda.)
  moving = slice(4, None)
  assert np.all(prob(up)[moving] > prob(x)[moving])
  assert np.all(prob(down)[moving] < prob(x)[moving])


def test_seed_set():
  labels = np.repeat(np.arange(3), 4)
  idx = jbda.seed_set(np.zeros((12, 2)), labels, 2)
  np.testing.assert_array_equal(labels[idx], [0, 0, 1, 1, 2, 2])
  with pytest.raises(ValueError, match="non-empty seed set"):
    jbda.seed_set(np.zeros((12, 2)), labels, 0)
  with pytest.raises(ValueError, match="fewer than"):
    jbda.seed_set(np.zeros((12, 2)), labels, 5)


def test_jbda_stream_grows_to_the_budget_from_its_seeds(paper_cnn):
  _, logits_fn = paper_cnn
  victim = Victim(logits_fn, (28, 28, 1), budget=70, chunk=64)
  seeds = np.random.default_rng(1).random((20, 28, 28, 1), np.float32)
  spec = ko.KnockoffSpec(batch_size=8, steps_per_call=2)
  s, images = jbda.collect_jbda(victim, seeds, 70, "jbtopk", spec, k=2, round_steps=2,
                                key=jax.random.key(0))
  # 20 seeds, + 2 x 20 (round 0), + the first 10 of round 1's 120: exactly the budget.
  assert images.shape == (70, 28, 28, 1) and s.outputs.shape == (70, 10)
  assert victim.queries_used == 70
  np.testing.assert_array_equal(images[:20], seeds)
  np.testing.assert_allclose(s.outputs, victim.respond(images)["outputs"], atol=1e-6)
  with pytest.raises(ValueError, match="non-empty seed set"):
    jbda.collect_jbda(victim, seeds[:0], 10, "jbda", spec, key=jax.random.key(0))
  with pytest.raises(ValueError, match="remaining 0 queries"):
    jbda.collect_jbda(victim, seeds, 10, "jbda", spec, key=jax.random.key(0))


def test_transfer_from_the_victim_itself_is_white_box(paper_cnn):
  aux, logits_fn = paper_cnn
  x = np.random.default_rng(2).random((8, 28, 28, 1), np.float32)
  y = np.asarray(jnp.argmax(logits_fn(x), -1))
  stacked = jax.tree.map(lambda a: jnp.stack([a, a]), aux.variables)
  adv = transfer.stack_adversarials(aux.apply_fn, stacked, x, y, eps=0.3, steps=5,
                                    key=jax.random.key(0))
  assert adv.shape == (2, 8, 28, 28, 1) and np.abs(adv - x[None]).max() <= 0.3 + 1e-6
  rate = transfer.transfer_success(logits_fn, adv, y)
  assert rate.shape == (2,) and rate[0] == rate[1] and rate[0] > 0.5


def test_a_stack_resumes_from_its_checkpoint_bit_identical(tmp_path):
  """Kept checkpoints are steps 16 and 24; deleting 24 makes the rerun restore step 16
  (state and best-so-far selection) and train the last 8 steps again."""
  import shutil
  from rsec.training.checkpoint import Checkpointer
  data = _data(seed=3)
  train, held = [np.arange(0, 128)], [np.arange(128, 160)]
  keys = [jax.random.key(4)]

  def run(directory):
    ckpt = Checkpointer(str(directory), {"cells": 1})
    try:
      return ko.train_stack(SPEC, 4, data, train, held, keys, key=jax.random.key(5),
                            checkpointer=ckpt, progress=False)
    finally:
      ckpt.close()
  _, ref, ref_stats = run(tmp_path / "a")
  assert sorted(os.listdir(tmp_path / "a")) == ["16", "24"]
  shutil.rmtree(tmp_path / "a" / "24")
  _, again, stats = run(tmp_path / "a")
  assert stats.steps_run == 8
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(ref_stats.best.step), np.asarray(stats.best.step))
