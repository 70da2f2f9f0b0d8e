"""Behavioural checks that tell usable text fonts from symbol fonts and broken files.

Symbol fonts (math extension and symbol fonts, last-resort fonts) often map Latin
code points to brackets, arrows or placeholder boxes. They are recognised by what
they do, not by name: missing or .notdef glyphs, glyph names that spell other
symbols, many letters sharing one glyph, or rendered glyphs unlike every other
font's letters. A deny-list of known names is only a backstop.
"""
from __future__ import annotations

import os
import string

import numpy as np

# Backstop only: these ship beside matplotlib's text fonts and are caught by the
# behavioural checks; the list guards against a check being weakened.
SYMBOL_FONT_DENY_PREFIXES = ("cmex", "cmsy", "stixsiz", "stixnonuni", "lastresort")


def open_font(path: str):
  """fontTools font object (lazy); raises on files that are not TTF/OTF fonts."""
  from fontTools.ttLib import TTFont  # pylint: disable=import-outside-toplevel
  return TTFont(path, lazy=True, fontNumber=0)


def deny_listed(path: str) -> bool:
  """Whether the file name starts with a known symbol-font prefix (case-insensitive)."""
  return os.path.basename(path).lower().startswith(SYMBOL_FONT_DENY_PREFIXES)


def _letter_status(cmap: dict, notdef: set, ch: str) -> tuple[str, str | None]:
  """("missing" | "same" | "other" | "opaque", glyph name) for one character."""
  from fontTools import agl  # pylint: disable=import-outside-toplevel
  name = cmap.get(ord(ch))
  if name is None or name in notdef:
    return "missing", name
  meaning = agl.toUnicode(name)
  # A name spelling the character (or its other case: all-caps fonts) agrees; a
  # name spelling another character reveals a symbol encoding (cmex10 maps 'A' to
  # 'parenrightbt'); names outside the glyph list ('glyph12') say nothing.
  if meaning.lower() == ch.lower():
    return "same", name
  return ("other" if meaning else "opaque"), name


def cmap_problem(path: str, characters: str) -> str | None:
  """Why the font's character map makes it unusable as a text font, or None."""
  try:
    font = open_font(path)
    cmap = font.getBestCmap()
    order = font.getGlyphOrder()
  except Exception as e:  # pylint: disable=broad-except
    return f"cannot be read as a font ({type(e).__name__}: {e})"
  if not cmap:
    return "has no Unicode character map (symbol-encoded font)"
  notdef = {".notdef", order[0] if order else ".notdef"}
  missing = [ch for ch in characters if _letter_status(cmap, notdef, ch)[0] == "missing"]
  if missing:
    return f"has no glyph for {''.join(missing)!r}"
  # A text font covers the Latin alphabet with glyphs of its own; symbol fonts
  # (cmsy10: lowercase letters are arrows and brackets) fail on a good share.
  # Caps-only fonts may leave one case out entirely.
  status = {ch: _letter_status(cmap, notdef, ch) for ch in string.ascii_letters}
  present = {ch: v for ch, v in status.items() if v[0] != "missing"}
  if len(present) < 26:
    return f"is a symbol font: covers only {len(present)} of the 52 Latin letters"
  same = sum(v[0] == "same" for v in present.values())
  # Only fonts whose glyph names mostly spell letters can be judged by names.
  informative = same >= len(present) // 4
  odd = len(present) - same if informative else sum(v[0] == "other" for v in present.values())
  names = [v[1] for v in present.values()]
  shared = sum(names.count(n) > 2 for n in names)  # > 2: case pairs may share
  if odd >= len(present) // 4 or shared >= len(present) // 4:
    bad = [f"{c!r} -> {v[1]}" for c, v in present.items() if v[0] != "same"][:3]
    return (f"is a symbol font: {odd} of {len(present)} Latin letters are named as other "
            f"symbols, {shared} share one glyph ({', '.join(bad)})")
  for ch in characters:
    kind, name = _letter_status(cmap, notdef, ch)
    if kind == "other":
      return f"maps {ch!r} to the glyph of another symbol ({name!r})"
  return None


def consensus_outliers(images: np.ndarray, min_fonts: int = 4) -> list[int]:
  """Fonts whose glyphs do not look like the other fonts' glyphs of the same characters.

  Args:
    images: [F, C, H, W] prototypes of fonts that passed every other check.

  Returns:
    Indices of fonts whose blurred glyphs match the leave-one-out mean of their own
    character (cosine similarity) poorly and mostly resemble other characters: a
    symbol font hiding behind letter code points. Empty with fewer than min_fonts
    fonts or a single character, where there is no consensus to compare with.
  """
  from scipy.ndimage import gaussian_filter  # pylint: disable=import-outside-toplevel
  num_fonts, num_chars = images.shape[:2]
  if num_fonts < min_fonts or num_chars < 2:
    return []
  x = gaussian_filter(images.astype(np.float64), (0, 0, 1.5, 1.5)).reshape(num_fonts, num_chars, -1)
  x = x - x.mean(-1, keepdims=True)
  x /= np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  total = x.sum(0)
  outliers = []
  for f in range(num_fonts):
    others = total - x[f]
    others /= np.maximum(np.linalg.norm(others, axis=-1, keepdims=True), 1e-12)
    sim = x[f] @ others.T
    accuracy = np.mean(sim.argmax(1) == np.arange(num_chars))
    # Text fonts score >= 0.75 here (cmsy10's calligraphic capitals 0.78); cmex10 0.34.
    if np.mean(np.diag(sim)) < 0.5 and accuracy < 0.5:
      outliers.append(f)
  return outliers
