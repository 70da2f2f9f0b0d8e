"""Training throughput of the paper classifier at batch 100: rsec (JAX) vs PyTorch.

python -m benchmarks.train_throughput [--batch 100] [--steps_per_call 20] [--rounds 5]
    [--torch_device cpu|cuda]

Both sides train the same architecture (conv 4x4/2 + BN + ReLU 16/32/64, dense 100 + BN,
dense 10) with Adam + L2 weight decay on the same random 28x28 batches; timings are
interleaved. Prints examples/s for each, the ratio, and the fraction of the default JAX
device's measured matmul peak that the JAX step reaches (XLA's FLOP count / time).
rsec runs on JAX's default device; PyTorch on --torch_device (default cpu; 'cuda' for a
GPU-vs-GPU comparison, with a synchronize at the end of each timed call).
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import compiled_flops, matmul_peak_gflops, time_interleaved
from rsec import parallel
from rsec.models.classifiers import make_model
from rsec.training.state import create_train_state, make_optimizer
from rsec.training.steps import make_multi_step, make_train_step


def jax_runner(batch: int, k: int):
  mesh = parallel.data_mesh(jax.devices()[:1])
  model = make_model("paper_classifier", 10)
  tx = make_optimizer(0.01, 100, lr_decay=0.95, b1=0.5, b2=0.9, weight_decay=1e-4)
  state = parallel.replicate(create_train_state(model, tx, jax.random.key(0), (1, 28, 28, 1)),
                             mesh)
  rng = np.random.default_rng(0)
  batches = {"image": rng.random((k, batch, 28, 28, 1), np.float32),
             "label": rng.integers(0, 10, (k, batch)).astype(np.int32)}
  batches = parallel.shard_batch(batches, mesh, axis=1)
  steps = jnp.arange(k, dtype=jnp.int32)
  valid = jnp.ones(k, bool)
  multi = make_multi_step(make_train_step(), mesh)
  flops = compiled_flops(multi, state, batches, jax.random.key(0), steps, valid) / k
  box = [state]

  def run():
    box[0], m = multi(box[0], batches, jax.random.key(0), steps, valid)
    jax.block_until_ready(m)
  return run, flops


def torch_runner(batch: int, k: int, device: str = "cpu"):
  import torch
  from torch import nn
  torch.manual_seed(0)
  net = nn.Sequential(
      nn.Conv2d(1, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
      nn.Conv2d(16, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
      nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
      nn.Flatten(), nn.Linear(64 * 3 * 3, 100, bias=False), nn.BatchNorm1d(100), nn.ReLU(),
      nn.Linear(100, 10)).to(device)
  opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.5, 0.9), weight_decay=1e-4)
  rng = np.random.default_rng(0)
  xs = torch.from_numpy(rng.random((k, batch, 1, 28, 28), np.float32)).to(device)
  ys = torch.from_numpy(rng.integers(0, 10, (k, batch))).to(device)
  loss_fn = nn.CrossEntropyLoss()

  def run():
    for i in range(k):
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(net(xs[i]), ys[i])
      loss.backward()
      opt.step()
    if xs.is_cuda:
      torch.cuda.synchronize()
  return run


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=100)
  p.add_argument("--steps_per_call", type=int, default=20)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--torch_device", default="cpu", help="device of the PyTorch side")
  args = p.parse_args()
  import torch
  k, b = args.steps_per_call, args.batch
  jrun, flops = jax_runner(b, k)
  t = time_interleaved({"rsec": jrun, "torch": torch_runner(b, k, args.torch_device)},
                       rounds=args.rounds)
  peak = matmul_peak_gflops()
  eps = {name: k * b / sec for name, sec in t.items()}
  out = {
      "batch": b, "steps_per_call": k, "jax_device": str(jax.devices()[0]),
      "torch_device": args.torch_device, "torch_threads": torch.get_num_threads(),
      "rsec_examples_per_s": eps["rsec"], "torch_examples_per_s": eps["torch"],
      "speedup_vs_torch": eps["rsec"] / eps["torch"],
      "step_gflop": flops / 1e9, "rsec_gflops": flops / (t["rsec"] / k) / 1e9,
      "matmul_peak_gflops": peak,
  }
  out["fraction_of_matmul_peak"] = out["rsec_gflops"] / peak
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
