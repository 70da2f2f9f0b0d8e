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


_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if "backend_compile" in event else None)


def _bad_pixels(x, how):
  """A copy of float images x [B, H, W, 3] spoilt at one pixel of image 1 (or retyped)."""
  if how == "uint8":
    return (np.asarray(x) * 255).astype(np.uint8)
  y = np.array(x, np.float32)
  y[1, 3, 4, 0] = {"above 1": 1.5, "negative": -0.25, "NaN": np.nan, "inf": np.inf}[how]
  return y


_PIXEL_ERRORS = {"above 1": r"x must lie in \[0.0, 1.0\], got values in \[.*, 1.5\]",
                 "negative": r"x must lie in \[0.0, 1.0\], got values in \[-0.25,",
                 "NaN": "x has 1 non-finite entries", "inf": "x has 1 non-finite entries",
                 "uint8": "x must be a floating-point array, got dtype uint8"}


@pytest.mark.parametrize("how", sorted(_PIXEL_ERRORS))
@pytest.mark.parametrize("source", ["fill_holes", "gt", "oracle", "generated"])
def test_bad_pixels_are_refused_before_any_work(small_scenes, parts, source, how):
  inp, mg = parts
  rows, t = _batch(small_scenes, 4)
  x = _bad_pixels(rows["image"], how)
  hole = np.zeros((4, 32, 32), np.float32)
  hole[:, 8:16, 8:16] = 1
  compiles = len(_COMPILES)
  with pytest.raises(ValueError, match=_PIXEL_ERRORS[how]):
    if source == "fill_holes":
      removal.fill_holes(inp, x, hole)
    else:
      removal.remove_objects(x, t, source, inpainter=inp, mask_generator=mg, scene=rows)
  assert len(_COMPILES) == compiles, "compiled before refusing"


@pytest.mark.parametrize("value,match", [
    (1.5, r"mask must lie in \[0, 1\], got values in \[0, 1.5\]"),
    (-0.5, r"mask must lie in \[0, 1\], got values in \[-0.5, 1\]"),
    (np.nan, "mask has 1 non-finite entries"),
])
def test_hole_values_outside_the_unit_range_are_refused(small_scenes, parts, value, match):
  inp, _ = parts
  rows, _ = _batch(small_scenes, 4)
  hole = np.zeros((4, 32, 32), np.float32)
  hole[:, 8:16, 8:16] = 1
  hole[2, 0, 0] = value
  with pytest.raises(ValueError, match=match):
    removal.fill_holes(inp, rows["image"], hole)
  hole[2, 0, 0] = 0.5  # a soft hole edge inside [0, 1] is fine
  assert removal.fill_holes(inp, rows["image"], hole).shape == rows["image"].shape


def _without(rows, key):
  if key.startswith("layout."):
    return dict(rows, layout={k: v for k, v in rows["layout"].items()
                              if k != key.split(".", 1)[1]})
  return {k: v for k, v in rows.items() if k != key}


@pytest.mark.parametrize("source,drop,match", [
    ("gt", None, r"source 'gt' needs scene="),
    ("oracle", None, r"source 'oracle' needs scene="),
    ("gt", "masks", r"source 'gt' needs scene= .*missing \['masks'\]"),
    ("gt", "shown", r"missing \['shown'\]"),
    ("gt", "layout", r"missing \['layout'\]"),
    ("gt", "layout.cls", r"missing \[\"layout\['cls'\]\"\]"),
    ("oracle", "layout.valid", r"source 'oracle' needs scene= .*missing \[\"layout\['valid'\]\"\]"),
    ("oracle", "shown", r"missing \['shown'\]"),
])
def test_scene_without_what_the_source_reads(small_scenes, parts, source, drop, match):
  inp, _ = parts
  rows, t = _batch(small_scenes, 4)
  scene = None if drop is None else _without(rows, drop)
  with pytest.raises(ValueError, match=match):
    removal.remove_objects(rows["image"], t, source, inpainter=inp, scene=scene)


def test_scene_of_another_batch_is_refused(small_scenes, parts):
  inp, _ = parts
  rows, t = _batch(small_scenes, 4)
  other = jax.tree.map(lambda a: a[:3], rows)
  for source in ("gt", "oracle"):
    with pytest.raises(ValueError, match=r"scene\['shown'\] must have shape \(4, \*\)"):
      removal.remove_objects(rows["image"], t, source, inpainter=inp, scene=other)
