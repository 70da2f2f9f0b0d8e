"""SCENES as a TFDS data set (array_record, no TensorFlow) and a COCO panoptic loader.

Both loaders return the same dict as `rsec.data.scenes.scene_split` (image, semantic,
instance, masks, shown, labels and a 'layout' holding at least 'cls' and 'valid'), so the
removal code runs unchanged on SCENES, on an exported SCENES set, and on COCO 2017
panoptic (read from a local TFDS data_dir; nothing is downloaded).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from rsec import checks
from rsec.data import scene_rules as R
from rsec.data import scenes
from rsec.data.tfds_loader import (LocalBuilder, dataset_version_dir, png_bytes, read_split,
                                   write_builder)

COCO_THINGS = 80   # coco/2017_panoptic labels: 80 things, then 53 stuff classes


class ScenesBuilder(LocalBuilder, skip_registration=True):
  """SCENES splits (train / test / ood) with their layouts, so oracle removal works."""
  name = "scenes"
  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, splits: dict, **kwargs):
    self._splits = splits
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    d = next(iter(self._splits.values()))
    h = d["image"].shape[1]
    lay = {f"layout_{k}": tfds.features.Tensor(shape=v.shape[1:], dtype=v.dtype)
           for k, v in d["layout"].items()}
    return tfds.core.DatasetInfo(builder=self, disable_shuffling=True,
                                 features=tfds.features.FeaturesDict(dict(
        image=tfds.features.Image(shape=(h, h, 3), encoding_format="png"),
        semantic=tfds.features.Image(shape=(h, h, 1), encoding_format="png"),
        instance=tfds.features.Image(shape=(h, h, 1), encoding_format="png"),
        labels=tfds.features.Tensor(shape=(R.NUM_THINGS,), dtype=np.float32),
        shown=tfds.features.Tensor(shape=(scenes.MAX_OBJECTS,), dtype=np.bool_), **lay)))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(d) for name, d in self._splits.items()}

  def _generate_examples(self, d):
    for i in range(len(d["image"])):
      ex = dict(image=png_bytes((d["image"][i] * 255 + 0.5).astype(np.uint8)),
                semantic=png_bytes(d["semantic"][i].astype(np.uint8)),
                instance=png_bytes((d["instance"][i] + 1).astype(np.uint8)),
                labels=d["labels"][i], shown=d["shown"][i])
      ex.update({f"layout_{k}": v[i] for k, v in d["layout"].items()})
      yield i, ex


def build_scenes_tfds(data_dir: str, sizes: dict, seed: int = 0, size: int = 64,
                      rules: R.ContextRules | None = None, overwrite: bool = False) -> str:
  """Writes SCENES splits ({'train': n, 'test': n, 'ood': n}) as array_record; returns
  the version folder. Images are stored as 8-bit PNGs (layouts exactly)."""
  if not isinstance(sizes, dict) or not sizes:
    raise ValueError("sizes must be a non-empty dict of split name -> count")
  splits = {name: scenes.scene_split(name, checks.check_positive_int(f"sizes[{name!r}]", n),
                                     seed, rules, size) for name, n in sizes.items()}
  builder = ScenesBuilder(splits=splits, data_dir=os.fspath(data_dir),
                          file_format="array_record")
  return write_builder(builder, "scenes", overwrite)


def _open_builder(data_dir: str, name: str):
  """The prepared builder of `name` in `data_dir`; ValueError naming the folder when it is
  missing or its metadata (dataset_info.json, features.json) cannot be parsed."""
  path = dataset_version_dir(data_dir, name)  # ValueError when not prepared
  try:
    return tfds.builder_from_directory(path)
  except Exception as e:  # noqa: BLE001 -- protobuf and json raise their own types, and a
    # json ValueError names neither the file nor the folder
    raise ValueError(f"data set {name!r} in {path} has unreadable metadata "
                     f"({type(e).__name__}: {e}); rebuild it") from e


def load_scenes_tfds(data_dir: str, split: str) -> dict:
  """Reads an exported SCENES split back (image float32 in [0, 1], 8-bit quantised).

  ValueError naming the folder when the set is not prepared there, or a shard or its
  metadata is corrupted.
  """
  builder = _open_builder(data_dir, "scenes")
  rec = read_split(builder, split)
  if not rec:
    raise ValueError(f"split {split!r} of scenes in {data_dir!r} is empty")
  stack = lambda k: np.stack([np.asarray(r[k]) for r in rec])
  inst = stack("instance")[..., 0].astype(np.int32) - 1
  out = dict(image=stack("image").astype(np.float32) / 255,
             semantic=stack("semantic")[..., 0].astype(np.int32), instance=inst,
             labels=stack("labels"), shown=stack("shown"),
             masks=inst[:, None] == np.arange(scenes.MAX_OBJECTS)[None, :, None, None])
  out["layout"] = {k[len("layout_"):]: stack(k) for k in rec[0] if k.startswith("layout_")}
  return out


def _resize(a: np.ndarray, size: int, nearest: bool) -> np.ndarray:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  mode = Image.NEAREST if nearest else Image.BILINEAR
  return np.asarray(Image.fromarray(a).resize((size, size), mode))


def load_coco_panoptic(data_dir: str, split: str, size: int = 64, max_objects: int = 8,
                       name: str = "coco/2017_panoptic", limit: int | None = None) -> dict:
  """COCO 2017 panoptic from a prepared local TFDS folder, as SCENES-style arrays.

  Images are resized (squashed) to size x size. Things (labels < 80) become instances
  (the `max_objects` largest, by area); 'semantic' holds thing labels 0..79 and stuff
  labels 80..132 (-1: unlabelled). 'labels' [N, 80] are multi-label thing targets.
  """
  checks.check_positive_int("size", size, minimum=8)
  checks.check_positive_int("max_objects", max_objects)
  builder = _open_builder(data_dir, name)
  for key in ("image", "panoptic_image", "panoptic_objects"):
    if key not in builder.info.features:
      raise ValueError(f"{name!r} in {data_dir!r} has no {key!r} feature; is it a panoptic "
                       f"set? (features {list(builder.info.features.keys())})")
  rec = read_split(builder, split)[:limit]
  n = len(rec)
  if n == 0:
    raise ValueError(f"split {split!r} of {name!r} in {data_dir!r} is empty")
  out = dict(image=np.zeros((n, size, size, 3), np.float32),
             semantic=-np.ones((n, size, size), np.int32),
             masks=np.zeros((n, max_objects, size, size), bool),
             labels=np.zeros((n, COCO_THINGS), np.float32))
  cls = np.zeros((n, max_objects), np.int32)
  for i, r in enumerate(rec):
    out["image"][i] = _resize(np.asarray(r["image"]), size, False) / 255.0
    pan = _resize(np.asarray(r["panoptic_image"]), size, True).astype(np.int64)
    ids = pan[..., 0] + 256 * pan[..., 1] + 65536 * pan[..., 2]
    objs = r["panoptic_objects"]
    order = np.argsort(-np.asarray(objs["area"]))
    slot = 0
    for j in order:
      m, lab = ids == int(objs["id"][j]), int(objs["label"][j])
      out["semantic"][i][m] = lab
      if lab < COCO_THINGS and m.any() and slot < max_objects:
        out["masks"][i, slot], cls[i, slot] = m, lab
        out["labels"][i, lab] = 1
        slot += 1
  out["shown"] = out["masks"].any((2, 3))
  out["instance"] = np.where(out["masks"].any(1), np.argmax(out["masks"], 1), -1)
  out["layout"] = {"cls": cls, "valid": out["shown"]}
  return out
