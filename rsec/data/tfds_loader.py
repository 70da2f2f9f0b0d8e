"""TensorFlow-free TFDS I/O for image classification sets.

TFDS 4.9 writes array_record without TensorFlow as long as no feature needs TF
to *encode*: `tfds.features.Image` encodes numpy arrays with `tf.image`, but
accepts already-encoded PNG bytes as they are, so the builders here PNG-encode
with Pillow. Reading decodes with Pillow too: array_record (and parquet) through
`builder.as_data_source`, and tfrecord (what `tfds build` writes by default)
through a small framing reader plus TFDS's numpy example parser. Nothing here
downloads; a missing data set is a ValueError naming the folder.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import types

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils

_NAME = re.compile(r"[a-z][a-z0-9_]*")


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of builders defined inside a package (and never registered by name).

  TFDS's `code_path` lookup imports importlib_resources, which TFDS only
  requires before Python 3.9, so it fails for builders defined in packages.
  """

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)


def png_bytes(image: np.ndarray) -> bytes:
  """PNG encoding of a uint8 [H, W] or [H, W, C] (C in 1, 3, 4) image, by Pillow."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="png")
  return buf.getvalue()


class _ImageClassificationBuilder(LocalBuilder, skip_registration=True):
  """Writes in-memory (uint8 images, int labels) splits; subclassed per name."""
  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, splits: dict, class_names: list[str], **kwargs):
    self._splits = splits
    self._class_names = class_names
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    shape = next(iter(self._splits.values()))[0].shape[1:]
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=shape, dtype=np.uint8, encoding_format="png"),
            "label": tfds.features.ClassLabel(names=self._class_names)}),
        supervised_keys=("image", "label"),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(*arrays) for name, arrays in self._splits.items()}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, dict(image=png_bytes(image), label=int(label))


def write_image_classification_tfds(data_dir: str, name: str, splits: dict,
                                    class_names: list[str] | None = None,
                                    overwrite: bool = False) -> str:
  """Writes (images, labels) splits as an array_record TFDS data set, without TensorFlow.

  Args:
    data_dir: TFDS data folder.
    name: data set name ([a-z][a-z0-9_]*), e.g. "mnist" to convert a local copy.
    splits: split name -> (images uint8 [n, H, W, C] with C in 1, 3, 4, labels int [n]).
    class_names: label names; None means "0", "1", ... up to the largest label.
    overwrite: replace an existing data set of that name (else ValueError).

  Returns:
    The written version folder data_dir/name/1.0.0.
  """
  if not isinstance(name, str) or not _NAME.fullmatch(name):
    raise ValueError(f"name must match [a-z][a-z0-9_]*, got {name!r}")
  if not isinstance(splits, dict) or not splits:
    raise ValueError("splits must be a non-empty dict of name -> (images, labels)")
  shape, top = None, -1
  for split, arrays in splits.items():
    images, labels = (np.asarray(a) for a in arrays)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
      raise ValueError(f"splits[{split!r}] images must be uint8 [n, H, W, C] with C in "
                       f"(1, 3, 4), got {images.dtype} {images.shape}")
    if shape not in (None, images.shape[1:]):
      raise ValueError(f"splits[{split!r}] images have shape {images.shape[1:]}, others {shape}")
    shape = images.shape[1:]
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"splits[{split!r}] labels must be int [{images.shape[0]}], "
                       f"got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
      raise ValueError(f"splits[{split!r}] labels must be >= 0")
    top = max(top, int(labels.max()) if labels.size else -1)
  class_names = list(class_names) if class_names is not None else [str(i) for i in range(top + 1)]
  if top >= len(class_names):
    raise ValueError(f"class_names has {len(class_names)} names but a label is {top}")
  cls = types.new_class(f"ImageClassification_{name}", (_ImageClassificationBuilder,),
                        dict(skip_registration=True), lambda ns: ns.update(name=name))
  builder = cls(splits={k: tuple(np.asarray(a) for a in v) for k, v in splits.items()},
                class_names=class_names, data_dir=os.fspath(data_dir), file_format="array_record")
  return write_builder(builder, name, overwrite)


def write_builder(builder, name: str, overwrite: bool) -> str:
  """Prepares `builder` into its data_dir; an existing copy is an error unless `overwrite`."""
  path = os.fspath(builder.data_path)
  if os.path.exists(path):
    if not overwrite:
      raise ValueError(f"data_dir already holds {name!r} at {path}; pass overwrite=True")
    shutil.rmtree(path)
  builder.download_and_prepare()
  return path


def dataset_version_dir(data_dir: str, name: str) -> str:
  """data_dir/<dataset>[/<config>]/<version> of a prepared data set, or ValueError.

  Args:
    data_dir: TFDS data folder.
    name: "<dataset>[/<config>][:<version>]"; without a config, the recorded
      default config (or the only one) is used; without a version, the newest.
  """
  base, _, version = name.partition(":")
  root = os.path.join(os.fspath(data_dir), *base.split("/"))
  missing = (f"data set {name!r} is not prepared in data_dir {os.fspath(data_dir)!r} "
             f"(looked in {root}); nothing is downloaded at run time: prepare it there "
             "first (`tfds build NAME --data_dir=DIR` on a machine with TensorFlow, "
             "write_image_classification_tfds, or build_fonts_tfds)")
  if not os.path.isdir(root):
    raise ValueError(missing)

  def versions(folder):
    found = [v for v in os.listdir(folder) if re.fullmatch(r"\d+\.\d+\.\d+", v)
             and os.path.exists(os.path.join(folder, v, "dataset_info.json"))]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))

  if "/" not in base and not versions(root):
    configs = sorted(c for c in os.listdir(root) if not c.startswith(".")
                     and os.path.isdir(os.path.join(root, c)) and versions(os.path.join(root, c)))
    default = None
    try:
      with open(os.path.join(root, ".config", "metadata.json")) as f:
        default = json.load(f).get("default_config_name")
    except (OSError, ValueError):
      pass
    if default not in configs:
      default = configs[0] if len(configs) == 1 else None
    if default is None:
      if not configs:
        raise ValueError(missing)
      raise ValueError(f"data set {name!r} in data_dir {os.fspath(data_dir)!r} has configs "
                       f"{configs}; name one, e.g. '{base}/{configs[0]}'")
    root = os.path.join(root, default)
  found = [v for v in versions(root) if not version or v == version]
  if not found:
    raise ValueError(missing)
  return os.path.join(root, found[-1])


def _read_tfrecord(path: str):
  """Yields the records of one TFRecord file (framing only; CRCs are not checked)."""
  with open(path, "rb") as f:
    while True:
      head = f.read(12)
      if not head:
        return
      if len(head) < 12:
        raise ValueError(f"truncated TFRecord file {path}")
      (length,) = struct.unpack("<Q", head[:8])
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        raise ValueError(f"truncated TFRecord file {path}")
      yield data


def read_split(builder, split: str) -> list[dict]:
  """All decoded examples of a split (numpy), whatever the file format.

  ValueError naming the split and folder for an unknown split or a corrupted, truncated
  or missing shard (array_record raises RuntimeError, the decoders their own errors).
  """
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} is not in data set {builder.name!r}; "
                     f"it has {sorted(builder.info.splits)}")
  try:
    return _read_split(builder, split)
  except Exception as e:  # noqa: BLE001 -- the readers and decoders raise many types
    raise ValueError(f"split {split!r} of {builder.name!r} in {os.fspath(builder.data_dir)!r} "
                     f"could not be read ({type(e).__name__}: {str(e)[:300]}): a shard is "
                     f"corrupted or missing; rebuild the data set") from e


def _read_split(builder, split: str) -> list[dict]:
  fmt = builder.info.file_format
  if fmt is not None and fmt.value == "tfrecord":
    features = builder.info.features
    return [features.deserialize_example_np(record)
            for path in builder.info.splits[split].filepaths
            for record in _read_tfrecord(os.fspath(path))]
  source = builder.as_data_source(split=split)
  return list(source.__getitems__(range(len(source))))


def load_image_classification(name: str, data_dir: str, split: str) -> dict[str, np.ndarray]:
  """Reads a prepared TFDS image classification split (mnist, emnist/..., fonts, ...).

  Works without TensorFlow on array_record, parquet and tfrecord data; never
  downloads.

  Args:
    name: "<dataset>[/<config>][:<version>]", as TFDS spells it.
    data_dir: the TFDS data folder holding it.
    split: e.g. "train" or "test".

  Returns:
    dict(image [n, H, W, C] float32 in [0, 1], label [n] int32).
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"name must be a TFDS data set name, got {name!r}")
  if not isinstance(split, str) or not split:
    raise ValueError(f"split must be a split name such as 'train', got {split!r}")
  builder = tfds.builder_from_directory(dataset_version_dir(data_dir, name))
  features = builder.info.features
  keys = builder.info.supervised_keys or ("image", "label")
  if (not isinstance(keys, tuple) or len(keys) != 2 or keys[0] not in features
      or keys[1] not in features or not isinstance(features[keys[0]], tfds.features.Image)):
    raise ValueError(f"data set {name!r} in data_dir {os.fspath(data_dir)!r} is not an image "
                     f"classification set (features {list(features.keys())})")
  records = read_split(builder, split)
  if not records:
    raise ValueError(f"split {split!r} of {name!r} in data_dir {os.fspath(data_dir)!r} is empty")
  images = np.stack([np.asarray(r[keys[0]]) for r in records])
  if images.ndim == 3:
    images = images[..., None]
  scale = 255.0 if images.dtype == np.uint8 else 1.0
  return dict(image=images.astype(np.float32) / scale,
              label=np.asarray([r[keys[1]] for r in records], np.int32))
