"""Model stealing: knockoff nets, the JBDA family and defences against them.

  python -m experiments.model_stealing --config=configs/model_stealing.py:quick \\
      --workdir=workdirs/model_stealing [--config.victim_workdir=DIR]

Trains (or reuses) a FONTS victim, then runs two resumable grids of stolen models
(`rsec.grid`): undefended attacks (query set x strategy x label mode x budget, and the
JBDA family) and defences (every defence of `defences.grid` against the soft and the
argmax knockoff at the largest budget). Presets: `quick` (about 10 minutes on a 2-core
CPU; a subset of the grids, listed in report.md), `paper` (the papers' budgets and the
full grids; estimated cost in experiments/reports/model_stealing_quick/notes.md).

An undefended run is 'query_set/strategy/label_mode':
  query sets: same | natural | natural_disjoint | scenes | noise (rsec.stealing.query_sets)
  strategies: random | adaptive (rsec.stealing.strategies)
  label modes: probs | topk | rounded | argmax (what the victim returns: its output mode
    probs, topk with outputs.k, rounded with outputs.decimals, or label)
"""
import itertools

import ml_collections

from configs.defence_utility import victims_config


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = victims_config(preset)   # seed, victim_workdir, classifier, outlier_* (the OE victim)
  c.victim_budget = 60_000     # queries each attacker may make (a stream's victim)
  c.key_mode = "content"       # randomised defences: per-row keys from content or index
  c.query_batch = 500          # images per query request
  c.pool_size = 60_000         # images per query pool (>= the largest budget)
  c.fidelity_size = 2_000      # held-out images of each query distribution (fidelity)
  c.pool_seed = 1000           # pools draw from pool_seed + attacker seed
  c.budgets = (1_000, 5_000, 10_000, 20_000, 50_000)
  c.outputs = ml_collections.ConfigDict(dict(k=3, decimals=2))
  # Every stolen model: trained from scratch for `steps`, selected on its held-out rows.
  c.knockoff = ml_collections.ConfigDict(dict(
      arch="paper_classifier", steps=3000, batch_size=64, learning_rate=2e-3,
      weight_decay=1e-4, shift=2, holdout=0.1, eval_every=250, steps_per_call=10))
  c.adaptive = ml_collections.ConfigDict(dict(
      reward="all", batch=500, lr=0.5, window=500,
      online_steps=50))        # online knockoff steps after each batch of queries
  sets, strategies = ("same", "natural", "natural_disjoint", "scenes", "noise"), (
      "random", "adaptive")
  c.undefended = ml_collections.ConfigDict(dict(
      runs=tuple("/".join(r) for r in itertools.product(
          sets, strategies, ("probs", "topk", "rounded", "argmax"))),
      seeds=(0,),
      # These runs also train at the largest budget with extra_seeds (mean and spread).
      seed_runs=("natural/random/probs", "natural/adaptive/probs"),
      extra_seeds=(1, 2)))
  c.jbda = ml_collections.ConfigDict(dict(
      variants=("jbda", "jbself", "jbtopk"), seeds_per_class=10, lam=0.1, tau=3, k=3,
      round_steps=500))
  c.defences = ml_collections.ConfigDict(dict(
      query_set="natural", strategy="random",
      attackers=("probs", "argmax"),
      jbda=("jbtopk",),          # JBDA variants also run against every defence cell
      grid=ml_collections.ConfigDict({
          "rounding": {"decimals": (0, 1, 2)},
          "topk": {"k": (1, 2, 3)},
          "label": {},
          "high_confidence": {"cutoff": (0.25, 0.5)},
          "reverse_sigmoid": {"beta": (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)},
          "logit_noise": {"sigma": (0.5, 1.0, 2.0, 4.0)},
          "simplex_noise": {"eps": (0.1, 0.25, 0.5, 1.0, 1.5)},
          "mad": {"eps": (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5)},
          "mad_argmax": {"eps": (0.1, 0.5, 1.0, 1.5)},
          "mad_random": {"eps": (0.5,)},
          "mad_identity": {"eps": (0.5,)},
          "mad_argmin": {"eps": (0.5,)},
      }),
      # The same, on the outlier-exposure victim (trained to give near-uniform posteriors
      # outside its classes): Adaptive Misinformation's victim, and MAD's with calibrated
      # out-of-distribution answers ('none': that victim undefended, the baseline).
      oe_grid=ml_collections.ConfigDict({
          "none": {},
          "mad": {"eps": (0.05, 0.1, 0.2, 0.3, 0.5)},
          "adaptive_misinformation": {"tau": (0.5, 0.7, 0.9)},
      }),
      # The defence-aware attacker: each query repeated, answers averaged.
      repeat_defences=("logit_noise", "simplex_noise"), repeats=5,
      repeat_key_modes=("content", "index")))
  c.transfer = ml_collections.ConfigDict(dict(eps=0.1, steps=20, num_examples=500))
  c.progress = True

  if preset == "quick":
    c.classifier.data.train_size, c.classifier.data.test_size = 10_000, 5_000
    c.classifier.training.epochs = 6
    c.victim_budget = 10_000
    c.pool_size, c.fidelity_size = 12_000, 1_000
    c.budgets = (1_000, 3_000, 10_000)
    c.knockoff.steps = 1000
    c.undefended.runs = ("same/random/probs", "natural/random/probs", "noise/random/probs",
                         "natural/random/argmax", "natural/adaptive/probs")
    c.jbda.variants = ("jbtopk",)
    c.jbda.round_steps = 300
    c.defences.jbda = ()
    g = c.defences.grid
    g.rounding.decimals, g.topk.k, g.high_confidence.cutoff = (1,), (1,), (0.5,)
    g.reverse_sigmoid.beta, g.logit_noise.sigma, g.simplex_noise.eps = (0.2,), (2.0,), (0.5,)
    g.mad.eps, g.mad_argmax.eps = (0.5,), (0.5, 1.5)
    c.defences.oe_grid.mad.eps = (0.2, 0.3)
    c.defences.oe_grid.adaptive_misinformation.tau = (0.7,)
    c.defences.repeat_defences = ("logit_noise",)
    c.transfer.num_examples = 200
  return c
