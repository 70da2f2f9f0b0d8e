"""SCENES: determinism, exact oracle removal, context statistics, splits, bad input."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.data import scene_rules as R
from rsec.data import scenes

N = 128


@pytest.fixture(scope="module")
def train():
  return scenes.scene_split("train", N, seed=0, size=64)


def test_shapes_and_ranges(train):
  assert train["image"].shape == (N, 64, 64, 3) and train["image"].dtype == np.float32
  assert 0 <= train["image"].min() and train["image"].max() <= 1
  assert train["masks"].shape == (N, scenes.MAX_OBJECTS, 64, 64)
  assert train["labels"].shape == (N, R.NUM_THINGS)
  assert train["semantic"].min() >= 0 and train["semantic"].max() < R.NUM_LABELS
  # Every image has at least one visible thing, and labels agree with the masks.
  assert (train["labels"].sum(1) >= 1).mean() > 0.95
  thing_pixels = train["semantic"] < R.NUM_THINGS
  np.testing.assert_array_equal(thing_pixels, train["instance"] >= 0)
  np.testing.assert_array_equal(train["masks"].any(1), train["instance"] >= 0)


def test_deterministic_and_splits_differ(train):
  again = scenes.scene_split("train", N, seed=0, size=64)
  np.testing.assert_array_equal(again["image"], train["image"])
  test = scenes.scene_split("test", N, seed=0, size=64)
  assert np.abs(test["image"] - train["image"]).mean() > 0.01


def test_oracle_removal_is_exact(train):
  layouts = jax.tree.map(lambda a: a[:32], train["layout"])
  remove = np.zeros((32, scenes.MAX_OBJECTS), bool)
  remove[:, 0] = True
  out = scenes.oracle_removal(layouts, jnp.asarray(remove))
  img, m = np.asarray(out["image"]), train["masks"][:32, 0]
  # Outside the removed object's footprint (amodal mask) nothing changes ...
  footprint = train["amodal"][:32, 0]
  assert not (m & ~footprint).any()
  diff = np.abs(img - train["image"][:32]).max(-1)
  assert diff[~footprint].max() < 1e-6
  # ... inside, the removed object's label is gone and what was behind shows.
  assert not (np.asarray(out["instance"])[m] == 0).any()
  removed = train["shown"][:32, 0]
  assert (diff[m].size == 0) or diff[removed[:, None, None] & m].mean() > 0.02
  # Removing nothing re-renders the same scene.
  same = scenes.oracle_removal(layouts, jnp.zeros((32, scenes.MAX_OBJECTS), bool))
  np.testing.assert_allclose(np.asarray(same["image"]), train["image"][:32], atol=1e-6)


def test_context_is_predictive_in_context_not_ood(train):
  big = scenes.scene_split("train", 1024, seed=1, size=16)
  ood = scenes.scene_split("ood", 1024, seed=1, size=16)
  car, sign = R.THINGS.index("car"), R.THINGS.index("sign")
  lab = big["labels"]
  p_pair = lab[lab[:, car] > 0, sign].mean()
  assert p_pair > 0.8
  lo = ood["labels"]
  assert lo[lo[:, car] > 0, sign].mean() < 0.5
  # Ties: in context, cars stand on the road; out of context, never on a street's road.
  scene = big["layout"]["scene"]
  assert set(np.unique(scene[lab[:, car] > 0])) == {0}
  assert ood["labels"].sum(1).mean() > 0.8
  # 'ood_train' has ood's statistics under its own key: different scenes, same rules.
  ood_train = scenes.scene_split("ood_train", 1024, seed=1, size=16)
  assert not np.array_equal(ood_train["image"][:8], ood["image"][:8])
  lt = ood_train["labels"]
  assert lt[lt[:, car] > 0, sign].mean() < 0.5


def test_rules_validation():
  R.make_tables(R.ContextRules())
  with pytest.raises(ValueError, match="probability"):
    R.make_tables(dataclasses.replace(R.ContextRules(), pairs=(("car", "sign", 1.5),)))
  with pytest.raises(ValueError, match="sum to 1"):
    R.make_tables(dataclasses.replace(R.ContextRules(), scene_probs=(0.5, 0.5, 0.5)))
  with pytest.raises(ValueError, match="cannot be satisfied"):
    R.make_tables(dataclasses.replace(
        R.ContextRules(), scene_things=(("car",), ("car", "chair"), ("tree",))))
  with pytest.raises(ValueError, match="unknown thing"):
    R.make_tables(dataclasses.replace(R.ContextRules(), pairs=(("car", "boat", 0.5),)))
  with pytest.raises(ValueError, match="scene_probs"):
    R.make_tables(dataclasses.replace(R.ContextRules(), scene_probs=(-0.1, 0.6, 0.5)))
  rules = R.rules_from_config({"pairs": [["car", "sign", 0.5]]})
  assert R.make_tables(rules)["partner_prob"][R.THINGS.index("car")] == 0.5
  with pytest.raises(ValueError, match="unknown context rule"):
    R.rules_from_config({"pair": []})


def test_render_bad_input(train):
  layouts = jax.tree.map(lambda a: a[:4], train["layout"])
  with pytest.raises(ValueError, match="present"):
    scenes.render(layouts, jnp.ones((4, 3), bool))
  with pytest.raises(ValueError, match="remove"):
    scenes.oracle_removal(layouts, jnp.ones((4, scenes.MAX_OBJECTS)))
  with pytest.raises(ValueError, match="split"):
    scenes.scene_split("val", 4)
