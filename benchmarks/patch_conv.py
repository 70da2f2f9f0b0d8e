"""PatchConv's two patch forms on the paper CNN: plain (k^2 slices) vs space-to-depth.

python -m benchmarks.patch_conv [--rounds 7] [--json OUT]

`PatchConv` takes a strided convolution's patches from a space-to-depth view when its
kernel is a multiple of its stride (`rsec.models.layers.space_to_depth_patches`); this
measures that choice against the plain 16-slice patches (`extract_patches`) in one
process, interleaved (`time_interleaved`), on the paper CNN (10 classes, 28x28x1, random
weights and images): the forward pass (eval mode) at 250 and 500 rows, 10 PGD steps
(forward + input gradient in a `fori_loop`, the attacks' inner loop) at batch 100, and an
Adam training step at batch 100; torch's forward of the same weights beside them
(benchmarks/torch_port.py, 2 threads). Rows (images) per second; for PGD, image-steps.
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import time_interleaved
from rsec.models import layers
from rsec.models.classifiers import make_model

PLAIN = (lambda x, k, s, p: layers.extract_patches(x, k, (s, s), p),
         lambda kernel, s: kernel.reshape(-1, kernel.shape[-1]))
SPACE_TO_DEPTH = (layers.space_to_depth_patches, layers.space_to_depth_kernel)


def _use(form) -> None:
  """Makes `PatchConv` trace with `form`'s patches and kernel order (module globals, read
  at trace time; every function below is traced right after)."""
  layers.space_to_depth_patches, layers.space_to_depth_kernel = form


def compiled_fns(model, variables, x, y, form) -> dict:
  """{name: (call, rows per call)} for one patch form, traced and compiled now."""
  _use(form)
  fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def xent(v, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(
        model.apply(v, x, train=False), y).mean()

  @jax.jit
  def pgd10(x, y):
    def body(_, xa):
      g = jax.grad(xent, argnums=1)(variables, xa, y)
      return jnp.clip(xa + 0.01 * jnp.sign(g), 0.0, 1.0)
    return jax.lax.fori_loop(0, 10, body, x)

  tx = optax.adam(1e-3)

  @jax.jit
  def train(params, opt, stats, x, y):
    def loss(p):
      logits, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd
    (_, upd), g = jax.value_and_grad(loss, has_aux=True)(params)
    u, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, u), opt, upd["batch_stats"]

  opt = tx.init(variables["params"])
  fns = {f"forward@{b}": (lambda b=b: fwd(variables, x[:b]).block_until_ready(), b)
         for b in (250, 500)}
  fns["pgd10@100"] = (lambda: pgd10(x[:100], y[:100]).block_until_ready(), 1000)
  fns["train@100"] = (lambda: jax.block_until_ready(
      train(variables["params"], opt, variables["batch_stats"], x[:100], y[:100])), 100)
  for f, _ in fns.values():   # compile while this form is installed
    f()
  return fns


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--min_seconds", type=float, default=0.4)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  import torch
  from benchmarks.torch_port import torch_paper_classifier
  torch.set_num_threads(2)
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.rand(500, 28, 28, 1).astype(np.float32))
  y = jnp.asarray(rng.randint(0, 10, 500))
  model = make_model("paper_classifier", 10)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  fns = {}
  try:
    for tag, form in (("plain", PLAIN), ("space_to_depth", SPACE_TO_DEPTH)):
      fns.update({f"{tag}/{k}": v for k, v in
                  compiled_fns(model, variables, x, y, form).items()})
  finally:
    _use(SPACE_TO_DEPTH)
  net = torch_paper_classifier(variables)
  for b in (250, 500):
    xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x[:b]).transpose(0, 3, 1, 2)))

    def tf(xt=xt):
      with torch.no_grad():
        net(xt)
    fns[f"torch/forward@{b}"] = (tf, b)
  t = time_interleaved({k: f for k, (f, _) in fns.items()}, rounds=args.rounds,
                       min_seconds=args.min_seconds)
  rate = {k: fns[k][1] / sec for k, sec in t.items()}
  out = {"rows_per_s": rate, "space_to_depth_over_plain": {
      k.split("/", 1)[1]: rate[k] / rate["plain/" + k.split("/", 1)[1]]
      for k in rate if k.startswith("space_to_depth/")}}
  for k, v in rate.items():
    print(f"{k:32s} {v:10,.0f}")
  for k, v in out["space_to_depth_over_plain"].items():
    print(f"space-to-depth / plain, {k:14s} {v:.2f}x")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
