"""FONTS as a TFDS data set (array_record), written and read without TensorFlow.

The builder is not registered: the written folder describes itself (features,
metadata with the font order, default config), so `tfds.data_source("fonts",
data_dir=...)` reconstructs it from the files. See `tfds_loader` for how TFDS
writes without TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import tensorflow_datasets as tfds

from rsec import checks
from rsec.data import fonts as fonts_lib
from rsec.data import fonts_dataset
from rsec.data.tfds_loader import LocalBuilder, dataset_version_dir, load_image_classification, png_bytes

__all__ = ["FontsConfig", "FontsBuilder", "build_fonts_tfds", "read_fonts_metadata",
           "load_image_classification", "quantize"]

_GENERATOR_VERSION = "1.0.0"
_CHUNK = 4096


@dataclasses.dataclass(eq=False)
class FontsConfig(tfds.core.BuilderConfig):
  """Parameters of a written FONTS data set (folder data_dir/fonts/<name>/<version>).

  `seed` seeds the examples (`fonts_dataset.split_key`) and, when the builder is
  not handed prototypes, also the font permutation of `load_prototypes`.
  """
  num_train: int = 10_000
  num_test: int = 2_000
  size: int = 28
  difficulty: str = "hard"
  characters: str = "ABCDEFGHIJ"
  font_paths: tuple[str, ...] = ()  # () = fonts.default_font_paths()
  seed: int = 0


class FontsBuilder(LocalBuilder, skip_registration=True):
  """Writes FONTS splits "train" and "test": examples [0, n) of each split's stream."""
  name = "fonts"
  VERSION = tfds.core.Version(_GENERATOR_VERSION)
  # No named presets: every FontsConfig is "custom" (TFDS forbids a custom config
  # sharing a preset's name), and build_fonts_tfds records the default itself.

  def __init__(self, *, config: FontsConfig, prototypes: fonts_lib.Prototypes | None = None,
               **kwargs):
    if not isinstance(config, FontsConfig):
      raise ValueError(f"config must be a FontsConfig, got {type(config).__name__}")
    self._given_prototypes = prototypes
    super().__init__(config=config, **kwargs)

  def _prototypes(self) -> fonts_lib.Prototypes:
    cfg = self.builder_config
    if self._given_prototypes is None:
      self._given_prototypes = fonts_lib.load_prototypes(
          list(cfg.font_paths) or None, characters=cfg.characters, size=cfg.size, seed=cfg.seed)
    return self._given_prototypes

  def _metadata(self) -> dict:
    cfg, protos = self.builder_config, self._prototypes()
    return dict(generator_version=_GENERATOR_VERSION, num_train=cfg.num_train,
                num_test=cfg.num_test, size=cfg.size, difficulty=cfg.difficulty,
                characters=cfg.characters, seed=cfg.seed,
                font_names=list(protos.font_names), font_paths=list(protos.font_paths))

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    meta = self._metadata()
    fonts_text = "\n".join(f"  {i}: {n} ({p})" for i, (n, p) in
                           enumerate(zip(meta["font_names"], meta["font_paths"])))
    description = (
        "FONTS (Stutz, Hein, Schiele, CVPR 2019): glyph prototypes warped by random "
        f"affine parameters theta. difficulty={cfg.difficulty}, seed={cfg.seed}, "
        f"size={cfg.size}, characters={cfg.characters!r}. Record i of a split is example "
        "i of rsec.data.fonts_dataset.fonts_split(prototypes, split, n, seed, "
        "difficulty); images are quantised to uint8, theta is exact.\n"
        f"Font order (feature 'font' indexes it):\n{fonts_text}")
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(cfg.size, cfg.size, 1), dtype=np.uint8,
                                         encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(cfg.characters)),
            "font": np.int32,
            "theta": tfds.features.Tensor(shape=(6,), dtype=np.float32),
            "index": np.int64,
        }),
        supervised_keys=("image", "label"),
        # Keeps record i == example i, so prefixes stay class-balanced.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(meta),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    return {"train": self._generate_examples("train", cfg.num_train),
            "test": self._generate_examples("test", cfg.num_test)}

  def _generate_examples(self, split: str, n: int):
    cfg, protos = self.builder_config, self._prototypes()
    for lo in range(0, n, _CHUNK):
      part = fonts_dataset.fonts_split(protos, split, min(_CHUNK, n - lo), seed=cfg.seed,
                                       difficulty=cfg.difficulty, start=lo)
      pixels = quantize(part["image"])
      for j in range(pixels.shape[0]):
        yield lo + j, dict(image=png_bytes(pixels[j]), label=int(part["label"][j]),
                           font=int(part["font"][j]), theta=part["theta"][j], index=lo + j)


def quantize(images: np.ndarray) -> np.ndarray:
  """float images in [0, 1] -> uint8 (round to nearest; error <= 0.5/255)."""
  return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


def build_fonts_tfds(data_dir: str, prototypes: fonts_lib.Prototypes, num_train: int,
                     num_test: int, seed: int = 0, difficulty: str = "hard",
                     config_name: str = "default", overwrite: bool = False) -> str:
  """Writes FONTS as array_record into data_dir/fonts/<config_name>/<version>.

  Read it back with `tfds.data_source("fonts", data_dir=data_dir)` (the default
  config) or `"fonts/<config_name>"`, or `load_image_classification`.

  Args:
    data_dir: TFDS data folder (created if missing).
    prototypes: the glyph prototypes; their font order is recorded in the metadata.
    num_train, num_test: examples per split (>= 1).
    seed: data set seed (`fonts_dataset.split_key`).
    difficulty: a THETA_RANGES name.
    config_name: folder name of this variant.
    overwrite: replace an existing data set with other parameters (else ValueError).

  Returns:
    The written version folder.
  """
  if not isinstance(prototypes, fonts_lib.Prototypes):
    raise ValueError(f"prototypes must be a Prototypes, got {type(prototypes).__name__}")
  if not isinstance(config_name, str) or not re.fullmatch(r"[a-z0-9_]+", config_name):
    raise ValueError(f"config_name must match [a-z0-9_]+, got {config_name!r}")
  cfg = FontsConfig(
      name=config_name,
      num_train=checks.check_positive_int("num_train", num_train),
      num_test=checks.check_positive_int("num_test", num_test),
      size=prototypes.size, characters=prototypes.characters,
      difficulty=checks.check_choice("difficulty", difficulty, fonts_dataset.THETA_RANGES),
      font_paths=tuple(prototypes.font_paths),
      seed=checks.check_positive_int("seed", seed, minimum=0))
  builder = FontsBuilder(prototypes=prototypes, config=cfg, data_dir=os.fspath(data_dir),
                         file_format="array_record")
  path = os.fspath(builder.data_path)
  if os.path.exists(os.path.join(path, "dataset_info.json")):
    same = _read_metadata(path) == json.loads(json.dumps(builder._metadata()))  # pylint: disable=protected-access
    if same:
      return path
    if not overwrite:
      raise ValueError(
          f"data_dir already holds a FONTS data set with other parameters at {path}; "
          "pass overwrite=True or another config_name")
    shutil.rmtree(path)
  builder.download_and_prepare()
  _record_default_config(os.path.dirname(os.path.dirname(path)), config_name)
  return path


def _record_default_config(dataset_dir: str, config_name: str) -> None:
  """Writes the config that `tfds.data_source("fonts", ...)` opens (TFDS's own layout)."""
  path = os.path.join(dataset_dir, ".config", "metadata.json")
  if config_name != "default" and os.path.exists(path):
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump({"default_config_name": config_name}, f)


def _read_metadata(path: str) -> dict | None:
  try:
    with open(os.path.join(path, "metadata.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_fonts_metadata(data_dir: str, config_name: str = "default") -> dict:
  """The parameters and font order of a written FONTS data set."""
  meta = _read_metadata(dataset_version_dir(data_dir, f"fonts/{config_name}"))
  if meta is None:
    raise ValueError(f"no FONTS metadata under data_dir {data_dir!r}, config {config_name!r}")
  return meta
