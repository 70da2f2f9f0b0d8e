"""rsec attacks vs torchattacks (and Foolbox 3's JAX backend) on the same trained weights.

python -m benchmarks.attacks_vs_peers [--classifier_workdir DIR] [--n 1000] [--rounds 3]
    [--torch_device cpu|cuda]

1. Parity: the paper classifier's weights are ported into an equivalent PyTorch model
   (benchmarks/torch_port.py); PGD-40 and APGD-CE (L-inf) run in both libraries on the
   same test images at each eps of --parity_eps. rsec's robust accuracy must not exceed the
   peer's by more than 1 point at any eps, and for each attack at least one eps must be
   discriminating (the peer's robust accuracy between 0.2 and 0.8: where both are near 0
   or near clean accuracy, any attack agrees with any other). Otherwise, after printing
   its results, the benchmark exits with status 1 and says why on stderr.
2. Speed: PGD-40 L-inf adversarial examples per second at batch 100 and 1000, interleaved,
   plus APGD-CE; and the fraction of the JAX device's matmul peak reached (XLA FLOPs / time).
   --skip_speed skips every timing (a parity-only run).
Without --classifier_workdir, a classifier is trained first (train_classifier:quick).
rsec and Foolbox run on JAX's default device; the ported model and torchattacks on
--torch_device (default cpu; 'cuda' for a GPU-vs-GPU comparison, with a synchronize at the
end of each timed torch call).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import compiled_flops, matmul_peak_gflops, time_interleaved
from benchmarks.torch_port import torch_paper_classifier
from rsec.attacks import apgd_ce, pgd

PARITY_TOL = 0.01            # rsec may be weaker than the peer by at most 1 point
DISCRIMINATING = (0.2, 0.8)  # robust accuracy where two attacks' strengths can differ
# On the quick paper classifier PGD-40 left .571 at .03 and .095 at .06 (README), and
# about 0 at .1 and .3: only .03 discriminated. .04 lies between .03 and .06, where robust
# accuracy falls through the band; parity_failures says so if it does not.
PARITY_EPS = (0.03, 0.04, 0.06, 0.1, 0.3)


def parity_failures(out: Mapping[str, float], names: Sequence[str],
                    eps_grid: Sequence[float], peer: str = "torchattacks") -> list[str]:
  """Why the parity check fails (empty: it passes), from the results dict `out`.

  Reads out[f"robust_accuracy/{name}/eps={eps:g}/rsec"] and the same key ending in /peer.
  """
  failures = []
  for name in names:
    band = []
    for eps in eps_grid:
      tag = f"{name}/eps={eps:g}"
      ours, theirs = out[f"robust_accuracy/{tag}/rsec"], out[f"robust_accuracy/{tag}/{peer}"]
      if ours > theirs + PARITY_TOL:
        failures.append(f"{tag}: rsec robust accuracy {ours:.3f} exceeds {peer}'s "
                        f"{theirs:.3f} by more than {PARITY_TOL:g} (rsec is weaker)")
      if DISCRIMINATING[0] <= theirs <= DISCRIMINATING[1]:
        band.append(eps)
    if not band:
      failures.append(f"{name}: no eps in {list(eps_grid)} gives {peer} a robust accuracy "
                      f"in {list(DISCRIMINATING)}, so parity says nothing; pass a "
                      "--parity_eps that does")
  return failures


def _classifier(workdir: str | None):
  # Imported here so that parity_failures can be imported (and tested) without them.
  from rsec.training.classifier import restore_classifier
  if workdir is None:
    from configs.train_classifier import get_config
    from rsec.studies import train_classifier
    workdir = tempfile.mkdtemp(prefix="rsec_bench_clf_")
    c = get_config("quick")
    c.progress = False
    train_classifier.run(c, workdir)
  return restore_classifier(workdir)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--classifier_workdir", default=None)
  p.add_argument("--n", type=int, default=1000)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--skip_foolbox", action="store_true")
  p.add_argument("--skip_speed", action="store_true")
  p.add_argument("--parity_eps", type=float, nargs="+", default=list(PARITY_EPS))
  p.add_argument("--torch_device", default="cpu", help="device of the PyTorch side")
  args = p.parse_args()
  import torch
  import torchattacks
  from rsec.data.sources import load_classification

  state, cfg = _classifier(args.classifier_workdir)
  cfg.data.train_size = cfg.training.batch_size
  cfg.data.test_size = max(cfg.data.test_size, args.n)
  data = load_classification(cfg.data, cfg.seed)
  x, y = data.test["image"][:args.n], data.test["label"][:args.n]
  variables = jax.device_get(state.variables)
  logits_fn = jax.jit(lambda v: state.apply_fn(variables, v, train=False))
  dev = torch.device(args.torch_device)
  net = torch_paper_classifier(variables).to(dev)
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev)
  ty = torch.from_numpy(y.astype(np.int64)).to(dev)
  with torch.no_grad():
    port_err = float(np.max(np.abs(net(tx).cpu().numpy() - np.asarray(logits_fn(x)))))
  out = {"n": args.n, "jax_device": str(jax.devices()[0]), "torch_device": str(dev),
         "port_max_abs_logit_diff": port_err,
         "clean_accuracy": float(np.mean(np.argmax(np.asarray(logits_fn(x)), 1) == y))}

  # 1. Parity of robust accuracy, at radii where it is neither 0 nor clean accuracy.
  key = jax.random.key(0)
  for eps in args.parity_eps:
    ours = {"pgd40": pgd(eps, "linf", steps=40, step_size=eps / 10),
            "apgd_ce": apgd_ce(eps, "linf", steps=100)}
    peers = {"pgd40": torchattacks.PGD(net, eps=eps, alpha=eps / 10, steps=40,
                                       random_start=True),
             "apgd_ce": torchattacks.APGD(net, norm="Linf", eps=eps, steps=100, n_restarts=1,
                                          loss="ce", seed=0)}
    for name in ours:
      accs = []
      for i in range(0, args.n, 500):
        xa = ours[name](logits_fn, jax.random.fold_in(key, i), jnp.asarray(x[i:i + 500]),
                        jnp.asarray(y[i:i + 500]))
        accs.append(np.argmax(np.asarray(logits_fn(xa)), 1) == y[i:i + 500])
      torch.manual_seed(0)
      xt = peers[name](tx, ty)
      with torch.no_grad():
        peer_acc = float((net(xt).argmax(1) == ty).float().mean())
      tag = f"{name}/eps={eps:g}"
      out[f"robust_accuracy/{tag}/rsec"] = float(np.mean(np.concatenate(accs)))
      out[f"robust_accuracy/{tag}/torchattacks"] = peer_acc
      out[f"parity_ok/{tag}"] = out[f"robust_accuracy/{tag}/rsec"] <= peer_acc + PARITY_TOL
  failures = parity_failures(out, ["pgd40", "apgd_ce"], args.parity_eps)
  out["parity_ok"] = not failures

  ours = {"pgd40": pgd(0.3, "linf", steps=40, step_size=0.01),
          "apgd_ce": apgd_ce(0.3, "linf", steps=100)}
  peers = {"pgd40": torchattacks.PGD(net, eps=0.3, alpha=0.01, steps=40, random_start=True),
           "apgd_ce": torchattacks.APGD(net, norm="Linf", eps=0.3, steps=100, n_restarts=1,
                                        loss="ce", seed=0)}
  # 2. Speed.
  for b in (() if args.skip_speed else (100, 1000)):
    xb, yb = jnp.asarray(np.resize(x, (b,) + x.shape[1:])), jnp.asarray(np.resize(y, b))
    txb, tyb = tx[:b] if b <= len(tx) else tx.repeat(b // len(tx) + 1, 1, 1, 1)[:b], None
    tyb = ty[:b] if b <= len(ty) else ty.repeat(b // len(ty) + 1)[:b]
    fns = {
        "rsec_pgd40": lambda: ours["pgd40"](logits_fn, key, xb, yb).block_until_ready(),
        "torchattacks_pgd40": lambda: _torch_sync(peers["pgd40"](txb, tyb)),
        "rsec_apgd_ce": lambda: ours["apgd_ce"](logits_fn, key, xb, yb).block_until_ready(),
        "torchattacks_apgd_ce": lambda: _torch_sync(peers["apgd_ce"](txb, tyb)),
    }
    if not args.skip_foolbox:
      fb_run = _foolbox_pgd(state, variables, xb, yb)
      if fb_run is not None:
        fns["foolbox_jax_pgd40"] = fb_run
    t = time_interleaved(fns, rounds=args.rounds, min_seconds=0.5)
    for name, sec in t.items():
      out[f"adv_per_s/b{b}/{name}"] = b / sec
    out[f"speedup/b{b}/pgd40_vs_torchattacks"] = t["torchattacks_pgd40"] / t["rsec_pgd40"]
    out[f"speedup/b{b}/apgd_vs_torchattacks"] = t["torchattacks_apgd_ce"] / t["rsec_apgd_ce"]
    if "foolbox_jax_pgd40" in t:
      out[f"speedup/b{b}/pgd40_vs_foolbox_jax"] = t["foolbox_jax_pgd40"] / t["rsec_pgd40"]
    # FLOPs of one PGD step = forward + input gradient, from XLA's cost analysis.
    grad = jax.jit(jax.grad(lambda v: jnp.sum(logits_fn(v) * 1.0)))
    step_flops = compiled_flops(grad, xb)
    out[f"pgd40_gflops/b{b}"] = 41 * step_flops / t["rsec_pgd40"] / 1e9
  if not args.skip_speed:
    out["matmul_peak_gflops"] = matmul_peak_gflops()
    for b in (100, 1000):
      out[f"pgd40_fraction_of_matmul_peak/b{b}"] = out[f"pgd40_gflops/b{b}"] / out[
          "matmul_peak_gflops"]
  print(json.dumps(out, indent=2))
  if failures:
    print("attack parity FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)


def _torch_sync(t):
  """Waits for the GPU work behind tensor t (a no-op on CPU tensors); returns t."""
  if t.is_cuda:
    import torch
    torch.cuda.synchronize(t.device)
  return t


def _foolbox_pgd(state, variables, xb, yb):
  """Foolbox 3's LinfPGD (40 steps, step 0.01) through its JAX backend; None if unusable."""
  try:
    import foolbox as fb
    model = fb.models.JAXModel(lambda v: state.apply_fn(variables, v, train=False),
                               bounds=(0.0, 1.0))
    attack = fb.attacks.LinfPGD(steps=40, abs_stepsize=0.01, random_start=True)
    attack(model, xb, yb, epsilons=0.3)
  except Exception as e:  # noqa: BLE001 -- report, do not fail the benchmark
    print(f"foolbox JAX backend unusable here: {type(e).__name__}: {e}")
    return None

  def run():
    raw, _, _ = attack(model, xb, yb, epsilons=0.3)
    jax.block_until_ready(raw)
  return run


if __name__ == "__main__":
  main()
