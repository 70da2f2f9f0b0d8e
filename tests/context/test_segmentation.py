"""The SCENES segmenter and the segmentation context measures."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.context import segmentation as seg
from rsec.context import sensitivity as S
from rsec.data import scene_rules as R
from rsec.data import scenes
from rsec.models.segmenter import PyramidSegmenter


@pytest.fixture(scope="module")
def split():
  return scenes.scene_split("train", 96, seed=5, size=32)


def test_segmenter_shapes_and_bad_sizes():
  net = PyramidSegmenter(num_classes=5, width=8, channels=(4, 4, 8, 8))
  v = net.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
  assert net.apply(v, jnp.zeros((2, 32, 32, 3))).shape == (2, 32, 32, 5)
  with pytest.raises(ValueError, match="divisible by 8"):
    net.init(jax.random.key(0), jnp.zeros((1, 20, 20, 3)))


def test_training_beats_the_majority_label(split):
  state = seg.train_segmenter(split["image"], split["semantic"], seed=0, steps=60,
                              batch_size=32, width=16)
  pred = seg.predict(state, split["image"][:32], 32)
  assert pred.shape == (32, 32, 32) and pred.dtype == np.int32
  majority = np.bincount(split["semantic"].ravel()).argmax()
  acc = (pred == split["semantic"][:32]).mean()
  assert acc > (split["semantic"][:32] == majority).mean() + 0.05, acc
  with pytest.raises(ValueError, match="semantic"):
    seg.train_segmenter(split["image"], split["semantic"][:, :16], seed=0, steps=1,
                        batch_size=32)


def test_miou():
  t = np.array([[0, 0, 1, 1]])
  assert seg.miou(t, t, num_classes=3) == 1.0
  assert seg.miou(np.array([[0, 0, 0, 1]]), t, num_classes=3) == pytest.approx(
      (2 / 3 + 1 / 2) / 2)
  assert seg.miou(t, t, where=np.array([[1, 1, 0, 0]]), num_classes=3) == 1.0
  assert np.isnan(seg.miou(t, t, where=np.zeros((1, 4)), num_classes=3))


def test_removal_effects_count_flips_outside_the_mask_only():
  target = np.full((1, 8, 8), R.NUM_THINGS + R.STUFF.index("road"))
  target[0, :4] = R.NUM_THINGS + R.STUFF.index("sidewalk")
  removed = np.zeros((1, 8, 8), bool)
  removed[0, 6:, 6:] = True
  before = target.copy()
  after = before.copy()
  after[0, 7, 7] = 0            # inside the removed region: not a flip
  after[0, 0, 0] = 0            # a sidewalk pixel far away flips
  e = seg.removal_effects(before, after, removed, target, oracle_semantic=target, dilation=1)
  far = 64 - 9                  # the 2x2 mask dilated by one pixel covers 3x3 = 9 pixels
  assert e["pixel_flip_rate"]["all"] == pytest.approx(1 / far)
  assert e["pixel_flip_rate"]["sidewalk"] == pytest.approx(1 / 32)
  assert e["pixel_flip_rate"]["road"] == 0.0
  assert e["revealed_miou"] < 1.0


def test_oracle_scenes_match_the_removal(split):
  ctx = S.context_table(R.ContextRules())
  cases = S.build_cases(split["labels"][:8], ctx)
  o = S.oracle_scenes(split, cases)
  images = S.apply_removals(split, cases, "oracle")
  changed = np.abs(images - split["image"][cases["img"]]).max(-1) > 1e-6
  assert not (changed & ~o["removed"]).any()  # removal changes only the amodal region
  for j in range(len(cases["img"])):
    removed_classes = np.flatnonzero(cases["remove"][j])
    assert not np.isin(o["semantic"][j], removed_classes).any()
