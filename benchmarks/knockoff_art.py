"""Knockoff nets: rsec against ART 1.20's `KnockoffNets` (PyTorch backend), same victim.

python -m benchmarks.knockoff_art [--budgets 1000,3000,10000] [--adaptive_budget 500[,10000]]
    [--victim_workdir DIR] [--threads 2] [--quick] [--out OUT.json]

What is compared (everything in one run; the peers alternate budget by budget):

- The victim: a train_classifier:quick paper CNN (train_size 10,000, test_size 5,000,
  6 epochs; trained here unless --victim_workdir names a train_classifier run). rsec asks
  it through `rsec.stealing.victim.Victim` (probs output, chunks of 500); ART through a
  `PyTorchClassifier` of the same weights ported to PyTorch (benchmarks/torch_port.py)
  followed by a softmax, so ART's `use_probability=True` receives probabilities (the
  largest |probability difference| between the two victims is reported).
- The attacker's query pool: `build_pool('natural', --pool_size, --pool_seed + seed)`
  (FONTS A-Z, a-z, 0-9; 62 leaves under upper / lower / digit).
- The thief: the paper CNN from scratch. Knockoff m of rsec and the ART thief of the same
  budget start from the same initial weights (one flax init, ported to PyTorch). Both
  train with Adam, lr --learning_rate, L2 weight decay --weight_decay added to the
  gradient (torch `Adam(weight_decay=...)` = rsec's `add_decayed_weights` before Adam).
  rsec also decays the lr on a cosine, augments with +-2 px shifts and selects its
  parameters on held-out rows of its own budget (--holdout, 0.1, kept: it is rsec's
  default); ART has no schedule (KnockoffNets passes none to `fit`), no augmentation
  and keeps its last parameters.
- random strategy: the same transfer set on both sides. rsec's stream is a seeded
  permutation of the pool (`collect_random`); ART's `extract` gets exactly the first B
  pool images of that stream as x with nb_stolen = B, so its own `np.random.choice` only
  reorders them. Soft labels on both sides (rsec: targets_from_outputs(..., 'probs');
  ART: use_probability=True).
- adaptive strategy: rsec's `collect_adaptive` (gradient bandit over the pool's
  hierarchy, reward 'all', batches of --adaptive_batch queries, an `OnlineKnockoff` taking
  --online_steps steps between batches), then a knockoff trained from scratch on the
  stream (`train_stack`, as rsec.studies.model_stealing does); ART's adaptive
  `extract(x=pool, y=pool.fine, thieved_classifier=...)` (flat bandit over the 62
  leaves, reward 'all'). ART takes one training step on every query as it comes; rsec
  queries in batches and trains its online knockoff between them. The budgets are
  --adaptive_budget (a comma-separated list, default 500).

Two ART settings:
  (a) "ART defaults", as a user calls it: batch_size_fit, batch_size_query and nb_epochs
      are ART's own defaults (read from `KnockoffNets.__init__`'s signature: 1, 1, 10 in
      ART 1.20), use_probability=True.
  (b) "ART matched": the same training work as rsec: batch_size_fit = rsec's batch
      size, batch_size_query = rsec's query batch, nb_epochs = round(steps * batch_size /
      B), i.e. the number of passes over the budget that rsec's `steps` steps of
      `batch_size` make (rsec reads 10% fewer rows per pass: its held-out rows never train;
      the total examples processed match, up to ART's rounding of the epochs and its
      partial last batch). For adaptive this matches ART's final fit; ART's B one-sample
      refits and rsec's online steps come on top and are not matched (they are the method).

Timing: rsec = query collection + training (`collect_*` + `train_stack`, until the
selected parameters are ready); ART = its `extract` call. Test accuracy (the victim's
test set) is measured outside the timings. rsec is timed per budget (a stack of one
model, the fair per-budget figure; the floors use it) and once for all budgets in one
stack (how rsec's studies train them). Before anything is timed, the victim's compiled
core, the torch models, one rsec stack (of one and of all budgets, with the timed
runs' settings) and the online knockoff are warmed up; their times are reported
(`warmup_s`), the compiled chunks are shared with the timed runs (`COMPILED`, as a session
training several budgets would), and any compilation that still recurs per run is
inside rsec's timed figures. One timed run per cell (these are long single shots), in
alternating order (rsec first at even budget indices, ART first at odd ones). PyTorch
runs on the CPU with --threads threads (2: the cores JAX uses on the development box).

Caveats. PyTorch's OpenMP threads slow down by an order of magnitude or more when other
processes hold the cores (measured while writing this: one optimizer step of the paper CNN
at batch 64 took 6 ms with 1 thread and 285 ms with 2 threads on a 2-core box at load
3.7), so the ART figures are only meaningful on a quiet machine; the load average is
printed at the start and the end. rsec compiles its training chunk once per stack size
and settings (the warm-up does it); the held-out agreement recompiles per held-out size
(~0.1 s), inside rsec's times.

Measured 2026-12-07 (2-core CPU, torch 2.13.0+cpu with 2 threads; `--budgets
1000,3000,10000 --adaptive_budget 1000,10000 --adaptive_batch 500 --steps 1000`, 16 min;
experiments/reports/knockoff_art_benchmark.json): accuracy rsec / ART defaults / ART
matched: random .738 / .461 / .512 (1k), .858 / .509 / .717 (3k), .872 / .520 / .834
(10k); adaptive .760 / .462 / .498 (1k), .877 / .339 / .528 (10k). Time ART / rsec:
defaults 5.6x, 12.5x, 43.4x (random), 3.4x, 23.9x (adaptive); matched 1.36x, 1.09x,
1.13x (random; 1.20x for all budgets in one stack), 1.57x, 5.72x (adaptive). The random
ratio moves with the machine (0.79x-0.93x on 2026-12-01's, where torch trained faster):
benchmarks/README.md.

Floors (printed met / NOT met): rsec accuracy >= ART accuracy at every budget (each ART
setting, each strategy); ART time / rsec time >= 1x at matched work for random (each
budget), >= 5x for adaptive.

Flaws in ART 1.20's KnockoffNets seen while writing this (from its source,
art/attacks/extraction/knockoff_nets.py and art/estimators/classification/pytorch.py):

1. Adaptive refits after every single query: per query one victim `predict`, one
   `fit(nb_epochs=1)` on a batch of one (one optimizer step through a fresh DataLoader)
   and one thief `predict`, then the final fit on everything; O(B) tiny framework calls.
2. A batch of one breaks BatchNorm: torch's BatchNorm1d raises in training mode on one
   sample ("Expected more than 1 value per channel"), so ART cannot fit the paper CNN in
   its adaptive strategy at all (every per-query refit is one sample), nor in its random
   strategy at its default batch_size_fit=1. The ART thief here therefore has its
   BatchNorm1d replaced by one that, on a batch of one in training mode, normalises with
   its running statistics without updating them (`_BatchNorm1dAnyBatch`); batches of two
   or more behave exactly as torch's. At batch_size_fit=1 its running statistics never
   move from their initial (0, 1), so that layer is an affine map there.
3. Adaptive uses argmax labels whatever `use_probability` says: every queried answer is
   `to_categorical(argmax(...))`, for the per-query refits and for the final fit.
4. Exponentiation of outputs: the 'loss' reward softmaxes (`np.exp`, normalise) the
   victim's outputs, i.e. assumes logits (as the class docstring says), while
   use_probability=True trains the random strategy on those same outputs as soft targets,
   which must then be probabilities (with logits, CrossEntropyLoss gets rows that are no
   distributions). No victim output is right for both; with the probability victim used
   here, the loss reward is the cross-entropy against softmax(probabilities), a nearly
   uniform distribution (exp maps [0, 1] to [1, e]).
5. Smaller ones: adaptive draws the image of a chosen class with replacement
   (`np.random.choice(len(x_index))`: a budget can repeat images; rsec takes each leaf's
   next unused image); its bandit steps every arm by 1 / (count of the chosen arm); its
   'all' reward divides by sqrt of a running variance that is 0 when the first two
   rewards tie (NaN policy); all randomness is NumPy's global state (seeded here with
   np.random.seed); soft labels survive `reduce_labels` only if not every entry of the
   whole label array is 0 or 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.torch_port import torch_paper_classifier
from rsec import parallel
from rsec.data.sources import load_classification
from rsec.models.classifiers import make_model
from rsec.stealing import knockoff as ko
from rsec.stealing import strategies
from rsec.stealing.query_sets import build_pool
from rsec.stealing.victim import Victim
from rsec.training.classifier import restore_classifier

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
MODEL = "paper_classifier"


# --- the victim --------------------------------------------------------------------------

def train_victim(workdir: str, quick: bool) -> str:
  """train_classifier:quick (train 10,000, test 5,000, 6 epochs; --quick: 1,000 / 500 / 1)."""
  from configs.train_classifier import get_config
  from rsec.studies import train_classifier
  c = get_config("quick")
  c.progress = False
  c.data.train_size, c.data.test_size, c.training.epochs = (
      (1_000, 500, 1) if quick else (10_000, 5_000, 6))
  train_classifier.run(c, workdir)
  return workdir


def load_victim(args):
  """(logits_fn, host variables, test images, test labels, workdir, how)."""
  workdir = args.victim_workdir
  if workdir and os.path.exists(os.path.join(workdir, "config.json")):
    how = "given workdir"
  else:
    workdir = workdir or tempfile.mkdtemp(prefix="rsec_bench_knockoff_victim_")
    t0 = time.perf_counter()
    train_victim(workdir, args.quick)
    how = f"trained here ({time.perf_counter() - t0:.0f} s)"
  state, cfg = restore_classifier(workdir)
  data_cfg = cfg.data.copy_and_resolve_references()
  # The test split is keyed by its name alone: a small train split renders nothing extra.
  data_cfg.train_size = cfg.training.batch_size
  test = load_classification(data_cfg, cfg.seed).test
  x = np.asarray(test["image"], np.float32)
  y = np.asarray(test["label"], np.int64)
  return state.logits_fn(), jax.device_get(state.variables), x, y, cfg, workdir, how


# --- PyTorch / ART pieces ----------------------------------------------------------------

def _nchw(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _batchnorm1d_any_batch():
  import torch
  from torch import nn

  class _BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """torch's BatchNorm1d, except that a batch of ONE in training mode is normalised
    with the running statistics (not updated) instead of raising (see flaw 2)."""

    def forward(self, x):
      if self.training and x.shape[0] == 1:
        return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var,
                                              self.weight, self.bias, False, 0.0, self.eps)
      return super().forward(x)

  return _BatchNorm1dAnyBatch


def init_variables(key: jax.Array):
  """The paper CNN's initial variables for `key`, exactly as rsec's knockoffs start
  (`create_train_state`: model.init on zeros [1, 28, 28, 1], train=False)."""
  model = make_model(MODEL, NUM_CLASSES)
  return jax.device_get(model.init(key, jnp.zeros((1,) + INPUT_SHAPE, jnp.float32),
                                   train=False))


def torch_thief(key: jax.Array):
  """A fresh torch paper CNN with rsec's initial weights for `key` (train mode), its
  BatchNorm1d made to accept a batch of one."""
  from torch import nn
  net = torch_paper_classifier(init_variables(key), NUM_CLASSES, INPUT_SHAPE[0])
  bn_cls = _batchnorm1d_any_batch()
  for i, m in enumerate(net):
    if type(m) is nn.BatchNorm1d:
      safe = bn_cls(m.num_features, eps=m.eps, momentum=m.momentum)
      safe.load_state_dict(m.state_dict())
      net[i] = safe
  return net.train()


def art_classifier(net, optimizer=None):
  import torch
  from art.estimators.classification import PyTorchClassifier
  return PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), optimizer=optimizer,
                           input_shape=(INPUT_SHAPE[2], INPUT_SHAPE[0], INPUT_SHAPE[1]),
                           nb_classes=NUM_CLASSES, clip_values=(0.0, 1.0), device_type="cpu")


def art_defaults() -> dict:
  """ART's own defaults of the settings a user leaves alone."""
  from art.attacks.extraction import KnockoffNets
  sig = inspect.signature(KnockoffNets.__init__).parameters
  return {k: sig[k].default for k in ("batch_size_fit", "batch_size_query", "nb_epochs")}


def matched_epochs(spec: ko.KnockoffSpec, budget: int) -> int:
  """rsec's passes over a budget: steps * batch_size / B, rounded (at least 1)."""
  return max(1, int(round(spec.steps * spec.batch_size / budget)))


def run_art(victim_art, x_nchw, y, budget: int, strategy: str, init_key, settings: dict,
            args, x_test_nchw, y_test) -> dict:
  """One ART KnockoffNets extraction, timed around `extract`; its test accuracy."""
  import torch
  from art.attacks.extraction import KnockoffNets
  net = torch_thief(init_key)
  opt = torch.optim.Adam(net.parameters(), lr=args.learning_rate,
                         weight_decay=args.weight_decay)
  thief = art_classifier(net, opt)
  attack = KnockoffNets(victim_art, nb_stolen=int(budget), sampling_strategy=strategy,
                        reward="all", verbose=False, use_probability=True, **settings)
  np.random.seed(args.seed)
  torch.manual_seed(args.seed)
  out = dict(settings)
  t0 = time.perf_counter()
  try:
    stolen = attack.extract(x_nchw, y if strategy == "adaptive" else None,
                            thieved_classifier=thief)
  except Exception as e:  # noqa: BLE001 -- a peer failure is a result, not a crash
    out.update(seconds=time.perf_counter() - t0, accuracy=float("nan"),
               error=f"{type(e).__name__}: {e}")
    return out
  out["seconds"] = time.perf_counter() - t0
  pred = stolen.predict(x_test_nchw, batch_size=500).argmax(1)
  out["accuracy"] = float(np.mean(pred == y_test))
  steps = settings["nb_epochs"] * -(-budget // settings["batch_size_fit"])
  out["final_fit_steps"] = steps
  out["final_fit_examples"] = settings["nb_epochs"] * budget
  if strategy == "adaptive":
    out["per_query_refit_steps"] = budget
  return out


# --- rsec pieces -------------------------------------------------------------------------

def split_budgets(budgets, holdout: float):
  """Nested prefixes of one stream: (train rows, held-out rows) per budget."""
  train, held = [], []
  for b in budgets:
    h = ko.heldout_rows(b, holdout)
    rows = np.arange(b)
    train.append(rows[~h])
    held.append(rows[h])
  return train, held


# Compiled training chunks, shared by the warm-up and every timed run (as in a session
# that trains several budgets): rsec's timed figures are compiled-once training.
COMPILED: dict = {}
COMPILED_ONLINE: dict = {}


def rsec_fit(spec, images, targets, budgets, init_keys, key):
  """train_stack over the budgets' prefixes; (apply_fn, variables, selected steps)."""
  train, held = split_budgets(budgets, spec.holdout)
  apply_fn, variables, stats = ko.train_stack(
      spec, NUM_CLASSES, {"image": images, "label": targets}, train, held, list(init_keys),
      key=key, progress=False, compile_cache=COMPILED)
  jax.block_until_ready(variables)
  return apply_fn, variables, np.asarray(jax.device_get(stats.best.step)).reshape(-1)


def rsec_accuracy(apply_fn, variables, x_test, y_test) -> np.ndarray:
  pred = ko.predict_stack(apply_fn, variables, x_test).argmax(-1)
  return np.mean(pred == y_test[None], axis=1)


def run_rsec_random(victim, pool, budgets, spec, init_keys, args, x_test, y_test) -> dict:
  """collect_random up to max(budgets) + one stack for `budgets`, timed together."""
  t0 = time.perf_counter()
  stream = strategies.collect_random(victim, pool, max(budgets), args.seed,
                                     batch=args.query_batch)
  t_collect = time.perf_counter() - t0
  targets = strategies.targets_from_outputs(stream.outputs, "probs")
  apply_fn, variables, sel = rsec_fit(spec, pool.images[stream.order], targets, budgets,
                                      init_keys, jax.random.key(args.seed + 7))
  seconds = time.perf_counter() - t0
  acc = rsec_accuracy(apply_fn, variables, x_test, y_test)
  return {"seconds": seconds, "collect_seconds": t_collect, "train_seconds": seconds - t_collect,
          "accuracy": [float(a) for a in acc], "selected_step": [int(s) for s in sel],
          "order": stream.order}


def run_rsec_adaptive(victim, pool, budget, spec, init_key, args, x_test, y_test) -> dict:
  """collect_adaptive (with its online knockoff) + a knockoff from scratch on the stream."""
  rounds = -(-budget // args.adaptive_batch)
  t0 = time.perf_counter()
  learner = ko.OnlineKnockoff(spec, NUM_CLASSES, INPUT_SHAPE,
                              jax.random.fold_in(jax.random.key(args.seed), 0xADA),
                              steps=args.online_steps, total_steps=rounds * args.online_steps,
                              compile_cache=COMPILED_ONLINE)
  stream = strategies.collect_adaptive(victim, pool, budget, args.seed, learner=learner,
                                       reward="all", batch=args.adaptive_batch)
  t_collect = time.perf_counter() - t0
  targets = strategies.targets_from_outputs(stream.outputs, "probs")
  apply_fn, variables, sel = rsec_fit(spec, pool.images[stream.order], targets, [budget],
                                      [init_key], jax.random.key(args.seed + 7))
  seconds = time.perf_counter() - t0
  acc = rsec_accuracy(apply_fn, variables, x_test, y_test)
  return {"seconds": seconds, "collect_seconds": t_collect, "train_seconds": seconds - t_collect,
          "accuracy": float(acc[0]), "selected_step": int(sel[0]), "rounds": rounds,
          "online_steps_total": (rounds - 1) * args.online_steps,
          "distinct_images": int(len(np.unique(stream.order)))}


# --- the report --------------------------------------------------------------------------

def table(out: dict) -> str:
  head = ("strategy", "budget", "passes", "acc rsec", "acc ART def", "acc ART match",
          "rsec s", "ART def s", "ART match s", "ART def / rsec", "ART match / rsec")
  rows = [head]
  for r in out["rows"]:
    a, m = r["art_defaults"], r["art_matched"]
    rows.append((r["strategy"], str(r["budget"]), f"{r['rsec_passes']:.1f}",
                 f"{r['rsec']['accuracy']:.4f}", f"{a['accuracy']:.4f}", f"{m['accuracy']:.4f}",
                 f"{r['rsec']['seconds']:.1f}", f"{a['seconds']:.1f}", f"{m['seconds']:.1f}",
                 f"{r['ratio_art_defaults_over_rsec']:.2f}x",
                 f"{r['ratio_art_matched_over_rsec']:.2f}x"))
  w = [max(len(row[i]) for row in rows) for i in range(len(head))]
  lines = ["  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(row))
           for row in rows]
  lines.insert(1, "-" * len(lines[0]))
  st = out.get("rsec_random_stack")
  if st:
    lines += ["", f"rsec random, all budgets in one stack of {len(st['budgets'])}: "
              f"{st['seconds']:.1f} s (collect {st['collect_seconds']:.1f} s, train "
              f"{st['train_seconds']:.1f} s); accuracy "
              + ", ".join(f"{b}: {a:.4f}" for b, a in zip(st["budgets"], st["accuracy"]))
              + f"; ART (sum over budgets) / stack: matched "
              f"{st['ratio_art_matched_over_stack']:.2f}x, defaults "
              f"{st['ratio_art_defaults_over_stack']:.2f}x"]
  for r in out["rows"]:
    for k in ("art_defaults", "art_matched"):
      if "error" in r[k]:
        lines.append(f"ART {k} {r['strategy']} {r['budget']} failed: {r[k]['error']}")
  lines += ["", f"victim test accuracy {out['victim_test_accuracy']:.4f} "
            f"({out['test_size']} test images); max |p rsec - p ART victim| "
            f"{out['victim_port_max_abs_prob_diff']:.2e}",
            f"ART defaults: {out['art_defaults']}; matched: batch_size_fit "
            f"{out['spec']['batch_size']}, batch_size_query {out['query_batch']}, "
            f"nb_epochs = round(steps * batch / B)",
            f"warm-up (s): {out['warmup_s']}",
            f"1-minute load average: {out['loadavg_1min/start']:.2f} at the start, "
            f"{out['loadavg_1min/end']:.2f} at the end ({out['cpu_count']} CPUs)"]
  if out.get("adaptive_budgets"):
    lines.append(f"adaptive measured at budgets {out['adaptive_budgets']} (ART takes one "
                 f"step on each query as it comes); rsec adaptive batch "
                 f"{out['adaptive_batch']}, {out['online_steps']} online steps per batch")
  verdict = {True: "met", False: "NOT met", None: "n/a (ART failed)"}
  lines += [f"floor {k}: {verdict[v]}" for k, v in out["floors"].items()]
  return "\n".join(lines)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--budgets", default="1000,3000,10000", help="random strategy budgets")
  p.add_argument("--adaptive_budget", default="500",
                 help="the adaptive strategy's budgets, comma-separated (0: skip adaptive)")
  p.add_argument("--adaptive_batch", type=int, default=100,
                 help="rsec adaptive: queries per bandit round (at 500 with a budget of "
                      "500 there would be one round and no online training)")
  p.add_argument("--online_steps", type=int, default=50, help="rsec adaptive: steps per round")
  p.add_argument("--steps", type=int, default=1500, help="rsec knockoff training steps")
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--learning_rate", type=float, default=2e-3)
  p.add_argument("--weight_decay", type=float, default=1e-4)
  p.add_argument("--holdout", type=float, default=0.1, help="rsec's held-out share")
  p.add_argument("--query_batch", type=int, default=500, help="rsec's query batch; ART "
                 "matched batch_size_query")
  p.add_argument("--pool_size", type=int, default=12_000)
  p.add_argument("--pool_seed", type=int, default=1000, help="pool seed = this + --seed")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--victim_workdir", default=None,
                 help="a train_classifier workdir (trained into it if it has no run)")
  p.add_argument("--threads", type=int, default=2, help="torch threads")
  p.add_argument("--quick", action="store_true",
                 help="smoke mode: tiny victim (when trained here), budgets 200,300, "
                 "adaptive 200, 30 steps, pool 1,000 (size flags given explicitly win)")
  p.add_argument("--out", default=None, help="write the results as JSON here")
  args = p.parse_args(argv)
  if args.quick:   # smoke sizes for every size flag left at its default
    quick = dict(budgets="200,300", adaptive_budget="200", adaptive_batch=100, online_steps=5,
                 steps=30, pool_size=1000)
    for k, v in quick.items():
      if getattr(args, k) == p.get_default(k):
        setattr(args, k, v)
  args.budgets = sorted(int(b) for b in args.budgets.split(","))
  try:
    adaptive = [int(v) for v in str(args.adaptive_budget).split(",")]
  except ValueError:
    p.error(f"--adaptive_budget takes comma-separated integers, got {args.adaptive_budget!r}")
  args.adaptive_budget = sorted(b for b in adaptive if b > 0)
  if max(args.budgets + args.adaptive_budget) > args.pool_size:
    p.error("every budget must fit in --pool_size")
  return args


def main(argv=None):
  args = parse_args(argv)
  import art
  import torch
  from torch import nn
  torch.set_num_threads(args.threads)
  t_start = time.time()
  out = {"art": art.__version__, "torch": torch.__version__, "torch_threads": args.threads,
         "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()],
         "cpu_count": os.cpu_count(), "quick": args.quick,
         "loadavg_1min/start": os.getloadavg()[0]}

  logits_fn, victim_vars, x_test, y_test, cfg, workdir, how = load_victim(args)
  out.update(victim_workdir=workdir, victim=how, test_size=len(y_test))
  pred = parallel.predict_batches(lambda xb: logits_fn(xb).argmax(-1), (x_test,), 500)
  out["victim_test_accuracy"] = float(np.mean(np.asarray(pred) == y_test))
  pool = build_pool("natural", args.pool_size, args.pool_seed + args.seed, cfg.data)
  spec = ko.KnockoffSpec(arch=MODEL, steps=args.steps, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                         holdout=args.holdout)
  out.update(spec=dataclasses.asdict(spec), query_batch=args.query_batch, pool="natural",
             pool_size=args.pool_size, pool_seed=args.pool_seed + args.seed,
             budgets=args.budgets)
  defaults = art_defaults()
  out["art_defaults"] = defaults
  x_test_nchw = _nchw(x_test)

  victim = Victim(logits_fn, INPUT_SHAPE, chunk=500)
  victim_net = nn.Sequential(torch_paper_classifier(victim_vars, NUM_CLASSES, INPUT_SHAPE[0]),
                             nn.Softmax(dim=1)).eval()
  victim_art = art_classifier(victim_net)
  init_key = lambda b: jax.random.fold_in(jax.random.key(args.seed), b)

  # Warm-up: compiled victim core, torch, one short rsec stack of one and of all budgets.
  warm = {}
  t0 = time.perf_counter()
  probe = pool.images[:500]
  p_rsec = np.asarray(victim.query(probe))
  p_art = victim_art.predict(_nchw(probe), batch_size=500)
  out["victim_port_max_abs_prob_diff"] = float(np.max(np.abs(p_rsec - p_art)))
  warm["victim"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  net = torch_thief(init_key(0))
  c = art_classifier(net, torch.optim.Adam(net.parameters(), lr=args.learning_rate))
  c.fit(_nchw(probe[:128]), p_art[:128], batch_size=args.batch_size, nb_epochs=1)
  c.fit(_nchw(probe[:1]), p_art[:1], batch_size=1, nb_epochs=1)
  c.predict(_nchw(probe[:1]), batch_size=1)
  warm["torch"] = time.perf_counter() - t0
  # The real spec: the compiled chunk bakes in the optimiser's schedule (spec.steps).
  w_targets = strategies.targets_from_outputs(p_rsec, "probs")
  wb = min(len(probe), max(args.budgets))
  for m in sorted({1, len(args.budgets)}):
    t0 = time.perf_counter()
    rsec_fit(spec, probe, w_targets, [wb] * m, [init_key(10**6 + i) for i in range(m)],
             jax.random.key(1))
    warm[f"rsec_stack_of_{m}"] = time.perf_counter() - t0
  for b in args.adaptive_budget:  # each budget's schedule is its own compiled chunk
    t0 = time.perf_counter()
    rounds = -(-b // args.adaptive_batch)
    learner = ko.OnlineKnockoff(spec, NUM_CLASSES, INPUT_SHAPE, jax.random.key(2),
                                steps=args.online_steps,
                                total_steps=rounds * args.online_steps,
                                compile_cache=COMPILED_ONLINE)
    learner.update(probe[:args.adaptive_batch], w_targets[:args.adaptive_batch])
    learner.logits(probe[:args.adaptive_batch])
    warm[f"rsec_online_knockoff_{b}"] = time.perf_counter() - t0
  out["warmup_s"] = {k: round(v, 2) for k, v in warm.items()}
  print(f"[{time.time() - t_start:.0f} s] victim, pool and warm-up ready: {out['warmup_s']}",
        flush=True)

  # rsec's random stream (untimed, for ART's transfer set: its first b images).
  full_order = strategies.collect_random(victim, pool, max(args.budgets), args.seed,
                                         batch=args.query_batch).order
  rows = []
  matched_sum = defaults_sum = 0.0
  for i, b in enumerate(args.budgets):
    settings_m = dict(batch_size_fit=args.batch_size, batch_size_query=args.query_batch,
                      nb_epochs=matched_epochs(spec, b))
    order = full_order[:b]
    x_b = _nchw(pool.images[order])    # the first b images of rsec's random stream
    jobs = {
        "rsec": lambda: run_rsec_random(victim, pool, [b], spec, [init_key(b)], args,
                                        x_test, y_test),
        "art_matched": lambda: run_art(victim_art, x_b, None, b, "random", init_key(b),
                                       settings_m, args, x_test_nchw, y_test),
        "art_defaults": lambda: run_art(victim_art, x_b, None, b, "random", init_key(b),
                                        dict(defaults), args, x_test_nchw, y_test),
    }
    names = list(jobs) if i % 2 == 0 else list(jobs)[::-1]
    res = {}
    for name in names:
      res[name] = jobs[name]()
      print(f"[{time.time() - t_start:.0f} s] random {b}: {name} "
            f"{res[name]['seconds']:.1f} s", flush=True)
    r = res["rsec"]
    assert np.array_equal(r.pop("order"), order), "rsec's stream is not the ART transfer set"
    r["accuracy"], r["selected_step"] = r["accuracy"][0], r["selected_step"][0]
    matched_sum += res["art_matched"]["seconds"]
    defaults_sum += res["art_defaults"]["seconds"]
    rows.append(_row("random", b, spec, r, res, order=names))

  t_stack = run_rsec_random(victim, pool, args.budgets, spec,
                            [init_key(b) for b in args.budgets], args, x_test, y_test)
  t_stack.pop("order")
  print(f"random all budgets: rsec stack {t_stack['seconds']:.1f} s", flush=True)
  t_stack.update(budgets=args.budgets,
                 ratio_art_matched_over_stack=matched_sum / t_stack["seconds"],
                 ratio_art_defaults_over_stack=defaults_sum / t_stack["seconds"])
  out["rsec_random_stack"] = t_stack

  for b in args.adaptive_budget:
    key_a = jax.random.fold_in(init_key(b), 0xADA)
    settings_m = dict(batch_size_fit=args.batch_size, batch_size_query=args.query_batch,
                      nb_epochs=matched_epochs(spec, b))
    x_pool, y_pool = _nchw(pool.images), np.asarray(pool.fine)
    res = {}
    res["rsec"] = run_rsec_adaptive(victim, pool, b, spec, key_a, args, x_test, y_test)
    print(f"adaptive {b}: rsec {res['rsec']['seconds']:.1f} s", flush=True)
    res["art_matched"] = run_art(victim_art, x_pool, y_pool, b, "adaptive", key_a, settings_m,
                                 args, x_test_nchw, y_test)
    print(f"adaptive {b}: art_matched {res['art_matched']['seconds']:.1f} s", flush=True)
    res["art_defaults"] = run_art(victim_art, x_pool, y_pool, b, "adaptive", key_a,
                                  dict(defaults), args, x_test_nchw, y_test)
    print(f"adaptive {b}: art_defaults {res['art_defaults']['seconds']:.1f} s", flush=True)
    rows.append(_row("adaptive", b, spec, res["rsec"], res,
                     order=["rsec", "art_matched", "art_defaults"]))
  out.update(adaptive_budgets=args.adaptive_budget, adaptive_batch=args.adaptive_batch,
             online_steps=args.online_steps)
  out["rows"] = rows

  floors = {}
  for r in rows:
    for k in ("art_defaults", "art_matched"):
      acc = r[k]["accuracy"]   # NaN: ART failed (its error is in the row): no verdict
      floors[f"{r['strategy']} {r['budget']}: rsec accuracy >= ART {k[4:]} accuracy"] = (
          None if np.isnan(acc) else bool(r["rsec"]["accuracy"] >= acc))
    need = 1.0 if r["strategy"] == "random" else 5.0
    floors[f"{r['strategy']} {r['budget']}: ART matched / rsec time >= {need:g}x"] = (
        None if "error" in r["art_matched"] else bool(r["ratio_art_matched_over_rsec"] >= need))
  out["floors"] = floors
  out["loadavg_1min/end"] = os.getloadavg()[0]
  out["wall_seconds"] = time.time() - t_start
  print()
  print(table(out))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=2, default=float)


def _row(strategy, b, spec, r, res, order):
  return {"strategy": strategy, "budget": b, "run_order": order,
          "rsec_passes": spec.steps * spec.batch_size / b,
          "rsec_examples": spec.steps * spec.batch_size,
          "rsec": r, "art_matched": res["art_matched"], "art_defaults": res["art_defaults"],
          "ratio_art_matched_over_rsec": res["art_matched"]["seconds"] / r["seconds"],
          "ratio_art_defaults_over_rsec": res["art_defaults"]["seconds"] / r["seconds"]}


if __name__ == "__main__":
  main()
