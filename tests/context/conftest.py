"""Small SCENES batches shared by the context tests (32x32, rendered once)."""
import pytest

from rsec.data import scenes


@pytest.fixture(scope="session")
def small_scenes():
  return scenes.scene_split("train", 64, seed=3, size=32)
