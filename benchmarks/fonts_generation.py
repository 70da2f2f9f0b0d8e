"""FONTS generation speed at 28x28: rsec's jitted generator vs PyTorch affine_grid+grid_sample.

python -m benchmarks.fonts_generation [--batch 1000] [--rounds 5]

Both sides warp the same prototypes with the same affine matrices (from the same theta),
bilinear, zero padding, align_corners=False; the script also reports the largest pixel
difference between the two outputs. Timings are interleaved.
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import time_interleaved
from rsec.data.fonts import default_font_paths, load_prototypes
from rsec.data.fonts_dataset import sample_theta
from rsec.data.warp import render_batch, theta_to_affine


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=1000)
  p.add_argument("--rounds", type=int, default=5)
  args = p.parse_args()
  import torch
  import torch.nn.functional as F

  protos = load_prototypes(default_font_paths())
  n = args.batch
  key = jax.random.key(0)
  kf, kc, kt = jax.random.split(key, 3)
  fonts = jax.random.randint(kf, (n,), 0, protos.num_fonts)
  chars = jax.random.randint(kc, (n,), 0, protos.num_classes)
  theta = sample_theta(kt, n, "hard")
  images = jnp.asarray(protos.images)

  gen = jax.jit(render_batch)
  out_jax = np.asarray(gen(images, fonts, chars, theta))

  t_protos = torch.from_numpy(np.asarray(images))
  t_fonts, t_chars = torch.from_numpy(np.asarray(fonts)), torch.from_numpy(np.asarray(chars))
  t_affine = torch.from_numpy(np.asarray(theta_to_affine(theta)))

  def torch_gen():
    with torch.no_grad():
      glyphs = t_protos[t_fonts, t_chars][:, None]
      grid = F.affine_grid(t_affine, (n, 1, 28, 28), align_corners=False)
      return F.grid_sample(glyphs, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)

  out_torch = torch_gen()[:, 0].numpy()
  t = time_interleaved({
      "rsec": lambda: gen(images, fonts, chars, theta).block_until_ready(),
      "torch": torch_gen,
  }, rounds=args.rounds)
  out = {"batch": n, "torch_threads": torch.get_num_threads(),
         "rsec_images_per_s": n / t["rsec"], "torch_images_per_s": n / t["torch"],
         "speedup_vs_torch": t["torch"] / t["rsec"],
         "max_abs_pixel_difference": float(np.max(np.abs(out_jax - out_torch)))}
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
