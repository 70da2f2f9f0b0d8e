"""Train the class-specific and class-agnostic VAE-GANs (learned manifolds) on FONTS.

The library behind `experiments.train_vaegan` (its command line, presets and outputs are in
that module's docstring); `run(config, workdir)` is what it calls.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from rsec import config as cfg_lib
from rsec import io, reporting
from rsec.data.sources import load_classification
from rsec.manifold import learned
from rsec.manifold.train_vaegan import train_vaegans, validate_vaegan_config


def run(config, workdir: str) -> dict:
  validate_vaegan_config(config)
  io.prepare_workdir(workdir)
  if io.is_chief():
    io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(config))
  data = load_classification(config.data, config.seed)
  state, stats = train_vaegans(config, data.train, data.num_classes, workdir,
                               progress=config.progress)
  low, high = learned.latent_box(state, data.train["image"], data.train["label"],
                                 config.eval.batch_size)
  test_x, test_y = data.test["image"], data.test["label"]
  errors = learned.reconstruction_errors(state, test_x, test_y, config.eval.batch_size)
  results = dict(stats, **{f"test_{k}": v for k, v in errors.items()},
                 latent_dim=config.model.latent_dim, num_classes=data.num_classes,
                 train_size=len(data.train["label"]), test_size=len(test_y),
                 devices=jax.device_count())
  if io.is_chief():
    learned.save_latent_box(workdir, low, high)
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    n = config.eval.num_images
    _reconstruction_grid(state, test_x, test_y, data.num_classes, n,
                         os.path.join(workdir, "reconstructions.png"))
    _sample_grid(state, data.num_classes, n, config.seed,
                 os.path.join(workdir, "samples.png"))
    reporting.plot_training_curves(os.path.join(workdir, "metrics.jsonl"),
                                   os.path.join(workdir, "curves.png"),
                                   keys=("train/l1", "train/kl", "train/disc_accuracy"))
    io.write_text_atomic(os.path.join(workdir, "report.md"), _report(config, results,
                                                                     data.num_classes))
  return results


def _grid(rows: list[np.ndarray], path: str, titles: list[str]) -> None:
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(rows), rows[0].shape[0], squeeze=False,
                           figsize=(rows[0].shape[0] * 0.8, len(rows) * 0.85))
  for r, imgs in enumerate(rows):
    for c in range(imgs.shape[0]):
      axes[r, c].imshow(imgs[c, ..., 0], cmap="gray_r", vmin=0, vmax=1)
      axes[r, c].set_xticks([])
      axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(titles[r], rotation=0, labelpad=18, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _reconstruction_grid(state, x, y, num_classes, n, path) -> None:
  """Per class: n test images, their class-model and agnostic-model reconstructions."""
  rows, titles = [], []
  for c in range(num_classes):
    xc = x[y == c][:n]
    if len(xc) == 0:
      continue
    rows += [xc, learned.reconstruct_by_model(state, xc, np.full(len(xc), c), n),
             learned.reconstruct_by_model(state, xc, np.full(len(xc), num_classes), n)]
    titles += [f"{c} x", f"{c} class", f"{c} agn."]
  width = max(r.shape[0] for r in rows)
  rows = [np.concatenate([r, np.zeros((width - len(r),) + r.shape[1:], r.dtype)]) for r in rows]
  _grid(rows, path, titles)


def _sample_grid(state, num_classes, n, seed, path) -> None:
  """n prior samples per model, z ~ N(0, I) truncated to [-2, 2]^d."""
  d = state.modules[0].latent_dim
  z = jax.random.truncated_normal(jax.random.key(seed), -2.0, 2.0, (n, d))
  dec = jax.jit(lambda st, m: learned.decode(st, z, m))
  rows = [np.asarray(dec(state, m)) for m in range(num_classes + 1)]
  _grid(rows, path, [str(m) for m in range(num_classes)] + ["agn."])


def _report(config, r: dict, num_classes: int) -> str:
  per_class = [(c, r[f"test_class_{c}_l2"]) for c in range(num_classes)]
  rows = [(k, r[k]) for k in ("test_class_l2", "test_class_l1", "test_agnostic_l2",
                              "test_agnostic_l1", "steps", "train_seconds",
                              "seconds_per_step", "devices")]
  return "\n".join([
      f"# train_vaegan: {num_classes} class-specific + 1 class-agnostic VAE-GANs, "
      f"latent {config.model.latent_dim}", "",
      "Test reconstruction error (x through the encoder mean and decoder):", "",
      reporting.markdown_table(["metric", "value"], rows), "",
      reporting.markdown_table(["class", "L2 error (class model)"], per_class), "",
      "![reconstructions](reconstructions.png)", "",
      "Prior samples, z ~ N(0, I) truncated to [-2, 2] (rows: class models, then agnostic):",
      "", "![samples](samples.png)", "", "![curves](curves.png)", ""])
