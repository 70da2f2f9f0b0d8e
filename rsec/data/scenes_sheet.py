"""A PNG sheet of SCENES examples: image, semantic labels, instances, oracle removal."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rsec.data import scene_rules as R
from rsec.data import scenes


def save_scene_sheet(path: str, n: int = 6, seed: int = 0, size: int = 64,
                     split: str = "train") -> None:
  """Rows of: scene, semantic map, instance masks, oracle without its first shown object."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  d = scenes.scene_split(split, n, seed=seed, size=size)
  first = np.argmax(d["shown"], 1)
  remove = np.zeros_like(d["shown"])
  remove[np.arange(n), first] = d["shown"][np.arange(n), first]
  gone = scenes.oracle_removal(d["layout"], jnp.asarray(remove), size)
  cols = ("scene", "semantic", "instances", "oracle removal", "labels behind")
  fig, axes = plt.subplots(n, len(cols), figsize=(1.8 * len(cols), 1.8 * n), squeeze=False)
  for i in range(n):
    names = ", ".join(R.THINGS[k] for k in np.flatnonzero(d["labels"][i]))
    panels = (d["image"][i], d["semantic"][i], d["instance"][i], np.asarray(gone["image"][i]),
              np.asarray(gone["semantic"][i]))
    for j, p in enumerate(panels):
      kw = {} if p.ndim == 3 else dict(cmap="tab20", vmin=-1, vmax=R.NUM_LABELS)
      axes[i, j].imshow(p, interpolation="nearest", **kw)
      axes[i, j].axis("off")
      if i == 0:
        axes[i, j].set_title(cols[j], fontsize=8)
    axes[i, 0].text(0, -1, names, fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
