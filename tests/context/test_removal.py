"""remove_objects with gt / oracle / generated sources, and bad input at the boundary."""
import jax
import numpy as np
import pytest

from rsec.context import inpaint, maskgen, removal
from rsec.data import scene_rules as R


@pytest.fixture(scope="module")
def parts():
  inp = inpaint.create_inpainter_state(jax.random.key(0), 32, (8, 8, 8), (8, 8, 8))
  mg = maskgen.create_maskgen_state(jax.random.key(1), 32, R.NUM_THINGS, (8, 8, 8), (8, 8, 8))
  return inp, mg


def _batch(d, n=8):
  idx = np.flatnonzero(d["shown"].any(1))[:n]
  rows = jax.tree.map(lambda a: a[idx], {k: d[k] for k in ("image", "masks", "shown",
                                                           "amodal", "layout", "labels")})
  cls = rows["layout"]["cls"]
  t = np.array([cls[i, np.flatnonzero(rows["shown"][i])[0]] for i in range(len(idx))],
               np.int32)
  return rows, t


def test_three_sources(small_scenes, parts):
  inp, mg = parts
  rows, t = _batch(small_scenes)
  x = rows["image"]
  gt = removal.remove_objects(x, t, "gt", inpainter=inp, scene=rows, dilation=1)
  orc = removal.remove_objects(x, t, "oracle", scene=rows)
  gen = removal.remove_objects(x, t, "generated", inpainter=inp, mask_generator=mg)
  for out in (gt, orc, gen):
    assert out["image"].shape == x.shape and out["mask"].shape == x.shape[:3]
  # The GT hole covers the target's visible pixels; outside it nothing changes.
  hole = np.asarray(gt["mask"]) > 0
  sel = (rows["layout"]["cls"] == t[:, None]) & rows["shown"]
  vis = (rows["masks"] & sel[:, :, None, None]).any(1)
  assert not (vis & ~hole).any()
  np.testing.assert_array_equal(np.asarray(gt["image"])[~hole], x[~hole])
  # The oracle changes pixels only inside the target's footprint.
  changed = np.abs(np.asarray(orc["image"]) - x).max(-1) > 1e-6
  assert not (changed & (np.asarray(orc["mask"]) == 0)).any() and changed.any()


def test_bad_input(small_scenes, parts):
  inp, _ = parts
  rows, t = _batch(small_scenes, 4)
  x = rows["image"]
  with pytest.raises(ValueError, match="mask must have shape"):
    removal.fill_holes(inp, x, np.ones((4, 16, 16), np.float32))
  with pytest.raises(ValueError, match="empty"):
    removal.fill_holes(inp, x, np.zeros((4, 32, 32), np.float32))
  with pytest.raises(ValueError, match="whole image"):
    removal.fill_holes(inp, x, np.ones((4, 32, 32), np.float32))
  absent = np.array([k for k in range(R.NUM_THINGS) if not (rows["layout"]["cls"][0] == k)
                     .any()][:1] * 4, np.int32)
  for source in ("gt", "oracle"):
    with pytest.raises(ValueError, match="not present"):
      removal.remove_objects(x, absent, source, inpainter=inp, scene=rows)
  with pytest.raises(ValueError, match="mask source"):
    removal.remove_objects(x, t, "magic", inpainter=inp, scene=rows)
  with pytest.raises(ValueError, match="target"):
    removal.remove_objects(x, t[:2], "gt", inpainter=inp, scene=rows)
  with pytest.raises(ValueError, match="mask_generator"):
    removal.remove_objects(x, t, "generated", inpainter=inp)
