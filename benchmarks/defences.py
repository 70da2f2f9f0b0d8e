"""Speed (and a few correctness checks) of rsec's prediction defences against their peers.

python -m benchmarks.defences [--classifier_workdir DIR] [--n 1000] [--rounds 3] [--json OUT]

All on the paper CNN (10 classes) and 28x28x1 FONTS test images, batch --n (1,000):

1. End to end (images in, defended outputs out): `Victim.query` for every registered
   defence at chunk sizes --chunks, best chunk reported, each beside `none`. MAD's
   surrogate is its default (the paper CNN randomly initialised from seed 0). Adaptive
   Misinformation's misinformation model is a `train_classifier` run in
   training.mode=misinformation (--misinformation_epochs, default 1, trained here unless
   --misinformation_workdir is given); the victim stays the normally trained classifier,
   since only speed is measured.
2. MAD against the reference method (Orekondy et al., per query with autograd Jacobians;
   benchmarks/mad_torch.py) on the same surrogate weights ported to PyTorch: max |objective
   difference| on --check_n queries, and queries/s (the reference timed on --ref_n queries).
3. The same MAD with the Jacobians from JAX autograd (`rsec.stealing.mad.
   autograd_objectives`, vmap of jacrev), jitted, batch --autograd_batch run in chunks
   of rsec MAD's best chunk (so chunking is not what differs): what the closed form buys.
4. ART 1.20's `PyTorchClassifier` with its postprocessors (ReverseSigmoid, Rounded,
   ClassLabels, HighConfidence) on the victim's weights ported to PyTorch vs the matching
   rsec defences; plus ART's ClassLabels (batch-wise argmax) and HighConfidence (rows that
   do not sum to 1) measured.
5. The served victim (`experiments.serve_victim` in a subprocess) through `RemoteVictim`
   vs the in-process `Victim` with the same config, batch 100 and 1000.

Timings are `benchmarks.common.time_interleaved` medians (peers alternate within a run),
queries (images) per second. Without --classifier_workdir a classifier is trained first
(train_classifier:quick). PyTorch runs on the CPU with 2 threads.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import time_interleaved
from benchmarks.mad_torch import ReferenceMAD
from benchmarks.torch_port import torch_paper_classifier
from rsec.data.sources import load_classification
from rsec.models.classifiers import make_model
from rsec.stealing import DEFENCES, AuxModel, client, mad
from rsec.stealing.defences import line_search
from rsec.stealing.victim import Victim, victim_from_workdir
from rsec.training.classifier import restore_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_SHAPE = (28, 28, 1)
MODEL = "paper_classifier"
# rsec defence name -> its settings, used on both sides of the ART comparison.
ART_MATCHED = {
    "none": {},
    "reverse_sigmoid": {"beta": 0.7, "gamma": 0.2},
    "rounding": {"decimals": 2},
    "label": {},
    "high_confidence": {"cutoff": 0.25},
}


def _train(workdir: str, mode: str = "normal", epochs: int | None = None) -> str:
  """Trains train_classifier:quick (in `mode`, for `epochs`) into `workdir`; returns it."""
  from configs.train_classifier import get_config
  from rsec.studies import train_classifier
  c = get_config("quick")
  c.progress = False
  c.training.mode = mode
  if epochs is not None:
    c.training.epochs = epochs
  train_classifier.run(c, workdir)
  return workdir


def _tile(x: np.ndarray, b: int) -> np.ndarray:
  """x [N, ...] repeated (or cut) to b rows."""
  return np.resize(x, (b,) + x.shape[1:])


def _nchw(x: np.ndarray):
  import torch
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# --- 1. every defence, end to end ------------------------------------------------------

def bench_defences(logits_fn, x, chunks, misinformation, rounds, min_seconds):
  """{defence: {chunk: queries/s}} of `Victim.query(x)` for every registered defence."""
  params = {"adaptive_misinformation": {"misinformation": misinformation}}
  fns = {}
  for name in DEFENCES.names():
    for c in chunks:
      v = Victim(logits_fn, INPUT_SHAPE, defence=name, defence_params=params.get(name),
                 model_name=MODEL, chunk=c)
      fns[f"{name}@{c}"] = lambda v=v: v.query(x)
  t = time_interleaved(fns, rounds=rounds, min_seconds=min_seconds)
  out: dict[str, dict[int, float]] = {}
  for key, sec in t.items():
    name, c = key.split("@")
    out.setdefault(name, {})[int(c)] = len(x) / sec
  return out


# --- 2 and 3. MAD vs the per-query reference and vs JAX autograd -----------------------

def autograd_mad_fn(logits_fn, surrogate: AuxModel, eps: float):
  """jit(x [B, ...]) -> (y~ [B, K], objective [B]): MAD over the K line-searched vertices,
  each scored with Jacobians from JAX autograd (no closed form)."""
  @jax.jit
  def fn(variables, x):
    y = jax.nn.softmax(logits_fn(x).astype(jnp.float32), axis=-1)
    k = y.shape[-1]
    cands = line_search(y[:, None, :], jnp.eye(k, dtype=y.dtype)[None], eps)  # [B, K, K]
    obj = mad.autograd_objectives(surrogate.apply_fn, variables, "Dense_1", x, y, cands)
    best = jnp.argmax(obj, axis=-1)
    return jnp.take_along_axis(cands, best[:, None, None], 1)[:, 0], jnp.max(obj, -1)
  return lambda x: fn(surrogate.variables, x)


def in_chunks(fn, x: np.ndarray, chunk: int):
  """fn over x in rows of `chunk` (XLA:CPU is faster on a few hundred rows than on
  thousands, so the autograd version is chunked like the Victim it is compared with);
  outputs concatenated on host."""
  parts = [jax.device_get(fn(x[i:i + chunk])) for i in range(0, len(x), chunk)]
  return tuple(np.concatenate(p) for p in zip(*parts))


def bench_mad(logits_fn, variables, x, args, chunk):
  """Objective agreement and queries/s: rsec MAD, the torch reference, JAX autograd."""
  import torch
  model = make_model(MODEL, 10)
  sur_vars = model.init(jax.random.key(args.surrogate_seed), jnp.zeros((1,) + INPUT_SHAPE),
                        train=False)
  surrogate = AuxModel(model.apply, sur_vars)
  victim = Victim(logits_fn, INPUT_SHAPE, defence="mad",
                  defence_params={"eps": args.eps, "surrogate": surrogate}, model_name=MODEL,
                  chunk=chunk)
  t_victim, t_sur = torch_paper_classifier(variables), torch_paper_classifier(sur_vars)
  reference = ReferenceMAD(t_victim, t_sur, args.eps)
  out = {"mad/eps": args.eps, "mad/chunk": chunk}
  with torch.no_grad():
    xs = _nchw(x[:args.check_n])
    out["mad/port_max_abs_logit_diff/victim"] = float(np.max(np.abs(
        t_victim(xs).numpy() - np.asarray(logits_fn(x[:args.check_n])))))
    out["mad/port_max_abs_logit_diff/surrogate"] = float(np.max(np.abs(
        t_sur(xs).numpy() - np.asarray(model.apply(sur_vars, x[:args.check_n])))))

  # rsec's objective of the answer it gave (closed form, p = the surrogate's posterior)
  # vs the best objective the reference found with its autograd G.
  xc = x[:args.check_n]
  ans = victim.respond(xc)
  p = jax.nn.softmax(model.apply(sur_vars, xc, train=False))
  ours = np.asarray(mad.angular_objective(ans["defended"], ans["posterior"], p), np.float64)
  ref_answer, ref_obj = reference(_nchw(xc))
  out["mad/check_n"] = len(xc)
  out["mad/max_abs_objective_diff/rsec_vs_torch_reference"] = float(np.max(np.abs(ours - ref_obj)))
  out["mad/max_abs_answer_diff/rsec_vs_torch_reference"] = float(np.max(np.abs(
      ans["defended"] - ref_answer)))
  out["mad/mean_objective/rsec"] = float(np.mean(ours))

  b_ag = min(args.autograd_batch, len(x))
  x_ag = x[:b_ag]
  autograd_fn = autograd_mad_fn(logits_fn, surrogate, args.eps)
  autograd = lambda: in_chunks(autograd_fn, x_ag, chunk)
  ag_answer, ag_obj = autograd()
  ans_ag = victim.respond(x_ag)
  p_ag = jax.nn.softmax(model.apply(sur_vars, x_ag, train=False))
  ours_ag = np.asarray(mad.angular_objective(ans_ag["defended"], ans_ag["posterior"], p_ag))
  out["mad/max_abs_objective_diff/rsec_vs_jax_autograd"] = float(np.max(np.abs(
      ours_ag - ag_obj)))
  out["mad/max_abs_answer_diff/rsec_vs_jax_autograd"] = float(np.max(np.abs(
      ans_ag["defended"] - ag_answer)))
  out["mad/autograd_batch"] = b_ag
  out["mad/autograd_chunk"] = chunk

  x_ref = _nchw(_tile(x, args.ref_n))
  t = time_interleaved({
      "rsec": lambda: victim.query(x),
      "torch_reference": lambda: reference(x_ref),
      "jax_autograd": autograd,
  }, rounds=args.rounds, min_seconds=args.min_seconds)
  out["mad/queries_per_s/rsec"] = len(x) / t["rsec"]
  out["mad/queries_per_s/torch_reference"] = args.ref_n / t["torch_reference"]
  out["mad/queries_per_s/jax_autograd"] = b_ag / t["jax_autograd"]
  out["mad/ref_n"] = args.ref_n
  out["mad/speedup/vs_torch_reference"] = (out["mad/queries_per_s/rsec"]
                                           / out["mad/queries_per_s/torch_reference"])
  out["mad/speedup/vs_jax_autograd"] = (out["mad/queries_per_s/rsec"]
                                        / out["mad/queries_per_s/jax_autograd"])
  return out


# --- 4. ART's postprocessors -----------------------------------------------------------

def _art_classifier(net, postprocessor):
  import torch
  from art.estimators.classification import PyTorchClassifier
  return PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                           nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu",
                           postprocessing_defences=[postprocessor] if postprocessor else None)


def bench_art(logits_fn, variables, x, chunks_best, args):
  """queries/s of ART's postprocessed PyTorchClassifier.predict vs rsec's Victim.query
  with the matching defences, and ART's output faults."""
  import art
  import torch
  from art.defences.postprocessor import ClassLabels, HighConfidence, ReverseSigmoid, Rounded
  # ART's postprocessors read probabilities, so the ported model ends in a softmax.
  net = torch.nn.Sequential(torch_paper_classifier(variables), torch.nn.Softmax(dim=1)).eval()
  s = ART_MATCHED
  art_post = {"none": None, "reverse_sigmoid": ReverseSigmoid(**s["reverse_sigmoid"]),
              "rounding": Rounded(**s["rounding"]), "label": ClassLabels(),
              "high_confidence": HighConfidence(**s["high_confidence"])}
  arts = {k: _art_classifier(net, v) for k, v in art_post.items()}
  ours = {k: Victim(logits_fn, INPUT_SHAPE, defence=k, defence_params=s[k], model_name=MODEL,
                    chunk=chunks_best[k]) for k in s}
  xt = np.ascontiguousarray(x.transpose(0, 3, 1, 2))   # ART takes NCHW NumPy
  b = len(x)
  out = {"art/version": art.__version__}

  # Correctness: ART on one batch vs the row-wise definition of each output.
  y = arts["none"].predict(xt, batch_size=b)
  rowwise_label = np.eye(10, dtype=np.float32)[np.argmax(y, 1)]
  art_label = arts["label"].predict(xt, batch_size=b)
  rsec_label = ours["label"].query(x)
  out["art/label/fraction_rows_not_rowwise_one_hot/art"] = float(np.mean(np.any(
      art_label != rowwise_label, 1)))
  out["art/label/mean_ones_per_row/art"] = float(np.mean(art_label.sum(1)))
  out["art/label/fraction_rows_not_rowwise_one_hot/rsec"] = float(np.mean(np.any(
      rsec_label != rowwise_label, 1)))
  for name in ("high_confidence", "rounding", "reverse_sigmoid"):
    sums_art = arts[name].predict(xt, batch_size=b).sum(1)
    sums_rsec = ours[name].query(x).sum(1)
    out[f"art/{name}/max_abs_row_sum_minus_1/art"] = float(np.max(np.abs(sums_art - 1)))
    out[f"art/{name}/fraction_rows_sum_off_by_1e-3/art"] = float(np.mean(
        np.abs(sums_art - 1) > 1e-3))
    out[f"art/{name}/max_abs_row_sum_minus_1/rsec"] = float(np.max(np.abs(sums_rsec - 1)))
  out["art/reverse_sigmoid/max_abs_diff_rsec_vs_art"] = float(np.max(np.abs(
      arts["reverse_sigmoid"].predict(xt, batch_size=b) - ours["reverse_sigmoid"].query(x))))
  out["art/none/max_abs_diff_rsec_vs_art"] = float(np.max(np.abs(y - ours["none"].query(x))))

  # The bare forward passes (softmax(logits), no defence, no Victim) show how much of any
  # gap is XLA's vs PyTorch's CPU convolutions rather than the defences.
  probs = jax.jit(lambda v: jax.nn.softmax(logits_fn(v)))
  c_none = chunks_best["none"]

  def torch_forward():
    with torch.no_grad():
      return net(torch.from_numpy(xt)).numpy()

  fns = {"forward/jax": lambda: [np.asarray(probs(x[i:i + c_none]))
                                 for i in range(0, b, c_none)],
         "forward/torch": torch_forward}
  for k in s:
    fns[f"art/{k}"] = lambda c=arts[k]: c.predict(xt, batch_size=b)
    fns[f"rsec/{k}"] = lambda v=ours[k]: v.query(x)
  t = time_interleaved(fns, rounds=args.rounds, min_seconds=args.min_seconds)
  out[f"art/forward_queries_per_s/jax_jit_chunk{c_none}"] = b / t["forward/jax"]
  out["art/forward_queries_per_s/torch"] = b / t["forward/torch"]
  for k in s:
    out[f"art/queries_per_s/{k}/art"] = b / t[f"art/{k}"]
    out[f"art/queries_per_s/{k}/rsec"] = b / t[f"rsec/{k}"]
    out[f"art/speedup/{k}/rsec_vs_art"] = t[f"art/{k}"] / t[f"rsec/{k}"]
    out[f"art/chunk/{k}/rsec"] = chunks_best[k]
  return out


# --- 5. the served victim --------------------------------------------------------------

def start_server(classifier_workdir: str, workdir: str, chunk: int, max_batch: int):
  """`experiments.serve_victim` in a subprocess; (process, url) once /health answers."""
  return client.start_server(workdir, [
      f"--config.classifier_workdir={classifier_workdir}", "--config.port=0",
      "--config.api_keys=bench=100000000", f"--config.max_batch={max_batch}",
      f"--config.chunk={chunk}"])


def bench_server(classifier_workdir, x, args):
  batches = (100, 1000)
  workdir = tempfile.mkdtemp(prefix="rsec_bench_serve_")
  local = victim_from_workdir(classifier_workdir, chunk=args.serve_chunk)
  proc, url = start_server(classifier_workdir, workdir, args.serve_chunk, max(batches))
  try:
    remote = client.RemoteVictim(url, "bench")
    xs = {b: _tile(x, b) for b in batches}
    out = {"serve/chunk": args.serve_chunk,
           "serve/max_abs_diff_remote_vs_local": float(np.max(np.abs(
               remote.query(xs[100]) - local.query(xs[100]))))}
    fns = {}
    for b in batches:
      fns[f"remote/b{b}"] = lambda xb=xs[b]: remote.query(xb)
      fns[f"local/b{b}"] = lambda xb=xs[b]: local.query(xb)
    t = time_interleaved(fns, rounds=args.rounds, min_seconds=args.min_seconds)
  finally:
    client.stop_server(proc)
  for b in batches:
    out[f"serve/queries_per_s/b{b}/remote"] = b / t[f"remote/b{b}"]
    out[f"serve/queries_per_s/b{b}/in_process"] = b / t[f"local/b{b}"]
    out[f"serve/ratio/b{b}/remote_vs_in_process"] = t[f"local/b{b}"] / t[f"remote/b{b}"]
  return out


# --- the report ------------------------------------------------------------------------

def table(out: dict) -> str:
  """The figures as aligned text rows: what, queries/s, comparison."""
  rows = [("what", "queries/s", "vs / notes")]
  d = out["defences/queries_per_s"]
  none = out["defences/best"]["none"]
  for name in sorted(d, key=lambda k: (k != "none", k)):
    qps, c = out["defences/best"][name], out["defences/best_chunk"][name]
    per = ", ".join(f"{k}: {v:,.0f}" for k, v in sorted(d[name].items()))
    rows.append((f"victim  {name}", f"{qps:,.0f}",
                 f"{qps / none:.2f}x none; best chunk {c} ({per})"))
  rows.append(("MAD  rsec closed form", f"{out['mad/queries_per_s/rsec']:,.0f}",
               f"chunk {out['mad/chunk']}"))
  rows.append(("MAD  torch reference (per query)",
               f"{out['mad/queries_per_s/torch_reference']:,.0f}",
               f"rsec {out['mad/speedup/vs_torch_reference']:.1f}x; max |obj diff| "
               f"{out['mad/max_abs_objective_diff/rsec_vs_torch_reference']:.2e} on "
               f"{out['mad/check_n']} queries"))
  rows.append(("MAD  JAX autograd (vmap jacrev)", f"{out['mad/queries_per_s/jax_autograd']:,.0f}",
               f"rsec {out['mad/speedup/vs_jax_autograd']:.1f}x; batch "
               f"{out['mad/autograd_batch']} in chunks of {out['mad/autograd_chunk']}; "
               f"max |obj diff| "
               f"{out['mad/max_abs_objective_diff/rsec_vs_jax_autograd']:.2e}"))
  for k in ART_MATCHED:
    rows.append((f"ART  {k}", f"{out[f'art/queries_per_s/{k}/art']:,.0f}",
                 f"rsec {out[f'art/queries_per_s/{k}/rsec']:,.0f} "
                 f"(chunk {out[f'art/chunk/{k}/rsec']}) = "
                 f"{out[f'art/speedup/{k}/rsec_vs_art']:.2f}x ART"))
  fwd = {k.rsplit("/", 1)[1]: v for k, v in out.items() if k.startswith("art/forward_queries")}
  rows.append(("forward only  JAX jit / torch", " / ".join(f"{v:,.0f}" for v in fwd.values()),
               "softmax(logits), no defence or Victim: " + ", ".join(fwd)))
  rows.append(("ART  ClassLabels faults", "",
               f"{out['art/label/fraction_rows_not_rowwise_one_hot/art']:.1%} of rows not the "
               f"row-wise one-hot ({out['art/label/mean_ones_per_row/art']:.2f} ones/row); "
               f"rsec {out['art/label/fraction_rows_not_rowwise_one_hot/rsec']:.1%}"))
  rows.append(("ART  reverse_sigmoid vs rsec", "",
               f"max |diff| {out['art/reverse_sigmoid/max_abs_diff_rsec_vs_art']:.3f} with the "
               f"same beta, gamma; ART Rounded max |row sum - 1| "
               f"{out['art/rounding/max_abs_row_sum_minus_1/art']:.3f}"))
  rows.append(("ART  HighConfidence faults", "",
               f"max |row sum - 1| {out['art/high_confidence/max_abs_row_sum_minus_1/art']:.3f}, "
               f"{out['art/high_confidence/fraction_rows_sum_off_by_1e-3/art']:.1%} of rows off "
               f"by > 1e-3; rsec "
               f"{out['art/high_confidence/max_abs_row_sum_minus_1/rsec']:.1e}"))
  for b in (100, 1000):
    rows.append((f"served  b{b}  RemoteVictim", f"{out[f'serve/queries_per_s/b{b}/remote']:,.0f}",
                 f"in-process {out[f'serve/queries_per_s/b{b}/in_process']:,.0f}; remote = "
                 f"{out[f'serve/ratio/b{b}/remote_vs_in_process']:.2f}x in-process"))
  w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
  lines = [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
  lines.insert(1, "-" * len(lines[0]))
  targets = out["targets"]
  lines.append("")
  lines.append(f"1-minute load average: {out['loadavg_1min/start']:.2f} at the start, "
               f"{out['loadavg_1min/end']:.2f} at the end ({out['cpu_count']} CPUs)")
  lines += [f"target {k}: {'met' if v else 'NOT met'}" for k, v in targets.items()]
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--classifier_workdir", default=None)
  p.add_argument("--misinformation_workdir", default=None,
                 help="a train_classifier workdir with training.mode=misinformation")
  p.add_argument("--misinformation_epochs", type=int, default=1)
  p.add_argument("--n", type=int, default=1000, help="test images; the batch size")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--min_seconds", type=float, default=0.5, help="per fn per round")
  p.add_argument("--chunks", type=int, nargs="+", default=[250, 500, 1000])
  p.add_argument("--eps", type=float, default=0.5, help="MAD's L1 budget")
  p.add_argument("--surrogate_seed", type=int, default=0)
  p.add_argument("--check_n", type=int, default=50, help="queries in the objective check")
  p.add_argument("--ref_n", type=int, default=100, help="queries per torch reference call")
  p.add_argument("--autograd_batch", type=int, default=1000)
  p.add_argument("--serve_chunk", type=int, default=None,
                 help="rows per compiled call, served and in-process (default: the config's)")
  p.add_argument("--json", default=None)
  args = p.parse_args()
  if args.serve_chunk is None:
    from configs.serve_victim import get_config
    args.serve_chunk = get_config().chunk
  import torch
  torch.set_num_threads(2)
  t_start = time.time()

  workdir = args.classifier_workdir or _train(tempfile.mkdtemp(prefix="rsec_bench_clf_"))
  state, cfg = restore_classifier(workdir)
  cfg.data.train_size = cfg.training.batch_size
  cfg.data.test_size = max(cfg.data.test_size, args.n)
  x = load_classification(cfg.data, cfg.seed).test["image"][:args.n].astype(np.float32)
  logits_fn = state.logits_fn()
  variables = jax.device_get(state.variables)
  if args.misinformation_workdir:
    mis_dir, mis_how = args.misinformation_workdir, "given workdir"
  else:
    mis_dir = _train(tempfile.mkdtemp(prefix="rsec_bench_mis_"), "misinformation",
                     args.misinformation_epochs)
    mis_how = f"trained here, train_classifier:quick mode=misinformation, " \
              f"{args.misinformation_epochs} epoch(s)"
  from rsec.stealing.misinformation import load_misinformation_model
  misinformation = load_misinformation_model(mis_dir)

  out = {"n": len(x), "rounds": args.rounds, "jax_device": str(jax.devices()[0]),
         "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": 2,
         "classifier_workdir": workdir, "misinformation_model": mis_how,
         # PyTorch's OpenMP threads slow down by an order of magnitude when another
         # process holds the cores, so the load says how far to trust the peer figures.
         "loadavg_1min/start": os.getloadavg()[0]}

  d = bench_defences(logits_fn, x, args.chunks, misinformation, args.rounds, args.min_seconds)
  out["defences/queries_per_s"] = d
  out["defences/best"] = {k: max(v.values()) for k, v in d.items()}
  out["defences/best_chunk"] = {k: max(v, key=v.get) for k, v in d.items()}
  out["defences/ratio_vs_none"] = {k: v / out["defences/best"]["none"]
                                   for k, v in out["defences/best"].items()}
  out.update(bench_mad(logits_fn, variables, x, args, out["defences/best_chunk"]["mad"]))
  out.update(bench_art(logits_fn, variables, x, out["defences/best_chunk"], args))
  out.update(bench_server(workdir, x, args))

  obj_ok = out["mad/max_abs_objective_diff/rsec_vs_torch_reference"] < 1e-4
  out["targets"] = {
      "MAD >= 0.3x undefended": out["defences/ratio_vs_none"]["mad"] >= 0.3,
      "MAD >= 50x torch reference, objectives agree (< 1e-4)":
          out["mad/speedup/vs_torch_reference"] >= 50 and obj_ok,
      "rsec >= 1x ART (every matched defence)":
          all(out[f"art/speedup/{k}/rsec_vs_art"] >= 1 for k in ART_MATCHED),
  }
  out["loadavg_1min/end"] = os.getloadavg()[0]
  out["wall_seconds"] = time.time() - t_start
  print(json.dumps(out, indent=2))
  print()
  print(table(out))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
