"""Shared FONTS fixtures: the default-font prototypes, rendered once per session."""
import os

import matplotlib
import pytest

from rsec.data import fonts


@pytest.fixture(scope="session")
def font_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("font_cache"))


@pytest.fixture(scope="session")
def prototypes(font_cache):
  protos = fonts.load_prototypes(None, cache_dir=font_cache)
  print(f"\nFONTS default fonts kept: {protos.num_fonts}; skipped: {len(protos.skipped)}")
  return protos


@pytest.fixture(scope="session")
def mpl_font_dir():
  return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@pytest.fixture(scope="session")
def mpl_prototypes(mpl_font_dir, font_cache):
  """Prototypes from matplotlib's bundled fonts only (identical on every machine)."""
  return fonts.load_prototypes([mpl_font_dir], cache_dir=font_cache)
