"""FONTS prototypes: one rendered, centred glyph per (font, character).

Glyphs are rasterised once by FreeType (through Pillow) at 4x resolution, cropped
to their ink, scaled so the larger side is 3/4 of the canvas, centred and
downsampled with area averaging. Fonts that cannot serve as text fonts (missing
glyphs, symbol encodings, blank or duplicate renderings) are skipped with a
logged warning; the data set generator (`rsec.data.warp`) then deforms these
prototypes with affine transformations.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rsec import checks
from rsec.data import font_checks

log = logging.getLogger(__name__)

CACHE_VERSION = "fonts-prototypes-v1"
FONT_SUFFIXES = (".ttf", ".otf")
_OVERSAMPLE = 4
_GLYPH_FRACTION = 0.75
# Fonts whose stacks of glyph images differ by less than this (max abs) are copies.
_DUPLICATE_ATOL = 1e-2
_SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts",
                     "~/.local/share/fonts")


@flax.struct.dataclass
class Prototypes:
  """Glyph prototypes of the FONTS data set.

  Attributes:
    images: [F, C, H, W] float32 in [0, 1], ink = 1; the only pytree leaf.
    font_names: F human-readable font names, in the data set's font order.
    font_paths: F font file paths, same order.
    characters: the C characters; class k is characters[k].
    skipped: (path, reason) for every candidate font that was not kept.
  """
  images: jax.Array
  font_names: tuple[str, ...] = flax.struct.field(pytree_node=False)
  font_paths: tuple[str, ...] = flax.struct.field(pytree_node=False)
  characters: str = flax.struct.field(pytree_node=False)
  skipped: tuple[tuple[str, str], ...] = flax.struct.field(pytree_node=False, default=())

  @property
  def num_fonts(self) -> int:
    return self.images.shape[0]

  @property
  def num_classes(self) -> int:
    return self.images.shape[1]

  @property
  def size(self) -> int:
    return self.images.shape[-1]


def default_font_paths() -> list[str]:
  """Font folders needing no download: matplotlib's bundled fonts, then system folders."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  paths = [os.path.join(matplotlib.get_data_path(), "fonts", "ttf")]
  for folder in _SYSTEM_FONT_DIRS:
    folder = os.path.expanduser(folder)
    if os.path.isdir(folder):
      paths.append(folder)
  return paths


def _check_characters(characters: str) -> str:
  if not isinstance(characters, str) or not characters:
    raise ValueError(f"characters must be a non-empty string, got {characters!r}")
  for ch in characters:
    if ch.isspace() or not ch.isprintable():
      raise ValueError(f"characters must be visible characters, got {ch!r} in {characters!r}")
    if characters.count(ch) > 1:
      raise ValueError(f"characters must not repeat, got {ch!r} {characters.count(ch)} times")
  return characters


def _candidate_files(font_paths: Sequence[str]) -> list[str]:
  """Expands folders recursively; explicit files must be readable fonts."""
  if isinstance(font_paths, (str, os.PathLike)):
    font_paths = [font_paths]
  if not font_paths:
    raise ValueError("font_paths must name at least one font file or folder, got none")
  files = set()
  for raw in font_paths:
    path = os.path.abspath(os.path.expanduser(os.fspath(raw)))
    if os.path.isdir(path):
      for root, _, names in os.walk(path):
        files.update(os.path.join(root, n) for n in names if n.lower().endswith(FONT_SUFFIXES))
    elif os.path.isfile(path):
      try:
        font_checks.open_font(path)["cmap"]  # pylint: disable=expression-not-assigned
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f"font_paths entry {raw!r} is not a readable TTF/OTF font: {e}") from None
      files.add(path)
    else:
      raise ValueError(f"font_paths entry {raw!r} does not exist")
  return sorted(files)


def _render_glyph(font, ch: str, size: int) -> np.ndarray | None:
  """[size, size] float32 glyph, ink = 1, or None when it renders blank."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  left, top, right, bottom = font.getbbox(ch)
  pad = 4
  canvas = Image.new("L", (max(right - left, 1) + 2 * pad, max(bottom - top, 1) + 2 * pad), 0)
  ImageDraw.Draw(canvas).text((pad - left, pad - top), ch, font=font, fill=255)
  ink = canvas.getbbox()
  if ink is None:
    return None
  glyph = canvas.crop(ink)
  big = size * _OVERSAMPLE
  scale = _GLYPH_FRACTION * big / max(glyph.size)
  w, h = (max(1, round(d * scale)) for d in glyph.size)
  glyph = glyph.resize((w, h), Image.LANCZOS)
  out = Image.new("L", (big, big), 0)
  out.paste(glyph, ((big - w) // 2, (big - h) // 2))
  # Area averaging from 4x is the antialiasing.
  out = out.resize((size, size), Image.BOX)
  return np.asarray(out, np.float32) / 255.0


def _render_font(path: str, characters: str, size: int) -> tuple[np.ndarray | None, str]:
  """([C, size, size] glyphs, "") or (None, reason)."""
  from PIL import ImageFont  # pylint: disable=import-outside-toplevel
  try:
    font = ImageFont.truetype(path, size=8 * size)
  except Exception as e:  # pylint: disable=broad-except
    return None, f"FreeType cannot load it ({type(e).__name__}: {e})"
  glyphs = []
  for ch in characters:
    glyph = _render_glyph(font, ch, size)
    if glyph is None:
      return None, f"renders {ch!r} blank"
    glyphs.append(glyph)
  stack = np.stack(glyphs)
  flat = stack.reshape(len(characters), -1)
  for i in range(len(characters)):
    for j in range(i):
      if np.max(np.abs(flat[i] - flat[j])) < _DUPLICATE_ATOL:
        return None, f"renders {characters[j]!r} and {characters[i]!r} identically (placeholder glyphs)"
  return stack, ""


def _font_name(path: str) -> str:
  try:
    name = font_checks.open_font(path)["name"].getDebugName(4)
  except Exception:  # pylint: disable=broad-except
    name = None
  return name or os.path.splitext(os.path.basename(path))[0]


def _build(files: list[str], characters: str, size: int) -> dict:
  """Renders and filters fonts in sorted-path order (earlier copies win)."""
  kept, images, skipped = [], [], []
  for path in files:
    reason = font_checks.cmap_problem(path, characters)
    stack = None
    if reason is None:
      stack, reason = _render_font(path, characters, size)
    if stack is not None:
      for other, other_stack in zip(kept, images):
        if np.max(np.abs(stack - other_stack)) < _DUPLICATE_ATOL:
          reason = f"duplicates the glyphs of {other}"
          break
      else:
        if font_checks.deny_listed(path):
          reason = "is on the symbol-font deny-list"
    if reason:
      skipped.append((path, reason))
    else:
      kept.append(path)
      images.append(stack)
  if kept:
    for f in reversed(font_checks.consensus_outliers(np.stack(images))):
      skipped.append((kept.pop(f), "has glyphs unlike the other fonts' letters (symbol font)"))
      images.pop(f)
  skipped.sort()
  return dict(kept=kept, images=images, skipped=skipped)


def _cache_key(files: list[str], characters: str, size: int) -> str:
  h = hashlib.sha256(json.dumps([CACHE_VERSION, characters, size]).encode())
  for path in files:
    h.update(path.encode())
    with open(path, "rb") as f:
      h.update(hashlib.sha256(f.read()).digest())
  return h.hexdigest()[:24]


def _load_cache(stem: str) -> dict | None:
  try:
    with open(stem + ".json") as f:
      meta = json.load(f)
    with np.load(stem + ".npz") as z:
      images = z["images"]
  except (OSError, ValueError, KeyError):
    return None
  return dict(kept=meta["kept"], images=list(images), skipped=[tuple(s) for s in meta["skipped"]])


def _save_cache(stem: str, built: dict, shape: tuple[int, ...]) -> None:
  images = np.stack(built["images"]) if built["images"] else np.zeros(shape, np.float32)
  tmp = f"{stem}.{os.getpid()}.tmp"
  np.savez(tmp + ".npz", images=images)
  with open(tmp + ".json", "w") as f:
    json.dump(dict(version=CACHE_VERSION, kept=built["kept"], skipped=built["skipped"]), f)
  os.replace(tmp + ".npz", stem + ".npz")
  os.replace(tmp + ".json", stem + ".json")


_WARNED: set[tuple] = set()


def _warn_skipped_once(skipped: list, num_files: int) -> None:
  """One warning line per process for a given set of skipped fonts (expected: symbol
  fonts and duplicates among the default paths); the reasons go to the INFO log and to
  `Prototypes.skipped`, which entry points keep in their workdir."""
  key = tuple(p for p, _ in skipped)
  if key not in _WARNED:
    _WARNED.add(key)
    log.warning("FONTS: skipped %d of %d candidate fonts (symbol fonts, duplicates, missing "
                "glyphs; Prototypes.skipped has the reasons)", len(skipped), num_files)
  log.info("FONTS: skipped:\n%s", "\n".join(f"  {p}: {r}" for p, r in skipped))


def load_prototypes(font_paths: Sequence[str] | None = None, characters: str = "ABCDEFGHIJ",
                    size: int = 28, seed: int = 0, cache_dir: str | None = None) -> Prototypes:
  """Renders the glyph prototypes of every usable font.

  Args:
    font_paths: TTF/OTF files and folders (searched recursively); None means
      `default_font_paths()`. Unusable fonts inside folders are skipped with a
      warning; an explicit file that is not a font raises.
    characters: the classes, one glyph each (distinct, visible characters).
    size: canvas side in pixels (>= 8).
    seed: permutes the kept fonts (sorted by path) with numpy's default_rng(seed).
    cache_dir: folder for an npz + json cache keyed by the font files' contents,
      characters, size and `CACHE_VERSION`; None disables caching.

  Returns:
    Prototypes with images [F, C, size, size] float32 in [0, 1].
  """
  characters = _check_characters(characters)
  size = checks.check_positive_int("size", size, minimum=8)
  seed = checks.check_positive_int("seed", seed, minimum=0)
  files = _candidate_files(default_font_paths() if font_paths is None else font_paths)
  built = None
  if cache_dir is not None:
    os.makedirs(cache_dir, exist_ok=True)
    stem = os.path.join(cache_dir, "fonts_" + _cache_key(files, characters, size))
    built = _load_cache(stem)
  if built is None:
    built = _build(files, characters, size)
    if cache_dir is not None:
      _save_cache(stem, built, (0, len(characters), size, size))
  if built["skipped"]:
    _warn_skipped_once(built["skipped"], len(files))
  if not built["kept"]:
    raise ValueError(
        f"font_paths gave no usable font for characters {characters!r} "
        f"({len(files)} candidate files; skipped: {built['skipped'][:5]})")
  order = np.random.default_rng(seed).permutation(len(built["kept"]))
  paths = tuple(built["kept"][i] for i in order)
  images = np.stack([built["images"][i] for i in order]).astype(np.float32)
  log.info("FONTS: kept %d fonts: %s", len(paths), ", ".join(os.path.basename(p) for p in paths))
  return Prototypes(images=jnp.asarray(images), font_names=tuple(_font_name(p) for p in paths),
                    font_paths=paths, characters=characters, skipped=tuple(built["skipped"]))
