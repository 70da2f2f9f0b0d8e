"""FONTS as TFDS array_record, read back without TensorFlow; the TFDS image loader."""
import json
import os
import struct
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rsec.data import fonts_dataset as fd
from rsec.data import tfds_fonts, tfds_loader


@pytest.fixture(scope="module")
def fonts_dir(tmp_path_factory, prototypes):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  path = tfds_fonts.build_fonts_tfds(data_dir, prototypes, num_train=60, num_test=20, seed=5,
                                     difficulty="moderate")
  assert path == os.path.join(data_dir, "fonts", "default", "1.0.0")
  return data_dir


def test_data_source_matches_generator(fonts_dir, prototypes):
  source = tfds.data_source("fonts", data_dir=fonts_dir)
  assert set(source) == {"train", "test"}
  for split, n in (("train", 60), ("test", 20)):
    records = source[split].__getitems__(range(len(source[split])))
    assert len(records) == n
    want = fd.fonts_split(prototypes, split, n, seed=5, difficulty="moderate")
    np.testing.assert_array_equal([r["index"] for r in records], np.arange(n))
    np.testing.assert_array_equal([r["label"] for r in records], want["label"])
    np.testing.assert_array_equal([r["font"] for r in records], want["font"])
    np.testing.assert_array_equal(np.stack([r["theta"] for r in records]), want["theta"])
    images = np.stack([r["image"] for r in records])
    assert images.dtype == np.uint8 and images.shape == (n, 28, 28, 1)
    np.testing.assert_allclose(images / 255.0, want["image"], atol=0.5 / 255 + 1e-6)
  assert "tensorflow" not in sys.modules


def test_metadata_records_font_order(fonts_dir, prototypes):
  meta = tfds_fonts.read_fonts_metadata(fonts_dir)
  assert meta["font_names"] == list(prototypes.font_names)
  assert meta["font_paths"] == list(prototypes.font_paths)
  assert (meta["seed"], meta["difficulty"], meta["num_train"], meta["num_test"]) == (
      5, "moderate", 60, 20)
  builder = tfds.builder("fonts", data_dir=fonts_dir)
  assert prototypes.font_names[0] in builder.info.description
  assert builder.info.features["label"].names == list("ABCDEFGHIJ")


def test_rebuild_same_reuses_other_params_refuse(fonts_dir, prototypes):
  path = tfds_fonts.build_fonts_tfds(fonts_dir, prototypes, 60, 20, seed=5, difficulty="moderate")
  assert os.path.isdir(path)
  with pytest.raises(ValueError, match="other parameters.*overwrite=True"):
    tfds_fonts.build_fonts_tfds(fonts_dir, prototypes, 61, 20, seed=5, difficulty="moderate")
  other = tfds_fonts.build_fonts_tfds(fonts_dir, prototypes, 10, 10, seed=6, config_name="small")
  assert other.endswith(os.path.join("fonts", "small", "1.0.0"))
  assert len(tfds.data_source("fonts/small", data_dir=fonts_dir)["train"]) == 10
  assert len(tfds.data_source("fonts", data_dir=fonts_dir)["train"]) == 60  # default kept


def test_build_errors(tmp_path, prototypes):
  d = str(tmp_path)
  with pytest.raises(ValueError, match="num_train must be an integer >= 1"):
    tfds_fonts.build_fonts_tfds(d, prototypes, 0, 5)
  with pytest.raises(ValueError, match="unknown difficulty"):
    tfds_fonts.build_fonts_tfds(d, prototypes, 5, 5, difficulty="nope")
  with pytest.raises(ValueError, match="config_name must match"):
    tfds_fonts.build_fonts_tfds(d, prototypes, 5, 5, config_name="Bad Name")
  with pytest.raises(ValueError, match="prototypes must be a Prototypes"):
    tfds_fonts.build_fonts_tfds(d, prototypes.images, 5, 5)


def test_loader_on_fonts(fonts_dir, prototypes):
  test = tfds_fonts.load_image_classification("fonts", fonts_dir, "test")
  want = fd.fonts_split(prototypes, "test", 20, seed=5, difficulty="moderate")
  assert test["image"].dtype == np.float32 and test["image"].shape == (20, 28, 28, 1)
  assert test["label"].dtype == np.int32
  np.testing.assert_array_equal(test["label"], want["label"])
  np.testing.assert_allclose(test["image"], want["image"], atol=0.5 / 255 + 1e-6)
  small = tfds_fonts.load_image_classification("fonts/default:1.0.0", fonts_dir, "train")
  assert small["image"].shape[0] == 60


@pytest.fixture(scope="module")
def mnist_like(tmp_path_factory):
  """A tiny MNIST-shaped set (image uint8 [28, 28, 1] + label) written without TF."""
  rng = np.random.default_rng(0)
  splits = {s: (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                rng.integers(0, 10, n).astype(np.int64)) for s, n in (("train", 30), ("test", 12))}
  data_dir = str(tmp_path_factory.mktemp("mnist_like"))
  tfds_loader.write_image_classification_tfds(data_dir, "tiny_mnist", splits)
  return data_dir, splits


def test_loader_on_mnist_like_array_record(mnist_like):
  data_dir, splits = mnist_like
  for split, (images, labels) in splits.items():
    got = tfds_loader.load_image_classification("tiny_mnist", data_dir, split)
    np.testing.assert_array_equal(got["label"], labels)
    np.testing.assert_array_equal(got["image"], images.astype(np.float32) / 255.0)


def _tfrecord_frame(data: bytes) -> bytes:
  # CRC fields are not verified by the reader; TensorFlow writes masked CRC32C here.
  return struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4


def test_loader_reads_tfrecord_without_tensorflow(mnist_like, tmp_path):
  """What `tfds build mnist` writes by default: the same records in TFRecord files."""
  from array_record.python import array_record_module
  data_dir, splits = mnist_like
  src = os.path.join(data_dir, "tiny_mnist", "1.0.0")
  dst = tmp_path / "tiny_mnist" / "1.0.0"
  dst.mkdir(parents=True)
  for name in os.listdir(src):
    if ".array_record-" in name:
      reader = array_record_module.ArrayRecordReader(os.path.join(src, name))
      records = reader.read_all()
      reader.close()
      with open(dst / name.replace(".array_record-", ".tfrecord-"), "wb") as f:
        f.write(b"".join(_tfrecord_frame(r) for r in records))
    elif name == "dataset_info.json":
      info = json.load(open(os.path.join(src, name)))
      info["fileFormat"] = "tfrecord"
      json.dump(info, open(dst / name, "w"))
    else:
      (dst / name).write_bytes(open(os.path.join(src, name), "rb").read())
  got = tfds_loader.load_image_classification("tiny_mnist", str(tmp_path), "test")
  images, labels = splits["test"]
  np.testing.assert_array_equal(got["label"], labels)
  np.testing.assert_array_equal(got["image"], images.astype(np.float32) / 255.0)
  assert "tensorflow" not in sys.modules


def test_loader_errors(mnist_like, tmp_path):
  data_dir, _ = mnist_like
  with pytest.raises(ValueError, match=r"'mnist' is not prepared in data_dir .*nothing is downloaded"):
    tfds_fonts.load_image_classification("mnist", str(tmp_path), "train")
  with pytest.raises(ValueError, match="'tiny_mnist:9.9.9' is not prepared"):
    tfds_loader.load_image_classification("tiny_mnist:9.9.9", data_dir, "train")
  with pytest.raises(ValueError, match="split 'validation' is not in data set"):
    tfds_loader.load_image_classification("tiny_mnist", data_dir, "validation")
  with pytest.raises(ValueError, match="name must be a TFDS data set name"):
    tfds_loader.load_image_classification("", data_dir, "train")
  with pytest.raises(ValueError, match="already holds 'tiny_mnist'"):
    tfds_loader.write_image_classification_tfds(
        data_dir, "tiny_mnist", {"train": (np.zeros((1, 4, 4, 1), np.uint8), np.zeros(1, int))})
  with pytest.raises(ValueError, match="images must be uint8"):
    tfds_loader.write_image_classification_tfds(
        str(tmp_path), "x", {"train": (np.zeros((1, 4, 4)), np.zeros(1, int))})
  with pytest.raises(ValueError, match="class_names has 2 names but a label is 5"):
    tfds_loader.write_image_classification_tfds(
        str(tmp_path), "y", {"train": (np.zeros((1, 4, 4, 1), np.uint8), np.array([5]))},
        class_names=["a", "b"])


def test_corrupted_shard_of_an_image_classification_set_is_a_value_error(mnist_like, tmp_path):
  import glob
  import shutil
  data_dir = str(tmp_path / "copy")
  shutil.copytree(mnist_like[0], data_dir)
  shards = glob.glob(os.path.join(data_dir, "**", "*train.array_record*"), recursive=True)
  assert shards
  with open(shards[0], "r+b") as f:
    f.truncate(os.path.getsize(shards[0]) // 2)
  with pytest.raises(ValueError, match=r"split 'train' of 'tiny_mnist' in .* could not be read "
                                       r"\(.*\): a shard is corrupted or missing"):
    tfds_loader.load_image_classification("tiny_mnist", data_dir, "train")
