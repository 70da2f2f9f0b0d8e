"""FONTS prototypes: default fonts, symbol-font filtering, ordering, cache, errors."""
import glob
import logging
import os
import shutil
import string

import numpy as np
import pytest

from rsec.data import font_checks, fonts

SYMBOL_FONTS = ("cmex10.ttf", "cmsy10.ttf", "LastResortHE-Regular.ttf", "STIXSizOneSymReg.ttf",
                "STIXSizFiveSymReg.ttf", "STIXNonUni.ttf", "STIXNonUniBolIta.ttf")


def test_default_fonts_kept(prototypes, mpl_prototypes):
  print(f"default fonts: kept {prototypes.num_fonts}: {prototypes.font_names}")
  for path, reason in prototypes.skipped:
    print(f"  skipped {os.path.basename(path)}: {reason}")
  assert 15 <= mpl_prototypes.num_fonts <= 30
  assert prototypes.num_fonts >= mpl_prototypes.num_fonts
  for protos in (prototypes, mpl_prototypes):
    names = [os.path.basename(p).lower() for p in protos.font_paths]
    assert not [n for n in names if n.startswith(font_checks.SYMBOL_FONT_DENY_PREFIXES)]
    assert not [n for n in names if "display" in n]  # DejaVu*Display lack the letters
    assert len(set(protos.font_paths)) == protos.num_fonts
    assert len(protos.font_names) == protos.num_fonts


def test_prototype_images(prototypes):
  x = np.asarray(prototypes.images)
  assert x.dtype == np.float32
  assert x.shape == (prototypes.num_fonts, 10, 28, 28)
  assert (prototypes.num_classes, prototypes.size, prototypes.characters) == (10, 28, "ABCDEFGHIJ")
  assert x.min() >= 0.0 and x.max() <= 1.0
  # Ink = 1 on a 0 background: the border is empty, every glyph has strong ink.
  assert np.all(x[..., 0, :] < 0.05) and np.all(x[..., :, 0] < 0.05)
  assert np.all(x.max(axis=(-1, -2)) > 0.5)  # DejaVu Sans ExtraLight "I": 0.74
  # The larger side of each glyph's ink box is about 3/4 of the canvas.
  ink = x > 0.1
  rows, cols = ink.any(-1), ink.any(-2)
  extent = np.maximum(rows.sum(-1), cols.sum(-1))
  assert np.all(np.abs(extent - 21) <= 2), extent.min()
  # Centred: the ink box centre is within a pixel of the canvas centre.
  def centre(mask):
    idx = np.arange(28)
    first = np.where(mask, idx, 99).min(-1)
    last = np.where(mask, idx, -1).max(-1)
    return (first + last) / 2
  assert np.all(np.abs(centre(rows) - 13.5) <= 1.0)
  assert np.all(np.abs(centre(cols) - 13.5) <= 1.0)


def test_order_is_sorted_then_permuted_by_seed(mpl_font_dir, font_cache):
  a = fonts.load_prototypes([mpl_font_dir], seed=0, cache_dir=font_cache)
  b = fonts.load_prototypes([mpl_font_dir], seed=0, cache_dir=None)
  c = fonts.load_prototypes([mpl_font_dir], seed=1, cache_dir=font_cache)
  assert a.font_paths == b.font_paths
  np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
  assert sorted(a.font_paths) == sorted(c.font_paths) and a.font_paths != c.font_paths
  perm = np.random.default_rng(1).permutation(c.num_fonts)
  assert c.font_paths == tuple(sorted(c.font_paths)[i] for i in perm)
  ai = {p: i for i, p in enumerate(a.font_paths)}
  for j, p in enumerate(c.font_paths):
    np.testing.assert_array_equal(np.asarray(c.images[j]), np.asarray(a.images[ai[p]]))


def test_cache_hit_is_identical(tmp_path, mpl_font_dir, monkeypatch):
  cache = str(tmp_path / "cache")
  first = fonts.load_prototypes([mpl_font_dir], characters="ABC", size=16, cache_dir=cache)
  assert len(glob.glob(os.path.join(cache, "fonts_*.npz"))) == 1
  assert len(glob.glob(os.path.join(cache, "fonts_*.json"))) == 1

  def no_build(*args, **kwargs):
    raise AssertionError("cache miss")

  monkeypatch.setattr(fonts, "_build", no_build)
  second = fonts.load_prototypes([mpl_font_dir], characters="ABC", size=16, cache_dir=cache)
  np.testing.assert_array_equal(np.asarray(first.images), np.asarray(second.images))
  assert first.font_paths == second.font_paths and first.skipped == second.skipped
  # A different key (characters) misses the cache.
  with pytest.raises(AssertionError, match="cache miss"):
    fonts.load_prototypes([mpl_font_dir], characters="ABD", size=16, cache_dir=cache)


@pytest.mark.parametrize("name", SYMBOL_FONTS)
def test_behavioural_checks_reject_symbol_fonts(name, mpl_font_dir):
  """Without the deny-list: the cmap or the rendering check rejects each symbol font."""
  path = os.path.join(mpl_font_dir, name)
  reason = font_checks.cmap_problem(path, "ABCDEFGHIJ")
  if reason is None:
    stack, reason = fonts._render_font(path, "ABCDEFGHIJ", 28)  # pylint: disable=protected-access
  assert reason, name
  assert font_checks.deny_listed(path)


def test_consensus_flags_symbols_behind_letter_code_points(mpl_prototypes, mpl_font_dir):
  """cmex10 rendered anyway (its 'A'..'J' are brackets) is unlike every text font."""
  stack, reason = fonts._render_font(os.path.join(mpl_font_dir, "cmex10.ttf"), "ABCDEFGHIJ", 28)  # pylint: disable=protected-access
  assert reason == ""
  images = np.concatenate([np.asarray(mpl_prototypes.images), stack[None]])
  assert font_checks.consensus_outliers(images) == [images.shape[0] - 1]
  # Classes in a shuffled order (glyphs that are letters, but the wrong ones).
  shuffled = np.asarray(mpl_prototypes.images)[0][[3, 0, 9, 1, 2, 4, 8, 6, 5, 7]]
  assert font_checks.consensus_outliers(np.concatenate([images[:-1], shuffled[None]])) != []
  assert font_checks.consensus_outliers(np.asarray(mpl_prototypes.images)) == []


def make_fake_font(path, glyph_name, seed=0):
  """A small TTF mapping every Latin letter to three random boxes, named glyph_name(i, c)."""
  from fontTools.fontBuilder import FontBuilder
  from fontTools.pens.ttGlyphPen import TTGlyphPen
  rng = np.random.default_rng(seed)
  letters = string.ascii_letters
  names = [glyph_name(i, c) for i, c in enumerate(letters)]
  order = [".notdef"] + names
  builder = FontBuilder(1000, isTTF=True)
  builder.setupGlyphOrder(order)
  builder.setupCharacterMap({ord(c): n for c, n in zip(letters, names)})
  glyphs = {}
  for name in order:
    pen = TTGlyphPen(None)
    for _ in range(3):
      (x0, y0), (w, h) = rng.integers(0, 400, 2), rng.integers(80, 300, 2)
      pen.moveTo((x0, y0))
      pen.lineTo((x0, y0 + h))
      pen.lineTo((x0 + w, y0 + h))
      pen.lineTo((x0 + w, y0))
      pen.closePath()
    glyphs[name] = pen.glyph()
  builder.setupGlyf(glyphs)
  builder.setupHorizontalMetrics({n: (700, 0) for n in order})
  builder.setupHorizontalHeader(ascent=800, descent=-200)
  builder.setupNameTable({"familyName": "Fake", "styleName": "Regular"})
  builder.setupOS2()
  builder.setupPost()
  builder.save(str(path))
  return str(path)


def test_fake_symbol_fonts_are_skipped(tmp_path, mpl_font_dir):
  """Fonts outside the deny-list: one whose glyph names spell arrows, one whose
  anonymous glyphs are boxes rather than letters (caught by the rendering consensus)."""
  folder = tmp_path / "fonts"
  folder.mkdir()
  arrows = make_fake_font(folder / "arrows.ttf", lambda i, c: f"uni{0x2190 + i:04X}")
  boxes = make_fake_font(folder / "zz_boxes.ttf", lambda i, c: f"g{i}", seed=1)
  assert "symbol font" in font_checks.cmap_problem(arrows, "ABCDEFGHIJ")
  assert font_checks.cmap_problem(boxes, "ABCDEFGHIJ") is None
  for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "cmr10.ttf", "STIXGeneral.ttf"):
    shutil.copy(os.path.join(mpl_font_dir, name), folder / name)
  protos = fonts.load_prototypes([str(folder)])
  assert protos.num_fonts == 4
  reasons = {os.path.basename(p): r for p, r in protos.skipped}
  assert "glyphs unlike the other fonts' letters" in reasons["zz_boxes.ttf"]
  assert "named as other symbols" in reasons["arrows.ttf"]


def test_deny_list():
  for name in ("cmex10.ttf", "CMSY10.TTF", "STIXSizTwoSymBol.ttf", "STIXNonUniIta.ttf",
               "LastResortHE-Regular.ttf"):
    assert font_checks.deny_listed(f"/x/{name}")
  for name in ("cmr10.ttf", "DejaVuSans.ttf", "STIXGeneral.ttf"):
    assert not font_checks.deny_listed(f"/x/{name}")


def test_skips_are_logged(tmp_path, mpl_font_dir, caplog):
  folder = tmp_path / "fonts"
  folder.mkdir()
  for name in ("DejaVuSans.ttf", "cmr10.ttf", "cmex10.ttf", "cmsy10.ttf"):
    shutil.copy(os.path.join(mpl_font_dir, name), folder / name)
  shutil.copy(os.path.join(mpl_font_dir, "DejaVuSans.ttf"), folder / "copy_of_sans.ttf")
  (folder / "notes.ttf").write_text("this is not a font")
  (folder / "readme.txt").write_text("ignored: not a font suffix")
  with caplog.at_level(logging.INFO, logger="rsec.data.fonts"):
    protos = fonts.load_prototypes([str(folder)], cache_dir=None)
    fonts.load_prototypes([str(folder)], cache_dir=None)
  assert sorted(os.path.basename(p) for p in protos.font_paths) == ["DejaVuSans.ttf", "cmr10.ttf"]
  reasons = {os.path.basename(p): r for p, r in protos.skipped}
  assert set(reasons) == {"notes.ttf", "cmex10.ttf", "cmsy10.ttf", "copy_of_sans.ttf"}
  assert "cannot be read" in reasons["notes.ttf"]
  assert "duplicates" in reasons["copy_of_sans.ttf"]
  assert "symbol" in reasons["cmsy10.ttf"] and "symbol" in reasons["cmex10.ttf"]
  # One warning line for the same skips however often they are loaded; reasons at INFO.
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "\n" not in warnings[0] and "skipped 4 of 6" in warnings[0]
  text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
  for name in ("notes.ttf", "cmex10.ttf", "cmsy10.ttf", "copy_of_sans.ttf"):
    assert name in text


def test_missing_glyphs_skip_font(mpl_font_dir):
  protos = fonts.load_prototypes(
      [os.path.join(mpl_font_dir, n) for n in ("DejaVuSans.ttf", "DejaVuSansDisplay.ttf")])
  assert protos.num_fonts == 1
  assert "no glyph" in protos.skipped[0][1]


def test_errors(tmp_path, mpl_font_dir):
  sans = os.path.join(mpl_font_dir, "DejaVuSans.ttf")
  with pytest.raises(ValueError, match="font_paths entry .* does not exist"):
    fonts.load_prototypes([str(tmp_path / "nope.ttf")])
  fake = tmp_path / "fake.ttf"
  fake.write_text("plain text renamed to .ttf")
  with pytest.raises(ValueError, match="font_paths entry .*fake.ttf.* not a readable TTF/OTF"):
    fonts.load_prototypes([str(fake)])
  with pytest.raises(ValueError, match="font_paths must name at least one"):
    fonts.load_prototypes([])
  with pytest.raises(ValueError, match="characters must be a non-empty string"):
    fonts.load_prototypes([sans], characters="")
  with pytest.raises(ValueError, match="characters must not repeat, got 'A' 2 times"):
    fonts.load_prototypes([sans], characters="ABA")
  with pytest.raises(ValueError, match="characters must be visible"):
    fonts.load_prototypes([sans], characters="A B")
  with pytest.raises(ValueError, match="size must be an integer >= 8"):
    fonts.load_prototypes([sans], size=7)
  with pytest.raises(ValueError, match="seed must be an integer >= 0"):
    fonts.load_prototypes([sans], seed=-1)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="no usable font"):
    fonts.load_prototypes([str(empty)])
  with pytest.raises(ValueError, match="no usable font"):
    fonts.load_prototypes([os.path.join(mpl_font_dir, "cmex10.ttf")])


def test_other_characters_and_size(mpl_font_dir):
  protos = fonts.load_prototypes([os.path.join(mpl_font_dir, "DejaVuSerif.ttf")],
                                 characters="xyz019", size=12)
  assert protos.images.shape == (1, 6, 12, 12)
  assert protos.font_names == ("DejaVu Serif",)


def test_prototypes_is_a_pytree(prototypes):
  import jax
  leaves, treedef = jax.tree_util.tree_flatten(prototypes)
  assert len(leaves) == 1 and leaves[0].shape == prototypes.images.shape
  rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
  assert rebuilt.font_names == prototypes.font_names
