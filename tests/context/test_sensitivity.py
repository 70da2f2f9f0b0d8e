"""The context-sensitivity framework: cases, removals, metrics and removal augmentation."""
import jax
import numpy as np
import pytest

from rsec.context import inpaint, sensitivity as S
from rsec.data import scene_rules as R
from rsec.data import scenes


@pytest.fixture(scope="module")
def test_split():
  return scenes.scene_split("test", 24, seed=3, size=32)


@pytest.fixture(scope="module")
def ctx():
  return S.context_table(R.ContextRules())


def test_context_table_follows_the_pairs(ctx):
  t = R.THINGS.index
  assert ctx[t("car"), t("sign")] and ctx[t("sign"), t("car")]
  assert ctx[t("dog"), t("person")] and ctx[t("table"), t("chair")]
  assert not ctx[t("clock")].any() and not ctx[t("tree")].any()
  assert (ctx == ctx.T).all() and not ctx.diagonal().any()
  with pytest.raises(ValueError, match="clock"):
    S.check_context_classes(ctx, [t("car"), t("clock")])
  S.check_context_classes(ctx, [t("car")])


def test_cases_cover_every_present_object_and_context(test_split, ctx):
  labels = test_split["labels"]
  cases = S.build_cases(labels, ctx, control=True)
  obj = cases["kind"] == S.OBJECT
  assert obj.sum() == (labels > 0).sum()
  for i, c, kind, rem in zip(cases["img"], cases["cls"], cases["kind"], cases["remove"]):
    assert labels[i, c] > 0
    if kind == S.CONTEXT:
      assert not rem[c] and rem.any() and np.all(labels[i, rem] > 0) and np.all(ctx[c, rem])
    else:
      assert rem[c] and rem.sum() == 1
  with pytest.raises(ValueError, match="non-empty"):
    S.build_cases(np.zeros_like(labels), ctx)


def test_oracle_removal_removes_exactly_the_chosen_classes(test_split, ctx):
  cases = S.build_cases(test_split["labels"], ctx)
  images = S.apply_removals(test_split, cases, "oracle", batch_size=16)
  assert images.shape == (len(cases["img"]),) + test_split["image"].shape[1:]
  for j in np.flatnonzero(cases["kind"] == S.CONTEXT)[:4]:
    i = cases["img"][j]
    layout = jax.tree.map(lambda a: a[i:i + 1], test_split["layout"])
    keep = ~(np.asarray(layout["valid"]) & cases["remove"][j][np.clip(layout["cls"], 0, None)])
    want = scenes.render(layout, keep, size=32)
    np.testing.assert_allclose(images[j], np.asarray(want["image"][0]), atol=1e-6)
    assert want["labels"][0, cases["cls"][j]] > 0  # the object stays
  changed = np.abs(images - test_split["image"][cases["img"]]).reshape(len(images), -1).max(1)
  assert (changed > 0).all()  # every removal changes its image


def _dilate1(m):
  """Max-filter of a bool [H, W] mask with a 3 x 3 square (out-of-image pixels: False)."""
  p = np.pad(m, 1)
  h, w = m.shape
  return np.any([p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def test_inpainter_removal_changes_only_the_dilated_mask(test_split, ctx):
  state = inpaint.create_inpainter_state(jax.random.key(0), 32, (4, 4, 4), (4, 4, 4))
  labels = test_split["labels"][:8]
  cases = S.build_cases(labels, ctx, control=True)
  x = test_split["image"][cases["img"]]
  out = S.apply_removals(test_split, cases, "gt", remover={"inpainter": state}, dilation=1)
  diff = np.abs(out - x).max(-1) > 1e-6
  masks, shown = test_split["masks"][cases["img"]], test_split["shown"][cases["img"]]
  obj_pixels = masks.any(1)
  cls = np.asarray(test_split["layout"]["cls"])[cases["img"]]
  valid = np.asarray(test_split["layout"]["valid"])[cases["img"]]
  for j in range(len(out)):
    # The slots of the removed classes, found here from the layout alone.
    slots = valid[j] & np.isin(cls[j], np.flatnonzero(cases["remove"][j]))
    if cases["kind"][j] == S.CONTROL:
      region = S._control_mask(masks[j], shown[j], slots)
      # The control region is moved away from the objects.
      assert (diff[j] & obj_pixels[j]).sum() <= 0.5 * max(diff[j].sum(), 1)
    else:
      region = (masks[j] & (slots & shown[j])[:, None, None]).any(0)
    hole = _dilate1(region)
    assert not (diff[j] & ~hole).any(), f"case {j} changed pixels outside its dilated mask"
    np.testing.assert_array_equal(out[j][~hole], x[j][~hole])
    assert diff[j].any() == hole.any(), j  # an untrained in-painter still fills the hole
  with pytest.raises(ValueError, match="in-painter"):
    S.apply_removals(test_split, cases, "gt")
  with pytest.raises(ValueError, match="source"):
    S.apply_removals(test_split, cases, "magic")


def test_metrics_on_a_context_only_classifier(ctx):
  """A classifier that sees only the context: violations everywhere, flips everywhere."""
  car, sign = R.THINGS.index("car"), R.THINGS.index("sign")
  labels = np.zeros((4, R.NUM_THINGS), np.float32)
  labels[:, [car, sign]] = 1
  cases = S.build_cases(labels, ctx)
  clean = np.full((4, R.NUM_THINGS), 0.1)
  clean[:, [car, sign]] = 0.9
  after = np.tile(clean[:1], (len(cases["img"]), 1))
  for j, (c, kind) in enumerate(zip(cases["cls"], cases["kind"])):
    if kind == S.CONTEXT:   # the partner is gone: c is no longer recognised
      after[j, c] = 0.2
    else:                   # c is gone but its partner stays: c is still "seen"
      after[j, c] = 0.8
  m = S.sensitivity_metrics(clean, cases, after, ctx)
  assert m["violation_rate"]["car"] == 1.0 and m["violation_rate"]["mean"] == 1.0
  assert m["flip_rate"]["sign"] == 1.0
  assert m["s_context_without_object"]["car"] == pytest.approx(0.8)
  assert m["s_object_without_context"]["car"] == pytest.approx(0.2)
  assert m["bias"]["car|sign"] == pytest.approx(0.9 / 0.2)
  assert np.isnan(m["score_change"][R.THINGS.index("clock")][0])
  # The opposite classifier (object only) has no violations and no flips.
  after2 = after.copy()
  after2[cases["kind"] == S.CONTEXT, cases["cls"][cases["kind"] == S.CONTEXT]] = 0.9
  after2[cases["kind"] == S.OBJECT, cases["cls"][cases["kind"] == S.OBJECT]] = 0.05
  m2 = S.sensitivity_metrics(clean, cases, after2, ctx)
  assert m2["violation_rate"]["mean"] == 0.0 and m2["flip_rate"]["mean"] == 0.0


def test_average_precision():
  assert S.average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
  assert S.average_precision(np.array([0.1, 0.2, 0.9]), np.array([1, 0, 0])) == \
      pytest.approx(1 / 3)
  assert np.isnan(S.average_precision(np.array([0.1, 0.2]), np.array([0, 0])))


def test_removal_augment_is_seeded_and_relabels(test_split, ctx):
  a = S.removal_augment(test_split, ctx, seed=1, fraction=0.5)
  b = S.removal_augment(test_split, ctx, seed=1, fraction=0.5)
  n = int((test_split["labels"].sum(1) > 0).sum())
  assert len(a["labels"]) == round(0.5 * n)
  np.testing.assert_array_equal(a["image"], b["image"])
  # Each new example lost at least one class and gained none.
  before = test_split["labels"][a["index"]]
  assert np.all(a["labels"] <= before) and np.all(a["labels"].sum(1) < before.sum(1))
  changed = np.abs(a["image"] - test_split["image"][a["index"]]).reshape(len(before), -1)
  assert (changed.max(1) > 0).all()
  with pytest.raises(ValueError, match="fraction"):
    S.removal_augment(test_split, ctx, seed=1, fraction=0.0)
