"""Kill a real training subprocess with SIGKILL, restart it, compare with an uninterrupted run.

Used by tests/reliability/test_kill_resume.py (a few kills) and
benchmarks/kill_resume.py (20 kills).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OVERRIDES = (
    "--config.data.train_size=2000", "--config.data.test_size=200",
    "--config.training.epochs=8", "--config.training.checkpoint_every=4",
    "--config.training.steps_per_call=2", "--config.training.log_every=8",
    "--config.eval.batch_size=100", "--config.progress=False",
)


def command(workdir: str, cache_dir: str) -> list[str]:
  return [sys.executable, "-m", "experiments.train_classifier",
          "--config=configs/train_classifier.py:quick", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache_dir}", *OVERRIDES]


def _env() -> dict:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, the same for every run
  return env


def run_to_end(workdir: str, cache_dir: str) -> None:
  subprocess.run(command(workdir, cache_dir), cwd=ROOT, env=_env(), check=True,
                 capture_output=True, timeout=600)


def _checkpoint_write_in_progress(workdir: str) -> bool:
  d = os.path.join(workdir, "checkpoints")
  return os.path.isdir(d) and any("tmp" in n for n in os.listdir(d))


def _has_checkpoint(workdir: str) -> bool:
  d = os.path.join(workdir, "checkpoints")
  return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))


def run_with_kills(workdir: str, cache_dir: str, kills: int, seed: int = 0,
                   log=print) -> list[str]:
  """Runs training, SIGKILLing it `kills` times; every other kill waits for a checkpoint
  write to be in progress. Returns how each kill landed."""
  rng = random.Random(seed)
  landed = []
  while True:
    proc = subprocess.Popen(command(workdir, cache_dir), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if len(landed) >= kills:
      _, err = proc.communicate(timeout=600)
      if proc.returncode != 0:
        raise RuntimeError(f"final run failed ({proc.returncode}): {err.decode()[-2000:]}")
      return landed
    during_write = len(landed) % 2 == 1
    # Wait until training is under way (the first checkpoint exists), then strike.
    deadline = time.time() + 300
    while not _has_checkpoint(workdir) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.01)
    t_strike = time.time() + rng.uniform(0.0, 1.5)
    while proc.poll() is None:
      if during_write and _checkpoint_write_in_progress(workdir):
        break
      if not during_write and time.time() >= t_strike:
        break
      time.sleep(0.002)
    if proc.poll() is not None:  # finished before we struck: start over from scratch
      proc.communicate()
      log("run finished before the kill; restarting the whole attempt")
      _wipe(workdir)
      continue
    how = "during a checkpoint write" if _checkpoint_write_in_progress(workdir) else "mid-run"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed.append(how)
    log(f"kill {len(landed)}/{kills}: {how}")


def _wipe(workdir: str) -> None:
  import shutil
  shutil.rmtree(workdir, ignore_errors=True)


def final_state(workdir: str) -> tuple[dict, list[dict], dict]:
  """(flat parameter arrays, metrics.jsonl rows, results.json) of a finished run."""
  import jax
  from rsec.training.classifier import restore_classifier
  state, _ = restore_classifier(workdir)
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state.checkpoint_tree()))[0]
  params = {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  results = json.load(open(os.path.join(workdir, "results.json")))
  return params, rows, results


def compare(ref_dir: str, killed_dir: str) -> list[str]:
  """Differences between two finished runs (empty when bit-identical)."""
  pa, ra, xa = final_state(ref_dir)
  pb, rb, xb = final_state(killed_dir)
  diffs = [k for k in pa if k not in pb or not np.array_equal(pa[k], pb[k])]
  if ra != rb:
    diffs.append("metrics.jsonl rows differ")
  for k in ("test_accuracy", "test_loss", "train_accuracy", "steps"):
    if xa[k] != xb[k]:
      diffs.append(f"results.json {k}: {xa[k]} vs {xb[k]}")
  return diffs
