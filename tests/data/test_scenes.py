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


_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if "backend_compile" in event else None)


@pytest.mark.parametrize("call,match", [
    (lambda lay: scenes.scene_split("train", 0, size=32), "n must be an integer >= 1, got 0"),
    (lambda lay: scenes.scene_split("test", -3, size=32), "n must be an integer >= 1, got -3"),
    (lambda lay: scenes.scene_split("train", 2.5), r"n must be an integer >= 1, got 2\.5"),
    (lambda lay: scenes.sample_layouts(jax.random.key(0), 0, R.make_tables(R.ContextRules())),
     "n must be an integer >= 1, got 0"),
    (lambda lay: scenes.scene_split("train", 4, size=8), "size must be an integer >= 16, got 8"),
    (lambda lay: scenes.scene_split("train", 4, size=15), "size must be an integer >= 16, got 15"),
    (lambda lay: scenes.render(lay, size=12), "size must be an integer >= 16, got 12"),
    (lambda lay: scenes.oracle_removal(lay, np.zeros((4, scenes.MAX_OBJECTS), bool), size=0),
     "size must be an integer >= 16, got 0"),
    (lambda lay: scenes.scene_split("train", 4, chunk=0), "chunk must be an integer >= 1"),
], ids=["n=0", "n<0", "n float", "layouts n=0", "size 8", "size 15", "render size 12",
        "oracle size 0", "chunk 0"])
def test_sizes_and_counts_are_refused_before_compiling(train, call, match):
  layouts = jax.tree.map(lambda a: a[:4], train["layout"])
  before = len(_COMPILES)
  with pytest.raises(ValueError, match=match):
    call(layouts)
  assert len(_COMPILES) == before, "compiled before refusing"


def test_smallest_size_renders():
  """The bound is 16, not more: a 16 x 16 split renders (and keeps its objects)."""
  d = scenes.scene_split("train", 4, size=16)
  assert d["image"].shape == (4, 16, 16, 3) and d["masks"].shape[-2:] == (16, 16)
  assert 0 <= d["image"].min() and d["image"].max() <= 1


# --- ambiguous_stuff (issue 6): stuff that only its objects tell apart -----------------

AMBIGUOUS = R.ContextRules(ambiguous_stuff=(("road", "sidewalk", 0.5),))
K = R.NUM_THINGS
STREET = R.ContextRules().scene_types.index("street")


def _lum_gap(d, a="sidewalk", b="road"):
  """Per image, |mean luminance of stuff a - of stuff b| over their visible pixels."""
  lum, sem = d["image"].mean(-1), d["semantic"]
  ia, ib = K + R.STUFF.index(a), K + R.STUFF.index(b)
  return np.array([abs(lum[i][sem[i] == ia].mean() - lum[i][sem[i] == ib].mean())
                   for i in range(len(lum))])


@pytest.mark.parametrize("split", ["train", "ood"])
def test_ambiguous_stuff_shares_looks_in_the_chosen_share(split):
  """Road and sidewalk look alike (the same luminance; distinct looks differ by > .15)
  in about half the street scenes, in and out of context; nothing else changes."""
  d = scenes.scene_split(split, 400, seed=2, rules=AMBIGUOUS, size=32)
  street = d["layout"]["scene"] == STREET
  gap = _lum_gap({k: v[street] for k, v in d.items() if k != "layout"})
  alike = gap < 0.09
  assert street.sum() > 120
  assert abs(alike.mean() - 0.5) < 0.12, alike.mean()
  look = d["layout"]["look"][street]
  np.testing.assert_array_equal(alike, look[:, 2] == look[:, 3])
  # Same layouts without the rule: identical labels everywhere, identical images outside
  # the ambiguous street scenes.
  plain = scenes.scene_split(split, 400, seed=2, size=32)
  np.testing.assert_array_equal(plain["semantic"], d["semantic"])
  changed = np.abs(plain["image"] - d["image"]).max((1, 2, 3)) > 0
  np.testing.assert_array_equal(changed[street], alike)
  assert not changed[~street].any()
  # Without the rule, road and sidewalk always look different.
  assert _lum_gap({k: v[street] for k, v in plain.items() if k != "layout"}).min() > 0.09


@pytest.mark.parametrize("p, share", [(0.0, 0.0), (1.0, 1.0)])
def test_ambiguous_stuff_probability_extremes(p, share):
  rules = R.ContextRules(ambiguous_stuff=(("road", "sidewalk", p),))
  d = scenes.scene_split("test", 64, seed=0, rules=rules, size=32)
  street = d["layout"]["scene"] == STREET
  look = d["layout"]["look"]
  assert (look[street, 2] == look[street, 3]).mean() == share
  if p == 0:   # the rule's render path with nothing shared is the old rendering, bit for bit
    plain = scenes.scene_split("test", 64, seed=0, size=32)
    np.testing.assert_array_equal(plain["image"], d["image"])


def test_default_rules_render_exactly_as_before():
  """Golden sums of the rendering before ambiguous_stuff existed (seed 0, 16 scenes,
  32x32): the default rules add no layout field and change no pixel."""
  golden = {"train": (25694.336218871176, 159309, 15226.821600354553),
            "ood": (25869.19090118585, 162012, 15128.052200400736)}
  for split, (s1, sem, s2) in golden.items():
    d = scenes.scene_split(split, 16, seed=0, size=32)
    assert "look" not in d["layout"]
    img = d["image"].astype(np.float64)
    np.testing.assert_allclose([img.sum(), (img ** 2).sum()], [s1, s2], rtol=1e-7)
    assert int(d["semantic"].sum()) == sem


def test_oracle_removal_exact_with_ambiguous_stuff():
  """Removal re-renders the shared look and reveals the true stuff labels."""
  rules = R.ContextRules(ambiguous_stuff=(("road", "sidewalk", 1.0),))
  d = scenes.scene_split("train", 64, seed=4, rules=rules, size=32)
  layouts = d["layout"]
  plain = {k: v for k, v in layouts.items() if k != "look"}
  remove = layouts["cls"] == R.THINGS.index("car")        # every car, in any slot
  out = jax.device_get(scenes.oracle_removal(layouts, jnp.asarray(remove), size=32))
  footprint = (d["amodal"] & remove[:, :, None, None]).any(1)
  diff = np.abs(out["image"] - d["image"]).max(-1)
  assert diff[~footprint].max() < 1e-6
  truth = jax.device_get(scenes.oracle_removal(plain, jnp.asarray(remove), size=32))
  np.testing.assert_array_equal(out["semantic"], truth["semantic"])
  # Behind the removed cars (all in street scenes, where the look is shared) lies road,
  # their tie, whichever stuff's look it has.
  seen = (d["masks"] & (remove & d["shown"])[:, :, None, None]).any(1)
  assert seen.sum() > 50
  behind = out["semantic"][seen]
  behind = behind[behind >= K]                            # (not a thing that was behind)
  assert set(np.unique(behind)) <= {K + R.STUFF.index("road"), K + R.STUFF.index("sidewalk")}
  assert (behind == K + R.STUFF.index("road")).mean() > 0.5
  # Everything removed: road and sidewalk pixels look alike but keep their own labels.
  bare = jax.device_get(scenes.oracle_removal(layouts, jnp.ones((64, 4), bool), size=32))
  street = layouts["scene"] == STREET
  assert _lum_gap({k: v[street] for k, v in bare.items()}).max() < 0.05
  sem = bare["semantic"][street]
  assert (sem == K + R.STUFF.index("road")).any(axis=(1, 2)).all()
  assert (sem == K + R.STUFF.index("sidewalk")).any(axis=(1, 2)).all()


@pytest.mark.parametrize("value, says", [
    ((("road", "lawn", 0.5),), "unknown stuff 'lawn' in ambiguous_stuff"),
    ((("road", "sidewalk", 1.5),), r"ambiguous_stuff\[0\] probability"),
    ((("road", "sidewalk", -0.1),), r"ambiguous_stuff\[0\] probability"),
    ((("road", "sidewalk", float("nan")),), r"ambiguous_stuff\[0\] probability"),
    ((("road", "road", 0.5),), r"ambiguous_stuff\[0\] pairs 'road' with itself"),
    ((("road", "sidewalk", 0.5), ("sidewalk", "grass", 0.5)), "ambiguous_stuff: 'sidewalk'"),
    ((("sky", "floor", 0.5),), r"ambiguous_stuff\[0\] \(sky, floor\): no scene type"),
])
def test_ambiguous_stuff_bad_values(value, says):
  with pytest.raises(ValueError, match=says):
    R.make_tables(R.ContextRules(ambiguous_stuff=value))


def test_ambiguous_stuff_from_config():
  rules = R.rules_from_config({"ambiguous_stuff": [["road", "sidewalk", "0.25"]]})
  assert rules.ambiguous_stuff == (("road", "sidewalk", 0.25),)
  assert R.make_tables(rules)["ambiguous_prob"].tolist() == [0.25]
  assert R.make_tables(R.ContextRules())["ambiguous_prob"].shape == (0,)
  with pytest.raises(ValueError, match=r"ambiguous_stuff\[0\] must be a"):
    R.rules_from_config({"ambiguous_stuff": [["road", "sidewalk"]]})
  with pytest.raises(ValueError, match=r"ambiguous_stuff\[0\] probability must be a number"):
    R.rules_from_config({"ambiguous_stuff": [["road", "sidewalk", "often"]]})
