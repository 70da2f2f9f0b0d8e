"""One entry to classification data by config: FONTS (generated) or a local TFDS set."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np

from rsec import config as cfg_lib


@dataclasses.dataclass
class ClassificationData:
  """Host arrays: train/test dicts with 'image' [N,H,W,C] float32 in [0,1] and 'label' [N]."""
  train: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  num_classes: int
  info: dict[str, Any]
  prototypes: Any = None  # FONTS prototypes (the generator), None for TFDS sets


def validate_data_config(c: ml_collections.ConfigDict, prefix: str = "data") -> None:
  from rsec.data.fonts_dataset import THETA_RANGES
  cfg_lib.check(c, f"{prefix}.name", type_=str)
  cfg_lib.check(c, f"{prefix}.train_size", type_=int, low=1)
  cfg_lib.check(c, f"{prefix}.test_size", type_=int, low=1)
  if cfg_lib.get(c, f"{prefix}.name") == "fonts":
    cfg_lib.check(c, f"{prefix}.difficulty", type_=str, choices=THETA_RANGES)
    cfg_lib.check(c, f"{prefix}.size", type_=int, low=8)
    cfg_lib.check(c, f"{prefix}.characters", type_=str)
    cfg_lib.check(c, f"{prefix}.font_paths", type_=(tuple, list))
    outliers = cfg_lib.get(c, prefix).get("outlier_characters", "")
    if not isinstance(outliers, str):
      raise ValueError(f"config.{prefix}.outlier_characters must be a string, got {outliers!r}")
    shared = sorted(set(outliers) & set(cfg_lib.get(c, f"{prefix}.characters")))
    if shared:
      raise ValueError(f"config.{prefix}.outlier_characters must not repeat the classes' "
                       f"characters, got {''.join(shared)!r} in both")
  else:
    cfg_lib.check(c, f"{prefix}.data_dir", type_=str)
    if not cfg_lib.get(c, f"{prefix}.data_dir"):
      raise ValueError(f"config.{prefix}.data_dir must name a local TFDS data_dir for "
                       f"data set {cfg_lib.get(c, f'{prefix}.name')!r}")


def load_prototypes_from_config(c: ml_collections.ConfigDict):
  from rsec.data.fonts import default_font_paths, load_prototypes
  paths = list(c.font_paths) or default_font_paths()
  cache = os.path.expanduser(c.cache_dir) if c.get("cache_dir") else None
  return load_prototypes(paths, characters=c.characters, size=c.size, seed=c.font_seed,
                         cache_dir=cache)


def _with_outliers(c: ml_collections.ConfigDict, seed: int,
                   train: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`train` followed by `train_size` FONTS images of `c.outlier_characters`, labelled -1
  (outlier exposure). Their data-set seed is `seed + 1`, so their affine parameters are
  not those of the inliers."""
  from rsec.data.fonts_dataset import fonts_split
  oc = ml_collections.ConfigDict(c.to_dict())
  oc.characters = c.outlier_characters
  out = fonts_split(load_prototypes_from_config(oc), "train", c.train_size, seed=seed + 1,
                    difficulty=c.difficulty)
  out = {k: np.asarray(v) for k, v in out.items()}
  out["label"] = np.full_like(out["label"], -1)
  return {k: np.concatenate([train[k], out[k]]) for k in train}


def load_classification(c: ml_collections.ConfigDict, seed: int) -> ClassificationData:
  """Loads the data set named by `c.name` (a `config.data` block)."""
  if c.name == "fonts":
    from rsec.data.fonts_dataset import fonts_split
    protos = load_prototypes_from_config(c)
    split = lambda s, n: {k: np.asarray(v) for k, v in fonts_split(
        protos, s, n, seed=seed, difficulty=c.difficulty).items()}
    train, test = split("train", c.train_size), split("test", c.test_size)
    info = {"name": "fonts", "num_fonts": protos.num_fonts, "fonts": list(protos.font_names),
            "characters": protos.characters, "difficulty": c.difficulty,
            "skipped_fonts": [f"{p}: {r}" for p, r in protos.skipped]}
    if c.get("outlier_characters"):
      train = _with_outliers(c, seed, train)
      info["outlier_characters"] = c.outlier_characters
    return ClassificationData(train, test, protos.num_classes, info, protos)

  from rsec.data.tfds_fonts import load_image_classification
  train = load_image_classification(c.name, c.data_dir, "train")
  test = load_image_classification(c.name, c.data_dir, "test")
  for split, d, n in (("train", train, c.train_size), ("test", test, c.test_size)):
    if n > len(d["label"]):
      raise ValueError(f"config.data.{split}_size={n} is larger than the {len(d['label'])} "
                       f"examples of {c.name}/{split}")
  train = {k: v[:c.train_size] for k, v in train.items()}
  test = {k: v[:c.test_size] for k, v in test.items()}
  num_classes = int(max(train["label"].max(), test["label"].max())) + 1
  return ClassificationData(train, test, num_classes, {"name": c.name})
