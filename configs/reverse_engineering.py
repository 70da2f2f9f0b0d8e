"""Reverse engineering black boxes: a vectorised FONTS model zoo and kennen metamodels.

  python -m experiments.reverse_engineering --config=configs/reverse_engineering.py:quick \\
      --workdir=workdirs/reverse_engineering [--config.zoo_workdir=DIR]

Builds the zoo (`rsec.reverse.zoo`: stacks of masked super-networks under `vmap`, a
resumable grid), trains kennen-o / kennen-i / kennen-io on its R and E splits, then runs
the attribute-informed transfer study and kennen-o against defended black boxes.
Presets: `quick` (a 2-core CPU; small widths, short training), `paper` (about 10,000
models at larger widths and the paper's batch sizes; cost in
experiments/reports/reverse_engineering_quick/notes.md).
"""
import ml_collections

from configs.train_classifier import data_config


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  if preset not in ("quick", "paper"):
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.zoo_workdir = ""          # a zoo built by an earlier run ('' = WORKDIR/zoo)
  c.data = data_config(train_size=9_000, test_size=2_000)   # thirds a, b, c: the splits
  c.data.size, c.data.difficulty = 16, "easy"
  c.zoo = ml_collections.ConfigDict(dict(
      models=1_000,           # trained models (replicas of ensembles included)
      ensemble_groups=120,    # groups of 3 replicas -> one ensemble of 2-3 each
      stack_size=128,         # models per compiled stack (one batch size per stack)
      min_accuracy=0.9,       # FONTS test accuracy below this: dropped
      width=4, hidden=64,     # conv channels, dense units
      dropout=0.25,           # rate where drop = yes (the paper's 0.5 at the paper preset:
                              # at quick widths 0.5 cost 12 points of mean accuracy)
      batch_sizes=(16, 32, 64),
      steps=220,
      lr_sgd=0.02, lr_adam=4e-3, lr_rmsprop=2e-3,
      queries=100,            # FONTS validation images every model's posterior is kept on
      # Narrow attributes to subsets of their values, e.g. {'act': ('relu', 'tanh')}.
      attributes=ml_collections.ConfigDict({}),
  ))
  c.kennen = ml_collections.ConfigDict(dict(
      n_queries=100,          # queries kennen-o / kennen-io read
      query_curve=(1, 5, 10, 50, 100),   # kennen-o (score, R) at these numbers of queries
      outputs=("score", "ranking", "label"),
      splits=("R", "E-conv", "E-conv-fc", "E-opt", "E-opt-bs", "E-size"),
      test_share=0.2,         # R: share of the zoo held out as black boxes
      meta=ml_collections.ConfigDict(dict(hidden=(256, 256), steps=1500, batch_size=64,
                                          learning_rate=1e-3, weight_decay=1e-4)),
      kennen_i=ml_collections.ConfigDict(dict(steps=100, step_size=0.02, craft_models=256)),
      # Joint steps (batches of training entries); the metamodel at learning_rate, the
      # query pixels at query_learning_rate (Adam: a step moves a pixel by about that);
      # refit: retrain the metamodel on the learned queries (kennen-o's recipe) after.
      kennen_io=ml_collections.ConfigDict(dict(steps=150, batch_size=16,
                                               learning_rate=3e-4, query_learning_rate=3e-2,
                                               refit=True, splits=("R",))),
  ))
  c.transfer = ml_collections.ConfigDict(dict(
      black_boxes=10,         # held-out (R test) models attacked
      images=50,              # FONTS test images each is attacked on
      sources=5,              # zoo models per matched / random source
      zoo_sources=32,         # models in the whole-zoo source
      eps=0.1, steps=10))
  c.defences = ml_collections.ConfigDict(dict(
      output="score",         # the kennen-o (R) metamodel the defended outputs go to
      utility_images=500,     # FONTS test images the defender's accuracy is measured on
      grid=ml_collections.ConfigDict({
          "rounding": {"decimals": (1,)},
          "topk": {"k": (1,)},
          "label": {},
          "reverse_sigmoid": {"beta": (0.7,)},
          "mad": {"eps": (0.5,)},
      })))
  if preset == "paper":
    c.data = data_config(train_size=60_000, test_size=10_000)
    c.zoo.update(dict(models=10_000, ensemble_groups=1_000, stack_size=256, width=16,
                      hidden=128, dropout=0.5, batch_sizes=(64, 128, 256), steps=2_000))
    c.kennen.meta.update(dict(hidden=(1000, 1000), steps=20_000))
    c.kennen.kennen_i.update(dict(steps=500, craft_models=2_000))
    c.kennen.kennen_io.update(dict(steps=2_000, batch_size=64, splits=c.kennen.splits))
    c.transfer.update(dict(black_boxes=100, images=500))
    c.defences.utility_images = 5_000
    for name in ("rounding",):
      c.defences.grid[name].decimals = (0, 1, 2)
    c.defences.grid.topk.k = (1, 2, 3)
    c.defences.grid.reverse_sigmoid.beta = (0.2, 0.5, 0.7)
    c.defences.grid.mad.eps = (0.1, 0.5, 1.0)
  return c
