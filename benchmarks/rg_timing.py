"""Wall-clock cost of experiments.robustness_generalization, per grid cell and per step.

python -m benchmarks.rg_timing --config=configs/robustness_generalization.py:paper \
    --workdir=DIR [--config.modes='("normal","adversarial")' --config.train_sizes='(250,)' ...]

Runs the experiment unchanged (same flags) and appends timestamped events to $TIMING_LOG
(default /tmp/rg_timing.jsonl; also printed as `TIMING {...}` lines): every metrics row
(step, time: the steady-state seconds per step are the slope between rows), each cell's
start and end (with train_seconds, compilation included), each attack-suite call, the
VAE-GAN training and the distance study. Used for the GPU figures in BUILD_NOTES.md.
"""
from __future__ import annotations

import json
import os
import sys
import time

import jax

from rsec.studies import robustness_generalization as rg
from rsec import config as cfg_lib
from rsec import grid
from rsec.training import metrics

LOG = os.environ.get("TIMING_LOG", "/tmp/rg_timing.jsonl")
T0 = time.time()


def log(**event):
  event["t"] = round(time.time() - T0, 3)
  line = json.dumps(event, default=str)
  with open(LOG, "a") as f:
    f.write(line + "\n")
  print("TIMING", line, flush=True)


def _patch():
  write = metrics.MetricWriter.write

  def timed_write(self, step, scalars):
    log(ev="metrics", path=self.path, step=int(step))
    return write(self, step, scalars)
  metrics.MetricWriter.write = timed_write

  run_grid = grid.run_grid

  def timed_run_grid(workdir, cells, run_cell, **kw):
    def timed_cell(cell, cell_dir):
      log(ev="cell_start", cell=cell)
      t = time.time()
      r = run_cell(cell, cell_dir)
      log(ev="cell_end", cell=cell, seconds=time.time() - t, steps=r.get("steps"),
          train_seconds=r.get("train_seconds"), test_error=r.get("test_error"))
      return r
    return run_grid(workdir, cells, timed_cell, **kw)
  grid.run_grid = timed_run_grid

  suites = rg._attack_suites  # pylint: disable=protected-access

  def timed_suites(*a, **kw):
    attack = suites(*a, **kw)

    def timed_attack(variables, key, test):
      t = time.time()
      rates, examples = attack(variables, key, test)
      jax.block_until_ready(examples)
      log(ev="attack_suite", seconds=time.time() - t,
          rates={k: v["success_rate"] for k, v in rates.items()})
      return rates, examples
    return timed_attack
  rg._attack_suites = timed_suites  # pylint: disable=protected-access

  for name in ("_vaegan", "_distance_study"):
    def timed(f, name=name):
      def g(*a, **kw):
        log(ev=name + "_start")
        t = time.time()
        r = f(*a, **kw)
        log(ev=name + "_end", seconds=time.time() - t)
        return r
      return g
    setattr(rg, name, timed(getattr(rg, name)))


if __name__ == "__main__":
  _patch()
  log(ev="start", devices=[str(d) for d in jax.devices()], argv=sys.argv[1:])
  cfg_lib.cli_main(rg.run, "configs/robustness_generalization.py:quick")
