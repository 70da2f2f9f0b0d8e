"""Zoo throughput (models per minute) at the reverse-engineering quick preset's sizes.

python -m benchmarks.zoo_throughput [--vectorised 96] [--single 6] [--rounds 2]
    [--threads 2] [--out OUT.json]

Three ways to train the same zoo models (attributes drawn by the quick preset's plan; the
same FONTS data, steps, batch sizes and learning rates):
- vectorised: rsec's zoo stacks (`rsec.reverse.zoo_train.make_stack_step`: the masked
  super-network over a stack in lanes layout, one batch size per stack, `run_loop`),
  `--vectorised` models in stacks of up to --stack models;
- rsec one at a time: each model alone through the same `run_loop`, with the one-model
  step (`zoo_train.make_step` under `vmap_step`, a stack of one: lanes of width 1 would
  waste the vector registers); its compiled chunk reused across models of a batch size,
  so compile time is not what is measured (the first model of each batch size is a
  warm-up);
- PyTorch one at a time: each model as a plain torch module of its own attributes
  (real 3x3 kernels, only its layers), its own optimizer (SGD momentum 0.9 / Adam /
  RMSprop with alpha 0.9 as optax's decay), torch.set_num_threads(--threads).
The three alternate, round by round. Compile time of the vectorised stacks is included
(one compile per batch size, as a zoo build pays it).
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np


def _torch_model(arch_values, net, torch):
  nn = torch.nn
  act = {"relu": nn.ReLU, "elu": nn.ELU, "prelu": nn.PReLU, "tanh": nn.Tanh}[arch_values["act"]]
  ks, c, h = arch_values["ks"], net.width, net.hidden

  class Down(nn.Module):
    def forward(self, x):
      return x[:, :, ::2, ::2]
  layers, cin = [], net.input_shape[2]
  for i in range(arch_values["conv"]):
    layers += [nn.Conv2d(cin, c, ks, padding=ks // 2), act()]
    if i < 2:
      layers.append(nn.MaxPool2d(2) if arch_values["pool"] == "yes" else Down())
    cin = c
  layers.append(nn.Flatten())
  dims = [net.flat] + [h] * (arch_values["fc"] - 1)
  for a, b in zip(dims[:-1], dims[1:]):
    layers += [nn.Linear(a, b), act()]
    if arch_values["drop"] == "yes":
      layers.append(nn.Dropout(0.5))
  layers.append(nn.Linear(dims[-1], net.num_classes))
  return nn.Sequential(*layers)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--vectorised", type=int, default=96)
  ap.add_argument("--stack", type=int, default=128)
  ap.add_argument("--single", type=int, default=6, help="models per batch size, one at a time")
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--out", default="")
  args = ap.parse_args()

  import torch
  from configs.reverse_engineering import get_config
  from rsec.data.sources import load_classification
  from rsec.reverse import zoo as zoo_lib, zoo_lanes, zoo_net, zoo_train
  from rsec.studies.reverse_engineering import zoo_spec
  from rsec.training import stack as stack_lib
  from rsec.training.loop import IndexSetSampler, run_loop
  torch.set_num_threads(args.threads)

  c = get_config("quick")
  spec = zoo_spec(c)
  data = load_classification(c.data, c.seed)
  train = {"image": data.train["image"], "label": data.train["label"].astype(np.int32)}
  models = zoo_lib.plan(spec)
  n_train = len(train["label"])
  names = list(zoo_net.ARCH_ATTRIBUTES)
  stack_step = zoo_train.make_stack_step(spec.train)
  one_step = stack_lib.vmap_step(zoo_train.make_step(spec.train))

  def rows(m):
    return zoo_lib.training_rows(int(models["split"][m]), int(models["size"][m]), n_train,
                                 spec.seed)

  def rsec_stack(members, cache):
    arch = {k: models[k][members] for k in names + ["opt", "bs"]}
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(0), s))(models["seed"][members])
    state = zoo_train.init_stack(spec.train, keys, arch)
    if len(members) > 1:
      state, step = zoo_lanes.to_lanes(state), stack_step
    else:
      step = one_step
    bs = spec.train.batch_sizes[int(arch["bs"][0])]
    state, _ = run_loop(state, step, train, IndexSetSampler([rows(m) for m in members], bs, 0),
                        key=jax.random.key(1), num_steps=spec.train.steps, steps_per_call=10,
                        progress=False, compile_cache=cache)
    jax.block_until_ready(state.params)

  def torch_one(m):
    values = {n: zoo_net.ARCH_ATTRIBUTES[n][int(models[n][m])] for n in names}
    model = _torch_model(values, spec.train.net, torch)
    t = spec.train
    opt = [lambda p: torch.optim.SGD(p, lr=t.lr_sgd, momentum=0.9),
           lambda p: torch.optim.Adam(p, lr=t.lr_adam),
           lambda p: torch.optim.RMSprop(p, lr=t.lr_rmsprop, alpha=0.9)][int(models["opt"][m])](
               model.parameters())
    bs = t.batch_sizes[int(models["bs"][m])]
    x = torch.from_numpy(np.moveaxis(train["image"], -1, 1).copy())
    y = torch.from_numpy(train["label"].astype(np.int64))
    r, rng = rows(m), np.random.default_rng(m)
    model.train()
    for s in range(t.steps):
      idx = torch.from_numpy(rng.choice(r, bs, replace=False))
      opt.zero_grad()
      torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
      opt.step()

  by_bs = {b: np.flatnonzero(models["bs"] == b) for b in range(3)}
  vec = np.concatenate([idx[:args.vectorised // 3] for idx in by_bs.values()])
  single = [idx[args.vectorised // 3:args.vectorised // 3 + args.single + 1]
            for idx in by_bs.values()]
  out = {"vectorised": [], "rsec_single": [], "torch_single": []}
  for r in range(args.rounds):
    cache: dict = {}
    t0 = time.perf_counter()
    for b, idx in by_bs.items():
      mine = vec[np.isin(vec, idx)]
      for s in range(0, len(mine), args.stack):
        rsec_stack(mine[s:s + args.stack], cache)
    out["vectorised"].append(len(vec) / (time.perf_counter() - t0) * 60)
    cache = {}
    seconds, n = 0.0, 0
    for idx in single:
      rsec_stack(idx[:1], cache)   # warm-up: compiles this batch size's chunk
      t0 = time.perf_counter()
      for m in idx[1:]:
        rsec_stack(np.asarray([m]), cache)
      seconds, n = seconds + time.perf_counter() - t0, n + len(idx) - 1
    out["rsec_single"].append(n / seconds * 60)
    t0 = time.perf_counter()
    for idx in single:
      for m in idx[1:]:
        torch_one(int(m))
    out["torch_single"].append(n / (time.perf_counter() - t0) * 60)
    print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f} models/min" for k, v in out.items()),
          flush=True)
  best = {k: float(np.median(v)) for k, v in out.items()}
  result = {"models_per_minute": best, "rounds": out,
            "ratio_vs_rsec_single": best["vectorised"] / best["rsec_single"],
            "ratio_vs_torch_single": best["vectorised"] / best["torch_single"],
            "settings": {"vectorised_models": len(vec), "single_models": n,
                         "steps": spec.train.steps, "batch_sizes": spec.train.batch_sizes,
                         "width": spec.train.net.width, "hidden": spec.train.net.hidden,
                         "input": spec.train.net.input_shape, "threads": args.threads,
                         "devices": jax.device_count()}}
  print(json.dumps(result, indent=1))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
