"""SCENES TFDS export round trip, and the COCO panoptic loader on a tiny local fake."""
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rsec.data import scenes, scenes_tfds
from rsec.data.tfds_loader import LocalBuilder, png_bytes


def test_scenes_round_trip(tmp_path):
  scenes_tfds.build_scenes_tfds(str(tmp_path), {"train": 6}, size=32)
  back = scenes_tfds.load_scenes_tfds(str(tmp_path), "train")
  ref = scenes.scene_split("train", 6, size=32)
  assert np.abs(back["image"] - ref["image"]).max() <= 1 / 255 + 1e-6
  for k in ("semantic", "instance", "labels", "shown", "masks"):
    np.testing.assert_array_equal(back[k], ref[k])
  # Layouts survive exactly, so the oracle works on exported data.
  out = scenes.render(back["layout"], size=32)
  np.testing.assert_allclose(np.asarray(out["image"]), ref["image"], atol=1e-6)
  with pytest.raises(ValueError, match="already holds"):
    scenes_tfds.build_scenes_tfds(str(tmp_path), {"train": 2}, size=32)
  with pytest.raises(ValueError, match="split"):
    scenes_tfds.load_scenes_tfds(str(tmp_path), "validation")


class _FakeCoco(LocalBuilder, skip_registration=True):
  """coco/2017_panoptic's feature layout, two hand-made images."""
  name = "coco"
  VERSION = tfds.core.Version("1.1.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2017_panoptic")]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "panoptic_image": tfds.features.Image(encoding_format="png"),
        "image/id": np.int64,
        "panoptic_objects": tfds.features.Sequence({
            "id": np.int64, "area": np.int64, "is_crowd": np.bool_,
            "label": tfds.features.ClassLabel(num_classes=133)})}))

  def _split_generators(self, dl_manager):
    return {"validation": self._generate_examples()}

  def _generate_examples(self):
    for i in range(2):
      img = np.full((40, 60, 3), 100 + 50 * i, np.uint8)
      ids = np.full((40, 60), 7, np.int64)        # stuff id 7 (label 100)
      ids[5:20, 10:30] = 300                     # a thing, id 300 (label 2 = car)
      ids[25:35, 40:55] = 70000                  # a thing, id 70000 (label 0 = person)
      pan = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
      import io
      from PIL import Image
      buf = io.BytesIO()
      Image.fromarray(img).save(buf, format="jpeg")
      yield i, {"image": buf.getvalue(), "panoptic_image": png_bytes(pan), "image/id": i,
                "panoptic_objects": {"id": [7, 300, 70000], "area": [1850, 300, 150],
                                     "is_crowd": [False] * 3, "label": [100, 2, 0]}}


def test_coco_panoptic_loader(tmp_path):
  _FakeCoco(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  d = scenes_tfds.load_coco_panoptic(str(tmp_path), "validation", size=20, max_objects=4)
  assert d["image"].shape == (2, 20, 20, 3) and d["masks"].shape == (2, 4, 20, 20)
  np.testing.assert_array_equal(d["layout"]["cls"][0, :2], [2, 0])
  assert d["labels"][0, 2] == 1 and d["labels"][0, 0] == 1 and d["labels"][0].sum() == 2
  assert d["shown"][0].tolist() == [True, True, False, False]
  assert (d["semantic"][0] == 100).mean() > 0.5
  assert d["masks"][0, 0, 3:10, 4:10].all() and not d["masks"][0, 0, 12:].any()
  with pytest.raises(ValueError, match="not prepared"):
    scenes_tfds.load_coco_panoptic(str(tmp_path / "none"), "validation")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A prepared 4-image SCENES train split (32 x 32): the data_dir, never modified."""
  d = str(tmp_path_factory.mktemp("scenes_tfds"))
  scenes_tfds.build_scenes_tfds(d, {"train": 4}, size=32)
  return d


def _copy(exported, tmp_path):
  """A private copy of `exported` and the path of its only train shard."""
  d = str(tmp_path / "data")
  shutil.copytree(exported, d)
  (shard,) = glob.glob(os.path.join(d, "scenes", "1.0.0", "scenes-train.array_record-*"))
  return d, shard


def _garbage(path):
  size = os.path.getsize(path)
  with open(path, "wb") as f:
    f.write(b"\x00\xff" * (size // 2))


def _truncate(path):
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])


@pytest.mark.parametrize("spoil", [_garbage, _truncate, os.remove],
                         ids=["overwritten", "truncated", "deleted"])
def test_corrupted_shard_is_a_value_error_naming_split_and_folder(exported, tmp_path, spoil):
  d, shard = _copy(exported, tmp_path)
  assert scenes_tfds.load_scenes_tfds(d, "train")["image"].shape == (4, 32, 32, 3)
  spoil(shard)
  with pytest.raises(ValueError, match=f"split 'train' of 'scenes' in '{d}/scenes/1.0.0' could "
                                       r"not be read \(.*\): a shard is corrupted or missing"):
    scenes_tfds.load_scenes_tfds(d, "train")


@pytest.mark.parametrize("name", ["dataset_info.json", "features.json"])
def test_corrupted_metadata_is_a_value_error_naming_the_folder(exported, tmp_path, name):
  d, _ = _copy(exported, tmp_path)
  with open(os.path.join(d, "scenes", "1.0.0", name), "w") as f:
    f.write("{not json")
  with pytest.raises(ValueError, match=r"data set 'scenes' in .*scenes/1\.0\.0 has "
                                       r"unreadable metadata \(\w+: .*\); rebuild it"):
    scenes_tfds.load_scenes_tfds(d, "train")


def test_unprepared_directory_names_it_and_downloads_nothing(exported, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  for d in (empty, tmp_path / "none"):
    with pytest.raises(ValueError, match=rf"data set 'scenes' is not prepared in data_dir "
                                         rf"'{d}'.*nothing is downloaded"):
      scenes_tfds.load_scenes_tfds(str(d), "train")
  assert os.listdir(empty) == [] and not (tmp_path / "none").exists()
  # A build that died before writing its metadata leaves a version folder TFDS cannot
  # open: still "not prepared", not a TFDS traceback.
  d, _ = _copy(exported, tmp_path)
  os.remove(os.path.join(d, "scenes", "1.0.0", "dataset_info.json"))
  with pytest.raises(ValueError, match="'scenes' is not prepared"):
    scenes_tfds.load_scenes_tfds(d, "train")
